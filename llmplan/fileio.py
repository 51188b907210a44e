"""Small file helpers shared by the packages that persist state (plans, profiles, caches)."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` so that a reader, or a crash mid-write, sees the old file or
    the new one, never half of one: write a temporary sibling, then ``os.replace`` it into place.
    The temporary name carries the pid, so two processes writing one path do not collide."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p
