"""Issue 22: predictions carry a rank score (what SJF / S3 / SLO-ODBS order by) and a calibrated
upper bound (what KV booking reserves), beside the point estimate; fallbacks keep old predictors."""

from __future__ import annotations

import numpy as np
import pytest

from llmplan.batch import get_policy
from llmplan.predict.interface import (
    DEFAULT_BUCKET_EDGES,
    LengthPrediction,
    apply_prediction,
    rank_scores_of,
    upper_of,
)
from llmplan.predict.oracle import ConstPredictor, NoisyOraclePredictor, OraclePredictor
from llmplan.runtime.core import AdmissionView, SeqState
from llmplan.runtime.sim import LinearCost, SimConfig, simulate
from llmplan.workload.types import SLO, RequestSpec, Workload


class _Fixed:
    """A predictor that answers per request from functions of the true length (a test double of
    the *input*, the policy and scheduler under test are real)."""

    def __init__(self, length, rank=None, upper=None, name="fixed"):
        self.length, self.rank, self.upper, self.name = length, rank, upper, name
        self.bucket_edges = DEFAULT_BUCKET_EDGES

    def predict(self, items):
        truth = [s.output_tokens for s in items]
        return LengthPrediction(
            [0] * len(items),
            [self.length(t) for t in truth],
            None if self.rank is None else [self.rank(t) for t in truth],
            None if self.upper is None else [self.upper(t) for t in truth],
        )


def test_fallbacks_use_the_point_estimate_and_upper_never_undercuts_it():
    p = LengthPrediction([0, 1], [5, 0])
    assert rank_scores_of(p) == [5.0, 0.0] and upper_of(p) == [5, 1]
    q = LengthPrediction([0, 1], [5, 9], rank_scores=[-1.5, 2.0], upper=[3, 20])
    assert rank_scores_of(q) == [-1.5, 2.0] and upper_of(q) == [5, 20]  # 3 < point 5 -> 5
    with pytest.raises(ValueError, match="rank_scores has 1 items"):
        rank_scores_of(LengthPrediction([0, 1], [5, 9], rank_scores=[1.0]))
    with pytest.raises(ValueError, match="upper has 3 items"):
        upper_of(LengthPrediction([0, 1], [5, 9], upper=[1, 2, 3]))


def test_apply_prediction_fills_seq_state_and_leaves_absent_fields_none():
    seqs = [SeqState(spec=RequestSpec(i, 0.0, 4, 10)) for i in range(2)]
    apply_prediction(seqs, LengthPrediction([1, 2], [0, 30], rank_scores=[0.3, 0.1], upper=[8, 10]))
    assert [(s.predicted_output_tokens, s.predicted_rank, s.predicted_upper) for s in seqs] == [
        (1, 0.3, 8), (30, 0.1, 30)]  # fmt: skip
    assert [s.booked_output_tokens for s in seqs] == [8, 30]
    apply_prediction(seqs, LengthPrediction([1, 2], [7, 9]))
    assert [(s.predicted_rank, s.predicted_upper, s.booked_output_tokens) for s in seqs] == [
        (None, None, 7), (None, None, 9)]  # fmt: skip
    with pytest.raises(ValueError, match="1 items for 2 requests"):
        apply_prediction(seqs, LengthPrediction([1], [7]))


def test_oracle_const_and_noisy_fill_rank_and_upper():
    specs = [RequestSpec(i, 0.0, 4, n) for i, n in enumerate([300, 7, 40])]
    o = OraclePredictor().predict(specs)
    assert o.rank_scores == [300.0, 7.0, 40.0] and o.upper == [300, 7, 40]
    c = ConstPredictor(64).predict(specs)
    assert c.rank_scores == [0.0, 0.0, 0.0] and c.upper == [64, 64, 64]
    rng = np.random.default_rng(0)
    many = [RequestSpec(i, 0.0, 4, int(x)) for i, x in enumerate(rng.integers(1, 3000, 500))]
    n = NoisyOraclePredictor(0.6, seed=1).predict(many)
    # Rank follows the predicted bucket, so its order agrees with the representative lengths.
    order_rank = np.argsort(n.rank_scores, kind="stable")
    assert np.all(np.diff(np.asarray(n.lengths)[order_rank]) >= 0)
    assert n.upper == n.lengths  # the bucket's upper edge already is the conservative bound


def _queueing_workload(n=40, seed=3):
    rng = np.random.default_rng(seed)
    outs = rng.integers(5, 400, n)
    # One burst with one deadline: slo-odbs-cb's deadline order ties, so the length order decides.
    return Workload("q", [RequestSpec(i, 0.0, 32, int(o), slo=SLO(e2e_s=30.0)) for i, o in enumerate(outs)])


def _finish_times(res):
    return {r.rid: r.finish_s for r in res.records}


