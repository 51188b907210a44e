"""End-to-end on a tiny synthetic slice: real MiniLM + LoRA, trained for a few steps on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llmplan.predict.baselines import MajorityPredictor, PromptLengthGBM
from llmplan.predict.evaluate import evaluate
from llmplan.predict.interface import DEFAULT_BUCKET_EDGES as EDGES
from llmplan.predict.interface import LengthPredictor
from llmplan.predict.learned import LearnedLengthPredictor
from llmplan.predict.online import MispredictionRecorder
from llmplan.predict.train import TrainConfig, train, update
from llmplan.workload.types import RequestSpec

from .synthetic_len import KINDS, SHIFTED, synthetic

torch.set_num_threads(2)
# LoRA training on a real MiniLM: ~8 s on 2 idle cores, minutes when they are shared (2 torch
# threads against other jobs); the full suite runs it, `-m "not slow"` does not.
pytestmark = pytest.mark.slow
# All three heads (the default); a quarter of the training groups (~15 prompts) calibrate the p90.
TINY = TrainConfig(epochs=2, batch_size=8, max_length=16, lr=4e-3, checkpoint_steps=4, calib_frac=0.25)
N_TRAIN = 60


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pred") / "model"
    summary = train(synthetic(N_TRAIN, seed=1), out, config=TINY, show_progress=False)
    return out, summary


def test_learned_beats_both_baselines_on_learnable_signal(trained) -> None:
    out, summary = trained
    tr, te = synthetic(N_TRAIN, seed=1), synthetic(30, seed=2)
    lp = LearnedLengthPredictor(out)
    typed: LengthPredictor = lp  # structural: name, bucket_edges, predict
    assert typed.bucket_edges == EDGES and typed.name
    rows = evaluate(
        [lp, PromptLengthGBM(tr, EDGES), MajorityPredictor(tr, EDGES)], {"test": te}, EDGES, latency_n=8
    )
    learned, gbm, majority = rows
    assert learned.exact >= 0.9
    assert learned.exact > gbm.exact + 0.2 and learned.exact > majority.exact + 0.2
    assert learned.mae_tokens < gbm.mae_tokens
    assert learned.latency_ms_b32 is not None and learned.latency_ms_b32 > 0


def test_rank_and_quantile_heads_order_and_bound_the_lengths(trained) -> None:
    from scipy.stats import spearmanr

    from llmplan.predict.evaluate import head_scores

    out, summary = trained
    assert summary["heads"] == ["bucket", "rank", "quantile"]
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["n"] == summary["calibration"]["n"] >= 10 and len(cal["offsets_log"]) == 2
    assert (out / "calib.jsonl").read_text().count("\n") == cal["n"]
    lp = LearnedLengthPredictor(out)
    te = synthetic(30, seed=2)
    pred = lp.predict(te.prompts)
    assert pred.rank_scores is not None and pred.upper is not None
    assert spearmanr(pred.rank_scores, te.output_tokens).statistic > 0.8
    assert all(u >= n for u, n in zip(pred.upper, pred.lengths, strict=True))
    covered = sum(y <= u for y, u in zip(te.output_tokens, pred.upper, strict=True)) / len(te)
    assert covered >= 0.8
    # the calibrated p90 is the raw p90 shifted by the saved offset, in log space
    heads = lp.head_outputs(te.prompts)
    raw, calibrated = lp.quantiles(heads, calibrated=False), lp.quantiles(heads)
    p50 = heads["quantile"][:, 0].astype(np.float64) + cal["offsets_log"][0]
    p90 = np.maximum(heads["quantile"][:, 1] + cal["offsets_log"][1], p50)
    assert np.allclose(calibrated[:, 1], np.maximum(np.expm1(p90), 1.0), rtol=1e-4)
    assert not np.allclose(raw[:, 1], calibrated[:, 1])
    rows = head_scores(lp, te, "test")
    got = {(r.head, r.output): r for r in rows}
    assert got[("rank", "rank score")].spearman == pytest.approx(
        spearmanr(heads["rank"], te.output_tokens).statistic
    )
    assert got[("quantile", "p90 calibrated")].coverage == pytest.approx(covered)


def test_bucket_only_and_pre_issue22_models_still_load(trained, tmp_path) -> None:
    import shutil

    cfg = TrainConfig(batch_size=8, max_length=16, max_steps=1, heads=("bucket",))
    train(synthetic(16, seed=3), tmp_path / "b", config=cfg, show_progress=False)
    assert not (tmp_path / "b" / "extra_heads.safetensors").exists()
    assert not (tmp_path / "b" / "calibration.json").exists()
    # a model saved before the heads existed has no "heads" key in its config
    meta = json.loads((tmp_path / "b" / "config.json").read_text())
    del meta["model"]["heads"]
    (tmp_path / "b" / "config.json").write_text(json.dumps(meta))
    old = LearnedLengthPredictor(tmp_path / "b")
    pred = old.predict([k.format(t="jazz") for k, _ in KINDS])
    assert old.heads == ["bucket"] and pred.rank_scores is None and pred.upper is None
    assert pred.lengths == [old.representatives[b] for b in pred.buckets]
    # a multi-head model without its calibration file predicts the raw quantiles
    out, _ = trained
    shutil.copytree(out, tmp_path / "m")
    (tmp_path / "m" / "calibration.json").unlink()
    raw = LearnedLengthPredictor(tmp_path / "m")
    assert raw.calibration is None
    prompts = [k.format(t="jazz") for k, _ in KINDS]
    assert raw.predict(prompts).upper == [
        int(np.ceil(v)) for v in raw.quantiles(raw.head_outputs(prompts), calibrated=False)[:, 1]
    ]
    (tmp_path / "m" / "extra_heads.safetensors").unlink()
    from llmplan.errors import LlmplanError

    with pytest.raises(LlmplanError, match="no extra_heads.safetensors"):
        LearnedLengthPredictor(tmp_path / "m")


def test_init_from_fits_new_heads_on_a_frozen_model(trained, tmp_path) -> None:
    from scipy.stats import spearmanr

    out, _ = trained
    # a budget already spent by the feature pass still fits the heads (their epochs take seconds)
    cfg = TrainConfig(max_length=16, calib_frac=0.25, head_epochs=30, head_lr=2e-2, time_budget_s=1e-6)
    summary = train(
        synthetic(N_TRAIN, seed=1), tmp_path / "h", config=cfg, show_progress=False, init_from=out
    )
    assert summary["frozen_encoder"] and summary["init_from"]["dir"] == str(out)
    assert summary["steps"] == summary["total_steps"] == 30  # ~45 prompts: one batch of 64 per epoch
    base, fitted = LearnedLengthPredictor(out), LearnedLengthPredictor(tmp_path / "h")
    te = synthetic(30, seed=2)
    # encoder and bucket head unchanged; the new quantile head and the rank head order the lengths
    assert np.abs(base.predict_proba(te.prompts) - fitted.predict_proba(te.prompts)).max() < 1e-5
    pred = fitted.predict(te.prompts)
    assert spearmanr(pred.rank_scores, te.output_tokens).statistic > 0.8
    assert spearmanr(pred.lengths, te.output_tokens).statistic > 0.8
    assert (tmp_path / "h" / "calibration.json").is_file()
    from llmplan.errors import LlmplanError

    with pytest.raises(LlmplanError, match="add them"):
        train(synthetic(8), tmp_path / "x", config=TrainConfig(heads=("bucket",)), init_from=out)


def test_int8_inference_quantizes_the_linears_and_keeps_the_learned_signal(trained) -> None:
    from llmplan.errors import LlmplanError

    out, _ = trained
    fp32, q = LearnedLengthPredictor(out), LearnedLengthPredictor(out, quantize="int8")
    assert q.name.endswith("+int8")
    linear = [m for m in q.model.modules() if type(m) is torch.nn.Linear]
    assert not linear  # every nn.Linear was swapped for a dynamically quantized one
    te = synthetic(30, seed=2)
    agree = (fp32.predict_proba(te.prompts).argmax(1) == q.predict_proba(te.prompts).argmax(1)).mean()
    assert agree >= 0.9
    with pytest.raises(LlmplanError, match="int8 or none"):
        LearnedLengthPredictor(out, quantize="fp8")


def test_save_load_round_trip_and_interface(trained) -> None:
    out, _ = trained
    a, b = LearnedLengthPredictor(out), LearnedLengthPredictor(out)
    prompts = [k.format(t="jazz") for k, _ in KINDS]
    pa, pb = a.predict_proba(prompts), b.predict_proba(prompts)
    assert (abs(pa - pb) < 1e-5).all()
    req = RequestSpec(rid=0, arrival_s=0.0, prompt_tokens=9, output_tokens=0, prompt=prompts[2])
    pred = a.predict([prompts[0], req])
    assert len(pred.buckets) == len(pred.lengths) == 2
    # representative length is the training median of the predicted bucket, inside that bucket
    for bkt, length in zip(pred.buckets, pred.lengths, strict=True):
        assert EDGES[bkt] <= length < (EDGES[bkt + 1] if bkt + 1 < len(EDGES) else 10**9)
    assert a.predict([]).buckets == []
    low, high = a.upper_bound(prompts, 0.5), a.upper_bound(prompts, 0.99)
    assert all(lo <= hi for lo, hi in zip(low, high, strict=True))
    assert all(
        ub >= EDGES[b] for ub, b in zip(a.upper_bound(prompts, 0.9), a.predict(prompts).buckets, strict=True)
    )


def test_resume_continues_to_the_same_model(tmp_path) -> None:
    ds = synthetic(16, seed=3)
    cfg = TrainConfig(epochs=2, batch_size=8, max_length=16, lr=3e-3, checkpoint_steps=1)
    full = train(ds, tmp_path / "full", config=cfg, show_progress=False)
    # interrupted after 3 of 4 steps (mid second epoch), then resumed
    part = TrainConfig(epochs=2, batch_size=8, max_length=16, lr=3e-3, checkpoint_steps=1, max_steps=3)
    train(ds, tmp_path / "resumed", config=part, show_progress=False)
    pos = json.loads((tmp_path / "resumed" / "checkpoint" / "config.json").read_text())["position"]
    assert pos["done"] == 3
    resumed = train(ds, tmp_path / "resumed", config=cfg, resume=True, show_progress=False)
    assert resumed["steps"] == full["steps"] == 4
    assert resumed["resumed_from_step"] == 3
    prompts = [k.format(t="coffee") for k, _ in KINDS]
    h1 = LearnedLengthPredictor(tmp_path / "full").head_outputs(prompts)
    h2 = LearnedLengthPredictor(tmp_path / "resumed").head_outputs(prompts)
    assert set(h1) == {"proba", "rank", "quantile"}
    for k in h1:
        assert abs(h1[k] - h2[k]).max() < 1e-4, k


def test_update_on_recorded_mispredictions_raises_shifted_accuracy(trained, tmp_path) -> None:
    out, _ = trained
    shifted = synthetic(12, seed=4, kinds=SHIFTED)
    before = LearnedLengthPredictor(out)
    pred = before.predict(shifted.prompts)
    rec = MispredictionRecorder(tmp_path / "mispredicted.jsonl", EDGES)
    for p, b, n in zip(shifted.prompts, pred.buckets, shifted.output_tokens, strict=True):
        rec.observe(p, b, n)
    acc_before = sum(b == 7 for b in pred.buckets) / len(shifted)
    assert rec.recorded == round((1 - acc_before) * len(shifted)) and rec.recorded > 0
    from llmplan.predict.data import load_jsonl

    records = load_jsonl(tmp_path / "mispredicted.jsonl")
    summary = update(out, records, tmp_path / "updated", epochs=2, lr=3e-3, show_progress=False)
    test = synthetic(12, seed=5, kinds=SHIFTED)
    updated = LearnedLengthPredictor(tmp_path / "updated")
    after = updated.predict(test.prompts)
    acc_after = sum(b == 7 for b in after.buckets) / len(test)
    assert acc_after > acc_before
    assert acc_after >= 0.8
    # The rank and quantile heads learn the shift too: the p50 moves toward the true ~700 tokens,
    # the calibrated upper bound covers more of the shifted requests, and they rank above the
    # short-paragraph kind (~90 tokens), which they did not all do before.
    b4 = before.predict(test.prompts)
    err = lambda p: np.mean(np.abs(np.log1p(p.lengths) - np.log1p(test.output_tokens)))  # noqa: E731
    assert err(after) < err(b4)
    cover = lambda p: np.mean(np.asarray(test.output_tokens) <= np.asarray(p.upper))  # noqa: E731
    assert cover(after) >= max(cover(b4), 0.8)
    para = [KINDS[1][0].format(t=t) for t in ("jazz", "coffee", "volcanoes")]
    assert min(after.rank_scores) > max(updated.predict(para).rank_scores)
    assert summary["calibration"]["n"] >= 10  # offsets re-fitted on the held-out calibration set
    assert (tmp_path / "updated" / "calibration.json").is_file()
    # the original distribution is not forgotten
    old = synthetic(12, seed=6)
    kept = updated.predict(old.prompts)
    from llmplan.predict.buckets import bucket_of

    assert (bucket_of(old.output_tokens) == kept.buckets).mean() >= 0.66
