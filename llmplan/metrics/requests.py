"""Per-request metrics as one pandas frame: the row-level truth every aggregate reads.

Columns (seconds unless noted): rid, status, reason, instance, arrival_s, prompt_tokens,
output_tokens, predicted_output_tokens, preemptions, queueing_s, ttft_s, tpot_s,
itl_mean_s, itl_max_s, e2e_s, finish_s, slo_{ttft,tpot,e2e}_s, {ttft,tpot,e2e}_met, slo_met.

SLO flags: a ``*_met`` column is NaN where the request has no target of that kind; a
request that failed or was rejected misses every target it has. ``slo_met`` is True when
every target the request has is met (a request with no targets meets them vacuously when
it completes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from llmplan.metrics.tokens import TokenTimes, token_times
from llmplan.metrics.types import RunResult

SLO_KINDS = ("ttft", "tpot", "e2e")
_NAN = float("nan")


def _f(v: float | None) -> float:
    return _NAN if v is None else float(v)


def request_frame(result: RunResult, tokens: TokenTimes | None = None) -> pd.DataFrame:
    tokens = tokens if tokens is not None else token_times(result.records)
    itl_means, itl_maxes = tokens.per_record(len(result.records))
    rows = []
    for r, itl_mean, itl_max in zip(result.records, itl_means.tolist(), itl_maxes.tolist(), strict=True):
        ok = r.status == "ok"
        rows.append(
            (
                r.rid,
                r.status,
                r.reason,
                r.instance,
                r.arrival_s,
                r.prompt_tokens,
                r.output_tokens,
                _f(r.predicted_output_tokens),
                r.preemptions,
                _f(r.queueing_s),
                _f(r.ttft_s) if ok else _NAN,
                _f(r.tpot_s) if ok else _NAN,
                itl_mean if ok else _NAN,
                itl_max if ok else _NAN,
                _f(r.e2e_s) if ok else _NAN,
                _f(r.finish_s),
                _f(r.slo.ttft_s),
                _f(r.slo.tpot_s),
                _f(r.slo.e2e_s),
            )
        )
    cols = [
        "rid", "status", "reason", "instance", "arrival_s", "prompt_tokens", "output_tokens",
        "predicted_output_tokens", "preemptions", "queueing_s", "ttft_s", "tpot_s", "itl_mean_s",
        "itl_max_s", "e2e_s", "finish_s", "slo_ttft_s", "slo_tpot_s", "slo_e2e_s",
    ]  # fmt: skip
    df = pd.DataFrame.from_records(rows, columns=cols)
    return add_slo_flags(df)


def add_slo_flags(df: pd.DataFrame) -> pd.DataFrame:
    """(Re)compute the ``*_met`` and ``slo_met`` columns from latencies and targets."""
    ok = (df["status"] == "ok").to_numpy()
    all_met = ok.copy()
    for kind in SLO_KINDS:
        target = df[f"slo_{kind}_s"].to_numpy(dtype=np.float64)
        value = df[f"{kind}_s"].to_numpy(dtype=np.float64)
        has = ~np.isnan(target)
        # A one-token reply has no TPOT; it cannot miss a TPOT target.
        if kind == "tpot":
            value = np.where(ok & np.isnan(value), 0.0, value)
        met = ok & has & (value <= target)
        col = np.where(has, met.astype(np.float64), _NAN)
        df[f"{kind}_met"] = col
        all_met &= ~has | met
    df["slo_met"] = all_met
    return df
