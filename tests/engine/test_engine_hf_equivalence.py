"""Greedy tokens of the engine equal HF transformers ``generate`` on the same weights.

The checkpoint is written by HF (``save_pretrained``, safetensors) and read by the engine's
own loader, so the HF-name mapping onto the fused q/k/v and gate/up weights is under test
too. Requests arrive at different steps into a shared running batch, long prompts are
split by chunked prefill (token budget 24 per step, block size 4), and a second run with a
tiny block pool forces preemption by recompute.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
import torch

from llmplan.runtime.engine.api import GenerateOutput, GenerateRequest, SamplingParams
from llmplan.runtime.factory import build_engine

N_PROMPTS = 22


def _workload(vocab: int) -> list[tuple[list[int], int]]:
    rng = random.Random(7)
    lengths = [1, 2, 3, 5, 8, 13, 17, 24, 31, 40, 57, 70, 90, 4, 6, 11, 19, 26, 33, 48, 64, 100]
    assert len(lengths) == N_PROMPTS
    return [([rng.randrange(3, vocab) for _ in range(n)], rng.randrange(3, 20)) for n in lengths]


@pytest.fixture(scope="module")
def hf_reference(tiny_checkpoint):
    _, hf = tiny_checkpoint
    work = _workload(hf.config.vocab_size)
    ref = []
    with torch.no_grad():
        for prompt, n_out in work:
            out = hf.generate(
                torch.tensor([prompt]),
                max_new_tokens=n_out,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
            )
            ref.append(out[0, len(prompt) :].tolist())
    return work, ref


def _run(engine, work, arrive_every: int = 1, per_arrival: int = 2):
    """Feed requests ``per_arrival`` at a time every ``arrive_every`` steps; step to the end."""
    outs: dict[str, list[GenerateOutput]] = defaultdict(list)
    pending = [
        GenerateRequest(f"r{i}", prompt, SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True))
        for i, (prompt, n) in enumerate(work)
    ]
    step = 0
    max_batch = 0
    while pending or engine.has_work():
        if step % arrive_every == 0:
            for req in pending[:per_arrival]:
                engine.add_request(req, lambda o: outs[o.request_id].append(o))
            pending = pending[per_arrival:]
        max_batch = max(max_batch, engine.scheduler.num_running)
        engine.step()
        step += 1
        assert step < 2000, "engine did not finish"
    return outs, max_batch


def _tokens(outs, i):
    return [t for o in outs[f"r{i}"] for t in o.new_token_ids]


def test_greedy_matches_hf_generate_with_staggered_arrivals(tiny_checkpoint, hf_reference):
    path, _ = tiny_checkpoint
    work, ref = hf_reference
    eng = build_engine(
        model=str(path), max_num_seqs=8, block_size=4, num_kv_blocks=512, max_num_batched_tokens=24
    ).engine
    outs, max_batch = _run(eng, work)
    assert max_batch >= 4, "requests should share a running batch"
    assert eng.scheduler.stats.recompute_tokens == 0
    chunked = [i for i, (p, _) in enumerate(work) if len(p) > 24]
    assert chunked, "some prompts must need several prefill chunks"
    mismatches = [i for i in range(len(work)) if _tokens(outs, i) != ref[i]]
    assert not mismatches, f"requests {mismatches} differ from HF generate"
    for i in range(len(work)):
        final = outs[f"r{i}"][-1]
        assert final.finished and final.finish_reason == "length"
        assert final.completion_tokens == len(ref[i]) and final.prompt_tokens == len(work[i][0])
        assert sum(o.finished for o in outs[f"r{i}"]) == 1
    assert eng.scheduler.blocks.num_used == 0
    assert eng.stats().finished_total == len(work)


def test_preemption_by_recompute_keeps_tokens_identical(tiny_checkpoint, hf_reference):
    path, _ = tiny_checkpoint
    work, ref = hf_reference
    # 40 blocks x 4 tokens: the longest request (100 + 19 tokens) fits alone, the batch does not.
    eng = build_engine(
        model=str(path), max_num_seqs=8, block_size=4, num_kv_blocks=40, max_num_batched_tokens=24
    ).engine
    outs, _ = _run(eng, work, arrive_every=1, per_arrival=4)
    assert eng.scheduler.stats.preemptions > 0, "the small pool should force preemption"
    assert eng.scheduler.stats.recompute_tokens > 0
    mismatches = [i for i in range(len(work)) if _tokens(outs, i) != ref[i]]
    assert not mismatches, f"requests {mismatches} differ from HF generate after preemption"
    assert eng.scheduler.blocks.num_used == 0
    assert eng.stats().preemptions_total == eng.scheduler.stats.preemptions


def test_abort_frees_blocks_and_ends_the_stream(tiny_checkpoint, hf_reference):
    path, _ = tiny_checkpoint
    work, ref = hf_reference
    eng = build_engine(model=str(path), max_num_seqs=8, block_size=4, num_kv_blocks=256).engine
    outs: dict[str, list[GenerateOutput]] = defaultdict(list)
    for i in (10, 11, 12):
        prompt, n = work[i]
        eng.add_request(
            GenerateRequest(f"r{i}", prompt, SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)),
            lambda o: outs[o.request_id].append(o),
        )
    eng.step()
    eng.step()
    used_before = eng.scheduler.blocks.num_used
    victim = eng.scheduler.seqs[1]  # r11
    held = len(victim.block_ids)
    assert held > 0
    assert eng.abort_request("r11")
    assert eng.scheduler.blocks.num_used == used_before - held
    assert outs["r11"][-1].finished and outs["r11"][-1].finish_reason == "abort"
    assert not eng.abort_request("r11"), "a second abort is a no-op"
    while eng.has_work():
        eng.step()
    assert eng.scheduler.blocks.num_used == 0
    assert _tokens(outs, 10) == ref[10] and _tokens(outs, 12) == ref[12]


def test_decode_over_scattered_blocks_keeps_tokens_identical(tiny_checkpoint, hf_reference, monkeypatch):
    """The engine places each sequence's blocks at consecutive ids and attention reads them as a
    slice of the pool; with the plain stack allocator (growth blocks of the running sequences
    interleave) the rows whose tables are not consecutive are gathered instead. Both give
    HF's tokens, and both paths run."""
    from llmplan.runtime.core.blocks import BlockManager
    from llmplan.runtime.engine import attention

    gathered: list[int] = []
    real = attention._gather

    def counted(cache, table, length):
        gathered.append(length)
        return real(cache, table, length)

    monkeypatch.setattr(attention, "_gather", counted)
    path, _ = tiny_checkpoint
    work, ref = hf_reference
    eng = build_engine(
        model=str(path), max_num_seqs=8, block_size=4, num_kv_blocks=512, max_num_batched_tokens=24
    ).engine
    eng.scheduler.blocks = BlockManager(512, 4)
    outs, _ = _run(eng, work)
    assert gathered, "the stack allocator should have left some tables scattered"
    mismatches = [i for i in range(len(work)) if _tokens(outs, i) != ref[i]]
    assert not mismatches, f"requests {mismatches} differ from HF generate over scattered blocks"


