"""The built-in torch engine behind ``llmplan serve``.

Importing this package is cheap (no torch): the server imports :mod:`.api` through it.
:func:`build_engine` imports torch when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmplan.runtime.engine.async_engine import AsyncLLMEngine


def build_engine(*args: Any, **kwargs: Any) -> AsyncLLMEngine:
    """Build the engine; see :func:`llmplan.runtime.engine.factory.build_engine`."""
    from llmplan.runtime.engine.factory import build_engine as _build

    return _build(*args, **kwargs)


__all__ = ["build_engine"]
