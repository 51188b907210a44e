"""How much of the oracle's scheduling gain each length predictor keeps (issue 22).

The simulator replays a slice of ShareGPT's held-out prompts (the deduplicated test split of
``llmplan predict``'s split, so no predictor saw them in training; labels are the Mistral token
counts the predictors were trained on) with Poisson arrivals and proportional SLOs on the
default ``llmplan bench`` cluster (llama-2-13b, HELR fill of preset:dgx-a100). Three loads:

* ``trace``: ShareGPT's default rate in ``llmplan bench`` (``sharegpt:rate=5``, 5 req/s);
* ``~90%``, ``~75%`` and ``~60%``: the rates at which FCFS meets about 90%, 75% and 60% of the
  SLOs, found by a short search on seed 0 (doubling, then bisection in log space; the rate
  closest to the target wins) unless ``--rates`` fixes them (in that order).

At each load FCFS (which ignores predictions) is the baseline, and every length-aware policy
(default SJF, S3, slo-odbs-cb) runs with every predictor over ``--seeds`` seeds (arrivals and
SLO draws redrawn; the same seeds for every arm, so differences are paired). The gain of an arm
is its metric minus FCFS's on the same seed; the **share kept** is the predictor's mean gain
over the oracle's mean gain (the per-seed ratios give the interval). Intervals are
:mod:`llmplan.report.repeats`' 95% Student-t intervals over seeds.

Predictors (``--predictors``, comma list of names below or ``NAME=SPEC`` with any
``bench --predictor`` spec):

* ``oracle``: the true length (rank = upper = truth);
* ``const``: the train split's median output for everyone (no information; ties keep arrival order);
* ``random``: the control that tells ordering apart from knowing: a seeded random rank score per
  request (no information about length, but not arrival order) and the train median as point and
  bound. A predictor is only worth its rank head where it beats this row;
* ``gbm``: the prompt-length GBM, ``gbm:MODELS/gbm`` when saved there (``--models``; default
  ``$LLMPLAN_MODELS_DIR`` or ``./models``), else
  :class:`llmplan.predict.baselines.PromptLengthGBM` fitted here on the train split;
* ``bucket``: the LoRA MiniLM bucket classifier ``learned:MODELS/bucket``;
* ``multi``: the multi-head (rank + quantile) predictor ``learned:MODELS/multi``;
* ``multi-p50``: ``learned:MODELS/multi,book=point``: ``multi``'s order and p50, booking KV for the
  p50 instead of the calibrated p90.

Model directories that do not exist are skipped with a note. Each predictor runs once over the
slice (outputs cached per request in memory, and in ``--cache-dir`` keyed by the spec, the
model's files and the slice), so learned inference is paid once per model.

Beside the gains it prints per predictor: Spearman and Kendall tau of the rank score against
the true length, the coverage of the upper bound (share of requests whose true length is at most
the bound; a p90 head should cover ~90%), KV booked over KV needed (sum of bounds over sum of
true lengths), and per arm the mean preemptions and mispredictions (requests that outgrew the
booked bound) of the simulator.

    python benchmarks/predictor_gain.py                        # 2000 requests, 3 seeds, all predictors
    python benchmarks/predictor_gain.py --quick --predictors oracle,const   # smoke test
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

MODELS = Path(os.environ.get("LLMPLAN_MODELS_DIR", "models"))  # where gbm/, bucket/, multi/ are saved
TRACE_RATE = 5.0  # llmplan bench's sharegpt default (sharegpt:rate=5)
TARGETS = {"~90%": 0.9, "~75%": 0.75, "~60%": 0.6}
DEFAULT_POLICIES = ("sjf", "s3", "slo-odbs-cb")
DEFAULT_PREDICTORS = ("oracle", "const", "random", "gbm", "bucket", "multi")
KNOWN_PREDICTORS = (*DEFAULT_PREDICTORS, "multi-p50")
LOADS = "trace,~90%,~75%,~60%"


@dataclass(slots=True)
class CachedPredictor:
    """A predictor's outputs on the slice, looked up by request id (picklable, no model inside)."""

    name: str
    bucket_edges: tuple[int, ...]
    rows: dict[int, tuple[int, int, float, int]]  # rid -> (bucket, point, rank, upper)

    def predict(self, items: Any) -> Any:
        from llmplan.predict.interface import LengthPrediction

        rows = [self.rows[s.rid] for s in items]
        return LengthPrediction(
            [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]
        )


