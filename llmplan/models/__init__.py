"""Model specs: a built-in catalog of HF configs plus loading any local ``config.json``.

``get_model_spec("llama-2-7b")`` or ``get_model_spec("/path/to/model_dir")``.
"""

from __future__ import annotations

from pathlib import Path

from llmplan.errors import LlmplanError
from llmplan.models.catalog import CATALOG
from llmplan.models.spec import ModelSpec

__all__ = ["CATALOG", "ModelSpec", "get_model_spec", "catalog_names"]


def catalog_names() -> list[str]:
    return sorted(CATALOG)


def get_model_spec(name_or_path: str | Path) -> ModelSpec:
    """A catalog spec by name (case-insensitive) or one read from a local HF ``config.json`` / model dir."""
    key = str(name_or_path)
    if key.lower() in CATALOG:
        return CATALOG[key.lower()]
    p = Path(key).expanduser()
    if p.suffix == ".json" or p.is_dir() or p.exists():
        return ModelSpec.from_config_file(p)
    raise LlmplanError(
        f"unknown model {key!r}; use a catalog name ({', '.join(catalog_names())}) "
        "or a path to a HF config.json"
    )
