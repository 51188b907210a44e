"""The controller sizes a live worker's layer move by its layers' weights and KV, not by the
non-movable weights (embedding, LM head) that its memory load also counts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from llmplan.migrate.controller import ControllerConfig, MigrationController, WorkerLoad


def test_layer_move_bytes_count_kv_in_use_not_the_lm_head():
    lwb, kv = 3e6, 1.2e6  # one layer's weights; KV in use over the worker's 3 layers
    head = 65e6  # embedding + LM head on rank 0: counted in memory, never moved
    w0 = WorkerLoad("w0", 0.6, 3 * lwb + head + kv, 12e9, layers=(0, 3), layer_weight_bytes=lwb, kv_bytes=kv)
    w1 = WorkerLoad("w1", 0.05, lwb + kv / 3, 12e9, layers=(3, 4), layer_weight_bytes=lwb, kv_bytes=kv / 3)
    ctl = MigrationController(ControllerConfig(period_s=1.0, sync_s=0.0), bandwidth=lambda a, b: (1e9, 0.0))
    [d] = ctl.step(0.0, [w0, w1])
    assert (d.kind, d.layers, d.src, d.dst) == ("layer", (2,), "w0", "w1")
    assert d.bytes == pytest.approx(lwb + kv / 3)
    assert d.est_time_s == pytest.approx((lwb + kv / 3) / 1e9)


def test_a_decision_carries_the_workers_ranks_so_the_executor_never_parses_a_name():
    lwb, kv = 3e6, 1.2e6
    w0 = WorkerLoad("stage-a", 0.6, 3 * lwb + kv, 12e9, layers=(0, 3), layer_weight_bytes=lwb, kv_bytes=kv,
                    rank=0)
    w1 = WorkerLoad("stage-b", 0.05, lwb + kv / 3, 12e9, layers=(3, 4), layer_weight_bytes=lwb,
                    kv_bytes=kv / 3, rank=1)
    ctl = MigrationController(ControllerConfig(period_s=1.0, sync_s=0.0), bandwidth=lambda a, b: (1e9, 0.0))
    [d] = ctl.step(0.0, [w0, w1])
    assert (d.kind, d.src, d.dst, d.src_rank, d.dst_rank) == ("layer", "stage-a", "stage-b", 0, 1)
    # Simulated instances have names only: their decisions carry no ranks.
    ctl = MigrationController(ControllerConfig(period_s=1.0, sync_s=0.0), bandwidth=lambda a, b: (1e9, 0.0))
    [d] = ctl.step(0.0, [replace(w0, rank=None), replace(w1, rank=None)])
    assert (d.src, d.dst, d.src_rank, d.dst_rank) == ("stage-a", "stage-b", None, None)
