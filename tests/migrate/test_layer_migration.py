"""Layer-level weight migration across gloo stage workers: greedy tokens identical to one process."""

from __future__ import annotations

import random

import pytest

from llmplan.errors import LlmplanError
from llmplan.runtime.workers.scripted import (
    MigrationOrder,
    RunSpec,
    apply_move,
    reference_greedy,
    run_pipeline,
    validate_ranges,
)


def _spec(ranges, migrations):
    rng = random.Random(0)
    prompts = [[rng.randrange(3, 32000) for _ in range(n)] for n in (5, 23, 40, 9)]
    # Requests 2 and 3 arrive mid-run: one before, one after the first migration.
    return RunSpec("llama-tiny", seed=0, ranges=ranges, prompts=prompts, max_new_tokens=10,
                   arrivals=[0, 0, 2, 5], migrations=migrations)


@pytest.mark.slow
def test_greedy_tokens_identical_with_layer_migrations_mid_run(tmp_path):
    """Two stage processes; layer 1 moves 0->1 at step 3 (a stage's tail to the next stage) and
    back 1->0 at step 6 (a stage's head to the previous one), with its weights and in-flight KV.
    (Moving the weights without the KV, or the wrong blocks, changes the tokens.)"""
    spec = _spec([(0, 2), (2, 4)], [MigrationOrder(3, (1,), 0, 1), MigrationOrder(6, (1,), 1, 0)])
    ref = reference_greedy(spec)
    run = run_pipeline(spec, world=2, workdir=tmp_path)
    assert run.tokens == ref
    assert all(len(t) == 10 for t in ref)
    assert [m.step for m in run.migrations] == [3, 6]
    assert run.final_ranges == [(0, 2), (2, 4)]
    for m in run.migrations:
        assert m.bytes > 0 and m.measured_s > 0 and m.estimate_s > 0 and m.link_bytes_per_s > 0
    # Same layer both times, but more requests are in flight at step 6: more KV moves.
    assert run.migrations[1].bytes > run.migrations[0].bytes


def test_apply_move_boundaries():
    r = [(0, 4), (4, 8), (8, 12)]
    assert apply_move(r, (3,), 0, 1) == [(0, 3), (3, 8), (8, 12)]
    assert apply_move(r, (4, 5), 1, 0) == [(0, 6), (6, 8), (8, 12)]
    assert apply_move(r, (6, 7), 1, 2) == [(0, 4), (4, 6), (6, 12)]


@pytest.mark.parametrize(
    "call",
    [
        lambda: apply_move([(0, 4), (4, 8)], (2,), 0, 1),  # not a boundary layer
        lambda: apply_move([(0, 4), (4, 8), (8, 9)], (3,), 0, 2),  # not adjacent
        lambda: apply_move([(0, 1), (1, 8)], (0,), 0, 1),  # would empty the stage
        lambda: validate_ranges([(0, 2), (3, 4)], 4),
        lambda: validate_ranges([(0, 2), (2, 3)], 4),
        lambda: run_pipeline(_spec([(0, 4)], []), world=2, workdir="."),
    ],
)
def test_bad_migration_orders_are_clear_errors(call):
    with pytest.raises(LlmplanError):
        call()
