"""An OR-Tools CP-SAT model of the HELR problem, independent of the frontier solver.

Same decision and costs as :mod:`llmplan.plan.problem`, stated directly: a GPU per pipeline
stage, a layer count per GPU, role-dependent memory caps, the prefill bottleneck as
a max, link costs on consecutive positions. The order is a circuit through a dummy node
(``AddCircuit``), which keeps the model at O(G^2) booleans. Costs are scaled to integers (``scale`` ticks per
second), so its optimum matches the exact solver up to that rounding. Used by the tests and by
``benchmarks/plan_scale.py`` to report the gap to CP-SAT's bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmplan.plan.helr import Placement
from llmplan.plan.problem import FIRST, LAST, MIDDLE, Problem


@dataclass(frozen=True, slots=True)
class CpSatResult:
    placement: Placement | None
    objective_s: float | None  # incumbent, seconds (rounded costs)
    bound_s: float  # CP-SAT's proven lower bound, seconds
    optimal: bool
    wall_s: float


def solve_cpsat(
    problem: Problem,
    num_gpus: int | None = None,
    time_limit_s: float = 10.0,
    scale: float = 1e7,
    workers: int = 2,
) -> CpSatResult:
    """Minimise latency (exactly ``num_gpus`` stages when given) with CP-SAT."""
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    n, ng = problem.n_layers, len(problem.gpus)
    k_b, o_len = problem.K, problem.O

    def q(v: float) -> int:
        return int(round(v * scale))

    # The pipeline is a path; close it into a circuit through a dummy node D (node ng):
    # arc D->g marks the first stage, g->D the last, a self-loop g->g an unused GPU.
    D = ng  # noqa: N806
    arcs, used, first, last = [], [], [], []
    arc: dict[tuple[int, int], cp_model.IntVar] = {}
    for g in range(ng):
        u = m.NewBoolVar(f"used{g}")
        f = m.NewBoolVar(f"first{g}")
        la = m.NewBoolVar(f"last{g}")
        arcs += [(D, g, f), (g, D, la), (g, g, u.Not())]
        used.append(u)
        first.append(f)
        last.append(la)
        for h in range(ng):
            if g != h:
                arc[(g, h)] = m.NewBoolVar(f"a{g}_{h}")
                arcs.append((g, h, arc[(g, h)]))
    m.AddCircuit(arcs)
    m.Add(sum(first) == 1)
    if num_gpus is not None:
        m.Add(sum(used) == num_gpus)
    c = [m.NewIntVar(0, n, f"c{g}") for g in range(ng)]
    m.Add(sum(c) == n)
    # beta's domain must hold every bound posted below in the same rounded units: q(p) * n +
    # q(hp) can exceed q(p * n + hp) by up to n / 2 ticks, which made one-stage plans (all n
    # layers on one GPU) infeasible whenever q(p) rounded up.
    max_pre = max(
        max(q(gc.p) * n + q(gc.hp) for gc in problem.gpus),
        max((q(lk.xp) for lk in problem.link_types), default=0),
    )
    beta = m.NewIntVar(0, max_pre, "beta")
    terms = []
    for g, gc in enumerate(problem.gpus):
        m.Add(c[g] >= 1).OnlyEnforceIf(used[g])
        m.Add(c[g] == 0).OnlyEnforceIf(used[g].Not())
        for fr in (False, True):
            for lr in (False, True):
                role = (FIRST if fr else MIDDLE) | (LAST if lr else MIDDLE)
                lits = [first[g] if fr else first[g].Not(), last[g] if lr else last[g].Not()]
                m.Add(c[g] <= gc.caps[role]).OnlyEnforceIf(lits)
        m.Add(beta >= q(gc.p) * c[g] + q(gc.hp) * last[g])
        terms += [q(gc.p + o_len * gc.d) * c[g], q(gc.hp + o_len * gc.hd) * last[g]]
    for (g, h), a in arc.items():
        lk = problem.link(g, h)
        terms.append(q(lk.xp + o_len * lk.xd) * a)
        m.Add(beta >= q(lk.xp)).OnlyEnforceIf(a)
    m.Minimize(sum(terms) + k_b * beta)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = workers
    status = solver.Solve(m)
    const = problem.latency_const()
    bound = solver.BestObjectiveBound() / scale + const
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return CpSatResult(None, None, bound, status == cp_model.INFEASIBLE, solver.WallTime())
    start = next(g for g in range(ng) if solver.Value(first[g]))
    order, counts = [start], [solver.Value(c[start])]
    while not solver.Value(last[order[-1]]):
        nxt = next(h for h in range(ng) if h != order[-1] and solver.Value(arc[(order[-1], h)]))
        order.append(nxt)
        counts.append(solver.Value(c[nxt]))
    ev = problem.evaluate(order, counts)
    assert ev is not None, "CP-SAT returned a placement the problem rejects"
    return CpSatResult(
        Placement(tuple(order), tuple(counts), ev["latency_s"]),
        solver.ObjectiveValue() / scale + const,
        bound,
        status == cp_model.OPTIMAL,
        solver.WallTime(),
    )


__all__ = ["solve_cpsat", "CpSatResult"]
