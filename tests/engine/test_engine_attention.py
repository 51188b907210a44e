"""Decode attention over the paged pool: the compiled CPU kernel and the torch paths (one head or
paired heads per score matmul) against a float64 reference, and an MHA model against HF generate
with contexts past the paired threshold, on each path; the kernel's build, refusals and checks."""

from __future__ import annotations

import pytest
import torch

from llmplan.runtime.engine import attention, native
from llmplan.runtime.engine.attention import AttnMetadata, paged_attention
from llmplan.runtime.engine.config import ModelConfig
from llmplan.runtime.engine.kvcache import PagedKVCache

BS = 4


def _decode_batch(kvh: int, heads: int, hd: int, lens: list[int], scattered_row: int):
    """Random pools and queries for decode rows of ``lens`` keys; rows sit on consecutive blocks
    except ``scattered_row``, whose blocks are reversed (the gather path)."""
    g = torch.Generator().manual_seed(11)
    cfg = ModelConfig.from_hf_dict(
        {
            "model_type": "llama",
            "vocab_size": 64,
            "hidden_size": heads * hd,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": heads,
            "num_key_value_heads": kvh,
            "max_position_embeddings": 1024,
        }
    )
    need = [-(-n // BS) for n in lens]
    kv = PagedKVCache(cfg, sum(need) + 2, BS, [torch.device("cpu")], torch.float32)
    k_cache, v_cache = kv.layer(0)
    k_cache.copy_(torch.randn(k_cache.shape, generator=g))
    v_cache.copy_(torch.randn(v_cache.shape, generator=g))
    tables, starts, nxt = [], [], 1
    for r, nb in enumerate(need):
        blocks = list(range(nxt, nxt + nb))
        nxt += nb
        if r == scattered_row:
            blocks.reverse()
        tables.append(blocks)
        starts.append(blocks[0] if r != scattered_row else -1)
    width = max(need)
    padded = torch.tensor([t + [0] * (width - len(t)) for t in tables])
    q = torch.randn(len(lens), heads, hd, generator=g)
    meta = AttnMetadata(
        slot_mapping=torch.zeros(len(lens), dtype=torch.long),
        num_decode=len(lens),
        decode_block_tables=padded,
        decode_lens=tuple(lens),
        decode_starts=tuple(starts),
    )
    return q, k_cache, v_cache, meta, tables


def _reference(q, k_cache, v_cache, tables, lens):
    heads, hd = q.shape[1], q.shape[2]
    kvh = k_cache.shape[2]
    rows = []
    for r, (table, n) in enumerate(zip(tables, lens, strict=True)):
        k = k_cache[table].flatten(0, 1)[:n].double()  # [n, kvh, hd]
        v = v_cache[table].flatten(0, 1)[:n].double()
        k = k.repeat_interleave(heads // kvh, dim=1)
        v = v.repeat_interleave(heads // kvh, dim=1)
        s = torch.einsum("hd,nhd->hn", q[r].double(), k) * hd**-0.5
        rows.append(torch.einsum("hn,nhd->hd", torch.softmax(s, -1), v))
    return torch.stack(rows).reshape(len(lens), heads * hd)


@pytest.mark.parametrize("kvh,heads", [(4, 4), (2, 4), (3, 3)], ids=["mha", "gqa", "odd-heads"])
def test_decode_rows_match_a_float64_reference_on_every_path(kvh, heads, monkeypatch, decode_kernel):
    lens = [3, 95, 96, 130, 257, 140]
    q, k_cache, v_cache, meta, tables = _decode_batch(kvh, heads, 8, lens, scattered_row=5)
    qv = q.view(len(lens), kvh, heads // kvh, 8)
    paired = attention._paired_queries(qv, meta.decode_lens)
    assert (paired is not None) == (kvh == heads and kvh % 2 == 0)
    ref = _reference(q, k_cache, v_cache, tables, lens).float()

    def run() -> torch.Tensor:
        return paged_attention(q, q[:, :kvh], q[:, :kvh], k_cache, v_cache, meta, heads, kvh, 8, write=False)

    got = run()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    if decode_kernel == "native":  # fewer rows than threads: the kernel splits each row's heads
        one = _reference(q[4:5], k_cache, v_cache, tables[4:5], lens[4:5]).float()
        meta1 = AttnMetadata(
            slot_mapping=torch.zeros(1, dtype=torch.long),
            num_decode=1,
            decode_block_tables=meta.decode_block_tables[4:5],
            decode_lens=(lens[4],),
            decode_starts=(meta.decode_starts[4],),
        )
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(2)
            got1 = paged_attention(
                q[4:5], q[:1, :kvh], q[:1, :kvh], k_cache, v_cache, meta1, heads, kvh, 8, False
            )
        finally:
            torch.set_num_threads(threads)
        torch.testing.assert_close(got1, one, atol=1e-5, rtol=1e-5)
        return
    monkeypatch.setattr(attention, "GROUPED_SCORES_MIN_KEYS", 10**9)  # every row one head per matmul
    assert attention._paired_queries(qv, meta.decode_lens) is None
    torch.testing.assert_close(run(), got, atol=1e-6, rtol=1e-6)


def test_mha_model_decoding_past_the_paired_threshold_matches_hf(
    tmp_path, hf_factory, tiny_dict, decode_kernel
):
    from llmplan.runtime.engine.api import GenerateRequest, SamplingParams
    from llmplan.runtime.factory import build_engine

    d = {**tiny_dict, "num_key_value_heads": tiny_dict["num_attention_heads"]}
    hf = hf_factory(d)
    hf.save_pretrained(tmp_path)
    g = torch.Generator().manual_seed(5)
    n_out = 12
    prompts = [
        torch.randint(3, d["vocab_size"], (n,), generator=g).tolist()
        for n in (attention.GROUPED_SCORES_MIN_KEYS - 4, 130, 20)
    ]
    with torch.no_grad():
        ref = [
            hf.generate(
                torch.tensor([p]), max_new_tokens=n_out, do_sample=False, pad_token_id=0, eos_token_id=None
            )[0, len(p) :].tolist()
            for p in prompts
        ]
    eng = build_engine(model=str(tmp_path), max_num_seqs=4, block_size=4, num_kv_blocks=256).engine
    outs: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        outs[f"r{i}"] = []
        eng.add_request(
            GenerateRequest(f"r{i}", p, SamplingParams(max_tokens=n_out, temperature=0.0, ignore_eos=True)),
            lambda o, i=i: outs[f"r{i}"].extend(o.new_token_ids),
        )
    while eng.has_work():
        eng.step()
    assert [outs[f"r{i}"] for i in range(len(prompts))] == ref


@pytest.mark.parametrize("decode_kernel", ["native"], indirect=True)
def test_kernel_gives_a_nan_key_to_its_own_head_only(decode_kernel):
    """(The torch path's paired scores spread a non-finite key to its pair: documented there.)"""
    lens = [9, 30]
    q, k_cache, v_cache, meta, tables = _decode_batch(4, 4, 8, lens, scattered_row=1)
    k_cache.view(-1, 4, 8)[tables[1][0] * BS + 2, 1, 3] = float("nan")  # row 1, KV head 1, key 2
    got = paged_attention(q, q, q, k_cache, v_cache, meta, 4, 4, 8, write=False).view(2, 4, 8)
    assert got[1, 1].isnan().all()
    assert torch.isfinite(got[0]).all() and torch.isfinite(got[1, [0, 2, 3]]).all()


def test_kernel_refuses_block_ids_outside_the_pool():
    q, k_cache, v_cache, meta, tables = _decode_batch(2, 2, 8, [5, 9], scattered_row=-1)
    meta.decode_block_tables[1, 1] = k_cache.shape[0]  # one past the pool, inside row 1's keys
    with pytest.raises(ValueError, match="within the pool"):
        meta.native_tables(k_cache.shape[0], BS)
    meta.decode_block_tables[1, 1] = 1
    meta.decode_block_tables[0, 2] = 10**6  # padding past row 0's keys is never read: accepted
    meta.native_tables(k_cache.shape[0], BS)


def test_kernel_mode_choices_and_a_missing_compiler(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("LLMPLAN_CACHE_DIR", str(tmp_path / "cache"))  # nothing cached: must build
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    try:
        monkeypatch.setenv("LLMPLAN_DECODE_KERNEL", "fast")
        native.reset()
        with pytest.raises(
            native.NativeKernelError, match="'fast' is not a choice; use one of auto, torch, native"
        ):
            native.state()
        monkeypatch.setenv("LLMPLAN_DECODE_KERNEL", "native")
        native.reset()
        with pytest.raises(native.NativeKernelError, match="no-such-cc.*not found; set CC"):
            native.state()
        monkeypatch.setenv("LLMPLAN_DECODE_KERNEL", "auto")
        native.reset()
        with caplog.at_level("WARNING", logger=native.__name__):
            assert native.state().fn is None
        assert "decode attention and linear run on torch ops" in caplog.text and "set CC" in caplog.text
        lens = [3, 40]
        q, k_cache, v_cache, meta, tables = _decode_batch(2, 2, 8, lens, scattered_row=0)
        got = paged_attention(q, q[:, :2], q[:, :2], k_cache, v_cache, meta, 2, 2, 8, write=False)
        torch.testing.assert_close(
            got, _reference(q, k_cache, v_cache, tables, lens).float(), atol=1e-5, rtol=1e-5
        )
    finally:
        native.reset()


def test_kernel_build_is_cached_and_leaves_denormals_alone(monkeypatch, tmp_path):
    """The library is built once into the cache, and loading it does not switch the process to
    flush-to-zero (which linking -ffast-math code would)."""
    monkeypatch.setenv("LLMPLAN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LLMPLAN_DECODE_KERNEL", "native")
    try:
        native.reset()
        first = native.state()
        built = sorted(tmp_path.glob("cpu_ops-*.so"))
        assert len(built) == 1 and str(built[0]) in first.reason
        mtime = built[0].stat().st_mtime_ns
        native.reset()
        assert native.state().reason == first.reason and built[0].stat().st_mtime_ns == mtime
        assert (torch.tensor([1e-39]) / 2).item() > 0
    finally:
        native.reset()

