"""The service's own rules, with no HTTP in them: identities and the permission rule, each
user's conversations, rate limits, the link rule for untrusted answer text, and the offline
work (answer evaluation, embedder tuning). server/ (HTTP) and cli/ (command line) use it; it
uses ingest/ and retriever/."""
