"""``load_workload``: one entry point from a spec string to a :class:`Workload`.

Specs: ``azure`` (= ``azure-conv``), ``azure-code``, ``azure-conv-2024``,
``azure-code-2024``, ``sharegpt[:rate=5,tokenizer=llama3]``,
``synthetic[:rate=5,n=1000,cv=1,arrival=poisson,lengths=lognormal,...]`` and
``file:PATH`` (CSV or JSONL in the Azure schema or llmplan's own column names).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

import llmplan.workload.datafiles as datafiles
import llmplan.workload.sharegpt as sharegpt
import llmplan.workload.synthetic as synthetic
import llmplan.workload.traces as traces
from llmplan.errors import LlmplanError
from llmplan.fileio import write_text_atomic
from llmplan.workload.shaping import check_token_columns, shape
from llmplan.workload.slo import assign_slos
from llmplan.workload.types import Workload

TRACE_ALIASES = {"azure": "azure-conv", "azure-conversation": "azure-conv"}
TRACE_NAMES = [
    "azure",
    "azure-code",
    "azure-conv-2024",
    "azure-code-2024",
    "sharegpt",
    "sharegpt-multiturn",
    "shared-prefix",
    "alpaca-like",
    "long-context",
    "synthetic",
    "file:PATH",
]

_SYNTH_DEFAULTS: dict[str, Any] = {
    "n": 1000,
    "rate": 5.0,
    "cv": 1.0,
    "arrival": None,  # poisson when cv == 1, else gamma
    "lengths": "lognormal",
    "source": "azure-conv",  # pool for lengths=empirical: a trace name or a file path
    "prompt_mean": 1000.0,
    "prompt_sigma": 0.8,
    "output_mean": 200.0,
    "output_sigma": 0.8,
    "max_prompt": 8192,
    "max_output": 2048,
}
_SHAREGPT_DEFAULTS: dict[str, Any] = {"rate": 5.0, "n": None, "tokenizer": "llama3"}


def _kv(spec: str, rest: str, defaults: dict[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in defaults:
            raise LlmplanError(f"bad option {item!r} in --trace {spec}; allowed: {', '.join(defaults)}")
        default = defaults[key]
        try:
            if isinstance(default, bool):
                out[key] = value.lower() in ("1", "true", "yes")
            elif isinstance(default, int) or (default is None and key == "n"):
                out[key] = int(value)
            elif isinstance(default, float):
                out[key] = float(value)
            else:
                out[key] = value
        except ValueError:
            raise LlmplanError(f"option {key}={value!r} in --trace {spec} is not a number") from None
    return out


def load_workload(
    spec: str,
    *,
    rate_scale: float = 1.0,
    window: tuple[float, float | None] | None = None,
    max_requests: int | None = None,
    seed: int = 0,
    slo: str | None = None,
    show_progress: bool = False,
) -> Workload:
    """Load ``spec`` and shape it (window -> rate scale -> cap), then assign SLOs if asked."""
    kind, _, rest = spec.strip().partition(":")
    kind = TRACE_ALIASES.get(kind.lower(), kind.lower())
    shaping = {"rate_scale": rate_scale, "window": window, "max_requests": max_requests}
    if kind in datafiles.AZURE_FILES:
        if rest:
            raise LlmplanError(f"--trace {spec}: the Azure traces take no options; use --window/--rate-scale")
        wl = _load_azure(kind, show_progress=show_progress, **shaping)
    elif kind == "file":
        if not rest:
            raise LlmplanError("--trace file: needs a path, e.g. --trace file:my_trace.csv")
        wl = _load_file(Path(rest).expanduser(), **shaping)
    elif kind == "synthetic":
        wl = _load_synthetic(
            spec, _kv(spec, rest, _SYNTH_DEFAULTS), seed=seed, show_progress=show_progress, **shaping
        )
    elif kind in ("shared-prefix", "sharegpt-multiturn", "alpaca-like", "long-context"):
        wl = _load_prefixed(kind, spec, rest, seed=seed, **shaping)
    elif kind == "sharegpt":
        wl = _load_sharegpt(spec, _kv(spec, rest, _SHAREGPT_DEFAULTS), seed=seed, **shaping)
    else:
        raise LlmplanError(f"unknown trace {spec!r}; use one of {', '.join(TRACE_NAMES)}")
    wl.meta["spec"] = spec
    wl.meta["seed"] = seed
    wl.meta["requests"] = len(wl.requests)
    if slo is not None:
        assign_slos(wl, slo, seed=seed)
    return wl


def _load_azure(kind: str, *, show_progress: bool, **shaping: Any) -> Workload:
    df = datafiles.AZURE_FILES[kind]
    path = datafiles.resolve(df, show_progress=show_progress)
    arrival, p, o, _ = traces.trace_columns(path)
    check_token_columns(p, o, str(path))
    reqs, meta = shape(arrival, p, o, **shaping)
    digest = datafiles.sha256_file(path)
    meta.update(
        path=str(path),
        sha256=digest,
        sha256_expected=df.sha256,
        # A local copy that differs from the published file makes numbers incomparable; say so.
        sha256_matches=None if df.sha256 is None else digest == df.sha256,
        url=df.url,
        license=df.license,
        citation=df.citation,
        size_bytes=path.stat().st_size,
    )
    return Workload(kind, reqs, source=str(path), meta=meta)


def _load_file(path: Path, **shaping: Any) -> Workload:
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise LlmplanError(f"trace file {path} {what}; pass --trace file:PATH with a CSV or JSONL file")
    arrival, p, o, prompts = traces.trace_columns(path)
    check_token_columns(p, o, str(path))
    reqs, meta = shape(arrival, p, o, prompts=prompts, **shaping)
    meta.update(path=str(path), size_bytes=path.stat().st_size, sha256=datafiles.sha256_file(path))
    return Workload(f"file:{path.name}", reqs, source=str(path), meta=meta)


def _load_synthetic(
    spec: str, opt: dict[str, Any], *, seed: int, show_progress: bool, **shaping: Any
) -> Workload:
    n = int(opt["n"] if shaping["max_requests"] is None else max(shaping["max_requests"], 1))
    if n < 1:
        raise LlmplanError(f"--trace {spec}: n must be >= 1")
    from llmplan.validate import check_fits_memory

    # Each request costs a few hundred bytes in arrays and objects, and more in the simulator's
    # per-request records: refuse before numpy tries to allocate terabytes.
    check_fits_memory(n, 2048, f"--trace {spec}: n={n:,} requests", "lower n= or pass --max-requests")
    process = opt["arrival"] or ("poisson" if opt["cv"] == 1.0 else "gamma")
    rng = np.random.default_rng(seed)
    arrival = synthetic.arrivals(n, opt["rate"], cv=opt["cv"], process=process, rng=rng)
    if opt["lengths"] == "lognormal":
        p = synthetic.lognormal_lengths(n, opt["prompt_mean"], opt["prompt_sigma"], 1, opt["max_prompt"], rng)
        o = synthetic.lognormal_lengths(n, opt["output_mean"], opt["output_sigma"], 1, opt["max_output"], rng)
    elif opt["lengths"] == "empirical":
        pool = load_workload(opt["source"], show_progress=show_progress)
        pp = np.fromiter((r.prompt_tokens for r in pool.requests), np.int64, len(pool.requests))
        po = np.fromiter((r.output_tokens for r in pool.requests), np.int64, len(pool.requests))
        p, o = synthetic.empirical_lengths(n, pp, po, rng)
    else:
        raise LlmplanError(f"--trace {spec}: lengths must be lognormal or empirical, got {opt['lengths']!r}")
    reqs, meta = shape(arrival, p, o, **shaping)
    meta.update({k: v for k, v in opt.items() if k != "n"}, n=n, arrival=process)
    return Workload("synthetic", reqs, source=spec, meta=meta)


def _load_prefixed(kind: str, spec: str, rest: str, *, seed: int, **shaping: Any) -> Workload:
    """shared-prefix / sharegpt-multiturn (llmplan.workload.prefixed): prompts as exact token ids."""
    import llmplan.workload.prefixed as prefixed

    if kind == "shared-prefix":
        pf = prefixed.shared_prefix(spec, _kv(spec, rest, prefixed.SHARED_PREFIX_DEFAULTS), seed=seed)
    elif kind == "alpaca-like":
        pf = prefixed.alpaca_like(spec, _kv(spec, rest, prefixed.ALPACA_DEFAULTS), seed=seed)
    elif kind == "long-context":
        pf = prefixed.long_context(spec, _kv(spec, rest, prefixed.LONG_CONTEXT_DEFAULTS), seed=seed)
    else:
        opt = _kv(spec, rest, prefixed.MULTITURN_DEFAULTS)
        limit = opt["n"] if shaping["max_requests"] is None else shaping["max_requests"]
        pf = prefixed.sharegpt_multiturn(spec, opt, seed=seed, limit=None if shaping["window"] else limit)
        if opt["n"] is not None and shaping["max_requests"] is None:
            shaping = {**shaping, "max_requests": opt["n"]}
    # shape() reorders and cuts its columns; the request's index rides along as its "prompt".
    reqs, meta = shape(pf.arrival, pf.prompt_tokens, pf.output_tokens,
                       prompts=list(range(len(pf.arrival))), **shaping)  # type: ignore[arg-type]  # fmt: skip
    rid_of: dict[int, int] = {}
    col: list[int] = []
    for r in reqs:
        k = int(r.prompt)  # type: ignore[arg-type]
        r.prompt = None
        r.token_ids, r.prefix_id, r.prefix_tokens = pf.token_ids[k], pf.prefix_id[k], pf.prefix_tokens[k]
        rid_of[k] = r.rid
        col.append(k)
    if pf.follows is not None and pf.think_s is not None:
        # Closed-loop sessions: link each turn to its predecessor's rid (a predecessor cut away by
        # --window leaves the turn at its nominal arrival); think times follow --rate-scale.
        scale = float(shaping["rate_scale"])
        for r, k in zip(reqs, col, strict=True):
            prev = pf.follows[k]
            if prev is not None and prev in rid_of:
                r.follows, r.think_s = rid_of[prev], pf.think_s[k] / scale
    meta.update(pf.meta)
    return Workload(kind, reqs, source=spec, meta=meta)


def _sharegpt_counts(scan: sharegpt.ShareGPTScan, tokenizer: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Token counts for every pair, cached per (file, size, tokenizer) in the user cache."""
    st = os.stat(scan.path)
    key = hashlib.sha1(
        f"{scan.path}|{st.st_size}|{st.st_mtime_ns}|{tokenizer}|{len(scan.pairs)}".encode()
    ).hexdigest()
    cache = datafiles.cache_dir() / "sharegpt" / f"counts-{tokenizer}-{key[:16]}.json"
    try:
        cached = json.loads(cache.read_text())
        if len(cached["prompt"]) == len(scan.pairs):
            return np.asarray(cached["prompt"]), np.asarray(cached["output"]), cached["label"]
    except (OSError, ValueError, KeyError):
        pass
    counter = sharegpt.TokenCounter(tokenizer)
    p = counter.count([q for q, _ in scan.pairs], what="prompts")
    o = counter.count([a for _, a in scan.pairs], what="replies")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache, json.dumps({"prompt": p, "output": o, "label": counter.label}))
    except OSError:
        pass  # a read-only cache only costs the next run a re-count
    return np.asarray(p), np.asarray(o), counter.label


def _load_sharegpt(spec: str, opt: dict[str, Any], *, seed: int, **shaping: Any) -> Workload:
    limit = opt["n"] if shaping["max_requests"] is None else shaping["max_requests"]
    from llmplan import progress

    with progress.task("reading ShareGPT"):
        scan = sharegpt.scan(limit=None if shaping["window"] is not None else limit)
    if not scan.pairs:
        raise LlmplanError(f"{scan.path}: no usable first-turn (human, gpt) pairs were recovered")
    p, o, label = _sharegpt_counts(scan, opt["tokenizer"])
    o = np.maximum(o, 1)
    rng = np.random.default_rng(seed)
    arrival = synthetic.arrivals(len(scan.pairs), opt["rate"], rng=rng)
    reqs, meta = shape(arrival, p, o, prompts=[q for q, _ in scan.pairs], **shaping)
    meta.update(
        path=scan.path,
        records_recovered=scan.records,
        truncated=scan.truncated,
        pairs_used=len(scan.pairs),
        tokenizer=label,
        rate=opt["rate"],
        arrival="poisson",
    )
    return Workload("sharegpt", reqs, source=scan.path, meta=meta)
