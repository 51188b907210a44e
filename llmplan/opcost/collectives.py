"""NCCL collectives: all-reduce (TP) and send/recv (PP) priced from the link and a fitted model.

Ring all-reduce of ``S`` bytes over ``n`` GPUs moves ``2 (n-1)/n * S`` bytes through every GPU's
link (the "bus bytes" of nccl-tests) in ``2 (n-1)`` steps, so

    t_allreduce(S, n) = a0 + a1 * (n - 1) + 2 (n-1) * link.latency + 2 (n-1)/n * S / (link.bandwidth * eff)
    t_send_recv(S)    = b0 + link.latency + S / (link.bandwidth * eff_p2p)

``a0`` (launch + synchronisation), ``a1`` (per extra rank), ``eff`` and the send/recv pair are
fitted on Vidur's NCCL timings of an A100 DGX (NVSwitch, 2/4/8 GPUs, 2 KB - 64 MB;
``benchmarks/fit_costmodel.py``). ``link`` is the slowest link of the group as the topology graph
gives it (``LinkPerf``: NCCL-model bandwidth per direction, e.g. NV12 = 240 GB/s), so a group joined
by PCIe is priced by its PCIe bandwidth through the same curve.

**Per link class.** The fit above is the NVLink class (NVSwitch or NVLink bridges). A group whose
slowest link is a PCIe path (``PIX``/``PXB``/``PHB``/``NODE``/``SYS`` in the topology) uses the
all-reduce constants fitted on Vidur's A100 "pairwise" cluster, 4 GPUs across two NVLink pairs
joined by PCIe Gen4 (``collectives_by_link.pcie`` in ``fitted.json``): its launch and
synchronisation cost more (~60 us) and NCCL reaches the PCIe x16 rating there. Send/recv has no
PCIe measurement and keeps the one fit.

The measured all-reduce is 3-50x the old ring formula at decode sizes (a few KB), because launch
and synchronisation (~40 us on A100) dominate there; this is the term that decides TP vs PP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from llmplan.opcost.params import fitted


class _Link(Protocol):
    bandwidth: float  # bytes/s per direction
    latency_s: float


@dataclass(frozen=True, slots=True)
class CollectiveParams:
    """Fitted NCCL constants (seconds, fraction of link bandwidth)."""

    allreduce_base_s: float
    allreduce_per_rank_s: float
    allreduce_eff: float
    send_recv_base_s: float
    send_recv_eff: float

    @classmethod
    def default(cls) -> CollectiveParams:
        c = fitted()["collectives"]
        return cls(
            allreduce_base_s=float(c["allreduce_base_s"]),
            allreduce_per_rank_s=float(c["allreduce_per_rank_s"]),
            allreduce_eff=float(c["allreduce_eff"]),
            send_recv_base_s=float(c["send_recv_base_s"]),
            send_recv_eff=float(c["send_recv_eff"]),
        )


_DEFAULT: CollectiveParams | None = None
_BY_CLASS: dict[str, CollectiveParams] = {}
PCIE_KINDS = ("PIX", "PXB", "PHB", "NODE", "SYS")


def default_collective_params() -> CollectiveParams:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = CollectiveParams.default()
    return _DEFAULT


def link_class(link: object) -> str:
    """``"pcie"`` for a PCIe path (the topology's PIX/PXB/PHB/NODE/SYS), else ``"nvlink"``."""
    kind = str(getattr(link, "kind", "") or "").upper()
    return "pcie" if kind in PCIE_KINDS else "nvlink"


def params_for_link(link: object) -> CollectiveParams:
    """The fitted constants of ``link``'s class: PCIe all-reduce constants where a fit of that
    class exists (``collectives_by_link`` in the parameter file), else the NVLink fit."""
    cls = link_class(link)
    if cls == "nvlink":
        return default_collective_params()
    p = _BY_CLASS.get(cls)
    if p is None:
        from dataclasses import replace

        c = (fitted().get("collectives_by_link") or {}).get(cls) or {}
        keys = ("allreduce_base_s", "allreduce_per_rank_s", "allreduce_eff")
        p = _BY_CLASS[cls] = replace(default_collective_params(), **{k: float(c[k]) for k in keys if k in c})
    return p


def allreduce_coefficients(
    workers: int, link: _Link, params: CollectiveParams | None = None
) -> tuple[float, float]:
    """``(c0 seconds, c1 seconds per byte)``: an all-reduce of ``S`` bytes costs ``c0 + c1 * S``."""
    if workers <= 1 or link.bandwidth == math.inf:
        return 0.0, 0.0
    p = params or params_for_link(link)
    n = workers
    c0 = p.allreduce_base_s + p.allreduce_per_rank_s * (n - 1) + 2 * (n - 1) * link.latency_s
    c1 = 2 * (n - 1) / n / (link.bandwidth * p.allreduce_eff)
    return c0, c1


def allreduce_time(nbytes: float, workers: int, link: _Link, params: CollectiveParams | None = None) -> float:
    """Seconds for an NCCL all-reduce of ``nbytes`` (per GPU) over ``workers`` GPUs joined by ``link``."""
    if workers <= 1 or nbytes <= 0:
        return 0.0
    c0, c1 = allreduce_coefficients(workers, link, params)
    return c0 + c1 * nbytes


def alltoall_coefficients(
    workers: int, link: _Link, params: CollectiveParams | None = None
) -> tuple[float, float]:
    """``(c0, c1)``: an all-to-all in which every GPU holds ``S`` bytes bound for the whole group costs
    ``c0 + c1 * S``: ``(n-1)/n * S`` leave each GPU over its link in ``n - 1`` pairwise steps (one
    link latency each), with the all-reduce's launch/synchronisation and bandwidth efficiency
    (no all-to-all timings were measured; an all-reduce's ring steps are the nearest fit)."""
    if workers <= 1 or link.bandwidth == math.inf:
        return 0.0, 0.0
    p = params or params_for_link(link)
    n = workers
    c0 = p.allreduce_base_s + p.allreduce_per_rank_s * (n - 1) + (n - 1) * link.latency_s
    return c0, (n - 1) / n / (link.bandwidth * p.allreduce_eff)


def send_recv_coefficients(link: _Link, params: CollectiveParams | None = None) -> tuple[float, float]:
    """``(c0, c1)``: a point-to-point send/recv of ``S`` bytes costs ``c0 + c1 * S``."""
    if link.bandwidth == math.inf:
        return 0.0, 0.0
    p = params or default_collective_params()
    return p.send_recv_base_s + link.latency_s, 1.0 / (link.bandwidth * p.send_recv_eff)


def send_recv_time(nbytes: float, link: _Link, params: CollectiveParams | None = None) -> float:
    """Seconds for one NCCL send/recv of ``nbytes`` between two GPUs over ``link`` (a PP hand-off)."""
    if nbytes <= 0:
        return 0.0
    c0, c1 = send_recv_coefficients(link, params)
    return c0 + c1 * nbytes
