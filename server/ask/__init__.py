"""Asking: POST /api/v1/ask (routes.py) and its request and response models (schemas.py)."""
