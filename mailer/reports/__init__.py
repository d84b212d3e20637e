"""Read-only reports: status, subscriber lists and histories."""
