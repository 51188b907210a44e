"""A bench run as a library call: workload -> cluster -> one simulation per policy -> report.

``llmplan bench`` only parses flags into a :class:`BenchConfig`, calls :func:`run_bench`
and renders. Every policy runs on the identical workload object (same requests, same
SLOs, same seed), so differences between columns come from the policies alone.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, replace
from typing import Any

from llmplan import __version__
from llmplan.bench.config import (  # noqa: F401  (re-exported: the runner's public names)
    DEFAULT_POLICIES,
    DEFAULT_TOPOLOGY,
    SYSTEM_GPU,
    BenchConfig,
    Cluster,
    OnProgress,
)
from llmplan.bench.jobs import SimJob, run_jobs, simulate_once  # noqa: F401
from llmplan.deployment import DeploymentSpec, InstanceSpec, StageSpec
from llmplan.errors import LlmplanError
from llmplan.metrics import RunMetrics, compute_metrics, distserve_goodput
from llmplan.metrics.types import RunResult
from llmplan.report.model import BenchReport, SweepPoint
from llmplan.report.repeats import aggregate as aggregate_repeats
from llmplan.workload import load_workload, offered_rate
from llmplan.workload.shaping import rescale_rate
from llmplan.workload.types import Workload


def _default_cost_label() -> str:
    """What prices iterations when no calibration profile is given (reports say it)."""
    from llmplan.plan.costmodel import DEFAULT_PARAMS

    if DEFAULT_PARAMS.cost_model == "ops":
        return "operator model (llmplan.opcost: Vidur-fitted GEMM/elementwise curves, NCCL fit)"
    return "roofline (llmplan.plan.costmodel)"


def load_calibration_cost(path: str) -> Any:
    """A profile measured by ``llmplan calibrate``, as an IterationCost for every instance."""
    from llmplan.runtime.calibration import load_calibration

    return load_calibration(path)


def system_names(policies: list[str]) -> bool:
    """True when ``policies`` name whole systems (vllm, distserve, banaserve), False for batch
    policies; a mix is an error: a system fixes its own router, split and policy."""
    from llmplan.bench.systems import SYSTEMS

    names = [p.strip().lower() for p in policies]
    systems = [n for n in names if n in SYSTEMS]
    if not systems:
        return False
    if len(systems) != len(names):
        others = ", ".join(n for n in names if n not in SYSTEMS)
        raise LlmplanError(
            f"--compare mixes systems ({', '.join(systems)}) with batch policies ({others}); "
            "compare systems or policies, not both"
        )
    return True


def system_layout(cfg: BenchConfig) -> tuple[int, tuple[int, int]]:
    """(GPUs, P:D split) of a system comparison: ``--instances`` GPUs (default 4, one TP=1
    replica each) and ``--disaggregation`` for DistServe/BanaServe (default half:half)."""
    if cfg.plan or cfg.calibration or cfg.deployment:
        raise LlmplanError(
            "--compare vllm,distserve,banaserve builds its own TP=1 cluster; "
            "drop --plan/--config/--calibration"
        )
    if cfg.router != "round-robin":
        raise LlmplanError(
            f"--router {cfg.router}: each system of --compare vllm,distserve,banaserve fixes its own "
            "router; drop --router"
        )
    if cfg.disaggregation is not None:
        n_p, n_d = cfg.disaggregation
        if cfg.instances is not None and cfg.instances != n_p + n_d:
            raise LlmplanError(
                f"--disaggregation {n_p}:{n_d} needs {n_p + n_d} GPUs, --instances is {cfg.instances}; "
                "drop --instances"
            )
        gpus, pd = n_p + n_d, (n_p, n_d)
    else:
        gpus = 4 if cfg.instances is None else cfg.instances
        pd = (gpus // 2, gpus - gpus // 2)
    if gpus < 2 and any(p.strip().lower() != "vllm" for p in cfg.policies):
        raise LlmplanError(f"distserve/banaserve need >= 2 GPUs (one prefill, one decode); got {gpus}")
    return gpus, pd


def build_system_cluster(cfg: BenchConfig) -> Cluster:
    """The hardware every system of ``--compare vllm,distserve,banaserve`` shares: ``gpus``
    A100-80GB, one TP=1 replica each; the systems differ only in routing, P:D split and controller."""
    from llmplan.bench.systems import REGISTRY, SYSTEMS, sim_gaps
    from llmplan.opcost.engines import DEFAULT_ENGINE, canonical_engine, describe

    if cfg.serving_engine and canonical_engine(cfg.serving_engine) != DEFAULT_ENGINE:
        raise LlmplanError(
            f"--serving-engine {cfg.serving_engine}: the systems comparison prices every system's steps "
            "with vLLM's overhead (the systems are defined on vLLM); drop --serving-engine, or compare "
            "batch policies with it"
        )
    gpus, pd = system_layout(cfg)
    desc = {
        "serving_engine": describe(DEFAULT_ENGINE),
        "model": cfg.model,
        "systems": {
            "gpus": gpus,
            "gpu": SYSTEM_GPU,
            "tp": 1,
            "pd": list(pd),
            "compared": [p.strip().lower() for p in cfg.policies],
            "known": list(SYSTEMS),
            **{
                name: f"{REGISTRY[name].description}"
                + (f" ({pd[0]}:{pd[1]} P:D)" if REGISTRY[name].layout == "pd" else "")
                for name in SYSTEMS
            },
            # Each system's one definition (llmplan.bench.systems), and what the simulator leaves out.
            "definitions": {name: REGISTRY[name].to_dict() for name in SYSTEMS},
            "not_simulated": {name: sim_gaps(REGISTRY[name]) for name in SYSTEMS if sim_gaps(REGISTRY[name])},
        },
        "cost_model": _default_cost_label(),
        "block_size": cfg.engine.block_size,
    }
    return Cluster([], desc, None, None)


def serving_engine_of(cfg: BenchConfig) -> str:
    """The engine a run models: ``--serving-engine``, else the deployment spec's, else vLLM (the
    simulator's scheduler is vLLM V1's: chunked prefill, 256 sequences, 8192-token budget)."""
    from llmplan.opcost.engines import DEFAULT_ENGINE, canonical_engine

    if cfg.serving_engine:
        return canonical_engine(cfg.serving_engine)
    spec_engine = (cfg.deployment or {}).get("serving_engine")
    return canonical_engine(spec_engine, "serving_engine") if spec_engine else DEFAULT_ENGINE


def _engine_desc(cfg: BenchConfig) -> dict[str, Any]:
    from llmplan.opcost.engines import describe

    d = describe(serving_engine_of(cfg))
    if cfg.calibration:
        d["note"] = "not applied: the calibration profile's measured steps include the engine's overhead"
    return d


def build_cluster(cfg: BenchConfig) -> Cluster:
    """The simulated deployment: every instance of a plan, each priced as planned.

    By default the topology is filled with the planner (:func:`~llmplan.plan.planner.fill_plan`:
    one ``cfg.plan_mode`` instance after another on the GPUs left), so no GPU idles when the model
    still fits, and each instance is priced by the roofline of its own stages and GPUs
    (``InstanceCost.from_plan``, via ``cluster_from_plan``). A ``--plan`` file is used as it is.
    Only an explicit ``--instances N`` or ``--disaggregation P:D`` replicates the plan's
    instances; those copies are priced as the instance they copy (exact on identical GPUs).
    """
    from llmplan.models import get_model_spec
    from llmplan.runtime.sim.cluster import cluster_from_plan
    from llmplan.topology import gpu_nodes, load_topology

    if cfg.deployment is not None and not cfg.plan:
        return build_spec_cluster(cfg, DeploymentSpec.from_dict(cfg.deployment))
    replicate = cfg.instances is not None or cfg.disaggregation is not None
    plan = None
    topology = cfg.topology or DEFAULT_TOPOLOGY
    if cfg.plan:
        from llmplan.plan.types import Plan

        plan = Plan.load(cfg.plan)
        # The plan was priced on its own topology: simulate it there, never on another one.
        own = topology_source(plan.topology) if plan.topology else None
        if own and cfg.topology and topology_source(cfg.topology) != own:
            raise LlmplanError(
                f"--topology {cfg.topology} conflicts with the plan's topology {plan.topology}; "
                "drop --topology (the plan brings its own) or re-plan on that topology"
            )
        topology = own or topology
    graph = load_topology(topology)

    from llmplan.plan.costmodel import params_for_engine, plan_cost_params

    engine_name = serving_engine_of(cfg)
    if plan is not None:  # a saved plan is simulated as planned, priced for the engine that serves it
        plan.params = asdict(params_for_engine(engine_name, plan_cost_params(plan)))
    elif replicate:
        from llmplan.plan.planner import make_plan

        plan = make_plan(
            get_model_spec(cfg.model), graph, cfg.plan_mode, topology=topology,
            params=params_for_engine(engine_name),
        )  # fmt: skip
    else:
        from llmplan.plan.planner import fill_plan

        plan = fill_plan(
            get_model_spec(cfg.model), graph, cfg.plan_mode, topology=topology,
            params=params_for_engine(engine_name),
        )  # fmt: skip
    base = cluster_from_plan(plan, graph, block_size=cfg.engine.block_size)
    if cfg.disaggregation is not None:
        n_p, n_d = cfg.disaggregation
        if n_p < 1 or n_d < 1:
            raise LlmplanError(
                f"--disaggregation needs >= 1 prefill and >= 1 decode instance, got {n_p}:{n_d}"
            )
        if cfg.instances is not None and cfg.instances != n_p + n_d:
            raise LlmplanError(
                f"--disaggregation {n_p}:{n_d} needs {n_p + n_d} instances, --instances is {cfg.instances}; "
                "drop --instances"
            )
        replicas = n_p + n_d
    elif cfg.instances is not None:
        replicas = cfg.instances
    else:
        replicas = len(base)  # every planned instance, as planned
    if replicas < 1:
        raise LlmplanError(f"--instances must be >= 1, got {replicas}")
    gpu_sets = _replica_gpus(base, gpu_nodes(graph), replicas)
    roles = [s.role for s in base]
    names = [f"i{k}" for k in range(replicas)]
    if cfg.disaggregation is not None:
        n_p = cfg.disaggregation[0]
        roles = ["prefill" if k < n_p else "decode" for k in range(replicas)]
        names = [f"p{k}" if k < n_p else f"d{k - n_p}" for k in range(replicas)]
    specs = [
        replace(base[k % len(base)], name=names[k], role=roles[k % len(roles)], gpus=gpu_sets[k])
        for k in range(replicas)
    ]
    gpu_names = {st.gpu_name for ip in plan.instances for st in ip.stages if st.gpu_name}
    device = gpu_names.pop() if len(gpu_names) == 1 else None
    cost = None
    if cfg.calibration:
        cost = load_calibration_cost(cfg.calibration)
        check_profile(cost, plan.model, device, _plan_dtype(plan), cfg.allow_profile_mismatch)
    desc = {
        "model": plan.model,
        "topology": topology,
        "plan_mode": plan.mode,
        "plan_file": cfg.plan,
        "plan_instance_gpus": [list(i.gpus) for i in plan.instances],
        "plan_metrics": {k: v for k, v in plan.metrics.items() if k not in ("frontier", "instances")},
        "plan_instance_metrics": [
            {k: v for k, v in m.items() if k != "frontier"}
            for m in plan.metrics.get("instances", [plan.metrics])
        ],
        "plan_explanation": plan.explanation,
        "plan_fill": bool(plan.metrics.get("fill")),
        "plan_unused_gpus": list(plan.metrics.get("unused_gpus", [])),
        "replicas": replicas,
        "replica_gpus": [list(g) for g in gpu_sets],
        "replica_cost": "copies of the planned instances, priced as the instance they copy "
        "(exact on identical GPUs)"
        if replicas != len(base)
        else "each planned instance's own cost model (InstanceCost.from_plan)",
        "roles": [s.role for s in specs],
        "kv_blocks_per_instance": [s.num_blocks for s in specs],
        "block_size": cfg.engine.block_size,
        "cost_model": "calibration:" + cfg.calibration if cfg.calibration else _default_cost_label(),
        "serving_engine": _engine_desc(cfg),
    }
    if cost is not None:
        desc["calibration"] = {k: getattr(cost, k, None) for k in ("model", "device", "dtype")}
    return Cluster(specs, desc, cost, graph, plan, device)


def topology_source(name: str) -> str:
    """A plan's topology as ``load_topology`` reads it: plans made in code may name a preset
    bare ("dgx-a100"); "preset:dgx-a100" and "dgx-a100" are the same topology."""
    from llmplan.topology.presets import preset_names

    if name in preset_names():
        return f"preset:{name}"
    return name


def _plan_dtype(plan: Any) -> str:
    ms = plan.model_spec or {}
    return str(ms.get("weight_dtype") or ms.get("dtype") or "bfloat16")


def check_profile(cost: Any, model: str, device: str | None, dtype: str | None, allow: bool) -> None:
    """Refuse a calibration profile measured on another model, device or dtype (or one whose
    coefficients are all zero): it would price a different system. ``allow`` (the flag
    ``--allow-profile-mismatch``) accepts a mismatch knowingly; all-zero is never accepted."""
    from llmplan.deployment import canonical_dtype

    coef = getattr(cost, "coef", None)
    if isinstance(coef, dict) and not any(float(v) > 0 for v in coef.values()):
        raise LlmplanError(
            "--calibration: every coefficient of the profile is zero (it would price each step at 0 s); "
            "re-run `llmplan calibrate`"
        )
    bad = []
    pm = getattr(cost, "model", None)
    if pm and model and str(pm).lower() != str(model).lower():
        bad.append(f"model {pm} (deployment: {model})")
    pd = getattr(cost, "device", None)
    if pd and device and not _same_device(str(pd), device):
        bad.append(f"device {pd} (deployment: {device})")
    pt = getattr(cost, "dtype", None)
    if pt and dtype:
        try:
            same = canonical_dtype(str(pt)) == canonical_dtype(str(dtype))
        except LlmplanError:
            same = str(pt).lower() == str(dtype).lower()
        if not same:
            bad.append(f"dtype {pt} (deployment: {dtype})")
    if bad and not allow:
        raise LlmplanError(
            f"--calibration profile was measured on another system: {'; '.join(bad)}; calibrate this one "
            "(`llmplan calibrate`) or pass --allow-profile-mismatch to use it anyway"
        )


def _same_device(profile_device: str, device: str) -> bool:
    a, b = profile_device.lower(), device.lower()
    if a.startswith("cpu") or b.startswith("cpu"):
        return a.startswith("cpu") and b.startswith("cpu")
    if a.startswith("cuda"):
        return True  # a GPU profile names its device by ordinal, not model: nothing to compare
    norm = [x.replace("nvidia", "").replace("-", " ").replace("_", " ").split() for x in (a, b)]
    # "NVIDIA A100-SXM4-80GB" vs the catalog's "A100-SXM-80GB": the GPU family must match.
    return bool(norm[0] and norm[1] and norm[0][0] == norm[1][0])


def build_spec_cluster(cfg: BenchConfig, spec: DeploymentSpec) -> Cluster:
    """The instances a deployment spec describes, without a plan (a server's own spec from
    GET /v1/deployment): each priced by the calibration profile, or on a GPU by the planner's
    roofline for its model, device and TP degree. A CPU deployment has no roofline: it needs a
    profile from ``llmplan calibrate``, and is refused without one."""
    from llmplan.runtime.sim.cluster import default_cost, kv_capacity_blocks
    from llmplan.runtime.sim.config import InstanceSpec as SimInstance

    device = spec.device or "cpu"
    cost = None
    if cfg.calibration:
        cost = load_calibration_cost(cfg.calibration)
        check_profile(cost, spec.model, device, spec.weight_dtype, cfg.allow_profile_mismatch)
    elif device.lower().startswith("cpu"):
        raise LlmplanError(
            f"the deployment runs {spec.model} on {device}; the simulator has no roofline for a CPU, so "
            f"measure one: `llmplan calibrate --dummy-weights {spec.model} --out profile.json`, then pass "
            "--calibration profile.json"
        )
    from llmplan.plan.costmodel import params_for_engine

    params = params_for_engine(serving_engine_of(cfg))
    specs = []
    for inst in spec.instances:
        c = cost if cost is not None else default_cost(spec.model, device, inst.tp, params)
        blocks = inst.num_kv_blocks or kv_capacity_blocks(c, spec.engine.block_size)
        if not blocks:
            raise LlmplanError(
                f"instance {inst.name} of the deployment gives no KV pool size; set num_kv_blocks in the spec"
            )
        specs.append(SimInstance(inst.name, c, int(blocks), inst.role, tuple(inst.gpus)))
    desc = {
        "model": spec.model,
        "topology": spec.topology,
        "device": device,
        "deployment_source": spec.source,
        "router": spec.router,
        # The simulator routes each request on arrival; a front end's admission queue (which
        # holds requests only while every backend is at its in-flight cap) is not modelled.
        "admission_not_simulated": spec.admission,
        "roles": [s.role for s in specs],
        "kv_blocks_per_instance": [s.num_blocks for s in specs],
        "block_size": spec.engine.block_size,
        "cost_model": "calibration:" + cfg.calibration if cfg.calibration else _default_cost_label(),
        "serving_engine": _engine_desc(cfg),
    }
    return Cluster(specs, desc, cost, None, None, device)


def deployment_of_run(cfg: BenchConfig, cluster: Cluster, policy: str) -> dict[str, Any]:
    """The deployment one run simulated, as a :class:`DeploymentSpec` dict for report.json."""
    from dataclasses import replace as _replace

    systems = cluster.description.get("systems")
    engine = _replace(cfg.engine, policy=policy if not systems else "fcfs")
    if systems is not None:
        from llmplan.bench.systems import system_config

        gpus, pd = systems["gpus"], tuple(systems["pd"])
        sc = system_config(policy, model=cfg.model, gpu=systems["gpu"], gpus=gpus, pd=pd)
        from llmplan.runtime.sim.cluster import build_instances

        insts = [InstanceSpec(s.name, s.role, [], tp=1) for s in build_instances(sc)]
        spec = DeploymentSpec(
            model=cfg.model, instances=insts, device=systems["gpu"], engine=engine, router=sc.router,
            source=f"llmplan bench --compare {policy}",
        )  # fmt: skip
        return spec.to_dict()
    plan = cluster.plan
    insts = []
    for k, s in enumerate(cluster.instances):
        stages: list[StageSpec] = []
        if plan is not None and plan.instances:
            ip = plan.instances[k % len(plan.instances)]
            free = list(s.gpus)
            for st in ip.stages:
                take = [free.pop(0) for _ in st.gpus if free] if free else list(st.gpus)
                stages.append(StageSpec(take, st.layer_start, st.layer_end))
        tp = max((len(st.gpus) for st in stages), default=1)
        insts.append(InstanceSpec(s.name, s.role, stages, tp=max(1, tp), pp=max(1, len(stages)),
                                  num_kv_blocks=s.num_blocks))  # fmt: skip
    spec = DeploymentSpec(
        model=cluster.description["model"],
        instances=insts,
        weight_dtype=_plan_dtype(plan) if plan is not None else "bfloat16",
        topology=cluster.description.get("topology"),
        device=cluster.device,
        engine=engine,
        router=cfg.router,
        cost_profile=cfg.calibration,
        plan_mode=getattr(plan, "mode", None),
        serving_engine=serving_engine_of(cfg),
        source="llmplan bench",
    )
    return spec.to_dict()


def _replica_gpus(base: list[Any], all_gpus: list[str], replicas: int) -> list[tuple[str, ...]]:
    """GPUs for each replica: the plan's own first, then disjoint sets of unused GPUs of the same size.

    KV transfers between instances are priced over the links between their GPUs, so replicas
    must not share GPUs. Replicas beyond what the topology holds get no GPUs (the simulator then
    uses its default inter-instance link).
    """
    out: list[tuple[str, ...]] = [tuple(b.gpus) for b in base][:replicas]
    used = {g for gs in out for g in gs}
    free = [g for g in all_gpus if g not in used]
    size = max((len(b.gpus) for b in base), default=1) or 1
    while len(out) < replicas:
        if len(free) >= size:
            out.append(tuple(free[:size]))
            free = free[size:]
        else:
            out.append(())
    return out


def workload_info(wl: Workload) -> dict[str, Any]:
    return {
        "name": wl.name,
        "source": wl.source,
        "requests": len(wl),
        "offered_rate_rps": offered_rate(wl),
        "meta": wl.meta,
    }


def live_workload_info(wl: Workload, time_scale: float) -> dict[str, Any]:
    """:func:`workload_info` as the server saw it: the load generator divides arrival times by
    ``time_scale``, so the offered rate is the trace's times ``time_scale`` (kept alongside)."""
    info = workload_info(wl)
    ts = float(time_scale)
    if ts != 1.0:
        info["trace_offered_rate_rps"] = info["offered_rate_rps"]
        if info["offered_rate_rps"] is not None:
            info["offered_rate_rps"] = info["offered_rate_rps"] * ts
        info["time_scale"] = ts
        if wl.meta.get("arrival_span_s") is not None:
            info["arrival_span_s"] = wl.meta["arrival_span_s"] / ts
    return info


