"""Retrieval and answering core: settings, embedder, indexes, search, prompts, SLM runtimes.

Knows nothing of Flask or folders; `server` and `ingest` build on it.
"""
