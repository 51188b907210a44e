"""The AsyncEngine face: streaming, queue bound, abort by closing the stream, drain on shutdown."""

from __future__ import annotations

import asyncio

import pytest

from llmplan.runtime.engine.api import (
    EngineClosedError,
    GenerateRequest,
    InvalidRequestError,
    QueueFullError,
    SamplingParams,
)
from llmplan.runtime.factory import build_engine


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return str(tiny_checkpoint[0])


def _req(rid: str, n: int = 6, prompt=(5, 6, 7, 8), **kw) -> GenerateRequest:
    return GenerateRequest(
        rid, list(prompt), SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, **kw)
    )


async def _collect(stream):
    return [o async for o in stream]


@pytest.mark.slow
def test_streams_increments_then_one_final_output(ckpt):
    async def main():
        eng = build_engine(model=ckpt, num_kv_blocks=64, block_size=4)
        await eng.start()
        outs = await asyncio.gather(*[_collect(eng.generate(_req(f"a{i}", n=3 + i))) for i in range(4)])
        await eng.shutdown()
        return eng, outs

    eng, outs = asyncio.run(main())
    for i, out in enumerate(outs):
        assert [o.finished for o in out] == [False] * (len(out) - 1) + [True]
        assert sum(len(o.new_token_ids) for o in out) == 3 + i
        assert out[-1].finish_reason == "length" and out[-1].completion_tokens == 3 + i
    s = eng.stats()
    assert s.finished_total == 4 and s.kv_blocks_used == 0 and s.running == 0 and s.waiting == 0


def test_queue_bound_raises_queue_full_and_bad_requests_raise_invalid(ckpt):
    async def main():
        eng = build_engine(model=ckpt, num_kv_blocks=64, block_size=4, max_queue=2, max_num_seqs=1)
        with pytest.raises(EngineClosedError):
            eng.generate(_req("early"))
        await eng.start()
        streams = [eng.generate(_req(f"q{i}", n=20)) for i in range(2)]
        with pytest.raises(QueueFullError) as full:
            eng.generate(_req("overflow"))
        assert full.value.retry_after_s >= 1.0
        with pytest.raises(InvalidRequestError, match="exceeds the model's context"):
            eng.generate(_req("long", n=10_000))
        with pytest.raises(InvalidRequestError, match="empty"):
            eng.generate(_req("empty", prompt=()))
        with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
            eng.generate(_req("oov", prompt=(1, 99_999)))
        done = await asyncio.gather(*[_collect(s) for s in streams])
        await eng.shutdown()
        return done

    done = asyncio.run(main())
    assert all(d[-1].finish_reason == "length" for d in done)


def test_closing_a_stream_aborts_the_request_and_frees_its_blocks(ckpt):
    async def main():
        eng = build_engine(model=ckpt, num_kv_blocks=64, block_size=4)
        await eng.start()
        stream = eng.generate(_req("gone", n=200))
        first = await stream.__anext__()
        assert not first.finished
        assert eng.stats().kv_blocks_used > 0
        await stream.aclose()  # what the server does when the client disconnects
        for _ in range(200):
            if eng.stats().kv_blocks_used == 0 and eng.stats().running == 0:
                break
            await asyncio.sleep(0.01)
        s = eng.stats()
        await eng.shutdown()
        return s

    s = asyncio.run(main())
    assert s.kv_blocks_used == 0 and s.running == 0


def test_explicit_abort_ends_the_stream_with_abort(ckpt):
    async def main():
        eng = build_engine(model=ckpt, num_kv_blocks=256, block_size=4)
        await eng.start()
        stream = eng.generate(_req("x", n=300))
        await stream.__anext__()
        await eng.abort("x")
        rest = await _collect(stream)
        await eng.shutdown()
        return rest, eng.stats()

    rest, s = asyncio.run(main())
    assert rest[-1].finished and rest[-1].finish_reason == "abort"
    assert s.kv_blocks_used == 0


def test_shutdown_with_drain_finishes_accepted_requests(ckpt):
    async def main():
        eng = build_engine(model=ckpt, num_kv_blocks=64, block_size=4, max_num_seqs=2)
        await eng.start()
        tasks = [asyncio.create_task(_collect(eng.generate(_req(f"d{i}", n=8)))) for i in range(5)]
        await asyncio.sleep(0)
        await eng.shutdown(drain=True)
        with pytest.raises(EngineClosedError):
            eng.generate(_req("late"))
        return await asyncio.gather(*tasks)

    outs = asyncio.run(main())
    assert [o[-1].finish_reason for o in outs] == ["length"] * 5
    assert all(o[-1].completion_tokens == 8 for o in outs)


