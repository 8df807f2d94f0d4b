"""Flask app: the REST API, MCP over HTTP and the minimal UI."""
