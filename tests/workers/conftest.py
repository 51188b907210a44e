"""Multi-worker serving tests: real worker processes (gloo on 127.0.0.1) behind real uvicorn."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