def run_bench(
    cfg: BenchConfig,
    *,
    workload: Workload | None = None,
    on_progress: OnProgress | None = None,
    show_download_progress: bool = True,
    workers: int | None = None,
) -> BenchReport:
    """Run every policy of ``cfg`` on one workload (and the rate sweep, if asked).

    Runs are independent, so they go to ``workers`` processes (default: one per CPU, at
    most one per run); ``workers=1`` runs them in this process.
    """
    if not cfg.policies:
        raise LlmplanError("no policy to run; pass --policy NAME or --compare A,B")
    if cfg.repeat > 1 and cfg.sweep_rates:
        raise LlmplanError(
            "--repeat with --sweep-rate would run every rate K times; repeat one rate at a time "
            "(--rate-scale) or drop --repeat"
        )
    if workload is None:
        workload = load_workload(
            cfg.trace,
            rate_scale=cfg.rate_scale,
            window=cfg.window,
            max_requests=cfg.max_requests,
            seed=cfg.seed,
            slo=cfg.slo,
            show_progress=show_download_progress,
        )
    cluster = build_system_cluster(cfg) if system_names(cfg.policies) else build_cluster(cfg)
    _check_warmup(workload, cfg.warmup_s)
    check_predictor_input(cfg.predictor, workload)
    jobs = [SimJob(p, p, workload, cluster, cfg) for p in cfg.policies]
    seeds = [cfg.seed + k for k in range(max(1, cfg.repeat))]
    for seed in seeds[1:]:
        # Each seed redraws what it drives: synthetic arrivals, SLO draws, predictor noise.
        wl_k = load_workload(
            cfg.trace, rate_scale=cfg.rate_scale, window=cfg.window, max_requests=cfg.max_requests,
            seed=seed, slo=cfg.slo, show_progress=False,
        )  # fmt: skip
        cfg_k = replace(cfg, seed=seed)
        jobs += [SimJob(f"{p}#seed{seed}", p, wl_k, cluster, cfg_k) for p in cfg.policies]
    base = offered_rate(workload)
    rates = sorted(cfg.sweep_rates or [])
    if rates and (not base or base == float("inf")):
        raise LlmplanError("--sweep-rate needs a workload with at least two distinct arrival times")
    for policy in cfg.policies if rates else []:
        for rate in rates:
            jobs.append(
                SimJob(f"{policy}@{rate:g}", policy, rescale_rate(workload, rate / base), cluster, cfg)
            )
    results = run_jobs(jobs, workers=workers, on_progress=on_progress)
    runs: dict[str, RunMetrics] = {}
    sim_cfg: dict[str, Any] = {}
    per_system: dict[str, dict[str, Any]] = {}
    sweep: list[SweepPoint] = []
    goodput: dict[str, dict[str, Any]] = {}
    per_seed: dict[str, list[dict[str, Any]]] = {p: [] for p in cfg.policies}
    for job, (metrics, sc) in zip(jobs, results, strict=True):
        if "#seed" in job.label:
            per_seed[job.policy].append(metrics.summary)
            continue
        if job.label == job.policy:
            per_seed[job.policy].insert(0, metrics.summary)
            runs[job.policy] = metrics
            sim_cfg = sc
            per_system[job.policy] = sc
        else:
            rate = job.workload.meta["rate_scale"] / cfg.rate_scale * base
            sweep.append(
                SweepPoint(job.policy, round(rate, 9), job.workload.meta["rate_scale"], metrics.summary)
            )
    for policy in cfg.policies if rates else []:
        pts = [p for p in sweep if p.label == policy]
        att = [p.summary["attainment"]["all"] or 0.0 for p in pts]
        goodput[policy] = distserve_goodput([p.rate_rps for p in pts], att, cfg.sweep_target).to_dict()
    # Instances are described under "cluster"; the policy differs per run (the run's label).
    sim_cfg = {k: v for k, v in sim_cfg.items() if k not in ("instances", "policy")}
    config = {"bench": cfg.to_dict(), "cluster": cluster.description, "simulator": sim_cfg}
    # What each run simulated, in the same schema `llmplan plan --out` writes and a server shows.
    config["deployments"] = {p: deployment_of_run(cfg, cluster, p) for p in cfg.policies}
    if "systems" in cluster.description:
        # Each system is its own simulator config (router, split, hooks): keep all of them.
        config["simulator"] = per_system
    extra: dict[str, Any] = {}
    if str(cfg.predictor).strip().lower() != "oracle":
        config["predictor_scores"] = scores = predictor_scores(cfg.predictor, workload, cfg.seed)
        extra["Length predictor on the replayed requests"] = predictor_scores_markdown(scores)
    return BenchReport(
        runs=runs,
        config=config,
        workload=workload_info(workload),
        seed=cfg.seed,
        version=__version__,
        created_utc=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        command=cfg.command,
        sweep=sweep,
        sweep_target=cfg.sweep_target,
        goodput_distserve=goodput,
        repeats=aggregate_repeats(per_seed, seeds) if len(seeds) > 1 else {},
        extra=extra,
    )


