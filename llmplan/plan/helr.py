"""Exact HELR placement that scales: the latency-vs-GPU-count frontier, then HE / LR / HELR.

Every mode's objective depends on a plan only through ``(S, latency)`` (GPUs used and the
latency of :mod:`llmplan.plan.problem`), so the solver computes the frontier
``T[S] = min latency over plans with exactly S stages`` and each mode picks from it:

* ``HE``: the smallest feasible S, then T[S];
* ``LR``: argmin_S T[S] (fewer GPUs on ties);
* ``HELR``: argmin_S ``a1 * lat_norm + a2 * gpus_norm`` with both terms min-max normalised over
  the frontier: ``lat_norm = (T[S] - T_LR) / (T_HE - T_LR)`` and
  ``gpus_norm = (S - S_HE) / (S_LR - S_HE)``, i.e. 0 at the best value either mode reaches and
  1 at the other mode's value. Both are dimensionless in [0, 1], so ``a1 = a2`` picks the knee
  of the curve: the plan that recovers the most latency per extra GPU.

Why the frontier is exact without enumerating orders (the thesis' subsets x bitmasks):

1. *Layers are identical.* A stage's cost depends only on (GPU, layer count, role) where the
   role says whether it holds the embeddings (first) and/or the head (last). Contiguity is
   therefore free: any count vector is realised by consecutive ranges. (Layer kinds enter only
   through the role caps: the first stage always holds layers [0, c), so its cap prices
   DeepSeek's first-k dense layers as dense; other stages are capped as the largest kind.)
2. *Separation.* ``latency = sum_stages a(g, c, role) + sum_links a(link) + K * beta + const``
   with ``a = prefill + O * decode`` and ``beta`` the prefill bottleneck. Enumerating ``beta`` over
   the finite set of stage/link prefill times (the optimum's bottleneck is one of them), a
   stage may hold at most ``cap(g, role, beta)`` layers and links with ``xp > beta`` are barred;
   the rest is a min-cost problem in which the order enters only through the links and the
   counts only through ``sum c_s * alpha_g`` -- a separable linear program with box
   constraints whose optimum is greedy (fill the stages with the smallest ``alpha`` first).
3. *Interchangeable GPUs.* GPUs i, j are twins when their prices are equal and
   ``link(i, k) = link(j, k)`` for every other k. Twinhood is an equivalence whose classes have
   uniform internal links, so a pipeline's cost depends only on its sequence of classes: the
   path part is a DP over (usage count per class, last class) instead of (bitmask, last GPU).
   On a DGX (one class of 8) that is 9 states instead of 2^8 * 8.
4. *Identical hosts.* When every GPU has the same prices and the twin classes are equal-sized
   hosts with one intra-host link and one inter-host link that is no cheaper (both prefill and
   decode transfer), a pipeline of S stages needs at least ceil(S/g) - 1 inter-host hops and
   filling hosts one after another achieves it; the stage part depends on S only. The
   frontier is then O(S * log #beta) -- 512 GPUs plan in milliseconds.

The result equals brute force (tests: every small preset, 200+ random topologies) and an
OR-Tools CP-SAT model of the same problem (:mod:`llmplan.plan.cpsat`).
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass

from llmplan.errors import InfeasibleError
from llmplan.plan.problem import FIRST, LAST, MIDDLE, ONLY, Problem, twin_classes

MODES = ("HE", "LR", "HELR")
MAX_USAGE_STATES = 200_000


@dataclass(frozen=True, slots=True)
class Placement:
    order: tuple[int, ...]  # GPU indices of the problem, stage order
    counts: tuple[int, ...]
    latency: float

    @property
    def gpus(self) -> int:
        return len(self.order)


class _Classes:
    """Prices per twin class."""

    def __init__(self, problem: Problem, classes: list[list[int]]):
        self.problem = problem
        self.members = classes
        self.size = [len(c) for c in classes]
        self.k = len(classes)
        rep = [problem.gpus[c[0]] for c in classes]
        o = problem.O
        self.p = [g.p for g in rep]
        self.alpha = [g.p + o * g.d for g in rep]
        self.head_a = [g.hp + o * g.hd for g in rep]
        self.hp = [g.hp for g in rep]
        self.caps = [g.caps for g in rep]
        self.link_xp = [[0.0] * self.k for _ in range(self.k)]
        self.link_a = [[math.inf] * self.k for _ in range(self.k)]
        for a in range(self.k):
            for b in range(self.k):
                if a == b and self.size[a] < 2:
                    continue
                i, j = classes[a][0], classes[b][0] if a != b else classes[b][1]
                lk = problem.link(i, j)
                self.link_xp[a][b] = lk.xp
                self.link_a[a][b] = lk.xp + o * lk.xd

    def cap(self, j: int, role: int, beta: float) -> int:
        head = self.hp[j] if role & LAST else 0.0
        by_time = math.floor((beta - head) / self.p[j] + 1e-9) if beta < math.inf else 10**9
        return min(self.caps[j][role], by_time)

    def stage_cost(
        self, usage: tuple[int, ...], f: int, last: int, beta: float, n: int
    ) -> tuple[float, list[tuple[int, int, int]]] | None:
        """Greedy optimal counts: (cost, [(class, role, count), ...]) or None when infeasible."""
        s = sum(usage)
        groups: list[list] = []  # [alpha, cap_minus_one, class, role, multiplicity]
        if s == 1:
            c = self.cap(f, ONLY, beta)
            if c < n:
                return None
            return self.alpha[f] * n + self.head_a[f], [(f, ONLY, n)]
        rest = list(usage)
        rest[f] -= 1
        rest[last] -= 1
        if rest[f] < 0 or rest[last] < 0:
            return None
        for j, role, mult in [(f, FIRST, 1), (last, LAST, 1)] + [(j, MIDDLE, rest[j]) for j in range(self.k)]:
            if mult <= 0:
                continue
            c = self.cap(j, role, beta)
            if c < 1:
                return None
            groups.append([self.alpha[j], c - 1, j, role, mult])
        remaining = n - s
        if remaining < 0:
            return None
        cost = sum(g[0] * g[4] for g in groups) + self.head_a[last]
        groups.sort(key=lambda g: g[0])
        alloc = []
        for alpha, extra, j, role, mult in groups:
            take = min(remaining, extra * mult)
            cost += alpha * take
            remaining -= take
            # Stages of one group cost the same per layer: spread `take` evenly (same cost,
            # balanced plan; take <= mult * extra keeps every share within its cap).
            base, rem = divmod(take, mult)
            for k in range(mult):
                alloc.append((j, role, 1 + base + (1 if k < rem else 0)))
        if remaining > 0:
            return None
        return cost, alloc


def _usage_vectors(sizes: list[int], max_total: int):
    for u in itertools.product(*(range(s + 1) for s in sizes)):
        t = sum(u)
        if 1 <= t <= max_total:
            yield u


def _path_tables(cl: _Classes, max_total: int, tau: float):
    """For each start class f: best[(usage, last)] = (cost, parent) over paths with link xp <= tau."""
    tables = []
    for f in range(cl.k):
        start = tuple(1 if j == f else 0 for j in range(cl.k))
        best: dict = {(start, f): (0.0, None)}
        frontier = [(start, f)]
        for _ in range(max_total - 1):
            nxt = []
            for state in frontier:
                u, last = state
                cost = best[state][0]
                for j in range(cl.k):
                    if u[j] >= cl.size[j] or cl.link_xp[last][j] > tau:
                        continue
                    a = cl.link_a[last][j]
                    if a == math.inf:
                        continue
                    nu = u[:j] + (u[j] + 1,) + u[j + 1 :]
                    key = (nu, j)
                    c = cost + a
                    old = best.get(key)
                    if old is None:
                        nxt.append(key)
                    if old is None or c < old[0]:
                        best[key] = (c, state)
            frontier = nxt
        tables.append(best)
    return tables


def _class_path(table: dict, state) -> list[int]:
    seq = []
    while state is not None:
        seq.append(state[1])
        state = table[state][1]
    return seq[::-1]


class PlanTooLargeError(InfeasibleError):
    """The exact search would enumerate too many states (GPU classes are too irregular).

    Not a statement that the model does not fit: a host-aligned subset may still be planned.
    """


def frontier(problem: Problem, use_host_structure: bool = True) -> dict[int, Placement]:  # noqa: C901 - the HELR dynamic program kept in one piece so it reads against the paper's recurrence
    """T[S] for every feasible S: the minimum-latency placement using exactly S GPUs.

    ``use_host_structure=False`` skips the identical-hosts shortcut (tests compare both).
    """
    classes = twin_classes(problem)
    n = problem.n_layers
    max_total = min(n, len(problem.gpus))
    cl = _Classes(problem, classes)
    if use_host_structure and _homogeneous_hosts(cl):
        return _frontier_hosts(problem, cl, max_total)
    states = math.prod(s + 1 for s in cl.size)
    if states * cl.k > MAX_USAGE_STATES:
        raise PlanTooLargeError(
            f"topology has {len(classes)} classes of non-interchangeable GPUs ({states} usage states); "
            "restrict the plan to a subset with --gpus or plan per host"
        )
    const = problem.latency_const()
    K = problem.K
    taus = sorted({cl.link_xp[a][b] for a in range(cl.k) for b in range(cl.k) if cl.link_a[a][b] < math.inf})
    taus.append(math.inf)
    path_cache: dict[int, list] = {}

    def paths(ti: int):
        if ti not in path_cache:
            path_cache[ti] = _path_tables(cl, max_total, taus[ti])
        return path_cache[ti]

    best: dict[int, tuple[float, tuple]] = {}
    unconstrained = paths(len(taus) - 1)
    for u in _usage_vectors(cl.size, max_total):
        s = sum(u)
        present = [j for j in range(cl.k) if u[j]]
        cand = set()
        for j in present:
            for role in (MIDDLE, FIRST, LAST, ONLY):
                top = min(cl.caps[j][role], n)
                cand.update(c * cl.p[j] + (cl.hp[j] if role & LAST else 0.0) for c in range(1, top + 1))
        cand.update(cl.link_xp[a][b] for a in present for b in present if cl.link_a[a][b] < math.inf)
        betas = sorted(cand)
        for f in present:
            for last in present:
                if s == 1 and f != last:
                    continue
                if s > 1 and f == last and u[f] < 2:
                    continue
                pinf = unconstrained[f].get((u, last))
                if pinf is None:
                    continue
                sinf = cl.stage_cost(u, f, last, math.inf, n)
                if sinf is None:
                    continue
                lower = sinf[0] + pinf[0] + const
                # first beta at which the stage part is feasible (monotone in beta)
                lo = bisect.bisect_left(betas, 0.0)
                hi = len(betas)
                while lo < hi:
                    mid = (lo + hi) // 2
                    if cl.stage_cost(u, f, last, betas[mid], n) is None:
                        lo = mid + 1
                    else:
                        hi = mid
                for bi in range(lo, len(betas)):
                    beta = betas[bi]
                    if lower + K * beta >= best.get(s, (math.inf,))[0]:
                        break
                    ti = bisect.bisect_right(taus, beta) - 1
                    if ti < 0:
                        continue
                    pe = paths(ti)[f].get((u, last))
                    st = cl.stage_cost(u, f, last, beta, n)
                    if pe is None or st is None:
                        continue
                    total = st[0] + pe[0] + K * beta + const
                    if total < best.get(s, (math.inf,))[0] - 1e-15:
                        best[s] = (total, (ti, f, u, last, beta))
    out = {}
    for s, (_total, (ti, f, u, last, beta)) in best.items():
        seq = _class_path(paths(ti)[f], (u, last))
        _, alloc = cl.stage_cost(u, f, last, beta, n)  # type: ignore[misc]
        out[s] = _realise(problem, cl, seq, alloc)
    return dict(sorted(out.items()))


def _realise(problem: Problem, cl: _Classes, seq: list[int], alloc: list[tuple[int, int, int]]) -> Placement:
    """Map a class sequence and per-(class, role) counts to concrete GPUs and a count per stage."""
    s = len(seq)
    pools = {j: list(cl.members[j]) for j in range(cl.k)}
    by_role: dict[tuple[int, int], list[int]] = {}
    for j, role, c in alloc:
        by_role.setdefault((j, role), []).append(c)
    order, counts = [], []
    for pos, j in enumerate(seq):
        role = (FIRST if pos == 0 else 0) | (LAST if pos == s - 1 else 0)
        order.append(pools[j].pop(0))
        counts.append(by_role[(j, role)].pop())
    m = problem.evaluate(order, counts)
    assert m is not None, "realised placement violates the problem"
    return Placement(tuple(order), tuple(counts), m["latency_s"])


def _homogeneous_hosts(cl: _Classes) -> bool:
    if cl.k < 2:
        return cl.k == 1
    same = all(
        cl.alpha[j] == cl.alpha[0]
        and cl.p[j] == cl.p[0]
        and cl.caps[j] == cl.caps[0]
        and cl.head_a[j] == cl.head_a[0]
        and cl.size[j] == cl.size[0]
        for j in range(cl.k)
    )
    if not same:
        return False
    g = cl.size[0]
    intra = (cl.link_xp[0][0], cl.link_a[0][0]) if g > 1 else None
    inter = (cl.link_xp[0][1], cl.link_a[0][1])
    for a in range(cl.k):
        if g > 1 and (cl.link_xp[a][a], cl.link_a[a][a]) != intra:
            return False
        for b in range(cl.k):
            if a != b and (cl.link_xp[a][b], cl.link_a[a][b]) != inter:
                return False
    return intra is None or (intra[0] <= inter[0] and intra[1] <= inter[1])


def _frontier_hosts(problem: Problem, cl: _Classes, max_total: int) -> dict[int, Placement]:
    """Identical GPUs in identical hosts (module docstring, 4): O(S log #beta)."""
    n, K = problem.n_layers, problem.K
    g = cl.size[0]
    p, hp = cl.p[0], cl.hp[0]
    betas = sorted(
        {
            c * p + (hp if role & LAST else 0.0)
            for role in (MIDDLE, FIRST, LAST, ONLY)
            for c in range(1, min(cl.caps[0][role], n) + 1)
        }
    )
    out = {}
    for s in range(1, max_total + 1):
        hosts = -(-s // g)
        if hosts > cl.k:
            break
        inter = hosts - 1
        intra = s - 1 - inter
        link_cost = (inter * cl.link_a[0][1] if inter else 0.0) + (intra * cl.link_a[0][0] if intra else 0.0)
        link_beta = cl.link_xp[0][1] if inter else (cl.link_xp[0][0] if intra else 0.0)
        usage = tuple([g] * (hosts - 1) + [s - g * (hosts - 1)] + [0] * (cl.k - hosts))
        f, last = 0, hosts - 1
        lo = bisect.bisect_left(betas, link_beta)
        cands = betas[lo:]
        if link_beta > 0 and (not cands or cands[0] != link_beta):
            cands = [link_beta] + cands
        lo, hi = 0, len(cands)
        while lo < hi:
            mid = (lo + hi) // 2
            if cl.stage_cost(usage, f, last, cands[mid], n) is None:
                lo = mid + 1
            else:
                hi = mid
        if lo == len(cands):
            continue
        # all alphas equal: the stage sum does not depend on beta, so the smallest feasible beta wins
        beta = cands[lo]
        _, alloc = cl.stage_cost(usage, f, last, beta, n)  # type: ignore[misc]
        seq = [j for j in range(hosts) for _ in range(usage[j])]
        pl = _realise(problem, cl, seq, alloc)
        assert abs(
            pl.latency
            - (
                cl.stage_cost(usage, f, last, beta, n)[0]
                + link_cost
                + K * beta  # type: ignore
                + problem.latency_const()
            )
        ) < 1e-9 * max(1.0, pl.latency)
        out[s] = pl
    return out


def choose(front: dict[int, Placement], mode: str, a1: float = 0.5, a2: float = 0.5) -> Placement:
    """Pick the plan of a mode from the frontier (module docstring)."""
    if not front:
        raise InfeasibleError("no placement fits")
    mode = mode.upper()
    he = front[min(front)]
    if mode == "HE":
        return he
    lr = min(front.values(), key=lambda p: (p.latency, p.gpus))
    if mode == "LR":
        return lr
    if mode == "HELR":
        return min(front.values(), key=lambda p: (helr_score(p, he, lr, a1, a2), p.gpus))
    raise ValueError(f"mode must be one of {MODES}")


def helr_score(p: Placement, he: Placement, lr: Placement, a1: float, a2: float) -> float:
    """``a1 * lat_norm + a2 * gpus_norm``, both min-max normalised between the HE and LR plans."""
    lat_span = he.latency - lr.latency
    gpu_span = lr.gpus - he.gpus
    lat = (p.latency - lr.latency) / lat_span if lat_span > 0 else 0.0
    gpus = (p.gpus - he.gpus) / gpu_span if gpu_span > 0 else 0.0
    return a1 * lat + a2 * gpus
