"""The service layer: tenants, API keys, ingest pipeline, search, access auditing.

Everything here is independent of HTTP; :mod:`trailseal.http` is a thin edge on top.
"""
