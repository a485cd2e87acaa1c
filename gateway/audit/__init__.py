"""The audit trail (II.2): the record of each request (record.py), its writer (log.py), the hash
chain and its verification (chain.py), signed checkpoints (checkpoints.py), search (search.py)."""