def predictor_scores(spec: str, workload: Workload, seed: int) -> dict[str, Any]:
    """The predictor's draws on the replayed requests (the same seed and order the simulator uses)
    scored against their true output lengths."""
    from llmplan.predict.evaluate import replay_scores
    from llmplan.predict.oracle import parse_predictor

    pred = parse_predictor(spec, seed=seed)
    reqs = list(workload.requests)
    out = pred.predict(reqs)
    truth = [r.output_tokens for r in reqs]
    return {
        "predictor": spec,
        "name": pred.name,
        "seed": seed,
        **replay_scores(out.buckets, out.lengths, truth, pred.bucket_edges),
    }


def predictor_scores_markdown(s: dict[str, Any]) -> str:
    pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
    rho = "- (constant)" if s["spearman"] is None else f"{s['spearman']:.3f}"
    return "\n".join([
        "| predictor | requests | exact bucket | ±1 bucket | Spearman (length) | under-estimated |",
        "|---|---|---|---|---|---|",
        f"| {s['predictor']} | {s['n']} | {pct(s['exact'])} | {pct(s['within1'])} | {rho} | "
        f"{pct(s['underestimate'])} |",
        "",
        f"Draws of seed {s['seed']} on the first run's workload; policies that do not order by or book "
        "predicted length ignore them.",
    ])  # fmt: skip


