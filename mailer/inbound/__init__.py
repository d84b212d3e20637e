"""Mail to the list: commands, bounce reports and their proof, the IMAP mailbox."""
