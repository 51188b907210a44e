"""Plan -> vLLM launch: parallel sizes, device order, layer partition, Ray across hosts, P/D."""

from __future__ import annotations

import copy
import json

import pytest

from llmplan.errors import LlmplanError
from llmplan.frontend.deploy import vllm_specs
from llmplan.models import get_model_spec
from llmplan.plan.planner import make_plan
from llmplan.plan.types import Plan
from llmplan.plan.vllm import plan_launches, vllm_launch
from llmplan.topology import load_topology


@pytest.fixture(scope="module")
def plan_70b() -> Plan:
    graph = load_topology("preset:dgx-a100")
    # a pure pipeline plan (TP 1): these tests map stages to PP ranks
    return make_plan(get_model_spec("llama-2-70b"), graph, "HE", topology="preset:dgx-a100", tp_degrees=(1,))


def test_tp_plan_maps_to_tp_and_group_devices():
    graph = load_topology("preset:dgx-a100")
    plan = make_plan(get_model_spec("llama-2-70b"), graph, "LR", topology="preset:dgx-a100")
    ln = vllm_launch(plan)
    tp = len(plan.stages[0].gpus)
    assert tp > 1 and ln.tensor_parallel == tp and ln.pipeline_parallel == len(plan.stages)
    assert ln.env["CUDA_VISIBLE_DEVICES"].split(",") == [
        g.removeprefix("GPU") for s in plan.stages for g in s.gpus
    ]


def test_pipeline_plan_maps_to_pp_and_stage_ordered_devices(plan_70b):
    ln = vllm_launch(plan_70b)
    stages = plan_70b.stages
    assert ln.pipeline_parallel == len(stages) and ln.tensor_parallel == 1
    assert ln.env["CUDA_VISIBLE_DEVICES"].split(",") == [
        g.removeprefix("GPU") for s in stages for g in s.gpus
    ]
    assert ln.args[:4] == ["--tensor-parallel-size", "1", "--pipeline-parallel-size", str(len(stages))]
    counts = [s.layers for s in stages]
    assert sum(counts) == 80
    # vLLM's default split is used unless the plan's differs, and then it is passed on.
    if "VLLM_PP_LAYER_PARTITION" in ln.env:
        assert ln.env["VLLM_PP_LAYER_PARTITION"] == ",".join(map(str, counts))


def test_uneven_split_is_passed_to_vllm(plan_70b):
    plan = copy.deepcopy(plan_70b)
    if len(plan.stages) < 2:
        pytest.skip("HE plan is one stage on this preset")
    plan.stages[0].layer_end -= 1
    plan.stages[1].layer_start -= 1
    ln = vllm_launch(plan)
    assert ln.env["VLLM_PP_LAYER_PARTITION"] == ",".join(str(s.layers) for s in plan.stages)


def test_instance_across_hosts_uses_ray(plan_70b):
    if len(plan_70b.stages) < 2:
        pytest.skip("needs two stages")
    assert "--distributed-executor-backend" not in vllm_launch(plan_70b).args
    plan = copy.deepcopy(plan_70b)
    for k, st in enumerate(plan.stages):
        st.host, st.local_index = f"node{k}", 0
    ln = vllm_launch(plan)
    assert ln.args[-2:] == ["--distributed-executor-backend", "ray"]
    assert "CUDA_VISIBLE_DEVICES" not in ln.env and ln.devices == {
        f"node{k}": [0] for k in range(len(plan.stages))
    }


def test_mixed_tp_is_refused(plan_70b):
    plan = copy.deepcopy(plan_70b)
    plan.stages[0].gpus = plan.stages[0].gpus + ["GPU7"]
    if len(plan.stages) < 2:
        pytest.skip("needs two stages")
    with pytest.raises(LlmplanError, match="one TP size"):
        vllm_launch(plan)


def test_prefill_without_decode_is_refused(plan_70b):
    plan = copy.deepcopy(plan_70b)
    plan.instances[0].role = "prefill"
    with pytest.raises(LlmplanError, match="no decode instance"):
        plan_launches(plan)


def test_vllm_specs_from_a_saved_plan(tmp_path, plan_70b):
    path = tmp_path / "plan.json"
    plan_70b.save(path)
    json.loads(path.read_text())
    (spec,) = vllm_specs(path, "/models/llama-2-70b", host="127.0.0.1", base_port=9100, vllm_bin="/bin/echo")
    assert spec.argv[:3] == ["/bin/echo", "serve", "/models/llama-2-70b"]
    assert spec.port == 9100 and "--port" in spec.argv and "9100" in spec.argv
    assert spec.env["CUDA_VISIBLE_DEVICES"] == vllm_launch(plan_70b).env["CUDA_VISIBLE_DEVICES"]
    assert spec.argv.count("--tensor-parallel-size") == 1  # not duplicated by the extra args
    assert "--max-model-len" in spec.argv


def test_missing_vllm_says_how_to_install(tmp_path, plan_70b, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    path = tmp_path / "plan.json"
    plan_70b.save(path)
    with pytest.raises(LlmplanError, match=r"pip install 'llmplan\[vllm\]'"):
        vllm_specs(path, "/m", host="127.0.0.1", base_port=9100)
