"""Switch off telemetry and hub downloads before any library that might phone home is imported."""

from __future__ import annotations

import os

# Each of these libraries reads its variable at import time; setdefault keeps an admin's choice.
_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "ANONYMIZED_TELEMETRY": "False",  # chromadb
    "DO_NOT_TRACK": "true",  # unstructured and others
    "SCARF_NO_ANALYTICS": "true",  # unstructured
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def enforce_offline() -> None:
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


enforce_offline()
