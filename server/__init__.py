"""Flask app (REST API + minimal UI) and the `enclave` command line."""
