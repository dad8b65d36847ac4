"""ingest_bounce (an MTA pipe) and bounce_server (an SMTP listener)."""
