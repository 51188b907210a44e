"""The global store in the engine: prefill the engine's Llama model layer by layer over the store.

:class:`EnginePrefill` speaks the pipeline's ``compute(i, hidden, past_kv)`` protocol for the
engine's :class:`~llmplan.runtime.engine.model.LlamaModel` and its paged KV cache: before layer
``i`` runs on the uncached suffix, the cached prefix's KV for layer ``i`` (loaded from the store in
the background) is scattered into the request's blocks of that layer's pool, and the layer runs as
a chunked-prefill chunk whose context is the prefix. The suffix's new full blocks go back to the
store. Two uses, both tested for greedy-token identity:

* **prefix reuse across prefill instances** -- instance B prefills only what instance A did not
  already store;
* **P/D hand-off through the store** -- a decode instance takes over a request by loading its
  full blocks from the store and recomputing only the partial tail block (fewer than
  ``block_size`` tokens), then decodes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmplan.errors import LlmplanError
from llmplan.kvstore.hashing import block_hashes
from llmplan.kvstore.pipeline import LayerwisePrefill, PrefillTiming
from llmplan.kvstore.store import GlobalKVStore


@dataclass(slots=True)
class PrefillOutcome:
    next_token: int
    cached_tokens: int  # prompt tokens whose KV came from the store
    computed_tokens: int
    timing: PrefillTiming


class EnginePrefill:
    def __init__(self, model, kv, block_size: int, namespace: str) -> None:
        if not (model.is_first and model.is_last):
            raise LlmplanError("EnginePrefill needs a whole-model instance (first and last stage)")
        self.model, self.kv, self.bs, self.namespace = model, kv, block_size, namespace
        self.device = model.input_device

    def _slots(self, block_ids: Sequence[int], start: int, end: int) -> torch.Tensor:
        bs = self.bs
        return torch.tensor([block_ids[p // bs] * bs + p % bs for p in range(start, end)], dtype=torch.long,
                            device=self.device)

    def _compute(self, i: int, x: torch.Tensor, past: torch.Tensor | None, *, meta, cos, sin,
                 prefix_slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``i`` on the suffix after writing the loaded prefix KV into this layer's pool."""
        cfg = self.model.cfg
        k_pool, v_pool = self.kv.layer(i)
        flat_k = k_pool.view(-1, cfg.num_kv_heads, cfg.head_dim)
        flat_v = v_pool.view(-1, cfg.num_kv_heads, cfg.head_dim)
        if past is not None:
            flat_k[prefix_slots] = past[0].to(flat_k.dtype)
            flat_v[prefix_slots] = past[1].to(flat_v.dtype)
        with torch.inference_mode():
            x = self.model.layers[i - self.model.layer_start](x, cos, sin, meta, self.kv)
        slots = meta.slot_mapping
        return x, torch.stack([flat_k[slots], flat_v[slots]])

    @torch.inference_mode()
    def prefill(self, store: GlobalKVStore, pipe: LayerwisePrefill, token_ids: Sequence[int],
                block_ids: Sequence[int]) -> PrefillOutcome:
        """Prefill ``token_ids`` into ``block_ids`` of this instance's cache, reusing the store."""
        from llmplan.runtime.engine.step_inputs import SeqWork, build_step_inputs

        keys = block_hashes(list(token_ids), self.bs, self.namespace)
        # Another pass only when a cached block turned out corrupt mid-way; each pass drops at
        # least one block, so this ends.
        for _ in range(len(keys) + 2):
            hit = store.match_prefix(keys)
            if hit * self.bs >= len(token_ids):
                hit -= 1  # the last token must be computed: it produces the next token's logits
            p = hit * self.bs
            si = build_step_inputs([SeqWork(list(token_ids[p:]), p, list(block_ids), True, True)], self.bs,
                                   self.device)
            cos, sin = self.model.ropes[self.device](si.positions)
            compute = functools.partial(self._compute, meta=si.meta, cos=cos, sin=sin,
                                        prefix_slots=self._slots(block_ids, 0, p))
            hidden = self.model.embed_tokens(si.input_ids)
            res = pipe.run(compute, hidden, self.model.cfg.num_layers, keys[:hit], keys[hit:], self.bs)
            if res is not None:
                h = self.model.norm(res.hidden[-1:])
                logits = F.linear(h, self.model.lm_head_weight).float()
                return PrefillOutcome(int(logits.argmax(-1)), p, len(token_ids) - p, res.timing)
        raise LlmplanError("the KV store kept losing blocks during one prefill; check the store's disk")