@pytest.mark.parametrize("policy", ["sjf", "s3", "slo-odbs-cb"])
def test_a_right_rank_with_equal_lengths_gives_the_oracle_order(policy):
    wl = _queueing_workload()
    cfg = dict(instances=1, policy=policy, cost=LinearCost(), num_blocks=4000, max_num_seqs=4)
    oracle = simulate(wl, SimConfig(predictor="oracle", **cfg))
    # Every point estimate and bound is the same 500 tokens; only the rank knows the truth.
    ranked = simulate(wl, SimConfig(predictor=_Fixed(lambda t: 500, rank=float, upper=lambda t: 500), **cfg))
    const = simulate(wl, SimConfig(predictor="const:500", **cfg))
    assert _finish_times(ranked) == _finish_times(oracle)
    assert _finish_times(const) != _finish_times(oracle)


def _two_long(policy):
    # 10 blocks x 16 slots = 160 tokens. Each request needs 16 + 96 = 112 slots (7 blocks).
    wl = Workload("two", [RequestSpec(i, 0.0, 16, 96) for i in range(2)])
    half = _Fixed(lambda t: t // 2, name="half")  # books 16 + 48 = 64 (4 blocks): both fit, then grow
    bound = _Fixed(lambda t: t // 2, upper=lambda t: t, name="half+upper")  # books 112: one at a time
    cfg = dict(instances=1, policy=policy, cost=LinearCost(), num_blocks=10, block_size=16, watermark=0.0)
    return simulate(wl, SimConfig(predictor=half, **cfg)), simulate(wl, SimConfig(predictor=bound, **cfg))


@pytest.mark.parametrize("policy", ["s3", "slo-odbs-cb"])
def test_booking_the_upper_bound_avoids_the_preemption_the_point_estimate_causes(policy):
    point, upper = _two_long(policy)
    assert point.counters["preemptions"] >= 1
    assert point.counters["mispredictions"] == 2  # both outgrew their 48-token booking
    assert upper.counters["preemptions"] == 0 and upper.counters["mispredictions"] == 0
    assert point.counters["recompute_tokens"] > 0 == upper.counters["recompute_tokens"]
    assert all(r.status == "ok" and r.output_tokens == 96 for r in point.records + upper.records)


def test_static_slo_odbs_sizes_the_batch_by_the_upper_bound():
    pol = get_policy("slo-odbs", threshold=100.0)
    seqs = []
    for i in range(4):
        s = SeqState(spec=RequestSpec(i, 0.0, 10, 50, slo=SLO(e2e_s=10.0)))
        s.predicted_output_tokens, s.predicted_upper, s.arrival_seq = 10, 90, i
        seqs.append(s)
    view = AdmissionView(free_blocks=25, total_blocks=25, block_size=16, num_running=0, max_num_seqs=64,
                         token_budget=8192)
    # 400 tokens // (10 + 90) = 4 members; booking the point estimate would allow 400 // 20 = 20.
    assert len(pol.select(seqs, view, 0.0)) == 4
    view3 = AdmissionView(free_blocks=20, total_blocks=20, block_size=16, num_running=0, max_num_seqs=64,
                          token_budget=8192)
    assert len(pol.select(seqs, view3, 0.0)) == 3  # 320 // 100


@pytest.mark.parametrize("policy", ["s3", "slo-odbs-cb"])
def test_book_point_books_the_point_estimate_of_a_predictor_with_an_upper_bound(policy):
    from llmplan.predict.oracle import PointBooking, parse_predictor

    wl = Workload("two", [RequestSpec(i, 0.0, 16, 96) for i in range(2)])
    bound = _Fixed(lambda t: t // 2, rank=lambda t: -t, upper=lambda t: t, name="half+upper")
    cfg = dict(instances=1, policy=policy, cost=LinearCost(), num_blocks=10, block_size=16, watermark=0.0)
    upper = simulate(wl, SimConfig(predictor=bound, **cfg))
    point = simulate(wl, SimConfig(predictor=parse_predictor(PointBooking(bound)), **cfg))
    # The same order and point estimate; only the booking differs: 64 slots each (both admitted at
    # once, then they outgrow it) instead of 112 (one at a time).
    assert upper.counters["mispredictions"] == 0 and upper.counters["preemptions"] == 0
    assert point.counters["mispredictions"] == 2 and point.counters["preemptions"] >= 1
    p = PointBooking(bound).predict(wl.requests)
    assert p.upper is None and p.rank_scores == [-96.0, -96.0] and p.lengths == [48, 48]


def test_book_option_in_a_predictor_spec():
    from llmplan.errors import LlmplanError
    from llmplan.predict.oracle import PointBooking, parse_predictor

    specs = [RequestSpec(i, 0.0, 4, n) for i, n in enumerate((3, 40))]
    pt = parse_predictor("oracle,book=point")
    assert isinstance(pt, PointBooking) and pt.name == "oracle,book=point"
    assert pt.predict(specs).upper is None and pt.predict(specs).lengths == [3, 40]
    assert not isinstance(parse_predictor("oracle, book=upper"), PointBooking)
    assert parse_predictor("const:64,BOOK=POINT").predict(specs).lengths == [64, 64]
    with pytest.raises(LlmplanError, match="book=point or book=upper"):
        parse_predictor("oracle,book=p99")
    with pytest.raises(LlmplanError, match="unknown predictor"):
        parse_predictor("oracle,window=3")
