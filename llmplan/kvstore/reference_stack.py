"""A minimal causal decoder stack speaking the pipeline's ``compute(i, hidden, past_kv)`` protocol.

Pre-norm attention (GQA) + SiLU-gated MLP per layer, no RoPE: enough real compute and real
KV for testing and benchmarking the store and the pipeline without loading a model. The
engine's Llama model plugs into the same protocol through an adapter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmplan.migrate.attention_split import attention


class ReferenceStack:
    def __init__(
        self, num_layers: int, hidden: int, num_heads: int, num_kv_heads: int,
        intermediate: int | None = None,
        seed: int = 0, vocab: int = 1024, dtype: torch.dtype = torch.float32,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.num_layers, self.hidden = num_layers, hidden
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = hidden // num_heads
        inter = intermediate or 4 * hidden
        kv = num_kv_heads * self.head_dim
        s = hidden ** -0.5

        def w(*shape: int, scale: float = s) -> torch.Tensor:
            return (torch.randn(*shape, generator=g) * scale).to(dtype)

        self.layers = [
            {"qkv": w(hidden + 2 * kv, hidden), "o": w(hidden, hidden), "gate_up": w(2 * inter, hidden),
             "down": w(hidden, inter, scale=inter ** -0.5)}
            for _ in range(num_layers)
        ]
        self.embedding = torch.randn(vocab, hidden, generator=g).to(dtype)

    def kv_block_shape(self, block_size: int) -> tuple[int, ...]:
        return (2, block_size, self.num_kv_heads, self.head_dim)

    @torch.inference_mode()
    def compute(
        self, i: int, x: torch.Tensor, past: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``i`` on new tokens ``x [T, hidden]`` after ``past [2, P, Hkv, D]``."""
        p = self.layers[i]
        t = x.shape[0]
        kvs = self.num_kv_heads * self.head_dim
        h = F.rms_norm(x, (self.hidden,))
        q, k, v = F.linear(h, p["qkv"]).split((self.hidden, kvs, kvs), dim=-1)
        k = k.view(t, self.num_kv_heads, self.head_dim)
        v = v.view(t, self.num_kv_heads, self.head_dim)
        new_kv = torch.stack([k, v])
        full = new_kv if past is None else torch.cat([past, new_kv], dim=1)
        a = attention(q.view(1, t, self.num_heads, self.head_dim), full[0][None], full[1][None],
                      [t], [full.shape[1]])
        x = x + F.linear(a.reshape(t, self.hidden), p["o"])
        gate, up = F.linear(F.rms_norm(x, (self.hidden,)), p["gate_up"]).chunk(2, dim=-1)
        return x + F.linear(F.silu(gate) * up, p["down"]), new_kv

    def embed(self, token_ids: list[int]) -> torch.Tensor:
        return self.embedding[torch.tensor(token_ids) % self.embedding.shape[0]]

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Plain prefill of the whole prompt, no cache: the ground truth."""
        kvs = []
        for i in range(self.num_layers):
            x, kv = self.compute(i, x, None)
            kvs.append(kv)
        return x, kvs
