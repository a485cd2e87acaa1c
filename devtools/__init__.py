"""Development tools, not packaged: dev tokens, synthetic patients, process helpers for tests and bench."""
