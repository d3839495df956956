"""Retrieval quality and speed measurements."""
