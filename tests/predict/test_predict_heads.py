"""The objectives and metrics behind the rank and quantile heads (issue 22), on numbers whose
answer follows from the definition: no model in the loop here (see test_predict_learned.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau, spearmanr

from llmplan.errors import LlmplanError
from llmplan.predict.evaluate import booking_scores, rank_correlations, schedule_scores
from llmplan.predict.interface import LengthPrediction
from llmplan.predict.model import parse_heads
from llmplan.predict.train import conformal_offsets, pinball_loss, ranknet_loss


def test_ranknet_loss_rewards_the_true_order() -> None:
    y = torch.log1p(torch.tensor([10.0, 300.0, 40.0, 2000.0]))
    right = ranknet_loss(y.clone(), y)
    wrong = ranknet_loss(-y, y)
    assert float(right) < float(np.log(2)) < float(wrong)
    # a single pair: exactly log(1 + exp(-(s_long - s_short)))
    one = ranknet_loss(torch.tensor([0.0, 1.5]), torch.tensor([1.0, 2.0]))
    assert float(one) == pytest.approx(np.log1p(np.exp(-1.5)))
    # ties carry no pair: zero loss, still differentiable
    s = torch.tensor([0.3, -0.2], requires_grad=True)
    tied = ranknet_loss(s, torch.tensor([5.0, 5.0]))
    tied.backward()
    assert float(tied.detach()) == 0.0 and s.grad is not None


def test_pinball_loss_is_minimised_at_the_quantile() -> None:
    rng = np.random.default_rng(0)
    y = torch.tensor(rng.normal(5.0, 1.0, 4000), dtype=torch.float32)
    grid = np.linspace(3.0, 7.0, 161)
    for k, q in enumerate((0.5, 0.9)):
        losses = []
        for c in grid:
            pred = torch.full((len(y), 2), float(c))
            # only column k matters for its own quantile; the sum's argmin over c is then the quantile
            losses.append(float(pinball_loss(pred[:, k : k + 1], y, quantiles=(q,))))
        best = grid[int(np.argmin(losses))]
        assert best == pytest.approx(float(np.quantile(y.numpy(), q)), abs=0.05)


def test_conformal_offsets_reach_the_target_coverage_on_fresh_data() -> None:
    rng = np.random.default_rng(1)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.uniform(3, 7, n)
        y = x + rng.normal(0, 0.8, n)
        # a biased, too-narrow quantile model: p50 = x - 0.3, p90 = x + 0.2 (true p90 is x + 1.03)
        return np.stack([x - 0.3, x + 0.2], axis=1), y

    pred, y = draw(2000)
    cal = conformal_offsets(pred, y)
    assert cal["coverage_before"][1] < 0.8
    assert cal["coverage_after"][0] >= 0.5 and cal["coverage_after"][1] >= 0.9
    fresh_pred, fresh_y = draw(5000)
    cov = [float(np.mean(fresh_y <= fresh_pred[:, k] + cal["offsets_log"][k])) for k in range(2)]
    assert abs(cov[0] - 0.5) < 0.03 and abs(cov[1] - 0.9) < 0.03


def test_rank_and_booking_metrics() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(1, 2000, 300)
    rho, tau = rank_correlations(y.astype(float), y)
    assert rho == pytest.approx(1.0) and tau == pytest.approx(1.0)
    noisy = np.log(y) + rng.normal(0, 1.0, len(y))
    rho, tau = rank_correlations(noisy, y)
    assert rho == pytest.approx(spearmanr(noisy, y).statistic)
    assert tau == pytest.approx(kendalltau(noisy, y).statistic)
    assert 0 < tau < rho < 1
    assert rank_correlations([5.0] * len(y), y) == (None, None)
    b = booking_scores(2 * y, y)
    assert b["coverage"] == 1.0 and b["short"] == 0.0
    assert b["overbook_mean"] == pytest.approx(2.0) and b["booked_per_needed"] == pytest.approx(2.0)
    half = booking_scores(np.where(np.arange(len(y)) % 2 == 0, y, y - 1), y)
    assert half["short"] == pytest.approx(0.5)


def test_schedule_scores_use_rank_scores_and_upper_with_fallbacks() -> None:
    y = [10, 20, 30, 40]
    # lengths say the reverse order, the rank score the right one: the rank score wins
    p = LengthPrediction([0] * 4, [40, 30, 20, 10], rank_scores=[1.0, 2.0, 3.0, 4.0], upper=[5, 25, 25, 80])
    s = schedule_scores(p, y)
    assert s["spearman"] == pytest.approx(1.0)
    # booked: max(upper, point) = 40, 30, 25, 80 -> only the third (30 > 25) is short
    assert s["upper_coverage"] == pytest.approx(0.75) and s["upper_short"] == pytest.approx(0.25)
    assert s["point_coverage"] == pytest.approx(0.5)
    # without rank_scores/upper the point estimate orders and books
    q = schedule_scores(LengthPrediction([0] * 4, [40, 30, 20, 10]), y)
    assert q["spearman"] == pytest.approx(-1.0)
    assert q["upper_coverage"] == pytest.approx(0.5)


def test_parse_heads() -> None:
    assert parse_heads(None) == ["bucket", "rank", "quantile"]
    assert parse_heads("quantile, bucket") == ["bucket", "quantile"]
    with pytest.raises(LlmplanError, match="unknown head"):
        parse_heads("bucket,vibes")
    with pytest.raises(LlmplanError, match="lacks bucket"):
        parse_heads("rank,quantile")


@pytest.mark.slow  # reads and tokenizes 1,500 real ShareGPT records (~10 s)
def test_eval_metrics_on_real_sharegpt_slice() -> None:
    """`evaluate` on real ShareGPT pairs: every schedule metric equals its definition recomputed from
    the predictions, and the oracle (true lengths) is perfect by construction."""
    from llmplan.predict.baselines import MajorityPredictor, PromptLengthGBM
    from llmplan.predict.data import load_sharegpt, split_dataset
    from llmplan.predict.evaluate import as_requests, evaluate
    from llmplan.predict.interface import DEFAULT_BUCKET_EDGES as EDGES
    from llmplan.predict.interface import rank_scores_of, upper_of
    from llmplan.predict.oracle import OraclePredictor

    ds = load_sharegpt(limit=1500)
    split = split_dataset(ds, 0.3, 0)
    gbm, maj = PromptLengthGBM(split.train, EDGES), MajorityPredictor(split.train, EDGES)
    oracle = OraclePredictor()
    rows = evaluate([gbm, maj, oracle], {"test": split.test}, EDGES, latency_n=0)
    y = np.asarray(split.test.output_tokens)
    by = {r.predictor: r for r in rows}
    for pr in (gbm, maj, oracle):
        r, p = by[pr.name], pr.predict(as_requests(split.test))
        rank, upper = np.asarray(rank_scores_of(p)), np.asarray(upper_of(p))
        if np.ptp(rank):
            assert r.spearman == pytest.approx(spearmanr(rank, y).statistic)
            assert r.kendall == pytest.approx(kendalltau(rank, y).statistic)
        else:
            assert r.spearman is None and r.kendall is None
        assert r.point_coverage == pytest.approx(np.mean(y <= np.asarray(p.lengths)))
        assert r.upper_coverage == pytest.approx(np.mean(y <= upper))
        assert r.upper_short == pytest.approx(np.mean(y > upper))
        assert r.overbook_mean == pytest.approx(np.mean(upper / np.maximum(y, 1)))
        assert r.booked_per_needed == pytest.approx(upper.sum() / y.sum())
    o = by[oracle.name]
    assert o.spearman == pytest.approx(1.0) and o.upper_coverage == 1.0 and o.booked_per_needed == 1.0
    assert by[maj.name].spearman is None  # a constant gives no order
    assert 0 < by[gbm.name].spearman < 0.5  # prompt length alone orders ShareGPT replies weakly


def test_recorder_also_records_replies_longer_than_the_upper_bound(tmp_path) -> None:
    import json

    from llmplan.predict.interface import DEFAULT_BUCKET_EDGES as EDGES
    from llmplan.predict.online import MispredictionRecorder

    rec = MispredictionRecorder(tmp_path / "m.jsonl", EDGES)
    from llmplan.predict.buckets import bucket_of

    b300 = int(bucket_of([300], EDGES)[0])  # [256,512), as 450 is
    assert not rec.observe("right bucket, within the bound", b300, 300, predicted_upper=400)
    assert rec.observe("right bucket, past the bound", b300, 450, predicted_upper=400)
    assert rec.observe("wrong bucket", b300 - 1, 300, predicted_upper=400)
    assert not rec.observe("no bound given", b300, 450)
    rows = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["right bucket, past the bound", "wrong bucket"]
    assert rows[0]["predicted_upper"] == 400 and rows[0]["true_bucket"] == b300
    assert rec.seen == 4 and rec.recorded == 2
