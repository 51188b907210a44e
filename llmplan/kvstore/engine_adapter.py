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

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmplan.errors import LlmplanError
from llmplan.kvstore.pipeline import LayerwisePrefill, PrefillTiming
from llmplan.kvstore.store import GlobalKVStore


@dataclass(slots=True)
class PrefillOutcome:
    logits: torch.Tensor  # [vocab] fp32 of the prompt's last token: sample with the request's sampler
    cached_tokens: int  # prompt tokens whose KV came from the store
    computed_tokens: int
    timing: PrefillTiming

    @property
    def next_token(self) -> int:
        """The greedy next token (tests and benchmarks; serving samples from ``logits``)."""
        return int(self.logits.argmax(-1))


class EnginePrefill:
    """One whole prompt prefilled over the store: the serving executor's step, for one request."""

    def __init__(self, model, kv, block_size: int, namespace: str) -> None:
        if not (model.is_first and model.is_last):
            raise LlmplanError("EnginePrefill needs a whole-model instance (first and last stage)")
        if block_size != kv.block_size:
            raise LlmplanError(f"block_size {block_size} differs from the KV cache's {kv.block_size}")
        self.model, self.kv, self.bs, self.namespace = model, kv, block_size, namespace

    def prefill(self, store: GlobalKVStore, pipe: LayerwisePrefill, token_ids: Sequence[int],
                block_ids: Sequence[int]) -> PrefillOutcome:
        """Prefill ``token_ids`` into ``block_ids`` of this instance's cache, reusing the store."""
        from llmplan.kvstore.serving import LayerwiseStep
        from llmplan.runtime.engine.step_inputs import SeqWork

        toks = list(token_ids)
        step = LayerwiseStep(self.model, self.kv, store, pipe, self.namespace)
        work = [SeqWork(toks, 0, list(block_ids), True, True)]
        plan = step.plan(toks, 0, len(toks))
        out = step.run(work, [plan], [toks], [len(toks)])
        assert out.logits is not None
        cached = out.cached_tokens[0]
        return PrefillOutcome(out.logits[0], cached, len(toks) - cached, out.timing)
