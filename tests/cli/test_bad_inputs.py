"""A table of bad inputs through the real console script: each must exit 2 with one line that names
the problem (a substring of it is given), no traceback, no catch-all "unexpected" bug line, quickly.

Each case is (id, argv, files, needle). ``{d}`` in argv is the case's temporary directory; ``files``
maps a name under it to its content (str, bytes, a JSON-able object, or a callable that mutates a
copy of a valid document of that kind and returns it).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmplan.cli.app import main  # noqa: F401 - the code under test (run through conftest.run_cli)

from .conftest import assert_clean_error, run_cli

BINARY = bytes(range(256)) * 4  # not UTF-8

# ---------------------------------------------------------------------------------------------
# valid documents that the mutations start from
# ---------------------------------------------------------------------------------------------


def _topology_doc() -> dict[str, Any]:
    from llmplan.topology import load_topology
    from llmplan.topology.serialize import to_dict

    return to_dict(load_topology("preset:2x-rtx4090"))


def _plan_doc() -> dict[str, Any]:
    from llmplan.models import get_model_spec
    from llmplan.plan.planner import make_plan
    from llmplan.topology import load_topology

    plan = make_plan(get_model_spec("llama-tiny"), load_topology("preset:2x-rtx4090"), "HE",
                     topology="preset:2x-rtx4090")  # fmt: skip
    return json.loads(plan.to_json())


def _calibration_doc() -> dict[str, Any]:
    from llmplan.runtime.calibration import FEATURES, PROFILE_VERSION

    return {
        "version": PROFILE_VERSION,
        "coef": dict.fromkeys(FEATURES, 1e-6),
        "model": "llama-tiny",
        "device": "cpu",
        "dtype": "float32",
        "block_size": 16,
    }


BASE: dict[str, Callable[[], dict[str, Any]]] = {
    "topo": _topology_doc,
    "plan": _plan_doc,
    "calib": _calibration_doc,
}


def gpu(field: str, value: Any) -> Callable[[dict], dict]:
    def f(d: dict) -> dict:
        d["gpus"][0][field] = value
        return d

    return f


def link(field: str, value: Any) -> Callable[[dict], dict]:
    def f(d: dict) -> dict:
        d["links"][0][field] = value
        return d

    return f


def top(field: str, value: Any) -> Callable[[dict], dict]:
    def f(d: dict) -> dict:
        d[field] = value
        return d

    return f


def stage(field: str, value: Any) -> Callable[[dict], dict]:
    def f(d: dict) -> dict:
        d["instances"][0]["stages"][0][field] = value
        return d

    return f


def coef(field: str, value: Any) -> Callable[[dict], dict]:
    def f(d: dict) -> dict:
        d["coef"][field] = value
        return d

    return f


def fn(f: Callable[[dict], Any]) -> Callable[[dict], Any]:
    return f


# A tiny valid trace; rows are appended to make bad ones.
TRACE_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
TRACE_OK = TRACE_HEAD + "".join(f"{i * 0.5},{100 + i},{20 + i}\n" for i in range(10))

TOPO_PLAN = ["plan", "--model", "llama-tiny", "--topology", "file:{d}/t.json"]
TOPO_SHOW = ["topology", "--source", "file:{d}/t.json"]
YAML_PLAN = ["plan", "--model", "llama-tiny", "--topology", "file:{d}/t.yaml"]
PLAN = ["plan", "--model", "llama-tiny", "--topology", "preset:2x-rtx4090"]
SHOW = ["plan", "--plan", "{d}/p.json"]
BENCH = ["bench", "--trace", "synthetic:n=20,rate=5", "--model", "llama-tiny", "--topology",
         "preset:2x-rtx4090", "--no-plots", "--out", "{d}/rep", "--jobs", "1"]  # fmt: skip
BENCH_FILE = ["bench", "--trace", "file:{d}/tr.csv", "--model", "llama-tiny", "--topology",
              "preset:2x-rtx4090", "--no-plots", "--out", "{d}/rep", "--jobs", "1"]  # fmt: skip
SERVE = ["serve", "--dummy-weights", "llama-tiny", "--port", "1"]
PROFILE_PREDICT = ["profile", "predict", "hello", "--profile", "{d}/prof"]

YAML_OK = """name: y
gpus:
  - {name: NVIDIA GeForce RTX 3090, power_limit_w: 350}
  - {name: NVIDIA GeForce RTX 3090, power_limit_w: 350}
topo: |2
          GPU0    GPU1    CPU Affinity    NUMA Affinity
  GPU0     X      PIX     0-31    0
  GPU1    PIX      X      0-31    0
