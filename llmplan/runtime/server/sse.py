"""Server-sent events as OpenAI streams them: ``data: {json}\\n\\n`` ... ``data: [DONE]\\n\\n``."""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"


def sse(obj: dict[str, Any]) -> bytes:
    # ASCII-escaped: generated text may hold U+2028, U+0085 and the like, which clients that
    # split lines with str.splitlines() (httpx's aiter_lines among them) would cut in two.
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
