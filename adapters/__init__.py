"""Adapters: one module per real thing behind a port, plus in-memory twins."""
