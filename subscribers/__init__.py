"""The subscriber store: models, validation and CSV import/export (the lowest layer)."""
