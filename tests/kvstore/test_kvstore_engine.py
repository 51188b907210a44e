"""The global store with the engine's Llama model: prefix reuse across prefill instances and a
P/D hand-off through the store are greedy-token identical to a single instance."""

from __future__ import annotations

import random

import pytest
import torch

from llmplan.kvstore.engine_adapter import EnginePrefill
from llmplan.kvstore.pipeline import LayerwisePrefill
from llmplan.kvstore.store import GlobalKVStore
from llmplan.runtime.workers.scripted import RunSpec, reference_greedy

BS = 16


def _instance(seed=0, num_blocks=16):
    """One engine instance: the model (same dummy weights everywhere) and its own paged cache."""
    from llmplan.runtime.engine.config import catalog_config
    from llmplan.runtime.engine.kvcache import PagedKVCache
    from llmplan.runtime.engine.loader import init_dummy_weights
    from llmplan.runtime.engine.model import LlamaModel

    cfg = catalog_config("llama-tiny")
    cpu = torch.device("cpu")
    model = LlamaModel(cfg, [cpu] * cfg.num_layers, torch.float32)
    init_dummy_weights(model, seed=seed)
    return model, PagedKVCache(cfg, num_blocks, BS, [cpu] * cfg.num_layers, torch.float32)


def _decode(model, kv, prompt_len, first, blocks, n):
    from llmplan.runtime.engine.step_inputs import SeqWork, build_step_inputs

    toks, ctx = [first], prompt_len
    for _ in range(n - 1):
        si = build_step_inputs([SeqWork([toks[-1]], ctx, blocks, False, True)], BS, torch.device("cpu"))
        toks.append(int(model(si.input_ids, si.positions, si.meta, kv, si.logits_index).argmax(-1)))
        ctx += 1
    return toks


@pytest.mark.slow
def test_prefix_reuse_and_pd_handoff_through_the_store(tmp_path):
    rng = random.Random(3)
    shared = [rng.randrange(3, 32000) for _ in range(48)]  # 3 full blocks
    req_a = shared + [rng.randrange(3, 32000) for _ in range(10)]
    req_b = shared + [rng.randrange(3, 32000) for _ in range(20)]  # 68 tokens: 4 full blocks + 4
    ref_b = reference_greedy(RunSpec("llama-tiny", 0, [(0, 4)], [req_b], max_new_tokens=8))[0]

    model, _ = _instance()
    store = GlobalKVStore(num_layers=4, memory_bytes=0, disk_dir=tmp_path)  # every load from disk
    ns = "llama-tiny|fp32|seed0"
    with LayerwisePrefill(store) as pipe:
        # Prefill instance A computes request A and stores its 3 full blocks.
        _, kv_a = _instance()
        a = EnginePrefill(model, kv_a, BS, ns).prefill(store, pipe, req_a, list(range(5)))
        assert (a.cached_tokens, a.computed_tokens) == (0, 58)
        # Prefill instance B gets request B: the shared 48 tokens come from the store.
        _, kv_b = _instance()
        b = EnginePrefill(model, kv_b, BS, ns).prefill(store, pipe, req_b, list(range(5)))
        assert (b.cached_tokens, b.computed_tokens) == (48, 20)
        assert b.next_token == ref_b[0]
        # Decode instance D takes request B over through the store: all 4 full blocks loaded,
        # only the 4-token tail recomputed; different block ids than B used.
        _, kv_d = _instance()
        blocks_d = [9, 3, 12, 7, 1]
        d = EnginePrefill(model, kv_d, BS, ns).prefill(store, pipe, req_b, blocks_d)
        assert (d.cached_tokens, d.computed_tokens) == (64, 4)
        assert _decode(model, kv_d, len(req_b), d.next_token, blocks_d, 8) == ref_b
        assert store.stats().corrupt_dropped == 0 and store.stats().disk_hits == 4 * (3 + 4)
        # A second hand-off after block 2's layer-3 file rotted on disk: detected when layer 3
        # loads, dropped, and the prefill recomputes from block 2 on -- same tokens.
        from llmplan.kvstore.hashing import block_hashes

        victim = store.disk.path((block_hashes(req_b, BS, ns)[2], 3))
        data = bytearray(victim.read_bytes())
        data[200] ^= 0xFF
        victim.write_bytes(bytes(data))
        _, kv_e = _instance()
        e = EnginePrefill(model, kv_e, BS, ns).prefill(store, pipe, req_b, blocks_d)
        assert store.stats().corrupt_dropped == 1
        assert (e.cached_tokens, e.computed_tokens) == (32, 36)
        assert _decode(model, kv_e, len(req_b), e.next_token, blocks_d, 8) == ref_b
