"""The document library under /api/v1/documents: routes.py and its models (schemas.py)."""
