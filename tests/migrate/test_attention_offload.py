"""Attention-level migration end to end: greedy tokens identical with attention split mid-run."""

from __future__ import annotations

import random

import pytest

from llmplan.errors import LlmplanError
from llmplan.migrate.attention_offload import (
    OffloadedLayer,
    OffloadPlan,
    offload_attention,
    restore_attention,
)
from llmplan.runtime.workers.scripted import RunSpec, reference_greedy


def _spec():
    rng = random.Random(1)
    prompts = [[rng.randrange(3, 32000) for _ in range(n)] for n in (7, 30, 18)]
    return RunSpec("llama-tiny", seed=0, ranges=[(0, 4)], prompts=prompts, max_new_tokens=8,
                   arrivals=[0, 0, 4])


@pytest.mark.slow
def test_tokens_identical_with_head_and_block_split_attention_mid_run():
    spec = _spec()
    ref = reference_greedy(spec)
    wrapped: list[OffloadedLayer] = []

    def migrate(step, model, kv):
        if step == 2:  # requests 0 and 1 in flight; request 2 prefills under the split later
            # llama-tiny: 4 query heads over 2 KV heads -> one GQA group per worker.
            wrapped.append(offload_attention(model, 1, OffloadPlan("heads", (1, 1))))
            wrapped.append(offload_attention(model, 2, OffloadPlan("blocks", (1, 2, 1), block_size=4)))
        if step == 6:
            restore_attention(model, 1)  # migrating back is as exact

    assert reference_greedy(spec, on_step=migrate) == ref
    assert all(w.shard_calls > 0 for w in wrapped)


def test_offloading_a_layer_this_worker_does_not_hold_is_an_error():
    from llmplan.runtime.engine.config import catalog_config
    from llmplan.runtime.engine.model import LlamaModel

    cfg = catalog_config("llama-tiny")
    import torch

    stage = LlamaModel(cfg, [torch.device("cpu")] * cfg.num_layers, torch.float32, layer_start=2)
    with pytest.raises(LlmplanError):
        offload_attention(stage, 0, OffloadPlan("heads", (1, 1)))
    with pytest.raises(LlmplanError):
        offload_attention(stage, 2, OffloadPlan("rows", (1, 1)))  # type: ignore[arg-type]
