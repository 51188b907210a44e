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
