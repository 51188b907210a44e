"""Chained prefix-block hashes: a block's key names its tokens *and* everything before it.

``h_0 = H(root, tokens[0:B])``, ``h_i = H(h_{i-1}, tokens[i*B:(i+1)*B])``: two prompts share
block ``i``'s key exactly when they share the first ``(i+1)*B`` tokens, so a prefix match is a
walk down the key list until the first miss (vLLM's and SGLang's scheme). The root folds in a
namespace (model name, dtype, block size) so different models never alias.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from llmplan.errors import LlmplanError

DIGEST_BYTES = 16  # 128-bit keys: collision odds are negligible at any cache size


def root_hash(namespace: str) -> bytes:
    return hashlib.blake2b(namespace.encode(), digest_size=DIGEST_BYTES).digest()


def block_hash(parent: bytes, token_ids: Sequence[int]) -> bytes:
    h = hashlib.blake2b(parent, digest_size=DIGEST_BYTES)
    # Fixed-width little-endian ids: [1, 23] and [12, 3] must not collide.
    h.update(b"".join(int(t).to_bytes(4, "little", signed=False) for t in token_ids))
    return h.digest()


def block_hashes(token_ids: Sequence[int], block_size: int, namespace: str = "") -> list[bytes]:
    """Keys of every *full* block of ``token_ids`` (a partial tail block is never shared)."""
    if block_size <= 0:
        raise LlmplanError(f"block_size must be positive, got {block_size}")
    if any(t < 0 or t >= 2**32 for t in token_ids):
        raise LlmplanError("token ids must be in [0, 2**32); check the tokenizer output")
    keys, parent = [], root_hash(f"{namespace}|bs={block_size}")
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = block_hash(parent, token_ids[start:start + block_size])
        keys.append(parent)
    return keys
