"""The KV store's directory is trusted only as far as it must be: a block file whose checksum
is valid but whose header does not fit this model (wrong shape or dtype) is dropped, counted and
recomputed, never loaded and never a 500; the directory is created 0700. Real server, real files."""

from __future__ import annotations

import random
import stat
import sys
from pathlib import Path

import httpx
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))

from server_harness import metric, running_server  # noqa: E402

BS = 16
_rng = random.Random(5)
PROMPT = [_rng.randrange(3, 32000) for _ in range(70)]  # 4 full blocks + 6


def _engine(**kw):
    from llmplan.runtime.factory import build_engine

    return build_engine(dummy_weights="llama-tiny", max_num_seqs=4, threads=1, num_kv_blocks=64, **kw)


def _complete(url: str) -> httpx.Response:
    body = {"prompt": PROMPT, "max_tokens": 6, "temperature": 0.0, "ignore_eos": True}
    return httpx.post(url + "/v1/completions", json=body, timeout=60)


@pytest.mark.slow
def test_a_well_formed_block_of_the_wrong_shape_or_dtype_is_dropped_and_recomputed(tmp_path):
    from llmplan.kvstore.disk import encode
    from llmplan.kvstore.hashing import block_hashes
    from llmplan.kvstore.serving import model_namespace
    from llmplan.runtime.engine.config import catalog_config

    with running_server(_engine()) as url:
        want = _complete(url).json()["choices"][0]["text"]

    store_dir = tmp_path / "store"
    engine = _engine(kv_store=str(store_dir), kv_store_memory_mb=0)  # disk only: every load reads a file
    assert stat.S_IMODE(store_dir.stat().st_mode) == 0o700
    cfg = catalog_config("llama-tiny")
    ns = model_namespace(cfg, "dummy:llama-tiny:seed=0", torch.float32, BS)
    keys = block_hashes(PROMPT, BS, ns)
    with running_server(engine) as url:
        assert _complete(url).json()["choices"][0]["text"] == want  # computes and stores 4 blocks
        disk = engine.engine.executor.store.disk
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in store_dir.iterdir() if p.is_dir())
        # Rewrite two files with valid checksums: another shape, and the right shape in fp16.
        shape = (2, BS, cfg.num_kv_heads, cfg.head_dim)
        forged = {(keys[1], 2): torch.ones(2, BS, cfg.num_kv_heads, cfg.head_dim + 1),
                  (keys[2], 0): torch.ones(shape, dtype=torch.float16)}
        for key, t in forged.items():
            disk.path(key).write_bytes(encode(key, t))
        r = _complete(url)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == want
        assert metric(url, "llmplan_kvstore_corrupt_dropped_total") >= 1
        r = _complete(url)  # and again: the forged files are gone, the blocks stored anew
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == want
        for key in forged:
            t = disk.get(key)
            assert t is not None and tuple(t.shape) == shape and t.dtype == torch.float32
