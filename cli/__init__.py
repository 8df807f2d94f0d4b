"""The `enclave` command line, on click: one module per concern (serve, documents, ask, accounts,
evaluate, tune), the shared options and exit codes in cli/common.py, the root group in
cli/main.py. It sits above server/ (for `serve` and `mcp`) and service/; nothing imports it."""