class RandomRank:
    """No length information, but a non-arrival order: a seeded uniform rank score per request,
    ``tokens`` as point estimate and bound (the control for what ordering alone does)."""

    def __init__(self, tokens: int, seed: int = 0) -> None:
        from llmplan.predict.interface import DEFAULT_BUCKET_EDGES

        self.tokens, self.seed = tokens, seed
        self.bucket_edges = DEFAULT_BUCKET_EDGES
        self.name = f"random rank, {tokens} tokens"

    def predict(self, items: Any) -> Any:
        import numpy as np

        from llmplan.predict.interface import LengthPrediction

        r = np.random.default_rng(self.seed).random(len(items)).tolist()
        n = len(items)
        return LengthPrediction([0] * n, [self.tokens] * n, r, [self.tokens] * n)



def load_slice(n: int, split_seed: int, limit: int | None = None) -> tuple[Any, list[Any]]:
    """The train split (for in-process baselines and the const length) and ``n`` held-out
    requests (deduplicated test split, in its order) as RequestSpecs with prompt text.
    ``limit`` reads only the first ``limit`` ShareGPT pairs (the split of each pair is the same)."""
    from llmplan.predict.data import load_sharegpt, split_dataset
    from llmplan.predict.evaluate import as_requests

    split = split_dataset(load_sharegpt(limit=limit), 0.2, split_seed)
    reqs = as_requests(split.test_dedup)[:n]
    if len(reqs) < n:
        print(f"note: the deduplicated test split has {len(reqs)} requests; using all", file=sys.stderr)
    return split.train, reqs


def workload_at(base: list[Any], rate: float, seed: int, slo: str) -> Any:
    import numpy as np

    from llmplan.workload.slo import assign_slos
    from llmplan.workload.synthetic import arrivals
    from llmplan.workload.types import Workload

    t = arrivals(len(base), rate, rng=np.random.default_rng(seed))
    reqs = [replace(r, arrival_s=float(a)) for r, a in zip(base, t, strict=True)]
    wl = Workload("sharegpt-test", reqs, source="predict split test_dedup", meta={"rate": rate, "seed": seed})
    return assign_slos(wl, slo, seed=seed)


