"""Ingestion: loaders -> chunker -> embedder -> indexes, tracked by the registry."""
