"""Calibration: the fit recovers a known cost, profiles round-trip, bad files fail clearly,
and ``llmplan calibrate`` measures a real tiny model end to end."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from llmplan.errors import LlmplanError
from llmplan.plan.costmodel import BatchShape
from llmplan.runtime.calibration import Sample, fit_profile, load_calibration, load_profile

TRUE = {"const": 2e-3, "prefill_tokens": 5e-5, "prefill_attn": 2e-9, "decode_seqs": 4e-4, "decode_ctx": 3e-8}


def _synthetic(noise: float, seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    for n, c in [(16, 0), (64, 0), (256, 0), (512, 0), (64, 512), (256, 768)]:
        s = Sample("prefill", n, n * (c + n / 2), 0, 0, 0.0)
        out.append(s)
    for b in (1, 4, 16, 32):
        for ctx in (32, 256, 1024):
            out.append(Sample("decode", 0, 0.0, b, b * ctx, 0.0))
    for s in out:
        t = (
            TRUE["const"]
            + TRUE["prefill_tokens"] * s.prefill_tokens
            + TRUE["prefill_attn"] * s.prefill_attn
            + TRUE["decode_seqs"] * s.decode_seqs
            + TRUE["decode_ctx"] * s.decode_ctx
        )
        s.time_s = t * (1 + rng.uniform(-noise, noise))
    return out


def test_fit_recovers_a_known_linear_cost():
    prof = fit_profile(_synthetic(0.0), model="m", device="cpu", dtype="float32")
    for k, v in TRUE.items():
        assert prof.coef[k] == pytest.approx(v, rel=1e-3), k
    assert prof.meta["fit"]["max_rel_error"] < 1e-6


def test_fit_with_noise_stays_close_and_nonnegative():
    prof = fit_profile(_synthetic(0.05), model="m", device="cpu", dtype="float32")
    assert all(v >= 0 for v in prof.coef.values())
    assert prof.meta["fit"]["median_rel_error"] < 0.05
    shape = BatchShape(prefill_tokens=128, prefill_attn=128 * 64, decode_seqs=8, decode_ctx=8 * 300)
    exact = (
        TRUE["const"]
        + TRUE["prefill_tokens"] * 128
        + TRUE["prefill_attn"] * 128 * 64
        + TRUE["decode_seqs"] * 8
        + TRUE["decode_ctx"] * 2400
    )
    assert prof.iteration_time(shape) == pytest.approx(exact, rel=0.1)
    assert prof.iteration_time(BatchShape()) == 0.0


def test_profile_round_trips_through_a_file(tmp_path):
    prof = fit_profile(_synthetic(0.0), model="m", device="cpu", dtype="float32", threads=1)
    path = prof.save(tmp_path / "sub" / "p.json")
    back = load_calibration(path)
    assert back.coef == prof.coef and back.meta["threads"] == 1 and len(back.samples) == len(prof.samples)
    shape = BatchShape(prefill_tokens=10, prefill_attn=50.0, decode_seqs=3, decode_ctx=90)
    assert back.iteration_time(shape) == prof.iteration_time(shape)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"version": 1, "coef": {"const": 1}}', "not a calibration profile"),
        ('{"version": 99}', "version 99 is not supported"),
        (
            '{"version": 1, "model": "m", "device": "cpu", "dtype": "f", "coef": {"const": -1, '
            '"prefill_tokens": 0, "prefill_attn": 0, "decode_seqs": 0, "decode_ctx": 0}}',
            "negative or not finite",
        ),
    ],
)
def test_bad_profiles_fail_with_one_clear_line(tmp_path, content, match):
    path = tmp_path / "p.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LlmplanError, match=match):
        load_profile(path)


def test_fit_needs_enough_shapes():
    with pytest.raises(LlmplanError, match="at least"):
        fit_profile(_synthetic(0.0)[:3], model="m", device="cpu", dtype="float32")


def test_calibrate_cli_measures_a_tiny_model(tmp_path, tiny_checkpoint):
    from llmplan.cli.app import app

    out = tmp_path / "prof.json"
    args = [
        "calibrate",
        "--model",
        str(tiny_checkpoint[0]),
        "--out",
        str(out),
        "--max-batch",
        "4",
        "--max-context",
        "256",
        "--max-chunk",
        "64",
        "--repeats",
        "1",
        "--block-size",
        "8",
        "--json",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["model"] == tiny_checkpoint[0].name and d["device"] == "cpu" and d["block_size"] == 8
    kinds = {s["kind"] for s in d["samples"]}
    assert kinds == {"prefill", "decode", "mixed"}
    assert all(s["time_s"] > 0 for s in d["samples"])
    prof = load_profile(out)
    # Costs grow with work: a bigger prefill chunk never prices cheaper than a smaller one.
    assert prof.iteration_time(BatchShape(prefill_tokens=64, prefill_attn=64 * 32)) >= prof.iteration_time(
        BatchShape(prefill_tokens=16, prefill_attn=16 * 8)
    )


def test_calibrate_cli_rejects_missing_model_choice(tmp_path):
    from llmplan.cli.app import app

    res = CliRunner().invoke(app, ["calibrate", "--out", str(tmp_path / "p.json")])
    assert res.exit_code != 0
    assert not (tmp_path / "p.json").exists()
