"""`plan --pd` answers the capacity question: the fewest GPUs that hold the target at the
workload's own rate, beside the plan with the best goodput per GPU."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from llmplan.cli.app import app
from llmplan.models import get_model_spec
from llmplan.plan.costmodel import DEFAULT_PARAMS, LinkPerf
from llmplan.plan.pd import (
    LengthStats,
    PDRequest,
    _DecodeModel,
    _fewest_gpus,
    _gpu_groups,
    _layouts,
    _PrefillModel,
    plan_pd,
)
from llmplan.topology import load_topology

STATS = dict(inputs=np.array([1024.0, 2048.0, 512.0]), outputs=np.array([256.0, 128.0, 300.0]))


def test_fewest_gpus_matches_exhaustive_search() -> None:
    spec = get_model_spec("llama-3.1-8b")
    G = load_topology("preset:dgx-h100")
    req = PDRequest(1.0, 0.05, 0.9)
    layouts = _layouts(spec, G, _gpu_groups(G, None), DEFAULT_PARAMS)
    tp1 = [lay for lay, _ in layouts if lay.gpus == 1][0]
    tp2 = [lay for lay, _ in layouts if lay.gpus == 2][0]
    for pl, dl in ((tp1, tp1), (tp1, tp2), (tp2, tp1)):
        for rate in (0.5, 5.0, 20.0, 60.0):
            stats = LengthStats(**STATS, rate=rate)
            pm = _PrefillModel(pl, stats, LinkPerf(math.inf, 0.0, "SELF"), spec, DEFAULT_PARAMS)
            dm = _DecodeModel(dl, stats, req.slo_tpot_s, req.max_num_seqs)
            got = _fewest_gpus(pm, dm, pl, dl, rate, req, 8)
            ok = [
                (n_p * pl.gpus + n_d * dl.gpus, n_p, n_d)
                for n_p in range(1, 9)
                for n_d in range(1, 9)
                if n_p * pl.gpus + n_d * dl.gpus <= 8
                and pm.attainment(rate / n_p, req.slo_ttft_s) * dm.attainment(rate / n_d) >= req.attainment
            ]
            if not ok:
                assert got is None, (pl.label(), dl.label(), rate)
                continue
            assert got is not None
            n_p, n_d, att = got
            assert n_p * pl.gpus + n_d * dl.gpus == min(o[0] for o in ok), (pl.label(), dl.label(), rate)
            assert att >= req.attainment


@pytest.mark.slow
def test_capacity_beside_goodput_per_gpu() -> None:
    spec = get_model_spec("llama-3.1-8b")
    G = load_topology("preset:dgx-h100")
    req = PDRequest(1.0, 0.05, 0.9)
    unit = plan_pd(spec, G, LengthStats(**STATS), req)
    assert unit.capacity is None  # no rate, no capacity question
    low = plan_pd(spec, G, LengthStats(**STATS, rate=0.2 * unit.best.goodput), req)
    assert low.capacity is not None and low.capacity.gpus == 2  # one prefill + one decode instance
    assert low.capacity_attainment >= 0.9
    high = plan_pd(spec, G, LengthStats(**STATS, rate=0.7 * unit.best.goodput), req)
    assert high.capacity is not None and 2 < high.capacity.gpus <= high.best.gpus
    assert high.capacity.goodput >= 0.7 * unit.best.goodput * 0.999  # it serves the rate
    none = plan_pd(spec, G, LengthStats(**STATS, rate=100 * unit.best.goodput), req)
    assert none.capacity is None


def test_cli_prints_and_saves_the_capacity_answer() -> None:
    args = ["plan", "--model", "llama-3.1-8b", "--topology", "preset:dgx-h100", "--pd", "--rate", "2",
            "--slo-ttft", "1", "--slo-tpot", "0.05"]  # fmt: skip
    r = CliRunner().invoke(app, args, catch_exceptions=False, env={"COLUMNS": None})
    assert r.exit_code == 0
    assert "capacity: the fewest GPUs holding attainment 0.9 at 2.00 req/s" in r.stdout
    assert "2 GPU(s) = 1 prefill x H100-SXM TP1xPP1 + 1 decode x" in r.stdout
    d = json.loads(CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False).stdout)
    assert d["capacity"]["gpus"] == 2 and d["capacity"]["attainment_at_rate"] >= 0.9
