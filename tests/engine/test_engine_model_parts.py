"""Model variants against HF (Qwen2 q/k/v bias, llama3 RoPE scaling, tied embeddings, pipeline
stages on one device), the loader's errors, plan placement, sampling and stop strings."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import torch

from llmplan.errors import LlmplanError
from llmplan.runtime.engine.api import GenerateRequest, SamplingParams
from llmplan.runtime.engine.config import ModelConfig, catalog_config
from llmplan.runtime.engine.kvcache import PagedKVCache
from llmplan.runtime.engine.loader import load_hf_weights
from llmplan.runtime.engine.model import LlamaModel, rope_inv_freq
from llmplan.runtime.engine.placement import layer_devices_from_plan
from llmplan.runtime.engine.sampling import RequestSampler, sample, top_p_filter
from llmplan.runtime.engine.step_inputs import SeqWork, build_step_inputs
from llmplan.runtime.engine.tokenizer import ByteTokenizer, IncrementalDetokenizer

CPU = torch.device("cpu")


def _chunked_logits(model: LlamaModel, ids: list[int], chunks: list[int]) -> torch.Tensor:
    """Run ``ids`` through the paged path in the given chunk sizes; logits of every position."""
    cfg = model.cfg
    kv = PagedKVCache(cfg, 16, 4, model.layer_devices, torch.float32)
    blocks = [9, 2, 14, 5, 0, 11, 7, 3, 1, 4, 6, 8, 10, 12, 13, 15]  # scattered on purpose
    rows, pos = [], 0
    for n in chunks:
        si = build_step_inputs([SeqWork(ids[pos : pos + n], pos, blocks, True, True)], 4, CPU)
        rows.append(model(si.input_ids, si.positions, si.meta, kv, None))
        pos += n
    return torch.cat(rows)


@pytest.mark.parametrize(
    "variant",
    [
        {"model_type": "qwen2"},
        {"tie_word_embeddings": True},
        {
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            }
        },
        {"rope_scaling": {"rope_type": "linear", "factor": 2.0}},
        {"attention_bias": True, "mlp_bias": True},
    ],
    ids=["qwen2-bias", "tied", "llama3-rope", "linear-rope", "llama-bias"],
)
def test_variants_match_hf_logits(tmp_path, hf_factory, tiny_dict, variant):
    d = {**tiny_dict, **variant}
    if "rope_scaling" in d:
        d["rope_parameters"] = {"rope_theta": d["rope_theta"], **d.pop("rope_scaling")}
    hf = hf_factory(d)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.1)  # HF zero-inits biases; make them count
    hf.save_pretrained(tmp_path)
    cfg = ModelConfig.from_hf_dict(json.loads((tmp_path / "config.json").read_text()))
    model = LlamaModel(cfg, [CPU] * cfg.num_layers, torch.float32)
    load_hf_weights(model, tmp_path)
    ids = torch.randint(0, cfg.vocab_size, (37,), generator=torch.Generator().manual_seed(1)).tolist()
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
    got = _chunked_logits(model, ids, [5, 16, 7, 9])
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=1e-4)


def test_llama3_inv_freq_equals_transformers(tiny_dict):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    d = {**tiny_dict, "rope_parameters": rope, "hidden_size": 512, "num_attention_heads": 4}
    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](LlamaConfig(**d), "cpu")
    torch.testing.assert_close(rope_inv_freq(ModelConfig.from_hf_dict(d)), ref)


def test_two_stages_equal_one_model(tiny_checkpoint, tiny_cfg):
    path, hf = tiny_checkpoint
    full = LlamaModel(tiny_cfg, [CPU] * 2, torch.float32)
    load_hf_weights(full, path)
    first = LlamaModel(tiny_cfg, [CPU] * 2, torch.float32, layer_start=0, layer_end=1)
    last = LlamaModel(tiny_cfg, [CPU] * 2, torch.float32, layer_start=1, layer_end=2)
    load_hf_weights(first, path)
    load_hf_weights(last, path)
    assert first.embed_tokens is not None and not hasattr(first, "norm")
    assert last.embed_tokens is None and len(last.layers) == 1 and last.layers[0].index == 1
    ids = list(range(3, 30))
    kv1 = PagedKVCache(tiny_cfg, 8, 4, full.layer_devices, torch.float32)
    kv2 = PagedKVCache(tiny_cfg, 8, 4, full.layer_devices, torch.float32)
    si = build_step_inputs([SeqWork(ids, 0, list(range(8)), True, True)], 4, CPU)
    ref = full(si.input_ids, si.positions, si.meta, kv1, si.logits_index)
    hidden = first(si.input_ids, si.positions, si.meta, kv2, si.logits_index)
    got = last(hidden, si.positions, si.meta, kv2, si.logits_index)
    torch.testing.assert_close(got, ref)


def test_loader_rejects_incomplete_or_mismatched_checkpoints(tmp_path, tiny_checkpoint, tiny_cfg, tiny_dict):
    from safetensors.torch import load_file, save_file

    path, _ = tiny_checkpoint
    tensors = load_file(str(next(path.glob("*.safetensors"))))
    model = LlamaModel(tiny_cfg, [CPU] * 2, torch.float32)
    partial = {k: v for k, v in tensors.items() if "layers.1.mlp.up_proj" not in k}
    save_file(partial, str(tmp_path / "model.safetensors"))
    with pytest.raises(LlmplanError, match="lacks 1 tensor"):
        load_hf_weights(model, tmp_path)
    bad = dict(tensors)
    bad["model.norm.weight"] = torch.ones(7)
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(LlmplanError, match="model.norm.weight has shape"):
        load_hf_weights(model, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(LlmplanError, match="no \\*.safetensors"):
        load_hf_weights(model, tmp_path)
    with pytest.raises(LlmplanError, match="not supported"):
        ModelConfig.from_hf_dict({**tiny_dict, "model_type": "gpt2"})
    with pytest.raises(LlmplanError, match="rope_type"):
        ModelConfig.from_hf_dict({**tiny_dict, "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})
    with pytest.raises(LlmplanError, match="unknown model"):
        catalog_config("no-such-model")


def test_catalog_configs_for_dummy_weights():
    tiny = catalog_config("llama-tiny")
    assert (tiny.vocab_size, tiny.hidden_size, tiny.num_layers, tiny.num_heads, tiny.num_kv_heads) == (
        32000,
        256,
        4,
        4,
        2,
    )
    assert tiny.intermediate_size == 688
    big = catalog_config("llama-120m")
    assert (big.hidden_size, big.num_layers, big.num_heads, big.intermediate_size) == (768, 12, 12, 2048)


def test_plan_placement_formats_and_errors(tmp_path):
    assert layer_devices_from_plan(None, 3, "cpu") == [CPU] * 3
    assert (
        layer_devices_from_plan(
            {"stages": [{"device": "cpu", "layers": [0, 2]}, {"device": "cpu", "layers": [2, 4]}]}, 4, "cpu"
        )
        == [CPU] * 4
    )
    dm = {"device_map": {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu"}}
    assert layer_devices_from_plan(dm, 2, "cpu") == [CPU] * 2
    plan = {"instances": [{"stages": [{"gpus": ["GPU0", "GPU1"], "layer_start": 0, "layer_end": 2}]}]}
    with pytest.raises(LlmplanError, match="tensor parallel"):
        layer_devices_from_plan(plan, 2, "cpu")
    if not torch.cuda.is_available():
        plan = {"instances": [{"stages": [{"gpus": ["GPU0"], "layer_start": 0, "layer_end": 2}]}]}
        with pytest.raises(LlmplanError, match="CUDA is not available"):
            layer_devices_from_plan(plan, 2, "cpu")
    with pytest.raises(LlmplanError, match="unplaced"):
        layer_devices_from_plan({"stages": [{"device": "cpu", "layers": [0, 1]}]}, 2, "cpu")
    with pytest.raises(LlmplanError, match="twice"):
        layer_devices_from_plan(
            {"stages": [{"device": "cpu", "layers": [0, 2]}, {"device": "cpu", "layers": [1, 2]}]}, 2, "cpu"
        )
    with pytest.raises(LlmplanError, match="not found"):
        layer_devices_from_plan(tmp_path / "nope.json", 2, "cpu")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(LlmplanError, match="not valid"):
        layer_devices_from_plan(tmp_path / "bad.json", 2, "cpu")


def test_top_p_keeps_the_smallest_nucleus():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert (top_p_filter(p, 0.7) > 0).tolist() == [True, True, False, False]
    assert (top_p_filter(p, 0.5) > 0).tolist() == [True, False, False, False]
    assert (top_p_filter(p, 0.01) > 0).tolist() == [True, False, False, False]
    assert (top_p_filter(p, 0.9) > 0).tolist() == [True, True, True, False]
    assert torch.equal(top_p_filter(p, 1.0), p)
    assert torch.equal(top_p_filter(p, 0.9)[:3], p[:3]), "kept tokens keep their probability"


def test_sampling_seeds_greedy_and_temperature():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    greedy = RequestSampler(SamplingParams(temperature=0.0), 0)
    draws = []
    for _ in range(2):
        s = [
            greedy,
            RequestSampler(SamplingParams(temperature=1.0, seed=42), 0),
            RequestSampler(SamplingParams(temperature=1.0, top_p=1e-6, seed=1), 0),
        ]
        draws.append([tuple(sample(logits, s)) for _ in range(20)])
    assert draws[0] == draws[1], "the same seeds give the same tokens"
    assert {d[0] for d in draws[0]} == {int(logits[0].argmax())}
    assert {d[2] for d in draws[0]} == {int(logits[2].argmax())}, "a tiny top_p is greedy"
    assert len({d[1] for d in draws[0]}) > 1, "temperature 1 explores"


def test_detokenizer_stops_and_holds_back_partial_stop_strings():
    tok = ByteTokenizer()
    det = IncrementalDetokenizer(tok, ["END"])
    ids = tok.encode("hello EN")
    delta, hit = det.update(ids, final=False)
    assert not hit and delta == "hello ", "a possible prefix of the stop string is held back"
    ids += tok.encode("D tail")
    delta, hit = det.update(ids, final=False)
    assert hit and delta == "" and det.text == "hello "
    det2 = IncrementalDetokenizer(tok, [])
    euro = tok.encode("€")  # 3 bytes
    assert det2.update(euro[:2], final=False) == ("", False), "no half UTF-8 characters"
    assert det2.update(euro, final=False) == ("€", False)


def test_engine_stop_string_eos_and_max_tokens(tiny_checkpoint):
    """Stop strings cut the text; EOS ends a request unless ignore_eos."""
    from llmplan.runtime.factory import build_engine

    path, hf = tiny_checkpoint
    eng = build_engine(model=str(path), num_kv_blocks=64, block_size=4).engine
    prompt = [50, 60, 70]  # greedy output decodes to '\ufffd////-\x17...' with the byte tokenizer
    outs = defaultdict(list)
    eng.add_request(
        GenerateRequest("free", prompt, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)),
        lambda o: outs[o.request_id].append(o),
    )
    while eng.has_work():
        eng.step()
    free_ids = [t for o in outs["free"] for t in o.new_token_ids]
    text = eng.tokenizer.decode(free_ids)
    # EOS: declare a later greedy token the model's EOS and see the request end at it.
    k = next(i for i in range(1, len(free_ids)) if free_ids[i] not in free_ids[:i])
    eng.eos_ids = frozenset({free_ids[k]})
    eng.add_request(
        GenerateRequest("eos", prompt, SamplingParams(max_tokens=12, temperature=0.0)),
        lambda o: outs[o.request_id].append(o),
    )
    eng.add_request(
        GenerateRequest("ign", prompt, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)),
        lambda o: outs[o.request_id].append(o),
    )
    stop = "/-"
    assert stop in text
    eng.add_request(
        GenerateRequest(
            "stop", prompt, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, stop=[stop])
        ),
        lambda o: outs[o.request_id].append(o),
    )
    while eng.has_work():
        eng.step()
    eos_ids = [t for o in outs["eos"] for t in o.new_token_ids]
    assert eos_ids == free_ids[: k + 1] and outs["eos"][-1].finish_reason == "stop"
    assert outs["ign"][-1].finish_reason == "length" and outs["ign"][-1].completion_tokens == 12
    got = "".join(o.new_text for o in outs["stop"])
    assert outs["stop"][-1].finish_reason == "stop"
    assert got == text[: text.find(stop)] and stop not in got
    assert eng.scheduler.blocks.num_used == 0


def test_decode_sized_linear_follows_weights_written_in_place(monkeypatch, decode_kernel):
    """The packed weight copy that decode-sized GEMMs use (oneDNN's, or the compiled kernel's) is
    refreshed when the weight is written in place (a reload, a migration), and past the memory
    budget the plain GEMM runs."""
    from llmplan.runtime.engine import model as m
    from llmplan.runtime.engine import native

    kind = "native" if decode_kernel == "native" else "onednn"
    assert (native.state().linear is not None) == (decode_kernel == "native")
    torch.manual_seed(0)
    w = torch.randn(96, 32)
    x = torch.randn(8, 32)  # a decode-sized batch: the packed path
    assert 8 in m.PACKED_ROWS
    torch.testing.assert_close(m.linear(x, w), x @ w.T, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        w.mul_(-3.0)
    torch.testing.assert_close(m.linear(x, w), x @ w.T, rtol=1e-5, atol=1e-5)
    before = m._packed_bytes
    monkeypatch.setattr(m, "PACK_BUDGET_BYTES", before)  # no room for another copy
    w2 = torch.randn(64, 32)
    torch.testing.assert_close(m.linear(x, w2), x @ w2.T, rtol=1e-5, atol=1e-5)
    assert m._packed_weight(w2, kind) is None and m._packed_bytes == before
    assert (id(w), kind) in m._packed


@pytest.mark.parametrize("prefill_onednn", [False, True])
def test_prefill_sized_linear_paths_agree(monkeypatch, prefill_onednn):
    """Products past the decode kernel's rows run on oneDNN over the plain weight where
    PREFILL_ROWS says so (CPUs not Intel's) and on the plain GEMM otherwise: both give x W^T + b,
    and the path taken is the one PREFILL_ROWS names."""
    from torch.profiler import ProfilerActivity, profile

    from llmplan.runtime.engine import model as m

    monkeypatch.setattr(m, "PREFILL_ROWS", range(129, 2**62) if prefill_onednn else range(0))
    g = torch.Generator().manual_seed(4)
    w, b = torch.randn(80, 48, generator=g), torch.randn(80, generator=g)
    for rows in (129, 300):
        x = torch.randn(rows, 48, generator=g)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            y = m.linear(x, w, b)
        ref = (x.double() @ w.double().T + b.double()).float()
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        ops = {e.key for e in prof.key_averages()}
        assert ("mkldnn::_linear_pointwise" in ops) == (prefill_onednn and m._pack_ok), sorted(ops)
