"""Persistence, split by lifecycle: submissions, publishing, the worker's transitions,
heartbeats, retention and deliveries; dialect.py is the one place the two databases differ."""
