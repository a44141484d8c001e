"""Ingest adapters: verify a source's signature, parse, map to the event model (pure)."""
