"""Brute-force reference for HELR: every ordered GPU subset and every layer composition.

Exponential on purpose -- it is the definition the fast solver is tested against.
"""

from __future__ import annotations

import itertools

from llmplan.plan.helr import Placement
from llmplan.plan.problem import Problem, role_of


def _compositions(n: int, parts: int):
    for cuts in itertools.combinations(range(1, n), parts - 1):
        bounds = (0, *cuts, n)
        yield tuple(bounds[i + 1] - bounds[i] for i in range(parts))


def brute_force_frontier(problem: Problem) -> dict[int, Placement]:
    n = problem.n_layers
    best: dict[int, Placement] = {}
    for s in range(1, min(n, len(problem.gpus)) + 1):
        comps = list(_compositions(n, s))
        for order in itertools.permutations(range(len(problem.gpus)), s):
            caps = [problem.gpus[g].caps[role_of(k == 0, k == s - 1)] for k, g in enumerate(order)]
            for counts in comps:
                if any(c > cap for c, cap in zip(counts, caps, strict=True)):
                    continue
                m = problem.evaluate(list(order), list(counts))
                if m is not None and (s not in best or m["latency_s"] < best[s].latency):
                    best[s] = Placement(order, counts, m["latency_s"])
    return best


def brute_force_joint_frontier(base: Problem, tp_degrees: tuple[int, ...] = (1, 2, 4, 8)) -> dict[int, float]:
    """Min latency per GPU count over every TP degree, every ordered sequence of disjoint TP groups
    drawn from *all* candidate groups (every ``t`` interchangeable GPUs on one host, not one
    partition of them), each way of holding MoE experts (TP-sharded or EP) and every layer
    composition. Returns {gpus: latency}."""
    from llmplan.plan.problem import expert_modes, groups_problem, tp_candidate_groups, tp_infeasible_reason

    n = base.n_layers
    best: dict[int, float] = {}
    for t in tp_degrees:
        if t > 1 and tp_infeasible_reason(base.spec, t):
            continue
        cands = [[i] for i in range(len(base.gpus))] if t == 1 else tp_candidate_groups(base, t)
        if not cands:
            continue
        for ep in expert_modes(base.spec, t):
            pb = base if t == 1 else groups_problem(base, cands, t, ep)
            for s in range(1, min(n, len(cands)) + 1):
                comps = list(_compositions(n, s))
                for order in itertools.permutations(range(len(cands)), s):
                    used = [g for k in order for g in cands[k]]
                    if len(set(used)) != len(used):
                        continue
                    for counts in comps:
                        m = pb.evaluate(list(order), list(counts))
                        if m is not None and m["latency_s"] < best.get(s * t, float("inf")):
                            best[s * t] = m["latency_s"]
    return dict(sorted(best.items()))
