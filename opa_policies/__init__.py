"""The Rego policies and their data, shipped with the gateway as package data (read through
``importlib.resources``; gateway/policy/files.py). Rules and contract: README.md here."""
