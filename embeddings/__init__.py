"""Sentence-embedding model: fetch, verify, load and encode."""