def test_shutdown_without_drain_aborts_everything(ckpt):
    async def main():
        eng = build_engine(model=ckpt, num_kv_blocks=256, block_size=4, max_num_seqs=2)
        await eng.start()
        tasks = [asyncio.create_task(_collect(eng.generate(_req(f"n{i}", n=400)))) for i in range(3)]
        await asyncio.sleep(0.05)
        await eng.shutdown(drain=False)
        return await asyncio.gather(*tasks), eng.stats()

    outs, s = asyncio.run(main())
    assert all(o[-1].finished for o in outs)
    assert {o[-1].finish_reason for o in outs} == {"abort"}
    assert s.kv_blocks_used == 0


def test_a_failing_step_ends_every_stream_with_an_error(ckpt):
    """A forward pass that raises must not strand clients: each stream ends with 'error'."""

    class Boom(RuntimeError):
        pass

    async def main():
        eng = build_engine(model=ckpt, num_kv_blocks=64, block_size=4)
        real = eng.engine.executor.execute
        calls = {"n": 0}

        def flaky(batch):
            calls["n"] += 1
            if calls["n"] == 3:
                raise Boom("device lost")
            return real(batch)

        eng.engine.executor.execute = flaky
        await eng.start()
        outs = await asyncio.gather(*[_collect(eng.generate(_req(f"f{i}", n=20))) for i in range(3)])
        after = await _collect(eng.generate(_req("after", n=3)))  # the engine keeps serving
        await eng.shutdown()
        return outs, after, eng

    outs, after, eng = asyncio.run(main())
    for out in outs:
        assert out[-1].finished and out[-1].finish_reason == "error" and "device lost" in out[-1].error
    assert after[-1].finish_reason == "length"
    assert isinstance(eng.loop_error, RuntimeError)
    assert eng.stats().kv_blocks_used == 0


def test_dummy_weights_use_the_offline_mistral_tokenizer():
    eng = build_engine(dummy_weights="llama-tiny", num_kv_blocks=8)
    tok = eng.tokenizer
    assert tok.name == "mistral-7b-v0.1-sentencepiece" and tok.eos_token_id == 2
    ids = tok.encode("Hello world")
    assert ids and all(3 <= i < 32000 for i in ids) and tok.decode(ids) == "Hello world"
    assert eng.vocab_size == 32000 and eng.model_name == "llama-tiny"


@pytest.mark.parametrize("threads", [1, 2])
def test_steps_run_with_the_requested_threads_on_the_engine_thread(ckpt, threads):
    """The build runs single-threaded on the caller's thread (one OpenMP pool per process, see
    the factory); the engine thread steps with ``threads`` intra-op threads, and the caller's
    thread has them back after the build."""
    import threading

    import torch

    before = torch.get_num_threads()
    seen: list[tuple[str, int]] = []

    async def main():
        eng = build_engine(model=ckpt, num_kv_blocks=64, block_size=4, threads=threads)
        assert torch.get_num_threads() == threads
        real = eng.engine.executor.execute

        def execute(batch):
            seen.append((threading.current_thread().name, torch.get_num_threads()))
            return real(batch)

        eng.engine.executor.execute = execute
        await eng.start()
        await _collect(eng.generate(_req("t", n=3)))
        await eng.shutdown()

    try:
        asyncio.run(main())
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {("llmplan-engine", threads)}


def test_keep_freed_memory_applies_once_and_can_be_turned_off():
    import os
    import subprocess
    import sys

    code = "from llmplan.runtime.engine.hostmem import keep_freed_memory as k; print(k(), k())"
    env = {k: v for k, v in os.environ.items() if k != "LLMPLAN_KEEP_FREED_MEMORY"}
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    off = subprocess.run([sys.executable, "-c", code], env={**env, "LLMPLAN_KEEP_FREED_MEMORY": "0"},
                         capture_output=True, text=True, check=True)
    expect = "True True" if sys.platform.startswith("linux") else "False False"
    assert on.stdout.split() == expect.split()
    assert off.stdout.split() == ["False", "False"]
