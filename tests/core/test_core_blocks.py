"""BlockManager: allocation, growth, exhaustion and freeing."""

import pytest

from llmplan.runtime.core import BlockManager, SeqState, blocks_for
from llmplan.workload.types import RequestSpec


def _seq(rid: int = 0) -> SeqState:
    return SeqState(spec=RequestSpec(rid, 0.0, 10, 5))


def test_blocks_for_rounds_up():
    assert [blocks_for(t, 16) for t in (0, 1, 16, 17, 32, 33)] == [0, 1, 1, 2, 2, 3]


def test_ensure_grows_to_token_capacity_and_free_returns_every_block():
    bm = BlockManager(num_blocks=10, block_size=4)
    a, b = _seq(0), _seq(1)
    assert bm.ensure(a, 9)  # 3 blocks
    assert len(a.block_ids) == 3 and bm.num_free == 7
    assert bm.ensure(a, 12)  # still fits in 3 blocks
    assert len(a.block_ids) == 3
    assert bm.ensure(a, 13) and len(a.block_ids) == 4
    assert bm.ensure(b, 20) and len(b.block_ids) == 5
    assert not set(a.block_ids) & set(b.block_ids)
    assert bm.num_used == 9
    assert bm.free(a) == 4 and a.block_ids == []
    assert bm.free(b) == 5
    assert bm.num_free == 10
    assert sorted(bm._free) == list(range(10))


def test_ensure_refuses_without_partial_allocation():
    bm = BlockManager(num_blocks=4, block_size=4)
    a = _seq()
    assert bm.ensure(a, 8)
    b = _seq(1)
    assert not bm.ensure(b, 12)  # needs 3, only 2 free
    assert b.block_ids == [] and bm.num_free == 2


def test_watermark_in_can_allocate():
    bm = BlockManager(num_blocks=10, block_size=16)
    assert bm.can_allocate(9, watermark=1)
    assert not bm.can_allocate(10, watermark=1)


@pytest.mark.parametrize("n,bs", [(0, 16), (4, 0)])
def test_bad_sizes_raise(n, bs):
    with pytest.raises(ValueError):
        BlockManager(n, bs)


def test_contiguous_manager_keeps_growing_tables_consecutive():
    """32 sequences admitted one after another, then grown a block at a time in turn (the
    decode pattern that interleaves the stack allocator's ids): each table stays one run of ids
    while the expected lengths fit the pool."""
    from llmplan.runtime.core.blocks import ContiguousBlockManager

    bm = ContiguousBlockManager(num_blocks=904, block_size=16)
    seqs = [SeqState(spec=RequestSpec(i, 0.0, 32 + 15 * i, 32 + 7 * i)) for i in range(32)]
    for s in seqs:
        assert bm.ensure(s, s.spec.prompt_tokens)
    for t in range(max(s.spec.output_tokens for s in seqs)):
        for s in seqs:
            if t < s.spec.output_tokens:
                assert bm.ensure(s, s.spec.prompt_tokens + t + 1)
    for s in seqs:
        ids = s.block_ids
        assert ids == list(range(ids[0], ids[0] + len(ids))), f"sequence {s.spec.rid}: {ids}"
        assert len(ids) == blocks_for(s.spec.prompt_tokens + s.spec.output_tokens, 16)
    held = [b for s in seqs for b in s.block_ids]
    assert len(set(held)) == len(held) and bm.num_free == 904 - len(held)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("prefix_caching", [False, True])
def test_contiguous_manager_counts_like_the_stack(seed, prefix_caching):
    """Random admissions, growth and frees (with shared prompts when caching): the contiguous
    manager refuses and frees exactly as the stack does; no block is held twice."""
    import random

    from llmplan.runtime.core.blocks import ContiguousBlockManager

    rng = random.Random(seed)
    managers = [BlockManager(64, 4, prefix_caching), ContiguousBlockManager(64, 4, prefix_caching)]
    live: list[list[SeqState]] = [[], []]
    prompts = [[rng.randrange(50) for _ in range(rng.randint(1, 30))] for _ in range(5)]
    for step in range(400):
        op = rng.random()
        if op < 0.3 or not live[0]:
            p, out = rng.choice(prompts), rng.randint(1, 40)
            for bm, seqs in zip(managers, live, strict=True):
                s = SeqState(spec=RequestSpec(step, 0.0, len(p), out), prompt_token_ids=list(p))
                cached = bm.lookup(s, len(p))
                if bm.ensure(s, 0) and bm.num_free >= len(cached):
                    bm.take_cached(s, cached, len(p))
                seqs.append(s)
            continue
        k = rng.randrange(len(live[0]))
        if op < 0.85:
            grow = rng.randint(1, 12)
            got = []
            for bm, seqs in zip(managers, live, strict=True):
                s = seqs[k]
                got.append(bm.ensure(s, len(s.block_ids) * 4 + grow))
                if got[-1]:
                    bm.register(s, min(len(s.block_ids) * 4, s.spec.prompt_tokens))
            assert got[0] == got[1]
        else:
            freed = [bm.free(seqs.pop(k)) for bm, seqs in zip(managers, live, strict=True)]
            assert freed[0] == freed[1]
        assert managers[0].num_free == managers[1].num_free
        assert managers[0].can_allocate(3) == managers[1].can_allocate(3)
        owned = [b for s in live[1] for b in s.block_ids]
        if not prefix_caching:
            assert len(set(owned)) == len(owned)
        assert all(0 <= b < 64 for b in owned)