def _model_fingerprint(path: Path) -> str:
    h = hashlib.sha1()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and "checkpoint" not in p.parts):
        st = f.stat()
        h.update(f"{f.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def resolve_predictors(names: list[str], train: Any, models: Path) -> tuple[dict[str, Any], list[str]]:
    """name -> (spec string or predictor object, fingerprint); plus notes on skipped ones."""
    import numpy as np

    from llmplan.errors import LlmplanError
    from llmplan.predict.oracle import parse_predictor

    out: dict[str, Any] = {}
    notes: list[str] = []
    for item in names:
        name, eq, spec = item.partition("=")
        name = name.strip()
        if eq:
            path = Path(spec.split(":", 1)[1]) if ":" in spec else None
            out[name] = (spec, _model_fingerprint(path) if path is not None and path.is_dir() else spec)
        elif name == "oracle":
            out[name] = ("oracle", "oracle")
        elif name == "const":
            n = int(np.median(train.output_tokens))
            out[name] = (f"const:{n}", f"const:{n}")
        elif name == "random":
            out[name] = (RandomRank(int(np.median(train.output_tokens))), "random-rank:0")
        elif name == "gbm":
            d = models / "gbm"
            why = f"{d} not found"
            if d.is_dir():
                try:
                    parse_predictor(f"gbm:{d}")
                    out[name] = (f"gbm:{d}", _model_fingerprint(d))
                    continue
                except LlmplanError as e:
                    why = f"gbm:{d} does not load ({e})"
            from llmplan.predict.baselines import PromptLengthGBM
            from llmplan.predict.interface import DEFAULT_BUCKET_EDGES

            notes.append(f"gbm: {why}; the prompt-length GBM is fitted here on the train split")
            out[name] = (PromptLengthGBM(train, DEFAULT_BUCKET_EDGES, seed=0), "gbm-in-process")
        elif name == "multi-p50":
            d = models / "multi"
            if (d / "config.json").is_file():
                out[name] = (f"learned:{d},book=point", "book-point:" + _model_fingerprint(d))
            else:
                notes.append(f"{name}: no saved model at {d} (config.json missing); skipped")
        elif name in ("bucket", "multi"):
            d = models / name
            if (d / "config.json").is_file():
                out[name] = (f"learned:{d}", _model_fingerprint(d))
            else:
                notes.append(f"{name}: no saved model at {d} (config.json missing); skipped")
        else:
            raise ValueError(f"unknown predictor {name!r}; use {', '.join(KNOWN_PREDICTORS)} or NAME=SPEC")
    return out, notes


def run_predictor(name: str, spec: Any, fp: str, reqs: list[Any], cache_dir: Path | None) -> CachedPredictor:
    """The predictor's outputs on the slice, from the disk cache when the model and slice match."""
    from llmplan.predict.interface import rank_scores_of, upper_of
    from llmplan.predict.oracle import parse_predictor

    key = hashlib.sha1(
        json.dumps([name, fp, [(r.rid, r.prompt_tokens, r.output_tokens, r.prompt) for r in reqs]]).encode()
    ).hexdigest()[:20]
    path = cache_dir / f"{name}-{key}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        d = json.loads(path.read_text())
        rows = {int(k): tuple(v) for k, v in d["rows"].items()}
        return CachedPredictor(d["name"], tuple(d["edges"]), rows)  # type: ignore[arg-type]
    pred = parse_predictor(spec, seed=0)
    t = time.perf_counter()
    out = pred.predict(reqs)
    wall = time.perf_counter() - t
    ranks, ups = rank_scores_of(out), upper_of(out)
    rows = {
        r.rid: (int(b), max(1, int(ln)), float(rk), max(1, int(u), int(ln)))
        for r, b, ln, rk, u in zip(reqs, out.buckets, out.lengths, ranks, ups, strict=True)
    }
    label = getattr(pred, "name", name)
    if wall > 1.0:
        print(f"{name}: predicted {len(reqs)} requests in {wall:.1f} s", file=sys.stderr)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"name": label, "edges": list(pred.bucket_edges), "rows": rows}))
    return CachedPredictor(label, tuple(pred.bucket_edges), rows)


def quality(pred: CachedPredictor, reqs: list[Any]) -> dict[str, Any]:
    """Rank correlation of the rank score with the truth, coverage and cost of the upper bound."""
    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    truth = np.asarray([r.output_tokens for r in reqs], dtype=float)
    rows = [pred.rows[r.rid] for r in reqs]
    rank = np.asarray([x[2] for x in rows], dtype=float)
    upper = np.asarray([x[3] for x in rows], dtype=float)
    const = len(set(rank.tolist())) < 2
    return {
        "spearman": None if const else float(spearmanr(rank, truth).statistic),
        "kendall": None if const else float(kendalltau(rank, truth).statistic),
        "coverage": float(np.mean(truth <= upper)),
        "booked_over_needed": float(upper.sum() / truth.sum()),
    }


def _cfg(seed: int, predictor: Any) -> Any:
    from llmplan.bench.config import BenchConfig

    return BenchConfig(
        trace="sharegpt", seed=seed, predictor=predictor, energy="off", record_token_times=False
    )


