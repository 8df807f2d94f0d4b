"""Enclave's settings, one module per concern, composed and loaded by `config.settings`.

The lowest layer: imports nothing of retriever, ingest or server, so every layer may read it."""
