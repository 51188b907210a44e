"""Fit the operator cost model's few parameters on measured profiles (scipy least squares, light).

All fits minimise log(predicted / measured), i.e. relative error, so a 5 us decode GEMM and a
3 ms prefill GEMM count the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llmplan.opcost.ops import (
    GemmParams,
    GpuOpParams,
    SmallOpParams,
    gemm_curve_np,
    gemm_shapes,
    sm_count,
    small_op_bytes_per_token,
)
from llmplan.opcost.profiles import GEMM_OPS, ITER_OPS, SMALL_OPS, NetProfile, OpProfile


def _gemm_rows(profiles: Sequence[OpProfile]) -> tuple[np.ndarray, ...]:
    m, n, k, t = [], [], [], []
    for prof in profiles:
        for tp in sorted(set(prof.tp.tolist())):
            rows = prof.rows(tp)
            shapes = gemm_shapes(prof.meta.dims, tp)
            for op in GEMM_OPS:
                if op not in prof.times:
                    continue
                nn, kk = shapes[op]
                for r in rows:
                    v = prof.times[op][r]
                    if np.isfinite(v) and v > 0:
                        m.append(prof.tokens[r])
                        n.append(nn)
                        k.append(kk)
                        t.append(v)
    return tuple(np.asarray(x, dtype=float) for x in (m, n, k, t))


def fit_gemm(profiles: Sequence[OpProfile], peak: float, bw: float, gpu_key: str) -> GemmParams:
    from scipy.optimize import least_squares

    m, n, k, t = _gemm_rows(profiles)
    sms = sm_count(gpu_key)

    def resid(th: np.ndarray) -> np.ndarray:
        return np.log(gemm_curve_np(th, peak, bw, sms, m, n, k) / t)

    lo = [0.0, 0.05, 0.05, 0.0, 1.0, 0.0]
    hi = [1e-3, 1.5, 1.5, 4096.0, 12.0, 1.0]
    best = None
    for w0 in (0.0, 0.5):  # the wave term is non-smooth: start from both sides
        r = least_squares(resid, [5e-6, 0.7, 0.8, 16.0, 2.0, w0], bounds=(lo, hi), x_scale="jac")
        if best is None or r.cost < best.cost:
            best = r
    assert best is not None
    return GemmParams(*(float(x) for x in best.x))


def fit_small_ops(profiles: Sequence[OpProfile], bw: float) -> dict[str, SmallOpParams]:
    """One (launch, efficiency) pair per elementwise op: t = launch + bytes / (bw * eff)."""
    from scipy.optimize import least_squares

    out: dict[str, SmallOpParams] = {}
    for op in SMALL_OPS + ITER_OPS:
        b, t = [], []
        for prof in profiles:
            if op not in prof.times:
                continue
            for tp in sorted(set(prof.tp.tolist())):
                bpt = small_op_bytes_per_token(prof.meta.dims, tp)[op]
                for r in prof.rows(tp):
                    v = prof.times[op][r]
                    if np.isfinite(v) and v > 0:
                        b.append(bpt * prof.tokens[r])
                        t.append(v)
        if len(t) < 3:
            continue
        bb, tt = np.asarray(b), np.asarray(t)
        r = least_squares(
            lambda th, bb=bb, tt=tt: np.log((th[0] + bb / (bw * th[1])) / tt),
            [3e-6, 0.5],
            bounds=([1e-8, 0.01], [1e-3, 2.0]),
            x_scale="jac",
        )
        out[op] = SmallOpParams(float(r.x[0]), float(r.x[1]))
    return out


def fit_gpu(profiles: Sequence[OpProfile], peak: float, bw: float, gpu_key: str) -> GpuOpParams:
    return GpuOpParams(
        fit_gemm(profiles, peak, bw, gpu_key),
        fit_small_ops(profiles, bw),
        fitted_on=", ".join(sorted({p.meta.model for p in profiles})),
    )


# ---------------------------------------------------------------------------- collectives
def fit_collectives(
    allreduce: Sequence[tuple[NetProfile, float, float]],
    send_recv: Sequence[tuple[NetProfile, float, float]],
    max_bytes: float = 64 * 2**20,
) -> dict[str, float]:
    """Fit the NCCL constants on intra-node rows; entries are (table, link bytes/s, link latency s)."""
    from scipy.optimize import least_squares

    def rows(tabs: Sequence[tuple[NetProfile, float, float]]) -> tuple[np.ndarray, ...]:
        n, s, t, bw, lat = [], [], [], [], []
        for tab, b, la in tabs:
            sel = tab.intra_node() & (tab.size <= max_bytes)
            n += tab.workers[sel].tolist()
            s += tab.size[sel].tolist()
            t += tab.time_s[sel].tolist()
            bw += [b] * int(sel.sum())
            lat += [la] * int(sel.sum())
        return tuple(np.asarray(x, dtype=float) for x in (n, s, t, bw, lat))

    n, s, t, bw, lat = rows(allreduce)

    def ar(th: np.ndarray) -> np.ndarray:
        a0, a1, e = th
        return a0 + a1 * (n - 1) + 2 * (n - 1) * lat + 2 * (n - 1) / n * s / (bw * e)

    r = least_squares(
        lambda th: np.log(ar(th) / t), [2e-5, 5e-6, 0.7], bounds=([0, 0, 0.01], [1e-3, 1e-3, 2.0])
    )
    _, s2, t2, bw2, lat2 = rows(send_recv)

    def sr(th: np.ndarray) -> np.ndarray:
        return th[0] + lat2 + s2 / (bw2 * th[1])

    r2 = least_squares(lambda th: np.log(sr(th) / t2), [1e-5, 0.7], bounds=([0, 0.01], [1e-3, 2.0]))
    return {
        "allreduce_base_s": float(r.x[0]),
        "allreduce_per_rank_s": float(r.x[1]),
        "allreduce_eff": float(r.x[2]),
        "send_recv_base_s": float(r2.x[0]),
        "send_recv_eff": float(r2.x[1]),
    }


def fit_allreduce_class(
    tabs: Sequence[tuple[NetProfile, float, float]],
    workers: Sequence[int] | None = None,
    max_bytes: float = 64 * 2**20,
    per_rank_s: float = 0.0,
) -> dict[str, float]:
    """All-reduce constants of one link class (e.g. PCIe) on rows of ``workers`` GPUs: launch +
    synchronisation ``a0`` and bandwidth efficiency ``eff`` (the per-rank term is held at
    ``per_rank_s``: one worker count cannot separate it from ``a0``). Relative (log) least squares."""
    from scipy.optimize import least_squares

    n, s, t, bw, lat = [], [], [], [], []
    for tab, b, la in tabs:
        sel = tab.intra_node() & (tab.size <= max_bytes)
        if workers is not None:
            sel &= np.isin(tab.workers, list(workers))
        n += tab.workers[sel].tolist()
        s += tab.size[sel].tolist()
        t += tab.time_s[sel].tolist()
        bw += [b] * int(sel.sum())
        lat += [la] * int(sel.sum())
    na, sa, ta, bwa, lata = (np.asarray(x, dtype=float) for x in (n, s, t, bw, lat))
    if not len(ta):
        raise ValueError("no all-reduce rows to fit")

    def ar(th: np.ndarray) -> np.ndarray:
        a0, e = th
        return a0 + per_rank_s * (na - 1) + 2 * (na - 1) * lata + 2 * (na - 1) / na * sa / (bwa * e)

    r = least_squares(lambda th: np.log(ar(th) / ta), [2e-5, 0.7], bounds=([0, 0.01], [1e-3, 2.0]))
    return {
        "allreduce_base_s": float(r.x[0]),
        "allreduce_per_rank_s": per_rank_s,
        "allreduce_eff": float(r.x[1]),
    }
