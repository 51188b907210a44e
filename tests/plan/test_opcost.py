"""Operator cost model: NCCL collectives against measured rows, profile metadata refusal."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from llmplan.errors import LlmplanError
from llmplan.opcost.collectives import allreduce_time, send_recv_time
from llmplan.opcost.profiles import OVERRIDE_FLAG, ModelDims, ProfileMeta
from llmplan.plan.costmodel import LinkPerf

NV12 = LinkPerf(240e9, 0.6e-6, "NV12")
VIDUR = (
    Path(os.environ.get("LLMPLAN_DATA_DIR", "../shared/datasets")).resolve().parent
    / "gpu-profiles"
    / "vidur-2024"
)


def test_allreduce_grows_with_bytes_and_workers_and_is_free_alone() -> None:
    assert allreduce_time(1e6, 1, NV12) == 0.0
    assert allreduce_time(0, 8, NV12) == 0.0
    assert 0 < allreduce_time(2048, 2, NV12) < allreduce_time(64 * 2**20, 2, NV12)
    assert allreduce_time(16 * 2**20, 2, NV12) < allreduce_time(16 * 2**20, 8, NV12)
    # a PCIe-joined group pays its narrower link
    assert allreduce_time(16 * 2**20, 4, LinkPerf(24e9, 3e-6, "NODE")) > 5 * allreduce_time(
        16 * 2**20, 4, NV12
    )
    assert send_recv_time(2**20, NV12) < send_recv_time(2**20, LinkPerf(24e9, 3e-6, "NODE"))


@pytest.mark.skipif(not (VIDUR / "network").is_dir(), reason="needs ../shared/gpu-profiles/vidur-2024")
def test_allreduce_matches_measured_dgx_a100_nccl() -> None:
    from llmplan.opcost.profiles import read_network_csv

    tab = read_network_csv(VIDUR / "network" / "a100_dgx" / "all_reduce.csv")
    sel = tab.intra_node() & (tab.size <= 64 * 2**20) & np.isin(tab.workers, (2, 4, 8))
    pred = np.array(
        [allreduce_time(s, int(n), NV12) for s, n in zip(tab.size[sel], tab.workers[sel], strict=True)]
    )
    err = np.abs(pred / tab.time_s[sel] - 1)
    assert np.median(err) <= 0.15
    # the old ring formula (no launch/sync term) is off by > 3x at decode-sized messages
    small = sel & (tab.size <= 16384)
    ring = 2 * (tab.workers[small] - 1) * (0.6e-6 + tab.size[small] / tab.workers[small] / (240e9 * 0.8))
    assert np.median(tab.time_s[small] / ring) > 3


def test_profile_meta_refuses_a_mismatch_and_names_the_override() -> None:
    dims = ModelDims(4096, 32, 8, 14336, 128256)
    meta = ProfileMeta("A100-SXM-80GB", "Meta-Llama-3-8B", dims, "float16", (1, 2, 4, 8))
    meta.check_matches(gpu="A100-SXM-80GB", dims=dims, dtype="bfloat16", tp=4)
    with pytest.raises(LlmplanError, match=OVERRIDE_FLAG) as e:
        meta.check_matches(gpu="A40", dims=dims)
    assert "measured on A100-SXM-80GB, not A40" in str(e.value)
    with pytest.raises(LlmplanError, match="ffn 14336"):
        meta.check_matches(dims=ModelDims(4096, 32, 32, 11008, 32000))
    with pytest.raises(LlmplanError, match="not TP 16"):
        meta.check_matches(tp=16)
    meta.check_matches(gpu="A40", allow_mismatch=True)  # the override
    assert ProfileMeta.from_dict(meta.to_dict()) == meta


def test_engine_overheads_are_sourced_and_change_only_the_step_term() -> None:
    from llmplan.opcost.engines import ENGINES, engine_overhead
    from llmplan.plan.costmodel import DEFAULT_PARAMS, params_for_engine

    assert set(ENGINES) == {"llmplan", "vllm", "sglang", "trtllm"}
    assert engine_overhead("TensorRT-LLM").engine == "trtllm"
    assert all(e.source for e in ENGINES.values())
    assert [e.engine for e in ENGINES.values() if e.measured] == ["llmplan"]  # the others are estimates
    p = params_for_engine("SGLang")
    assert p.iteration_overhead_s == engine_overhead("sglang").per_step_s and p.serving_engine == "sglang"
    assert p.compute_eff == DEFAULT_PARAMS.compute_eff and p.cost_model == DEFAULT_PARAMS.cost_model
    with pytest.raises(LlmplanError, match="use one of llmplan|vllm|sglang|trtllm"):
        engine_overhead("tgi")


def test_a_pcie_group_is_priced_by_the_pcie_class_fit() -> None:
    from llmplan.opcost.collectives import default_collective_params, link_class, params_for_link

    pcie, nv = LinkPerf(24e9, 3e-6, "NODE"), NV12
    assert link_class(pcie) == "pcie" and link_class(LinkPerf(24e9, 4e-6, "SYS")) == "pcie"
    assert link_class(nv) == "nvlink" and link_class(LinkPerf(24e9, 3e-6)) == "nvlink"  # unnamed: default
    p = params_for_link(pcie)
    assert p != default_collective_params() and params_for_link(nv) == default_collective_params()
    # the PCIe class is what allreduce_time uses for that link, unless params are given
    n, s = 4, 2**20
    want = p.allreduce_base_s + 2 * (n - 1) * 3e-6 + 2 * (n - 1) / n * s / (24e9 * p.allreduce_eff)
    assert allreduce_time(s, n, pcie) == pytest.approx(want, rel=1e-12)
    assert allreduce_time(s, n, pcie, default_collective_params()) != pytest.approx(want)


@pytest.mark.skipif(not (VIDUR / "network").is_dir(), reason="needs ../shared/gpu-profiles/vidur-2024")
def test_pcie_class_matches_the_measured_4_gpu_pcie_all_reduce() -> None:
    from llmplan.opcost.profiles import read_network_csv

    tab = read_network_csv(VIDUR / "network" / "a100_pairwise_nvlink" / "all_reduce.csv")
    sel = (tab.workers == 4) & (tab.size <= 64 * 2**20)
    link = LinkPerf(24e9, 3e-6, "NODE")  # PCIe Gen4 x16 as llmplan's link table rates it
    pairs = zip(tab.size[sel], tab.time_s[sel], strict=True)
    err = np.abs([allreduce_time(s, 4, link) / t - 1 for s, t in pairs])
    assert np.median(err) < 0.05 and np.percentile(err, 90) < 0.10
