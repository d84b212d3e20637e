"""Storage: the database engine and schema, the ledger's tables, migrations."""
