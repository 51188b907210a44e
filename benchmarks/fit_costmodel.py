"""Fit the operator cost model on the Vidur profiles and write llmplan/opcost/fitted.json.

    python benchmarks/fit_costmodel.py [--profiles DIR] [--check]

DIR defaults to $LLMPLAN_DATA_DIR/../gpu-profiles/vidur-2024 (compute/ and network/ inside).
Only the fitted numbers are written (a few dozen floats), never the raw tables. Light: a few
scipy least-squares fits, ~10 s on one core.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from llmplan.opcost.fit import fit_allreduce_class, fit_collectives, fit_gpu
from llmplan.opcost.params import FITTED_PATH
from llmplan.opcost.profiles import discover, discover_network, group_by_gpu
from llmplan.topology.links import estimate
from llmplan.topology.specs import GPU_SPECS

# The clusters Vidur measured NCCL on, as llmplan's link table rates them.
NV12 = estimate("NV12", 12, nvlink_gen="nvlink3")  # DGX A100 NVSwitch: 240 GB/s, 0.6 us
CLUSTER_LINKS = {"a100_dgx": (NV12.bandwidth_gbps * 1e9, NV12.latency_us * 1e-6)}
# Vidur's "pairwise" A100 cluster: 4 GPUs = two NVLink pairs joined by PCIe Gen4 (the PCIe class).
PCIE4 = estimate("NODE", 0, pcie_gen=4)
PCIE_CLUSTER = ("a100_pairwise_nvlink", 4, PCIE4.bandwidth_gbps * 1e9, PCIE4.latency_us * 1e-6)
REFERENCE_GPU = "A100-SXM-80GB"


def default_profiles() -> Path:
    return (
        Path(os.environ.get("LLMPLAN_DATA_DIR", "../shared/datasets")).resolve().parent
        / "gpu-profiles"
        / "vidur-2024"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=FITTED_PATH)
    a = ap.parse_args()
    root = a.profiles or default_profiles()
    profs = discover(root / "compute")
    gpus = {}
    for gpu, ps in sorted(group_by_gpu(profs).items()):
        spec = GPU_SPECS[gpu]
        g = fit_gpu(ps, spec.bf16_tflops * 1e12, spec.hbm_gbps * 1e9, gpu)
        gpus[gpu] = g.to_dict()
        print(f"{gpu}: {g.gemm}")
    nets = discover_network(root / "network")
    ar = [
        (t, *CLUSTER_LINKS[t.cluster])
        for t in nets
        if t.cluster in CLUSTER_LINKS and t.collective == "all_reduce"
    ]
    sr = [
        (t, *CLUSTER_LINKS[t.cluster])
        for t in nets
        if t.cluster in CLUSTER_LINKS and t.collective == "send_recv"
    ]
    coll = fit_collectives(ar, sr)
    print(f"collectives: {coll}")
    name, workers, bw, lat = PCIE_CLUSTER
    pcie_tabs = [(t, bw, lat) for t in nets if t.cluster == name and t.collective == "all_reduce"]
    pcie = fit_allreduce_class(pcie_tabs, (workers,), per_rank_s=coll["allreduce_per_rank_s"])
    print(f"collectives, PCIe class: {pcie}")
    out = {
        "source": "Vidur profiles (Agrawal et al., MLSys 2024), microsoft/vidur@7d47513 data/profiling; "
        "fitted by benchmarks/fit_costmodel.py",
        "reference_gpu": REFERENCE_GPU,
        "gpus": gpus,
        "collectives": {
            **coll,
            "fitted_on": "a100_dgx all_reduce (2/4/8 GPUs) + send_recv, 2 KB-64 MB, NV12 240 GB/s",
        },
        "collectives_by_link": {
            "pcie": {
                **pcie,
                "fitted_on": f"{name} all_reduce ({workers} GPUs across NVLink pairs over PCIe Gen4), "
                f"2 KB-64 MB, NODE {PCIE4.bandwidth_gbps:g} GB/s",
            }
        },
    }
    a.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
