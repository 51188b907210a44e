"""Decode attention over the paged pool: the paired-head score path against a float64 reference,
and an MHA model (where that path runs) against HF generate with contexts past its threshold."""

from __future__ import annotations

import pytest
import torch

from llmplan.runtime.engine import attention
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
def test_decode_rows_match_a_float64_reference_on_every_path(kvh, heads, monkeypatch):
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
    monkeypatch.setattr(attention, "GROUPED_SCORES_MIN_KEYS", 10**9)  # every row one head per matmul
    assert attention._paired_queries(qv, meta.decode_lens) is None
    torch.testing.assert_close(run(), got, atol=1e-6, rtol=1e-6)


def test_mha_model_decoding_past_the_paired_threshold_matches_hf(tmp_path, hf_factory, tiny_dict):
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
