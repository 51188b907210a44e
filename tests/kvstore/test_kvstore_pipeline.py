"""Layer-wise pipelined prefill: reusing stored prefix KV gives the same result as recomputing."""

from __future__ import annotations

import pytest

from llmplan.kvstore.hashing import block_hashes
from llmplan.kvstore.pipeline import LayerwisePrefill
from llmplan.kvstore.reference_stack import ReferenceStack
from llmplan.kvstore.store import GlobalKVStore

pytestmark = pytest.mark.slow  # heavy module fixtures (servers, models, fits): full suite only


BS = 4


def _setup(tmp_path, memory_bytes=1 << 24):
    stack = ReferenceStack(num_layers=3, hidden=32, num_heads=4, num_kv_heads=2, seed=1)
    store = GlobalKVStore(num_layers=3, memory_bytes=memory_bytes, disk_dir=tmp_path)
    return stack, store


def _prefill_first(stack, store, tokens):
    """A first request computes everything and writes its blocks back through the pipeline."""
    with LayerwisePrefill(store) as pipe:
        res = pipe.run(stack.compute, stack.embed(tokens), 3, [], block_hashes(tokens, BS), BS)
    assert res is not None
    return res


def test_prefix_hit_equals_full_recompute(tmp_path):
    stack, store = _setup(tmp_path, memory_bytes=0)  # force every load through the disk tier
    shared = list(range(1, 17))  # 4 blocks
    first = shared + [50, 51, 52, 53, 54]
    _prefill_first(stack, store, first)

    second = shared + [60, 61, 62, 63, 64, 65, 66, 67, 68]
    keys = block_hashes(second, BS)
    hit = store.match_prefix(keys)
    assert hit == 4
    p = hit * BS
    before = store.stats()
    with LayerwisePrefill(store) as pipe:
        res = pipe.run(stack.compute, stack.embed(second[p:]), 3, keys[:hit], keys[hit:], BS)
    assert res is not None
    after = store.stats()
    assert after.disk_hits - before.disk_hits == 3 * hit  # each (block, layer) loaded exactly once
    ref_hidden, ref_kv = stack.prefill(stack.embed(second))
    assert (res.hidden - ref_hidden[p:]).abs().max().item() <= 1e-5
    for layer in range(3):
        assert (res.past_kv[layer] - ref_kv[layer]).abs().max().item() <= 1e-5
    # The suffix's full blocks were written back and match a from-scratch computation.
    assert store.match_prefix(keys) == len(keys)
    for j, k in enumerate(keys[hit:], start=hit):
        got = store.get(k, 2)
        assert (got - ref_kv[2][:, j * BS:(j + 1) * BS]).abs().max().item() <= 1e-5
    t = res.timing
    assert t.load_s > 0 and 0.0 <= t.load_overlap <= 1.0 and t.store_s > 0


def test_corrupt_block_midway_aborts_and_recompute_is_exact(tmp_path):
    stack, store = _setup(tmp_path, memory_bytes=0)
    tokens = list(range(1, 17))
    _prefill_first(stack, store, tokens)
    keys = block_hashes(tokens + [90, 91], BS)
    victim = store.disk.path((keys[2], 1))  # layer 1 of block 2: found only after layer 0 ran
    data = bytearray(victim.read_bytes())
    data[-40] ^= 0x10
    victim.write_bytes(bytes(data))

    hit = store.match_prefix(keys)
    assert hit == 4  # the index still lists it: corruption is only visible on read
    with LayerwisePrefill(store) as pipe:
        res = pipe.run(stack.compute, stack.embed([90, 91]), 3, keys[:hit], [], BS)
        assert res is None  # never computed on top of a corrupt block
        assert store.stats().corrupt_dropped == 1
        hit = store.match_prefix(keys)
        assert hit == 2  # blocks up to the dropped one remain usable
        toks = tokens + [90, 91]
        res = pipe.run(stack.compute, stack.embed(toks[hit * BS:]), 3, keys[:hit], keys[hit:], BS)
    ref_hidden, _ = stack.prefill(stack.embed(toks))
    assert (res.hidden - ref_hidden[hit * BS:]).abs().max().item() <= 1e-5


def test_loads_overlap_compute(tmp_path):
    """With a compute-heavy layer, prefetching hides most of the load time."""
    stack = ReferenceStack(num_layers=6, hidden=256, num_heads=8, num_kv_heads=2, seed=2)
    store = GlobalKVStore(num_layers=6, memory_bytes=1 << 26)
    tokens = list(range(1, 257))
    keys = block_hashes(tokens, 16)
    with LayerwisePrefill(store) as pipe:
        pipe.run(stack.compute, stack.embed(tokens[:128]), 6, [], keys[:8], 16)
        res = pipe.run(stack.compute, stack.embed(tokens[128:]), 6, keys[:8], keys[8:], 16)
    assert res is not None
    # Only layer 0's load can stall; the other layers' loads ran during compute.
    assert res.timing.load_stall_s < res.timing.compute_s


def test_deeper_prefetch_is_exact_and_bad_depth_is_an_error(tmp_path):
    import pytest

    from llmplan.errors import LlmplanError

    stack, store = _setup(tmp_path)
    tokens = list(range(1, 25))
    _prefill_first(stack, store, tokens)
    keys = block_hashes(tokens + [7, 8, 9, 10], BS)
    with LayerwisePrefill(store, prefetch_depth=3) as pipe:
        res = pipe.run(stack.compute, stack.embed([7, 8, 9, 10]), 3, keys[:6], keys[6:], BS)
    ref, _ = stack.prefill(stack.embed(tokens + [7, 8, 9, 10]))
    assert (res.hidden - ref[24:]).abs().max().item() <= 1e-5
    with pytest.raises(LlmplanError):
        LayerwisePrefill(store, prefetch_depth=0)