@pytest.mark.parametrize("prefill_onednn", [False, True])
def test_long_prefill_chunks_match_hf_generate(tiny_checkpoint, monkeypatch, prefill_onednn):
    """Prompts of 150-300 tokens in a 512-token budget: the step's products have 129+ rows, past
    the decode kernel, on the plain GEMM or on oneDNN (model.PREFILL_ROWS; the default on CPUs
    not Intel's); greedy tokens equal HF generate either way."""
    from llmplan.runtime.engine import model as m

    monkeypatch.setattr(m, "PREFILL_ROWS", range(129, 2**62) if prefill_onednn else range(0))
    path, hf = tiny_checkpoint
    rng = random.Random(11)
    work = [([rng.randrange(3, hf.config.vocab_size) for _ in range(n)], 6) for n in (150, 300, 200)]
    with torch.no_grad():
        gen = [hf.generate(torch.tensor([p]), max_new_tokens=n, do_sample=False, pad_token_id=0,
                           eos_token_id=None) for p, n in work]  # fmt: skip
    ref = [g[0, len(p) :].tolist() for g, (p, _) in zip(gen, work, strict=True)]
    eng = build_engine(
        model=str(path), max_num_seqs=4, block_size=4, num_kv_blocks=512, max_num_batched_tokens=512
    ).engine
    outs, _ = _run(eng, work, per_arrival=3)
    assert [_tokens(outs, i) for i in range(len(work))] == ref