def run_arms(arms: list[tuple[str, str, Any]], base: list[Any], rate: float, seeds: list[int], slo: str,
             cluster: Any, workers: int) -> dict[str, list[dict[str, Any]]]:
    """label -> per-seed run summaries, for (label, policy, predictor) arms on the same workloads."""
    from llmplan.bench.jobs import SimJob, run_jobs

    jobs, keys = [], []
    for seed in seeds:
        wl = workload_at(base, rate, seed, slo)
        for label, policy, pred in arms:
            jobs.append(SimJob(f"{label}#{seed}", policy, wl, cluster, _cfg(seed, pred)))
            keys.append(label)
    out: dict[str, list[dict[str, Any]]] = {lb: [] for lb, _, _ in arms}
    for key, (metrics, _) in zip(keys, run_jobs(jobs, workers=workers), strict=True):
        s = metrics.summary
        out[key].append({
            "attainment": s["attainment"]["all"] or 0.0, "goodput_rps": s["goodput_rps"],
            "preemptions": s["preemptions"], "mispredictions": s["counters"].get("mispredictions", 0),
            "misprediction_preemptions": s["counters"].get("misprediction_preemptions", 0),
        })  # fmt: skip
    return out


def find_rates(base: list[Any], slo: str, cluster: Any, seed: int, targets: dict[str, float],
               workers: int) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """Per target, the FCFS rate (req/s) whose attainment on ``seed`` is closest to it."""
    seen: dict[float, float] = {}

    def att(rate: float) -> float:
        r = round(rate, 4)
        if r not in seen:
            s = run_arms([("fcfs", "fcfs", "oracle")], base, r, [seed], slo, cluster, workers)["fcfs"][0]
            seen[r] = s["attainment"]
        return seen[r]

    out = {}
    for label, target in targets.items():
        lo, hi = TRACE_RATE, TRACE_RATE
        while att(hi) >= target and hi < TRACE_RATE * 2**8:
            lo, hi = hi, hi * 2
        for _ in range(5):
            mid = math.sqrt(lo * hi)
            if att(mid) >= target:
                lo = mid
            else:
                hi = mid
        out[label] = min(seen, key=lambda r: abs(seen[r] - target))
    return out, sorted(seen.items())


def _att(s: dict[str, Any]) -> float:
    return s["attainment"]


METRICS = {"attainment": (_att, "%"), "goodput": (lambda s: s["goodput_rps"], "rps")}


def gains(per: dict[str, list[dict[str, Any]]], label: str, get: Any) -> list[float]:
    return [get(a) - get(b) for a, b in zip(per[label], per["fcfs"], strict=True)]


def kept(per: dict[str, list[dict[str, Any]]], label: str, oracle: str, get: Any) -> dict[str, Any]:
    """Share of the oracle's gain over FCFS this arm keeps: ratio of mean gains, interval over the
    per-seed ratios (seeds where the oracle gains nothing are left out of the interval)."""
    from llmplan.report.repeats import t_interval

    g, go = gains(per, label, get), gains(per, oracle, get)
    mo = sum(go) / len(go)
    # Nothing to keep where the oracle does not beat FCFS.
    ratio = (sum(g) / len(g)) / mo if mo > 1e-9 else None
    iv = t_interval([a / b for a, b in zip(g, go, strict=True) if b > 1e-9] if ratio is not None else [])
    return {"share": ratio, "interval": iv, "gain": t_interval(g), "oracle_gain": t_interval(go)}


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.0%}"


def _iv(iv: dict[str, Any], unit: str) -> str:
    from llmplan.report.repeats import fmt_interval

    return fmt_interval(iv, unit)


def _gain_txt(iv: dict[str, Any], unit: str) -> str:
    if iv["mean"] is None:
        return "–"
    scale, suffix = (100.0, " pt") if unit == "%" else (1.0, "")
    m = iv["mean"] * scale
    half = "" if iv["half"] is None else f" ± {iv['half'] * scale:.1f}"
    return f"{m:+.1f}{half}{suffix}"


def _share_txt(k: dict[str, Any]) -> str:
    if k["share"] is None:
        return "– (oracle gains nothing)"
    iv = k["interval"]
    if iv["half"] is None:
        return f"{k['share']:.0%}"
    return f"{k['share']:.0%} [{iv['lo']:.0%}, {iv['hi']:.0%}]"


