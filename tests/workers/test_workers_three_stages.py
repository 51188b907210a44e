"""Three workers (a middle stage that both receives and forwards), four migrations over both
links mid-run, driven through the engine's own step loop: tokens identical to one process."""

from __future__ import annotations

import pytest

from llmplan.runtime.engine.api import GenerateRequest, SamplingParams
from llmplan.runtime.factory import build_engine

pytestmark = pytest.mark.slow


def _run(aeng, migrate_at=None) -> dict[int, list[int]]:
    eng = aeng.engine
    outs: dict[int, list[int]] = {}
    for i, n in enumerate([5, 23, 40, 9]):
        prompt = [(7 * i + j * 13) % 31000 + 3 for j in range(n)]
        eng.add_request(GenerateRequest(f"r{i}", prompt, SamplingParams(max_tokens=12, temperature=0,
                                                                         ignore_eos=True)),
                        lambda o, i=i: outs.setdefault(i, []).extend(o.new_token_ids))
    step = 0
    while eng.has_work():
        if migrate_at and step in migrate_at:
            eng.executor.migrate(*migrate_at[step])
        eng.step()
        step += 1
    return outs


def test_three_workers_with_migrations_on_both_links_match_one_process():
    ref = _run(build_engine(dummy_weights="llama-tiny", num_kv_blocks=64))
    engine = build_engine(dummy_weights="llama-tiny", num_kv_blocks=64, workers=3)
    ex = engine.engine.executor
    try:
        assert ex.ranges == [(0, 1), (1, 2), (2, 4)]
        assert set(ex.links) == {(0, 1), (1, 2)}
        out = _run(engine, {2: ((2,), 2, 1), 4: ((1,), 1, 0), 7: ((1,), 0, 1), 9: ((2,), 1, 2)})
        assert out == ref and all(len(t) == 12 for t in out.values())
        assert [(r.src, r.dst) for r in ex.records] == [(2, 1), (1, 0), (0, 1), (1, 2)]
        assert ex.ranges == [(0, 1), (1, 2), (2, 4)]
        assert all(b > 0 for b in ex.stats().busy_s_total)
    finally:
        ex.close()
