"""Shared fixtures: a tiny random Llama saved as an HF safetensors checkpoint, and its HF twin;
the decode path (torch ops or the compiled CPU kernels)."""

from __future__ import annotations

import pytest
import torch

from llmplan.runtime.engine.config import ModelConfig

TINY = {
    "model_type": "llama",
    "vocab_size": 384,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "bos_token_id": None,
    "eos_token_id": None,
}


@pytest.fixture(params=["torch", "native"])
def decode_kernel(request, monkeypatch):
    """Runs the test once on the torch path and once on the compiled kernels (which must build);
    ``@pytest.mark.parametrize("decode_kernel", ["native"], indirect=True)`` picks one."""
    from llmplan.runtime.engine import native

    monkeypatch.setenv("LLMPLAN_DECODE_KERNEL", request.param)
    native.reset()
    assert (native.state().fn is not None) == (request.param == "native")
    yield request.param
    native.reset()


@pytest.fixture
def portable_build(monkeypatch, tmp_path):
    """The compiled library built without -march=native (the fallback flag set: no AVX-512
    intrinsics) into a fresh cache, loaded in place of this process's; restored afterwards."""
    from llmplan.runtime.engine import native

    portable = next(f for f in native._FLAG_SETS if "-march=native" not in f)
    monkeypatch.setattr(native, "_FLAG_SETS", (portable,))
    monkeypatch.setenv("LLMPLAN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LLMPLAN_DECODE_KERNEL", "native")
    monkeypatch.setattr(native, "_state", None)
    st = native.state()
    assert str(tmp_path) in st.reason
    return st


def make_hf_model(cfg_dict: dict, seed: int = 0, std: float = 0.08):
    """A random HF causal LM. A wider init than HF's 0.02 gives peaked logits, so greedy
    decoding is decided by margins far above fp32 rounding (no coin-flip ties)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**cfg_dict)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, std)
    model.generation_config.eos_token_id = None
    return model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """(directory with config.json + model.safetensors, the HF model)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    hf = make_hf_model(TINY)
    hf.save_pretrained(path, safe_serialization=True)
    return path, hf


@pytest.fixture(scope="module")
def tiny_cfg() -> ModelConfig:
    return ModelConfig.from_hf_dict(TINY, name="tiny")


@pytest.fixture(scope="session")
def hf_factory():
    return make_hf_model


@pytest.fixture(scope="session")
def tiny_dict() -> dict:
    return dict(TINY)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny matmuls gain nothing from 2 threads, and on a busy shared CPU the OpenMP
    hand-offs cost 10-20x; restore the setting for other areas' tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