"""


def yaml_gpu(entry: str) -> str:
    return YAML_OK.replace("  - {name: NVIDIA GeForce RTX 3090, power_limit_w: 350}\n", f"  - {entry}\n", 1)


Case = tuple[str, list[str], dict[str, Any], str]

CASES: list[Case] = [
    # ---- topology files (through `plan`, which computes with them, and `topology`) ----
    ("topo-mem-0", TOPO_PLAN, {"t.json": gpu("memory_gib", 0)}, "memory_gib"),
    ("topo-mem-neg", TOPO_PLAN, {"t.json": gpu("memory_gib", -80)}, "memory_gib"),
    ("topo-mem-nan", TOPO_PLAN, {"t.json": gpu("memory_gib", float("nan"))}, "memory_gib"),
    ("topo-mem-inf", TOPO_PLAN, {"t.json": gpu("memory_gib", float("inf"))}, "memory_gib"),
    ("topo-mem-str", TOPO_PLAN, {"t.json": gpu("memory_gib", "lots")}, "memory_gib"),
    ("topo-mem-null", TOPO_PLAN, {"t.json": gpu("memory_gib", None)}, "memory_gib"),
    ("topo-mem-bool", TOPO_PLAN, {"t.json": gpu("memory_gib", True)}, "memory_gib"),
    ("topo-tflops-0", TOPO_PLAN, {"t.json": gpu("bf16_tflops", 0)}, "bf16_tflops"),
    ("topo-mem-1e300", TOPO_PLAN, {"t.json": gpu("memory_gib", 1e300)}, "memory_gib"),
    ("topo-tflops-tiny", TOPO_PLAN, {"t.json": gpu("bf16_tflops", 1e-300)}, "bf16_tflops"),
    ("topo-hbm-denormal", TOPO_PLAN, {"t.json": gpu("hbm_gbps", 5e-324)}, "hbm_gbps"),
    ("topo-bw-denormal", TOPO_PLAN, {"t.json": link("bandwidth_gbps", 5e-324)}, "bandwidth"),
    ("topo-bw-1e300", TOPO_PLAN, {"t.json": link("bandwidth_gbps", 1e300)}, "bandwidth"),
    ("topo-tflops-neg", TOPO_PLAN, {"t.json": gpu("bf16_tflops", -5)}, "bf16_tflops"),
    ("topo-hbm-0", TOPO_PLAN, {"t.json": gpu("hbm_gbps", 0)}, "hbm_gbps"),
    ("topo-hbm-neg", TOPO_PLAN, {"t.json": gpu("hbm_gbps", -1)}, "hbm_gbps"),
    ("topo-power-0", TOPO_PLAN, {"t.json": gpu("power_limit_w", 0)}, "power_limit_w"),
    ("topo-power-neg", TOPO_PLAN, {"t.json": gpu("power_limit_w", -100)}, "power_limit_w"),
    ("topo-power-str", TOPO_PLAN, {"t.json": gpu("power_limit_w", "max")}, "power_limit_w"),
    ("topo-tdp-neg", TOPO_PLAN, {"t.json": gpu("tdp_w", -1)}, "tdp_w"),
    ("topo-scale-0", TOPO_PLAN, {"t.json": gpu("compute_scale", 0)}, "compute_scale"),
    ("topo-index-neg", TOPO_PLAN, {"t.json": gpu("index", -1)}, "index"),
    ("topo-index-str", TOPO_PLAN, {"t.json": gpu("index", "zero")}, "index"),
    ("topo-index-dup", TOPO_PLAN, {"t.json": gpu("index", 1)}, "index"),
    ("topo-id-dup", TOPO_PLAN, {"t.json": gpu("id", "GPU1")}, "GPU1"),
    ("topo-id-int", TOPO_PLAN, {"t.json": gpu("id", 7)}, "id"),
    ("topo-bw-0", TOPO_PLAN, {"t.json": link("bandwidth_gbps", 0)}, "bandwidth"),
    ("topo-bw-neg", TOPO_PLAN, {"t.json": link("bandwidth_gbps", -5)}, "bandwidth"),
    ("topo-bw-nan", TOPO_PLAN, {"t.json": link("bandwidth_gbps", float("nan"))}, "bandwidth"),
    ("topo-bw-str", TOPO_PLAN, {"t.json": link("bandwidth_gbps", "fast")}, "bandwidth"),
    ("topo-lat-neg", TOPO_PLAN, {"t.json": link("latency_us", -1)}, "latency"),
    ("topo-lat-inf", TOPO_PLAN, {"t.json": link("latency_us", float("inf"))}, "latency"),
    ("topo-link-self", TOPO_PLAN, {"t.json": link("b", "GPU0")}, "GPU0"),
    ("topo-link-dup", TOPO_PLAN, {"t.json": fn(lambda d: {**d, "links": d["links"] * 2})}, "twice"),
    ("topo-link-missing", TOPO_PLAN, {"t.json": top("links", [])}, "link"),
    ("topo-link-unknown", TOPO_PLAN, {"t.json": link("b", "GPU9")}, "GPU9"),
    ("topo-gpus-empty", TOPO_PLAN, {"t.json": fn(lambda d: {**d, "gpus": [], "links": []})}, "no GPU"),
    ("topo-gpus-str", TOPO_PLAN, {"t.json": top("gpus", "GPU0")}, "gpus"),
    ("topo-gpu-str", TOPO_PLAN, {"t.json": top("gpus", ["GPU0", "GPU1"])}, "gpus"),
    ("topo-links-dict", TOPO_PLAN, {"t.json": top("links", {"a": 1})}, "links"),
    ("topo-schema", TOPO_PLAN, {"t.json": top("schema", "other")}, "schema"),
    ("topo-version", TOPO_PLAN, {"t.json": top("version", 2)}, "version"),
    ("topo-list", TOPO_PLAN, {"t.json": [1, 2]}, "topology"),
    ("topo-binary", TOPO_PLAN, {"t.json": BINARY}, "t.json"),
    ("topo-empty", TOPO_PLAN, {"t.json": ""}, "t.json"),
    ("topo-truncated", TOPO_PLAN, {"t.json": '{"schema": "llmplan.topology", "gpus": ['}, "JSON"),
    ("topo-missing", TOPO_PLAN, {}, "t.json"),
    ("topo-dir", ["plan", "--model", "llama-tiny", "--topology", "file:{d}"], {}, "directory"),
    ("topo-show-mem-0", TOPO_SHOW, {"t.json": gpu("memory_gib", 0)}, "memory_gib"),
    ("topo-show-bw-neg", TOPO_SHOW, {"t.json": link("bandwidth_gbps", -5)}, "bandwidth"),
    ("topo-show-binary", TOPO_SHOW, {"t.json": BINARY}, "t.json"),
    ("topo-show-dup", TOPO_SHOW, {"t.json": gpu("id", "GPU1")}, "GPU1"),
    (
        "yaml-power-0",
        YAML_PLAN,
        {"t.yaml": yaml_gpu("{name: NVIDIA GeForce RTX 3090, power_limit_w: 0}")},
        "power_limit_w",
    ),
    (
        "yaml-power-neg",
        YAML_PLAN,
        {"t.yaml": yaml_gpu("{name: NVIDIA GeForce RTX 3090, power_limit_w: -100}")},
        "power_limit_w",
    ),
    (
        "yaml-power-str",
        YAML_PLAN,
        {"t.yaml": yaml_gpu("{name: NVIDIA GeForce RTX 3090, power_limit_w: lots}")},
        "power_limit_w",
    ),
    (
        "yaml-mem-neg",
        YAML_PLAN,
        {"t.yaml": yaml_gpu("{name: NVIDIA GeForce RTX 3090, memory_gib: -24}")},
        "memory_gib",
    ),
    (
        "yaml-mem-str",
        YAML_PLAN,
        {"t.yaml": yaml_gpu("{name: NVIDIA GeForce RTX 3090, memory_gib: big}")},
        "memory_gib",
    ),
    ("yaml-count-0", YAML_PLAN, {"t.yaml": yaml_gpu("{name: NVIDIA GeForce RTX 3090, count: 0}")}, "count"),
    (
        "yaml-count-huge",
        YAML_PLAN,
        {"t.yaml": yaml_gpu("{name: NVIDIA GeForce RTX 3090, count: 1000000000}")},
        "count",
    ),
    (
        "yaml-count-str",
        YAML_PLAN,
        {"t.yaml": yaml_gpu("{name: NVIDIA GeForce RTX 3090, count: two}")},
        "count",
    ),
    (
        "yaml-pcie-str",
        YAML_PLAN,
        {"t.yaml": yaml_gpu("{name: NVIDIA GeForce RTX 3090, pcie_gen: x}")},
        "pcie_gen",
    ),
    ("yaml-entry-str", YAML_PLAN, {"t.yaml": yaml_gpu("just a string")}, "gpus"),
    ("yaml-syntax", YAML_PLAN, {"t.yaml": "gpus: [\n"}, "YAML"),
    ("yaml-binary", YAML_PLAN, {"t.yaml": BINARY}, "t.yaml"),
    ("yaml-list", YAML_PLAN, {"t.yaml": "- 1\n- 2\n"}, "mapping"),
    ("yaml-no-topo", YAML_PLAN, {"t.yaml": "gpus: []\n"}, "topo"),
    ("yaml-topo-garbage", YAML_PLAN, {"t.yaml": YAML_OK.split("topo:")[0] + "topo: hello\n"}, "topo"),
    ("yaml-compose-huge", YAML_PLAN, {"t.yaml": "compose: {node: dgx-h100, count: 100000000}\n"}, "count"),
    ("yaml-compose-str", YAML_PLAN, {"t.yaml": "compose: {node: dgx-h100, count: many}\n"}, "count"),
    (
        "yaml-compose-bw",
        YAML_PLAN,
        {"t.yaml": "compose: {node: dgx-h100, count: 2, net: {bandwidth_gbps: -5}}\n"},
        "bandwidth",
    ),
    (
        "yaml-compose-lat",
        YAML_PLAN,
        {"t.yaml": "compose: {node: dgx-h100, count: 2, net: {latency_us: nan}}\n"},
        "latency",
    ),
    ("yaml-compose-node", YAML_PLAN, {"t.yaml": "compose: {node: nope, count: 2}\n"}, "nope"),
    (
        "topo-text-garbage",
        ["plan", "--model", "llama-tiny", "--topology", "file:{d}/t.txt"],
        {"t.txt": "hello world\n"},
        "t.txt",
    ),
    (
        "topo-text-binary",
        ["plan", "--model", "llama-tiny", "--topology", "file:{d}/t.txt"],
        {"t.txt": BINARY},
        "t.txt",
    ),
    ("topo-preset-unknown", ["plan", "--model", "llama-tiny", "--topology", "preset:nope"], {}, "preset"),
    ("topo-source-unknown", ["topology", "--source", "bogus"], {}, "source"),
    ("topo-cap-nan", ["topology", "--source", "preset:2x-rtx4090", "--power-cap", "0=nan"], {}, "power-cap"),
    ("topo-cap-inf", ["topology", "--source", "preset:2x-rtx4090", "--power-cap", "0=inf"], {}, "power-cap"),
    ("topo-cap-0", ["topology", "--source", "preset:2x-rtx4090", "--power-cap", "0=0"], {}, "power-cap"),
    ("topo-cap-neg", ["topology", "--source", "preset:2x-rtx4090", "--power-cap", "0=-5"], {}, "power-cap"),
    ("topo-cap-gpu", ["topology", "--source", "preset:2x-rtx4090", "--power-cap", "9=100"], {}, "GPU9"),
    (
        "topo-cap-text",
        ["topology", "--source", "preset:2x-rtx4090", "--power-cap", "0=lots"],
        {},
        "power-cap",
    ),
    (
        "topo-cap-dup",
        ["topology", "--source", "preset:2x-rtx4090", "--power-cap", "0=100", "--power-cap", "0=200"],
        {},
        "twice",
    ),  # fmt: skip
    ("topo-gpu-model", ["topology", "--source", "preset:2x-rtx4090", "--gpu-model", "Z80"], {}, "gpu-model"),
    ("plan-cap-nan", [*PLAN, "--power-cap", "0=nan"], {}, "power-cap"),
    ("plan-cap-neg", [*PLAN, "--power-cap", "0=-1"], {}, "power-cap"),
    ("plan-cap-text", [*PLAN, "--power-cap", "zero"], {}, "power-cap"),
    # ---- plan options ----
    ("plan-a1-nan", [*PLAN, "--a1", "nan"], {}, "--a1"),
    ("plan-a1-inf", [*PLAN, "--a1", "inf"], {}, "--a1"),
    ("plan-a1-neg", [*PLAN, "--a1", "-1"], {}, "--a1"),
    ("plan-a2-nan", [*PLAN, "--a2", "nan"], {}, "--a2"),
    ("plan-a2-neg", [*PLAN, "--a2", "-0.5"], {}, "--a2"),
    ("plan-a-both-0", [*PLAN, "--a1", "0", "--a2", "0"], {}, "--a1"),
    ("plan-a1-text", [*PLAN, "--a1", "half"], {}, "--a1"),
    ("plan-mode", [*PLAN, "--mode", "FAST"], {}, "mode"),
    ("plan-max-batch-0", [*PLAN, "--max-batch", "0"], {}, "--max-batch"),
    ("plan-max-batch-huge", [*PLAN, "--max-batch", "100000000000"], {}, "--max-batch"),
    ("plan-input-len-huge", [*PLAN, "--input-len", "10000000000000000000000"], {}, "--input-len"),
    ("plan-output-len-0", [*PLAN, "--output-len", "0"], {}, "--output-len"),
    ("plan-compute-eff-nan", [*PLAN, "--compute-eff", "nan"], {}, "--compute-eff"),
    ("plan-compute-eff-0", [*PLAN, "--compute-eff", "0"], {}, "--compute-eff"),
    ("plan-memory-eff-2", [*PLAN, "--memory-eff", "2"], {}, "--memory-eff"),
    ("plan-gpus-text", [*PLAN, "--gpus", "a,b"], {}, "--gpus"),
    ("plan-gpus-missing", [*PLAN, "--gpus", "0,7"], {}, "GPU7"),
    ("plan-gpus-dup", [*PLAN, "--gpus", "0,0"], {}, "--gpus"),
    ("plan-gpus-neg", [*PLAN, "--gpus", "-1"], {}, "--gpus"),
    ("plan-gpus-empty", [*PLAN, "--gpus", ","], {}, "--gpus"),
    (
        "plan-model-unknown",
        ["plan", "--model", "no-such-model", "--topology", "preset:2x-rtx4090"],
        {},
        "no-such-model",
    ),
    ("plan-no-model", ["plan", "--topology", "preset:2x-rtx4090"], {}, "--model"),
    (
        "plan-model-binary",
        ["plan", "--model", "{d}/m.json", "--topology", "preset:2x-rtx4090"],
        {"m.json": BINARY},
        "m.json",
    ),
    (
        "plan-model-list",
        ["plan", "--model", "{d}/m.json", "--topology", "preset:2x-rtx4090"],
        {"m.json": [1, 2]},
        "m.json",
    ),
    (
        "serve-model-config-binary",
        ["serve", "--model", "{d}", "--port", "1"],
        {"config.json": BINARY},
        "config.json",
    ),
    (
        "serve-model-config-list",
        ["serve", "--model", "{d}", "--port", "1"],
        {"config.json": [1]},
        "config.json",
    ),
    ("plan-fill-pd", [*PLAN, "--fill", "--pd"], {}, "--fill"),
    ("plan-max-instances", [*PLAN, "--max-instances", "2"], {}, "--max-instances"),
    ("plan-kv-quantile-nan", [*PLAN, "--kv-profile", "{d}", "--kv-quantile", "nan"], {}, "--kv-quantile"),
    ("plan-kv-quantile-0", [*PLAN, "--kv-profile", "{d}", "--kv-quantile", "0"], {}, "--kv-quantile"),
    ("plan-kv-prompts-alone", [*PLAN, "--kv-prompts", "{d}/x.jsonl"], {}, "--kv-profile"),
    ("plan-kv-profile-missing", [*PLAN, "--kv-profile", "{d}/nope"], {}, "nope"),
    ("plan-kv-profile-file", [*PLAN, "--kv-profile", "{d}/f"], {"f": "x"}, "f"),
    (
        "plan-kv-profile-pickle",
        [*PLAN, "--kv-profile", "{d}/prof"],
        {"prof/profiler.pkl": b"\x80\x04."},
        "re-fit",
    ),
    (
        "plan-kv-prompts-binary",
        [*PLAN, "--kv-profile", "{d}/prof", "--kv-prompts", "{d}/k.jsonl"],
        {"prof/profiler.json": "{}", "k.jsonl": BINARY},
        "k.jsonl",
    ),
    ("plan-pd-rate-nan", [*PLAN, "--pd", "--rate", "nan"], {}, "--rate"),
    ("plan-pd-rate-neg", [*PLAN, "--pd", "--rate", "-3"], {}, "--rate"),
    ("plan-pd-ttft-0", [*PLAN, "--pd", "--slo-ttft", "0"], {}, "--slo-ttft"),
    ("plan-pd-ttft-nan", [*PLAN, "--pd", "--slo-ttft", "nan"], {}, "--slo-ttft"),
    ("plan-pd-tpot-neg", [*PLAN, "--pd", "--slo-tpot", "-1"], {}, "--slo-tpot"),
    ("plan-pd-attain-2", [*PLAN, "--pd", "--attainment", "2"], {}, "--attainment"),
    ("plan-pd-attain-nan", [*PLAN, "--pd", "--attainment", "nan"], {}, "--attainment"),
    ("plan-pd-trace-missing", [*PLAN, "--pd", "--trace", "{d}/nope.csv"], {}, "nope.csv"),
    ("plan-pd-trace-binary", [*PLAN, "--pd", "--trace", "{d}/tr.csv"], {"tr.csv": BINARY}, "tr.csv"),
    (
        "plan-pd-trace-neg",
        [*PLAN, "--pd", "--trace", "{d}/tr.csv"],
        {"tr.csv": TRACE_OK + "6,-5,10\n"},
        "tr.csv:12",
    ),
    (
        "plan-pd-trace-text",
        [*PLAN, "--pd", "--trace", "{d}/tr.csv"],
        {"tr.csv": TRACE_OK + "6,abc,10\n"},
        "tr.csv:12",
    ),
    # ---- saved plans ----
    ("plan-file-binary", SHOW, {"p.json": BINARY}, "p.json"),
    ("plan-file-empty", SHOW, {"p.json": ""}, "p.json"),
    ("plan-file-list", SHOW, {"p.json": [1]}, "p.json"),
    ("plan-file-missing", SHOW, {}, "p.json"),
    ("plan-file-dir", ["plan", "--plan", "{d}"], {}, "directory"),
    (
        "plan-file-no-instances",
        SHOW,
        {"p.json": fn(lambda d: {k: v for k, v in d.items() if k != "instances"})},
        "instances",
    ),
    ("plan-file-instances-str", SHOW, {"p.json": top("instances", "x")}, "instances"),
    ("plan-file-instances-empty", SHOW, {"p.json": top("instances", [])}, "instances"),
    ("plan-file-stage-extra", SHOW, {"p.json": stage("bogus", 1)}, "bogus"),
    ("plan-file-layer-neg", SHOW, {"p.json": stage("layer_start", -3)}, "layer"),
    ("plan-file-layer-order", SHOW, {"p.json": stage("layer_end", 0)}, "layer"),
    ("plan-file-layer-str", SHOW, {"p.json": stage("layer_end", "four")}, "layer"),
    ("plan-file-layer-beyond", SHOW, {"p.json": stage("layer_end", 400)}, "layer"),
    ("plan-file-gpus-empty", SHOW, {"p.json": stage("gpus", [])}, "gpus"),
    ("plan-file-gpus-str", SHOW, {"p.json": stage("gpus", "GPU0")}, "gpus"),
    ("plan-file-version-str", SHOW, {"p.json": top("version", "two")}, "version"),
    ("plan-file-version-new", SHOW, {"p.json": top("version", 99)}, "newer"),
    ("plan-file-workload-str", SHOW, {"p.json": top("workload", "big")}, "workload"),
    ("plan-file-workload-neg", SHOW, {"p.json": top("workload", {"max_batch": -1})}, "max_batch"),
    ("plan-file-metrics-str", SHOW, {"p.json": top("metrics", "fast")}, "metrics"),
    ("plan-file-spec-str", SHOW, {"p.json": top("model_spec", "llama")}, "model_spec"),
    ("plan-file-mode-int", SHOW, {"p.json": top("mode", 3)}, "mode"),
    ("plan-file-spec-empty", SHOW, {"p.json": top("model_spec", {})}, "model_spec"),
    (
        "plan-file-spec-heads-0",
        SHOW,
        {"p.json": fn(lambda d: d["model_spec"].update(num_attention_heads=0) or d)},
        "num_attention_heads",
    ),
    ("plan-file-metrics-null", SHOW, {"p.json": top("metrics", None)}, "metrics"),
    ("plan-file-yaml-binary", ["plan", "--plan", "{d}/p.yaml"], {"p.yaml": BINARY}, "p.yaml"),
    ("plan-file-yaml-bad", ["plan", "--plan", "{d}/p.yaml"], {"p.yaml": "a: [\n"}, "p.yaml"),
    ("plan-file-nan-metric", SHOW, {"p.json": stage("prefill_s", float("nan"))}, "prefill_s"),
    # ---- bench options ----
    ("bench-block-0", [*BENCH, "--block-size", "0"], {}, "--block-size"),
    ("bench-block-neg", [*BENCH, "--block-size", "-16"], {}, "--block-size"),
    ("bench-rate-scale-0", [*BENCH, "--rate-scale", "0"], {}, "--rate-scale"),
    ("bench-rate-scale-nan", [*BENCH, "--rate-scale", "nan"], {}, "--rate-scale"),
    ("bench-rate-scale-inf", [*BENCH, "--rate-scale", "inf"], {}, "--rate-scale"),
    ("bench-max-req-0", [*BENCH, "--max-requests", "0"], {}, "--max-requests"),
    ("bench-max-req-neg", [*BENCH, "--max-requests", "-5"], {}, "--max-requests"),
    ("bench-window-text", [*BENCH, "--window", "lunch"], {}, "--window"),
    ("bench-window-rev", [*BENCH, "--window", "10:5"], {}, "--window"),
    ("bench-window-nan", [*BENCH, "--window", "nan:5"], {}, "--window"),
    ("bench-slo-text", [*BENCH, "--slo", "strict"], {}, "slo"),
    ("bench-slo-nan", [*BENCH, "--slo", "fixed:ttft=nan"], {}, "ttft"),
    ("bench-slo-neg", [*BENCH, "--slo", "fixed:ttft=-1"], {}, "ttft"),
    ("bench-slo-key", [*BENCH, "--slo", "fixed:speed=1"], {}, "speed"),
    ("bench-slo-prop-nan", [*BENCH, "--slo", "proportional:a=nan"], {}, "a="),
    ("bench-slo-uellm", [*BENCH, "--slo", "uellm:lo=5,hi=1"], {}, "lo"),
    ("bench-sweep-nan", [*BENCH, "--sweep-rate", "nan"], {}, "--sweep-rate"),
    ("bench-sweep-inf", [*BENCH, "--sweep-rate", "1,inf"], {}, "--sweep-rate"),
    ("bench-sweep-text", [*BENCH, "--sweep-rate", "1,x"], {}, "--sweep-rate"),
    ("bench-sweep-neg", [*BENCH, "--sweep-rate", "-1"], {}, "--sweep-rate"),
    ("bench-sweep-target-2", [*BENCH, "--sweep-target", "2"], {}, "--sweep-target"),
    ("bench-sweep-target-nan", [*BENCH, "--sweep-target", "nan"], {}, "--sweep-target"),
    ("bench-router", [*BENCH, "--router", "random"], {}, "router"),
    ("bench-instances-0", [*BENCH, "--instances", "0"], {}, "--instances"),
    ("bench-instances-neg", [*BENCH, "--instances", "-1"], {}, "--instances"),
    ("bench-instances-huge", [*BENCH, "--instances", "100000000"], {}, "--instances"),
    ("bench-predictor-text", [*BENCH, "--predictor", "psychic"], {}, "predictor"),
    ("bench-predictor-acc", [*BENCH, "--predictor", "noisy:2"], {}, "noisy"),
    ("bench-predictor-nan", [*BENCH, "--predictor", "noisy:nan"], {}, "noisy"),
    ("bench-predictor-book", [*BENCH, "--predictor", "oracle,book=p99"], {}, "book="),
    ("bench-disagg-0", [*BENCH, "--disaggregation", "0:2"], {}, "--disaggregation"),
    ("bench-disagg-text", [*BENCH, "--disaggregation", "a:b"], {}, "--disaggregation"),
    ("bench-jobs-0", [*BENCH, "--jobs", "0"], {}, "--jobs"),
    ("bench-jobs-neg", [*BENCH, "--jobs", "-2"], {}, "--jobs"),
    ("bench-time-scale-0", [*BENCH, "--time-scale", "0"], {}, "--time-scale"),
    ("bench-time-scale-nan", [*BENCH, "--time-scale", "nan"], {}, "--time-scale"),
    ("bench-live-scale-nan", [*BENCH, "--live-scale", "nan,1"], {}, "--live-scale"),
    ("bench-seed-neg", [*BENCH, "--seed", "-1"], {}, "--seed"),
    ("bench-seed-huge", [*BENCH, "--seed", str(2**70)], {}, "--seed"),
    ("bench-policy", [*BENCH, "--policy", "random"], {}, "random"),
    ("bench-compare", [*BENCH, "--compare", "fcfs,random"], {}, "random"),
    ("bench-compare-empty", [*BENCH, "--compare", ","], {}, "--compare"),
    ("bench-model", ["bench", "--trace", "synthetic:n=5", "--model", "no-such-model"], {}, "no-such-model"),
    ("bench-topology", ["bench", "--trace", "synthetic:n=5", "--topology", "preset:nope"], {}, "nope"),
    ("bench-plan-mode", [*BENCH, "--plan-mode", "FAST"], {}, "FAST"),
    ("bench-target-url", [*BENCH, "--target", "not a url"], {}, "not a URL"),
    ("bench-out-file", [*BENCH[:-4], "--out", "{d}/f", "--jobs", "1"], {"f": "x"}, "f"),
    # ---- traces ----
    ("trace-unknown", ["bench", "--trace", "nope"], {}, "nope"),
    ("trace-synth-huge", ["bench", "--trace", "synthetic:n=1000000000000"], {}, "n="),
    ("trace-synth-neg", ["bench", "--trace", "synthetic:n=-1"], {}, "n"),
    ("trace-synth-rate-nan", ["bench", "--trace", "synthetic:n=10,rate=nan"], {}, "rate"),
    ("trace-synth-rate-0", ["bench", "--trace", "synthetic:n=10,rate=0"], {}, "rate"),
    ("trace-synth-rate-inf", ["bench", "--trace", "synthetic:n=10,rate=inf"], {}, "rate"),
    ("trace-synth-cv-neg", ["bench", "--trace", "synthetic:n=10,cv=-1"], {}, "cv"),
    ("trace-synth-key", ["bench", "--trace", "synthetic:n=10,colour=red"], {}, "colour"),
    ("trace-synth-text", ["bench", "--trace", "synthetic:n=ten"], {}, "n="),
    ("trace-synth-arrival", ["bench", "--trace", "synthetic:n=10,arrival=burst"], {}, "arrival"),
    ("trace-synth-lengths", ["bench", "--trace", "synthetic:n=10,lengths=weird"], {}, "lengths"),
    ("trace-azure-opts", ["bench", "--trace", "azure:rate=3"], {}, "azure"),
    ("trace-file-missing", [*BENCH_FILE], {}, "tr.csv"),
    ("trace-file-dir", ["bench", "--trace", "file:{d}"], {}, "directory"),
    ("trace-file-binary", [*BENCH_FILE], {"tr.csv": BINARY}, "tr.csv"),
    ("trace-file-empty", [*BENCH_FILE], {"tr.csv": ""}, "tr.csv"),
    ("trace-file-header-only", [*BENCH_FILE], {"tr.csv": TRACE_HEAD}, "tr.csv"),
    ("trace-file-columns", [*BENCH_FILE], {"tr.csv": "a,b\n1,2\n"}, "tr.csv"),
    ("trace-file-text-cell", [*BENCH_FILE], {"tr.csv": TRACE_OK + "6,abc,10\n"}, "tr.csv:12"),
    ("trace-file-neg-tokens", [*BENCH_FILE], {"tr.csv": TRACE_OK + "6,-5,10\n"}, "tr.csv:12"),
    (
        "trace-file-huge-tokens",
        [*BENCH_FILE],
        {"tr.csv": TRACE_OK + "6,9223372036854775808,10\n"},
        "tr.csv:12",
    ),
    ("trace-file-1e30-tokens", [*BENCH_FILE], {"tr.csv": TRACE_OK + "6,1e30,10\n"}, "tr.csv:12"),
    ("trace-file-frac-tokens", [*BENCH_FILE], {"tr.csv": TRACE_OK + "6,10.5,10\n"}, "tr.csv:12"),
    ("trace-file-nan-time", [*BENCH_FILE], {"tr.csv": TRACE_OK + "nan,10,10\n"}, "tr.csv:12"),
    ("trace-file-inf-time", [*BENCH_FILE], {"tr.csv": TRACE_OK + "inf,10,10\n"}, "tr.csv:12"),
    ("trace-file-bad-time", [*BENCH_FILE], {"tr.csv": TRACE_OK + "yesterday,10,10\n"}, "tr.csv:12"),
    ("trace-file-missing-cell", [*BENCH_FILE], {"tr.csv": TRACE_OK + "6,10\n"}, "tr.csv:12"),
    ("trace-file-extra-cell", [*BENCH_FILE], {"tr.csv": TRACE_OK + "6,10,10,10\n"}, "tr.csv:12"),
    (
        "trace-jsonl-bad",
        ["bench", "--trace", "file:{d}/tr.jsonl", "--no-plots", "--out", "{d}/r"],
        {"tr.jsonl": '{"TIMESTAMP": 0, "ContextTokens": 5, "GeneratedTokens": 5}\n{oops\n'},
        "tr.jsonl:2",
    ),
    (
        "trace-jsonl-list",
        ["bench", "--trace", "file:{d}/tr.jsonl", "--no-plots", "--out", "{d}/r"],
        {"tr.jsonl": '{"TIMESTAMP": 0, "ContextTokens": 5, "GeneratedTokens": 5}\n[1, 2]\n'},
        "tr.jsonl:2",
    ),
    (
        "trace-jsonl-neg",
        ["bench", "--trace", "file:{d}/tr.jsonl", "--no-plots", "--out", "{d}/r"],
        {"tr.jsonl": '{"TIMESTAMP": 0, "ContextTokens": 5, "GeneratedTokens": -5}\n'},
        "tr.jsonl:1",
    ),
    # ---- calibration files ----
    ("calib-missing", [*BENCH, "--calibration", "{d}/c.json"], {}, "c.json"),
    ("calib-binary", [*BENCH, "--calibration", "{d}/c.json"], {"c.json": BINARY}, "c.json"),
    ("calib-empty", [*BENCH, "--calibration", "{d}/c.json"], {"c.json": ""}, "c.json"),
    ("calib-list", [*BENCH, "--calibration", "{d}/c.json"], {"c.json": [1, 2]}, "c.json"),
    ("calib-no-coef", [*BENCH, "--calibration", "{d}/c.json"], {"c.json": {"kind": "x"}}, "c.json"),
    (
        "calib-coef-nan",
        [*BENCH, "--calibration", "{d}/c.json"],
        {"c.json": coef("const", float("nan"))},
        "const",
    ),
    (
        "calib-coef-neg",
        [*BENCH, "--calibration", "{d}/c.json"],
        {"c.json": coef("decode_seqs", -1)},
        "decode_seqs",
    ),
    ("calib-coef-str", [*BENCH, "--calibration", "{d}/c.json"], {"c.json": coef("const", "fast")}, "const"),
    (
        "calib-coef-missing",
        [*BENCH, "--calibration", "{d}/c.json"],
        {"c.json": fn(lambda d: {**d, "coef": {"const": 1.0}})},
        "coef",
    ),
    (
        "calib-coef-zero",
        [*BENCH, "--calibration", "{d}/c.json"],
        {"c.json": fn(lambda d: {**d, "coef": dict.fromkeys(d["coef"], 0.0)})},
        "coef",
    ),
    ("calib-dir", [*BENCH, "--calibration", "{d}"], {}, "calibration"),
    # ---- saved plans in bench ----
    ("bench-plan-binary", [*BENCH, "--plan", "{d}/p.json"], {"p.json": BINARY}, "p.json"),
    ("bench-plan-layers", [*BENCH, "--plan", "{d}/p.json"], {"p.json": stage("layer_end", 0)}, "layer"),
    # ---- serve (refused before any server starts) ----
    ("serve-max-model-len", [*SERVE, "--max-model-len", "1000000000"], {}, "1000000000"),
    ("serve-neither", ["serve", "--port", "1"], {}, "--dummy-weights"),
    ("serve-both", ["serve", "--model", "{d}", "--dummy-weights", "llama-tiny"], {}, "exactly one"),
    ("serve-model-missing", ["serve", "--model", "{d}/nope"], {}, "nope"),
    (
        "serve-dummy-unknown",
        ["serve", "--dummy-weights", "no-such-model", "--port", "1"],
        {},
        "no-such-model",
    ),
    ("serve-block-0", [*SERVE, "--block-size", "0"], {}, "--block-size"),
    ("serve-seqs-0", [*SERVE, "--max-num-seqs", "0"], {}, "--max-num-seqs"),
    ("serve-port-0", ["serve", "--dummy-weights", "llama-tiny", "--port", "0"], {}, "--port"),
    ("serve-port-big", ["serve", "--dummy-weights", "llama-tiny", "--port", "70000"], {}, "--port"),
    ("serve-threads-0", [*SERVE, "--threads", "0"], {}, "--threads"),
    ("serve-drain-nan", [*SERVE, "--drain-timeout", "nan"], {}, "--drain-timeout"),
    ("serve-drain-neg", [*SERVE, "--drain-timeout", "-1"], {}, "--drain-timeout"),
    ("serve-control-0", [*SERVE, "--workers", "2", "--control-interval", "0"], {}, "--control-interval"),
    (
        "serve-worker-timeout-nan",
        [*SERVE, "--workers", "2", "--worker-timeout", "nan"],
        {},
        "--worker-timeout",
    ),
    (
        "serve-worker-mem-neg",
        [*SERVE, "--workers", "2", "--worker-memory-gb", "-1"],
        {},
        "--worker-memory-gb",
    ),
    ("serve-workers-0", [*SERVE, "--workers", "0"], {}, "--workers"),
    ("serve-instances-0", [*SERVE, "--instances", "0"], {}, "--instances"),
    (
        "serve-inflight-0",
        [*SERVE, "--instances", "2", "--max-inflight", "0", "--dry-run"],
        {},
        "--max-inflight",
    ),
    (
        "serve-health-nan",
        [*SERVE, "--instances", "2", "--health-timeout", "nan", "--dry-run"],
        {},
        "--health-timeout",
    ),
    (
        "serve-restarts-neg",
        [*SERVE, "--instances", "2", "--max-restarts", "-1", "--dry-run"],
        {},
        "--max-restarts",
    ),
    (
        "serve-kv-mem-neg",
        [*SERVE, "--kv-store", "memory", "--kv-store-memory-mb", "-1"],
        {},
        "--kv-store-memory-mb",
    ),
    (
        "serve-kv-disk-nan",
        [*SERVE, "--kv-store", "{d}/kv", "--kv-store-disk-gb", "nan"],
        {},
        "--kv-store-disk-gb",
    ),
    ("serve-dtype", [*SERVE, "--dtype", "float8"], {}, "float8"),
    ("serve-device", [*SERVE, "--device", "tpu"], {}, "tpu"),
    ("serve-scheduler", [*SERVE, "--policy", "random"], {}, "random"),
    ("serve-predictor", [*SERVE, "--predictor", "psychic"], {}, "psychic"),
    ("serve-engine", [*SERVE, "--engine", "tgi"], {}, "tgi"),
    ("serve-admission", [*SERVE, "--instances", "2", "--admission", "random", "--dry-run"], {}, "random"),
    ("serve-pd", [*SERVE, "--pd", "x"], {}, "--pd"),
    ("serve-layer-split", [*SERVE, "--workers", "2", "--layer-split", "a,b"], {}, "--layer-split"),
    ("serve-log-level", [*SERVE, "--log-level", "loud"], {}, "--log-level"),
    ("serve-kv-blocks-0", [*SERVE, "--num-kv-blocks", "0"], {}, "--num-kv-blocks"),
    ("serve-plan-binary", [*SERVE, "--plan", "{d}/p.json"], {"p.json": BINARY}, "p.json"),
    ("serve-batched-0", [*SERVE, "--max-num-batched-tokens", "0"], {}, "--max-num-batched-tokens"),
    # ---- profile ----
    ("profile-predict-missing", [*PROFILE_PREDICT], {}, "prof"),
    ("profile-predict-file", ["profile", "predict", "hi", "--profile", "{d}/f"], {"f": "x"}, "f"),
    ("profile-predict-pickle", [*PROFILE_PREDICT], {"prof/profiler.pkl": b"\x80\x04K\x01."}, "re-fit"),
    ("profile-predict-json-binary", [*PROFILE_PREDICT], {"prof/profiler.json": BINARY}, "profiler.json"),
    ("profile-predict-json-bad", [*PROFILE_PREDICT], {"prof/profiler.json": "{"}, "profiler.json"),
    ("profile-predict-json-list", [*PROFILE_PREDICT], {"prof/profiler.json": [1]}, "profiler.json"),
    ("profile-predict-json-empty", [*PROFILE_PREDICT], {"prof/profiler.json": {}}, "profiler.json"),
    ("profile-predict-task", [*PROFILE_PREDICT, "--task", "dance"], {}, "dance"),
    ("profile-predict-lang", [*PROFILE_PREDICT, "--lang", "fr"], {}, "fr"),
    ("profile-predict-out-neg", [*PROFILE_PREDICT, "--output-tokens", "-1"], {}, "--output-tokens"),
    (
        "profile-predict-out-huge",
        [*PROFILE_PREDICT, "--output-tokens", "100000000000000"],
        {},
        "--output-tokens",
    ),
    ("profile-predict-predictor", [*PROFILE_PREDICT, "--predictor", "{d}/nope"], {}, "nope"),
    ("profile-fit-missing", ["profile", "fit", "{d}/nope.csv", "--out", "{d}/o"], {}, "nope.csv"),
    ("profile-fit-binary", ["profile", "fit", "{d}/x.csv", "--out", "{d}/o"], {"x.csv": BINARY}, "x.csv"),
    ("profile-fit-empty", ["profile", "fit", "{d}/x.csv", "--out", "{d}/o"], {"x.csv": ""}, "x.csv"),
    (
        "profile-fit-columns",
        ["profile", "fit", "{d}/x.csv", "--out", "{d}/o"],
        {"x.csv": "a,b\n1,2\n"},
        "columns",
    ),
    ("profile-fit-dir", ["profile", "fit", "{d}", "--out", "{d}/o"], {}, "directory"),
    ("profile-fit-k-0", ["profile", "fit", "{d}/x.csv", "--k", "0"], {"x.csv": "a\n1\n"}, "--k"),
    (
        "profile-fit-gamma-nan",
        ["profile", "fit", "{d}/x.csv", "--gamma", "nan"],
        {"x.csv": "a\n1\n"},
        "--gamma",
    ),
    (
        "profile-fit-test-frac-1",
        ["profile", "fit", "{d}/x.csv", "--test-frac", "1"],
        {"x.csv": "a\n1\n"},
        "--test-frac",
    ),
    (
        "profile-fit-test-frac-nan",
        ["profile", "fit", "{d}/x.csv", "--test-frac", "nan"],
        {"x.csv": "a\n1\n"},
        "--test-frac",
    ),
    (
        "profile-fit-trees-0",
        ["profile", "fit", "{d}/x.csv", "--n-estimators", "0"],
        {"x.csv": "a\n1\n"},
        "--n-estimators",
    ),
    (
        "profile-collect-interval",
        ["profile", "collect", "--interval", "0", "--out", "{d}/o.csv"],
        {},
        "--interval",
    ),
    (
        "profile-collect-interval-nan",
        ["profile", "collect", "--interval", "nan", "--out", "{d}/o.csv"],
        {},
        "--interval",
    ),
    ("profile-collect-repeat", ["profile", "collect", "--repeat", "0", "--out", "{d}/o.csv"], {}, "--repeat"),
    ("profile-collect-limit", ["profile", "collect", "--limit", "-1", "--out", "{d}/o.csv"], {}, "--limit"),
    (
        "profile-collect-sampler",
        ["profile", "collect", "--sampler", "magic", "--out", "{d}/o.csv"],
        {},
        "magic",
    ),
    (
        "profile-collect-suite-binary",
        ["profile", "collect", "--suite", "{d}/s.jsonl", "--out", "{d}/o.csv"],
        {"s.jsonl": BINARY},
        "s.jsonl",
    ),
    (
        "profile-collect-suite-bad",
        ["profile", "collect", "--suite", "{d}/s.jsonl", "--out", "{d}/o.csv"],
        {"s.jsonl": "{oops\n"},
        "s.jsonl:1",
    ),
    # ---- calibrate (refused before measuring) ----
    ("calibrate-neither", ["calibrate", "--out", "{d}/c.json"], {}, "--dummy-weights"),
    (
        "calibrate-block-0",
        ["calibrate", "--out", "{d}/c.json", "--dummy-weights", "llama-tiny", "--block-size", "0"],
        {},
        "--block-size",
    ),  # fmt: skip
    (
        "calibrate-repeats-0",
        ["calibrate", "--out", "{d}/c.json", "--dummy-weights", "llama-tiny", "--repeats", "0"],
        {},
        "--repeats",
    ),  # fmt: skip
    (
        "calibrate-threads-0",
        ["calibrate", "--out", "{d}/c.json", "--dummy-weights", "llama-tiny", "--threads", "0"],
        {},
        "--threads",
    ),  # fmt: skip
    (
        "calibrate-dtype",
        ["calibrate", "--out", "{d}/c.json", "--dummy-weights", "llama-tiny", "--dtype", "float8"],
        {},
        "float8",
    ),  # fmt: skip
    (
        "calibrate-device",
        ["calibrate", "--out", "{d}/c.json", "--dummy-weights", "llama-tiny", "--device", "tpu"],
        {},
        "tpu",
    ),  # fmt: skip
    ("calibrate-dummy", ["calibrate", "--out", "{d}/c.json", "--dummy-weights", "nope"], {}, "nope"),
    ("calibrate-model-missing", ["calibrate", "--out", "{d}/c.json", "--model", "{d}/nope"], {}, "nope"),
    (
        "calibrate-plan-binary",
        ["calibrate", "--out", "{d}/c.json", "--dummy-weights", "llama-tiny", "--plan", "{d}/p.json"],
        {"p.json": BINARY},
        "p.json",
    ),  # fmt: skip
    # ---- report ----
    ("report-missing", ["report", "{d}/nope"], {}, "nope"),
    ("report-file", ["report", "{d}/f"], {"f": "x"}, "f"),
    ("report-empty-dir", ["report", "{d}"], {}, "report.json"),
    ("report-json-binary", ["report", "{d}", "--no-plots"], {"report.json": BINARY}, "report.json"),
    ("report-json-bad", ["report", "{d}", "--no-plots"], {"report.json": "{"}, "report.json"),
    ("report-json-list", ["report", "{d}", "--no-plots"], {"report.json": [1]}, "report.json"),
    ("report-json-empty", ["report", "{d}", "--no-plots"], {"report.json": {}}, "report.json"),
    # ---- predict ----
    ("predict-query-missing", ["predict", "query", "hi", "--predictor", "{d}/nope"], {}, "nope"),
    ("predict-query-empty-dir", ["predict", "query", "hi", "--predictor", "{d}"], {}, "predictor"),
    ("predict-query-file", ["predict", "query", "hi", "--predictor", "{d}/f"], {"f": "x"}, "f"),
    (
        "predict-query-bad-config",
        ["predict", "query", "hi", "--predictor", "{d}"],
        {"config.json": BINARY, "head.safetensors": "x"},
        "config.json",
    ),
    (
        "predict-update-missing",
        ["predict", "update", "{d}/nope.jsonl", "--predictor", "{d}"],
        {},
        "nope.jsonl",
    ),
    ("predict-train-epochs-0", ["predict", "train", "--epochs", "0", "--out", "{d}/o"], {}, "--epochs"),
    ("predict-train-lr-nan", ["predict", "train", "--lr", "nan", "--out", "{d}/o"], {}, "--lr"),
    (
        "predict-train-test-frac",
        ["predict", "train", "--test-frac", "1.5", "--out", "{d}/o"],
        {},
        "--test-frac",
    ),
    ("predict-train-edges", ["predict", "train", "--edges", "8,4", "--out", "{d}/o"], {}, "bucket edges"),
    (
        "predict-train-batch-0",
        ["predict", "train", "--batch-size", "0", "--out", "{d}/o"],
        {},
        "--batch-size",
    ),
    # ---- the shell ----
    ("cli-unknown-command", ["frobnicate"], {}, "frobnicate"),
    ("cli-unknown-option", ["plan", "--frobnicate"], {}, "--frobnicate"),
    ("cli-int-text", [*BENCH, "--max-requests", "many"], {}, "--max-requests"),
]


def _materialise(d: Path, files: dict[str, Any]) -> None:
    for name, content in files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            kind = "topo" if name.startswith("t.") else "calib" if name.startswith("c.") else "plan"
            content = content(copy.deepcopy(_base(kind)))
        if isinstance(content, bytes):
            p.write_bytes(content)
        elif isinstance(content, str):
            p.write_text(content)
        else:
            p.write_text(json.dumps(content))


_BASE_CACHE: dict[str, dict[str, Any]] = {}


def _base(kind: str) -> dict[str, Any]:
    if kind not in _BASE_CACHE:
        _BASE_CACHE[kind] = BASE[kind]()
    return _BASE_CACHE[kind]


def test_case_ids_are_unique() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 150


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("argv", "files", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clean_line(tmp_path: Path, argv: list[str], files: dict, needle: str) -> None:
    _materialise(tmp_path, files)
    res = run_cli([a.replace("{d}", str(tmp_path)) for a in argv])
    assert_clean_error(res, needle.replace("{d}", str(tmp_path)))
