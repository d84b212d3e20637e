"""The delivery ledger: every write to the deliveries table happens here."""
