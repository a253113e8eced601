"""The usage ledger: one row per request, written in batches off the request path, spooled to a local
file when PostgreSQL is down or slow, and replayed exactly once (idempotent on request_id)."""
