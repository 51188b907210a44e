"""`llmplan serve --kv-store`: real servers (uvicorn in-process and `llmplan serve` subprocesses)
sharing a store give the same greedy tokens as a server without one, compute only the uncached
tail (per /metrics), drop a corrupt block file and recompute, and reject bad flags in one line."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))

from server_harness import free_port, metric, running_server, wait_healthy  # noqa: E402

from llmplan.errors import LlmplanError  # noqa: E402

pytestmark = pytest.mark.slow  # heavy module fixtures (servers, models, fits): full suite only


BS = 16
_rng = random.Random(7)
SHARED = [_rng.randrange(3, 32000) for _ in range(48)]  # 3 full blocks
PROMPT_A = SHARED + [_rng.randrange(3, 32000) for _ in range(10)]
PROMPT_B = SHARED + [_rng.randrange(3, 32000) for _ in range(21)]  # 69 tokens: 4 full blocks + 5


def _engine(**kw):
    from llmplan.runtime.factory import build_engine

    kw.setdefault("num_kv_blocks", 64)
    return build_engine(dummy_weights="llama-tiny", max_num_seqs=8, threads=1, **kw)


def _complete(url: str, prompt: list[int], n: int = 8, **sampling) -> str:
    body = {"prompt": prompt, "max_tokens": n, "temperature": 0.0, "ignore_eos": True, **sampling}
    r = httpx.post(url + "/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def _wipe_pool(engine) -> None:
    """Zero the paged KV pool between requests: a freed block still holds its old KV, and the
    next request may get the same block ids, so without this a broken load could pass unseen."""
    kv = engine.engine.executor.kv
    for t in (*kv.k, *kv.v):
        t.zero_()


@pytest.fixture(scope="module")
def reference():
    """Outputs of a server without a store: the ground truth."""
    with running_server(_engine()) as url:
        yield {
            "a": _complete(url, PROMPT_A),
            "b": _complete(url, PROMPT_B),
            "b_sampled": _complete(url, PROMPT_B, temperature=0.9, seed=11),
        }


def test_repeated_prefix_is_served_from_the_store_with_identical_output(tmp_path, reference):
    engine = _engine(kv_store=str(tmp_path))
    with running_server(engine) as url:
        assert _complete(url, PROMPT_A) == reference["a"]  # cold: computes all, writes 3 blocks
        _wipe_pool(engine)
        assert metric(url, "llmplan_kvstore_hit_tokens_total") == 0
        assert metric(url, "llmplan_kvstore_written_blocks_total") == 3
        assert _complete(url, PROMPT_B) == reference["b"]
        assert metric(url, "llmplan_kvstore_hit_tokens_total") == 48  # the shared 3 blocks
        assert metric(url, "llmplan_kvstore_hit_blocks_total") == 3
        assert metric(url, "llmplan_kvstore_miss_tokens_total") == len(PROMPT_A) + len(PROMPT_B) - 48
        # B's own 4th block went back too; the memory tier served every (block, layer) load.
        assert metric(url, "llmplan_kvstore_written_blocks_total") == 4
        assert metric(url, "llmplan_kvstore_memory_hits_total") == 3 * 4
        # The request's own sampler draws the token (seeded sampling, not argmax).
        assert _complete(url, PROMPT_B, temperature=0.9, seed=11) == reference["b_sampled"]
        assert metric(url, "llmplan_kvstore_hit_tokens_total") == 48 + 64
        assert metric(url, "llmplan_kvstore_disk_bytes") > 0


def test_chunked_prefill_loads_in_every_chunk_and_writes_back_later_chunks(tmp_path, reference):
    # 32-token steps. A's three chunks complete blocks 0-2, and each goes back to the store.
    # B's chunks: [0, 32) loads block 0 and computes block 1 (a chunk computes >= 1 token);
    # [32, 64) loads block 2 (it follows what the pool holds) and computes block 3, written
    # back; [64, 69) starts past the cached blocks and only computes.
    engine = _engine(kv_store=str(tmp_path), max_num_batched_tokens=32)
    with running_server(engine) as url:
        assert _complete(url, PROMPT_A) == reference["a"]
        assert metric(url, "llmplan_kvstore_written_blocks_total") == 3
        _wipe_pool(engine)
        assert _complete(url, PROMPT_B) == reference["b"]
        assert metric(url, "llmplan_kvstore_hit_blocks_total") == 2
        assert metric(url, "llmplan_kvstore_hit_tokens_total") == 32
        assert metric(url, "llmplan_kvstore_written_blocks_total") == 4


def test_a_chunk_that_starts_inside_a_block_loads_from_the_next_boundary(tmp_path, reference):
    # 40-token steps put B's second chunk edge at 40, inside block 2. Once B is stored, B again:
    # [0, 40) loads blocks 0-1 and computes 32..39; [40, 69) computes the head 40..47, loads
    # block 3 (48..63) and computes the tail 64..68, both spans in one step.
    engine = _engine(kv_store=str(tmp_path), max_num_batched_tokens=40)
    with running_server(engine) as url:
        assert _complete(url, PROMPT_B) == reference["b"]
        assert metric(url, "llmplan_kvstore_written_blocks_total") == 4
        _wipe_pool(engine)
        assert _complete(url, PROMPT_B) == reference["b"]
        assert metric(url, "llmplan_kvstore_hit_blocks_total") == 3
        assert metric(url, "llmplan_kvstore_miss_tokens_total") == len(PROMPT_B) + len(PROMPT_B) - 48


def test_a_corrupt_block_file_is_dropped_and_recomputed(tmp_path, reference):
    # Disk tier only, so every load reads (and checks) a file.
    engine = _engine(kv_store=str(tmp_path), kv_store_memory_mb=0)
    with running_server(engine) as url:
        assert _complete(url, PROMPT_A) == reference["a"]
        _wipe_pool(engine)
        files = sorted(tmp_path.rglob("*.kvb"))
        assert len(files) == 3 * 4  # 3 blocks x 4 layers
        import torch

        from llmplan.kvstore.hashing import block_hashes
        from llmplan.kvstore.serving import model_namespace
        from llmplan.runtime.engine.config import catalog_config

        ns = model_namespace(catalog_config("llama-tiny"), "dummy:llama-tiny:seed=0", torch.float32, BS)
        victim = next(f for f in files if f.name.startswith(block_hashes(PROMPT_A, BS, ns)[1].hex())
                      and ".L2." in f.name)
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01  # one flipped bit in the payload
        victim.write_bytes(bytes(data))
        assert _complete(url, PROMPT_B) == reference["b"]
        assert metric(url, "llmplan_kvstore_corrupt_dropped_total") == 1
        assert metric(url, "llmplan_kvstore_step_retries_total") == 1
        assert metric(url, "llmplan_kvstore_hit_tokens_total") == 16  # only block 0 survived
        assert not victim.exists() or victim.read_bytes() != bytes(data)  # rewritten, not served


def test_preempted_requests_recompute_over_a_memory_only_store_with_identical_output():
    # A 9-block pool for three 40-token prompts that grow to 70 tokens: decode growth preempts,
    # and a preempted request re-prefills prompt + generated tokens from position 0 -- through
    # the store, whose chained keys also cover the generated tokens' blocks.
    import concurrent.futures as cf

    rng = random.Random(11)
    prompts = [SHARED[:32] + [rng.randrange(3, 32000) for _ in range(8)] for _ in range(3)]
    with running_server(_engine()) as url:
        want = [_complete(url, p, 30) for p in prompts]
    with running_server(_engine(kv_store="memory", kv_store_memory_mb=64, num_kv_blocks=9)) as url:
        with cf.ThreadPoolExecutor(3) as pool:
            got = list(pool.map(lambda p: _complete(url, p, 30), prompts))
        assert metric(url, "llmplan_preemptions_total") > 0
        assert metric(url, "llmplan_kvstore_hit_tokens_total") > 0
        assert metric(url, "llmplan_kvstore_disk_bytes") == 0
    assert got == want


@pytest.mark.slow  # > 5 s on 2 cores (pytest --durations)
def test_different_models_sharing_a_directory_never_read_each_others_blocks(tmp_path):
    with running_server(_engine(kv_store=str(tmp_path))) as url:
        _complete(url, PROMPT_A)
    # Other weights (seed), other dtype, other block size: same tokens, other keys.
    for kw in ({"seed": 1}, {"dtype": "bfloat16"}, {"block_size": 8}):
        with running_server(_engine(kv_store=str(tmp_path), **kw)) as url:
            _complete(url, PROMPT_A)
            assert metric(url, "llmplan_kvstore_hit_tokens_total") == 0, kw
            assert metric(url, "llmplan_kvstore_disk_hits_total") == 0, kw
    with running_server(_engine(kv_store=str(tmp_path))) as url:  # the first model again: hits
        _complete(url, PROMPT_A)
        assert metric(url, "llmplan_kvstore_hit_tokens_total") == 48


def test_open_store_tiers_and_errors(tmp_path):
    from llmplan.kvstore.serving import open_store

    s = open_store(tmp_path / "kv", num_layers=4, memory_mb=8, disk_gb=0.5)
    assert s.memory.capacity_bytes == 8 << 20 and s.disk.capacity_bytes == 1 << 29
    assert open_store("memory", num_layers=4, memory_mb=8).disk is None
    for args, msg in (((tmp_path / "kv", 4, -1), ">= 0"), (("memory", 4, 0), "stores nothing"),
                      ((tmp_path / "kv", 4, 8, 0.0), "must be > 0")):
        with pytest.raises(LlmplanError, match=msg):
            open_store(*args)


def _serve(port: int, store: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "llmplan.cli.app", "serve", "--dummy-weights", "llama-tiny",
         "--port", str(port), "--num-kv-blocks", "64", "--max-num-seqs", "4", "--threads", "1",
         "--log-level", "warning", "--kv-store", str(store), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow  # > 5 s on 2 cores (pytest --durations)
def test_two_server_processes_share_one_store_directory(tmp_path, reference):
    store = tmp_path / "kv"
    ports = free_port(), free_port()
    # Both start before anything is stored: the second must find the first's blocks in the
    # directory at lookup time, not in an index built when it opened.
    procs = [_serve(p, store) for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for u, p in zip(urls, procs, strict=True):
            wait_healthy(u, p)
        assert _complete(urls[0], PROMPT_A) == reference["a"]
        assert _complete(urls[1], PROMPT_B) == reference["b"]
        assert metric(urls[1], "llmplan_kvstore_hit_tokens_total") == 48
        assert metric(urls[1], "llmplan_kvstore_miss_tokens_total") == len(PROMPT_B) - 48
        assert metric(urls[1], "llmplan_kvstore_disk_hits_total") == 3 * 4
        _stop(procs[0])
        # A restart keeps the disk tier: the new process serves B's 4 full blocks from disk.
        procs[0] = _serve(ports[0], store)
        wait_healthy(urls[0], procs[0])
        assert _complete(urls[0], PROMPT_B) == reference["b"]
        assert metric(urls[0], "llmplan_kvstore_hit_tokens_total") == 64
    finally:
        for p in procs:
            _stop(p)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kv-store-memory-mb", "64"], "--kv-store-memory-mb needs --kv-store"),
        (["--kv-store", "memory", "--kv-store-memory-mb", "0"], "stores nothing"),
        (["--kv-store", "DIR", "--kv-store-memory-mb", "-1"], "must be >= 0"),
        (["--kv-store", "FILE"], "is a file"),
        (["--kv-store", " "], "needs a directory"),
        (["--kv-store-disk-gb", "1"], "--kv-store-disk-gb needs --kv-store"),
        (["--kv-store", "DIR", "--kv-store-disk-gb", "0"], "must be > 0"),
        (["--kv-store", "memory", "--kv-store-disk-gb", "2"], "needs a --kv-store DIR"),
    ],
)
def test_bad_kv_store_flags_fail_in_one_line(tmp_path, args, message):
    from llmplan.cli.app import app

    f = tmp_path / "f"
    f.write_text("x")
    args = [str(f) if a == "FILE" else str(tmp_path / "d") if a == "DIR" else a for a in args]
    r = CliRunner().invoke(app, ["serve", "--dummy-weights", "llama-tiny", *args])
    assert isinstance(r.exception, LlmplanError), r.output
    assert message in str(r.exception) and "\n" not in str(r.exception)


def test_bad_kv_store_flag_exits_2_with_one_red_line(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "llmplan.cli.app", "serve", "--dummy-weights", "llama-tiny",
         "--kv-store-memory-mb", "8"], capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "--kv-store-memory-mb needs --kv-store" in p.stderr
