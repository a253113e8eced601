"""API keys in PostgreSQL: key format and hashing, migrations, the store (create/list/revoke/lookup)."""