def render(res: dict[str, Any]) -> str:
    from llmplan.report.mdtable import md_table

    lines = []
    q = res["quality"]
    lines += ["Predictors on the slice (rank score vs true length; upper bound vs true length):", ""]
    lines.append(md_table(
        ["predictor", "Spearman", "Kendall τ", "upper covers", "KV booked / needed"],
        [[n, "–" if v["spearman"] is None else f"{v['spearman']:.3f}",
          "–" if v["kendall"] is None else f"{v['kendall']:.3f}", f"{v['coverage']:.1%}",
          f"{v['booked_over_needed']:.2f}×"] for n, v in q.items()],
    ))  # fmt: skip
    lines.append("")
    for load in res["loads"]:
        per, rate = load["per"], load["rate"]
        fc = per["fcfs"]
        fa = sum(_att(s) for s in fc) / len(fc)
        lines += [f"### load {load['label']}: {rate:g} req/s (FCFS attainment {fa:.1%}, goodput "
                  f"{sum(s['goodput_rps'] for s in fc) / len(fc):.2f} req/s)", ""]  # fmt: skip
        rows = []
        for policy in res["policies"]:
            for pname in res["predictors"]:
                lb = f"{policy}|{pname}"
                ka = kept(per, lb, f"{policy}|oracle", METRICS["attainment"][0])
                kg = kept(per, lb, f"{policy}|oracle", METRICS["goodput"][0])
                pre = [s["preemptions"] for s in per[lb]]
                mis = [s["mispredictions"] for s in per[lb]]
                rows.append([
                    policy, pname, _iv(_ti([_att(s) for s in per[lb]]), "%"),
                    _gain_txt(ka["gain"], "%"), "" if pname == "oracle" else _share_txt(ka),
                    _gain_txt(kg["gain"], "rps"), "" if pname == "oracle" else _share_txt(kg),
                    f"{sum(pre) / len(pre):.0f}", f"{sum(mis) / len(mis):.0f}",
                ])  # fmt: skip
        lines.append(md_table(
            ["policy", "predictor", "attainment", "gain vs FCFS", "kept (attainment)", "goodput gain (req/s)",
             "kept (goodput)", "preemptions", "mispredictions"], rows))  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def _ti(values: list[float]) -> dict[str, Any]:
    from llmplan.report.repeats import t_interval

    return t_interval(values)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="held-out requests per run (default 2000)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per arm (default 3)")
    ap.add_argument("--predictors", default=",".join(DEFAULT_PREDICTORS))
    ap.add_argument("--policies", default=",".join(DEFAULT_POLICIES))
    ap.add_argument("--loads", default=LOADS, help="comma list of: trace, ~90%%, ~75%%, ~60%%")
    ap.add_argument("--rates", default=None,
                    help="fix the ~90%%,~75%%,~60%% rates (req/s), e.g. 23,30,80; no search")  # fmt: skip
    ap.add_argument("--slo", default="proportional")
    ap.add_argument("--models", type=Path, default=MODELS, help="where gbm/, bucket/, multi/ are saved")
    ap.add_argument("--cache-dir", default="/tmp/llmplan-predictor-gain",
                    help="predictor outputs per request, reused across runs ('' for none)")  # fmt: skip
    ap.add_argument("--workers", type=int, default=1, help="simulation processes (default 1)")
    ap.add_argument("--split-seed", type=int, default=0, help="train/test split seed (the models')")
    ap.add_argument("--json", type=Path, default=None, help="also write every number here")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 200 requests, 2 seeds, loads trace and ~60%% at fixed rates")
    args = ap.parse_args(argv)
    if args.seeds < 2:
        ap.error("--seeds must be >= 2 (an interval needs two seeds)")
    limit = None
    if args.quick:
        # The first 1,500 ShareGPT pairs hold ~270 deduplicated test prompts; 200 of them arriving
        # at 200 req/s overload the cluster for a moment (FCFS misses some SLOs).
        args.n, args.seeds, limit = min(args.n, 200), 2, 1500
        args.rates = args.rates or "100,150,200"
        if args.loads == LOADS:
            args.loads = "trace,~60%"
    loads = [x.strip() for x in args.loads.split(",") if x.strip()]
    bad = [x for x in loads if x != "trace" and x not in TARGETS]
    if bad:
        ap.error(f"unknown load {bad[0]!r}; use trace, ~90%, ~75%, ~60%")
    fixed = None
    if args.rates is not None:
        try:
            vals = [float(x) for x in args.rates.split(",")]
        except ValueError:
            ap.error(f"--rates {args.rates!r}: write three numbers (req/s), e.g. 23,30,80")
        if len(vals) != len(TARGETS) or min(vals) <= 0:
            ap.error(f"--rates needs {len(TARGETS)} positive rates (for {', '.join(TARGETS)}), "
                     f"got {args.rates!r}")  # fmt: skip
        fixed = dict(zip(TARGETS, vals, strict=True))
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    cache_dir = Path(args.cache_dir) if args.cache_dir.strip() else None

    from llmplan.bench.runner import build_cluster
    from llmplan.errors import LlmplanError

    t0 = time.perf_counter()
    names: list[str] = []
    for p in (x for x in args.predictors.split(",") if x.strip()):
        if p.strip().lower().startswith("book=") and names:
            names[-1] += "," + p.strip()  # NAME=SPEC,book=point: the option belongs to the spec
        else:
            names.append(p)
    bad = [n for n in names if "=" not in n and n.strip() not in KNOWN_PREDICTORS]
    if bad:
        ap.error(f"unknown predictor {bad[0]!r}; use {', '.join(KNOWN_PREDICTORS)} or NAME=SPEC")
    if "oracle" not in [n.partition("=")[0].strip() for n in names]:
        ap.error("the oracle is the reference of every share; keep it in --predictors")
    train, reqs = load_slice(args.n, args.split_seed, limit)
    specs, notes = resolve_predictors(names, train, args.models)
    try:
        preds = {n: run_predictor(n, s, fp, reqs, cache_dir) for n, (s, fp) in specs.items()}
    except (LlmplanError, ValueError) as e:
        ap.error(f"a predictor failed on the slice: {e}")
    cluster = build_cluster(_cfg(0, "oracle"))
    seeds = list(range(args.seeds))

    targets = {lb: TARGETS[lb] for lb in loads if lb in TARGETS}
    search: list[tuple[float, float]] = []
    if fixed is not None:
        rates = fixed
    elif targets:
        rates, search = find_rates(reqs, args.slo, cluster, 0, targets, args.workers)
    else:
        rates = {}
    rates["trace"] = TRACE_RATE

    arms = [("fcfs", "fcfs", "oracle")]
    arms += [(f"{p}|{n}", p, preds[n]) for p in policies for n in preds]
    res: dict[str, Any] = {
        "n": len(reqs), "seeds": seeds, "slo": args.slo, "policies": policies, "predictors": list(preds),
        "predictor_names": {n: p.name for n, p in preds.items()}, "notes": notes, "search": search,
        "quality": {n: quality(p, reqs) for n, p in preds.items()}, "loads": [],
        "cluster": cluster.description.get("replica_gpus"),
    }  # fmt: skip
    for lb in loads:
        per = run_arms(arms, reqs, rates[lb], seeds, args.slo, cluster, args.workers)
        res["loads"].append({"label": lb, "rate": rates[lb], "per": per})
    res["wall_s"] = time.perf_counter() - t0

    ninst = len(res["cluster"] or [])
    print(f"## Gain kept: {len(reqs)} held-out ShareGPT requests, {args.seeds} seeds, --slo {args.slo}, "
          f"llama-2-13b on preset:dgx-a100 ({ninst} instances), {res['wall_s']:.0f} s\n")  # fmt: skip
    for n, p in preds.items():
        print(f"- {n}: {p.name}")
    for note in notes:
        print(f"- note: {note}")
    if search:
        print("- FCFS attainment by rate (seed 0): " + ", ".join(f"{r:g}: {a:.1%}" for r, a in search))
    print()
    print(render(res))
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