def check_predictor_input(spec: str, workload: Workload) -> None:
    """A learned predictor reads prompt text: refuse a workload that carries none, in one line."""
    if not str(spec).strip().lower().startswith("learned:"):
        return
    missing = sum(1 for r in workload.requests if not r.prompt)
    if missing:
        raise LlmplanError(
            f"--predictor {spec} reads the prompt text, but {missing} of {len(workload.requests)} "
            f"requests of {workload.meta.get('spec', workload.name)} carry token counts or ids only; use "
            "a trace with text (--trace sharegpt) or a predictor that needs none (oracle, const:N, "
            "noisy-cm:FILE)"
        )


def _check_warmup(workload: Workload, warmup_s: float) -> None:
    """--warmup must leave requests to measure."""
    if warmup_s <= 0 or not len(workload):
        return
    arrivals = [r.arrival_s for r in workload.requests]
    span = max(arrivals) - min(arrivals)
    if warmup_s > span:
        raise LlmplanError(
            f"--warmup {warmup_s:g} s covers the whole workload (its arrivals span {span:.1f} s); "
            "use a shorter warm-up or a longer --window/--max-requests"
        )


def live_report(
    cfg: BenchConfig,
    target: str,
    workload: Workload,
    result: RunResult,
    *,
    extra_runs: dict[str, RunMetrics] | None = None,
    extra_config: dict[str, Any] | None = None,
) -> BenchReport:
    """A report for a live run against ``target`` (plus, optionally, simulated predictions)."""
    runs = {"live": compute_metrics(result, workload)}
    runs.update(extra_runs or {})
    return BenchReport(
        runs=runs,
        config={"bench": cfg.to_dict(), "target": target, **(extra_config or {}), "live_meta": result.meta},
        workload=live_workload_info(workload, result.meta.get("time_scale", 1.0)),
        seed=cfg.seed,
        version=__version__,
        created_utc=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        command=cfg.command,
    )
