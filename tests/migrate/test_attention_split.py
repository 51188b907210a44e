"""Attention-level migration: head split and LSE block split equal single-worker attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from llmplan.errors import LlmplanError
from llmplan.migrate.attention_split import (
    attention,
    attention_with_lse,
    block_shard_attention,
    block_split_attention,
    head_split_attention,
    merge_lse,
    plan_block_split,
    plan_head_split,
)

TOL = 1e-5


def _inputs(seed, b, hkv, group, d, q_lens, kv_lens):
    g = torch.Generator().manual_seed(seed)
    tq, tk = max(q_lens), max(kv_lens)
    q = torch.randn(b, tq, hkv * group, d, generator=g)
    k = torch.randn(b, tk, hkv, d, generator=g)
    v = torch.randn(b, tk, hkv, d, generator=g)
    return q, k, v


def _sdpa_reference(q, k, v, q_lens, kv_lens, causal):
    """Per-sequence torch SDPA with an explicit mask: an independent check of `attention`."""
    out = torch.zeros_like(q)
    group = q.shape[2] // k.shape[2]
    for b, (ql, kl) in enumerate(zip(q_lens, kv_lens, strict=True)):
        qs = q[b, :ql].transpose(0, 1)  # [H, ql, D]
        ks = k[b, :kl].transpose(0, 1).repeat_interleave(group, 0)
        vs = v[b, :kl].transpose(0, 1).repeat_interleave(group, 0)
        qpos = torch.arange(kl - ql, kl)[:, None]
        mask = (torch.arange(kl)[None, :] <= qpos) if causal else torch.ones(ql, kl, dtype=torch.bool)
        out[b, :ql] = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask).transpose(0, 1)
    return out


@st.composite
def cases(draw):
    b = draw(st.integers(1, 3))
    hkv = draw(st.sampled_from([1, 2, 4]))
    group = draw(st.sampled_from([1, 2, 4]))  # 1 = MHA, >1 = GQA
    d = draw(st.sampled_from([8, 16]))
    mode = draw(st.sampled_from(["prefill", "decode", "chunk"]))
    kv_lens = [draw(st.integers(1, 40)) for _ in range(b)]  # ragged
    if mode == "prefill":
        q_lens = list(kv_lens)
    elif mode == "decode":
        q_lens = [1] * b
    else:
        q_lens = [draw(st.integers(1, kl)) for kl in kv_lens]
    causal = draw(st.booleans()) if mode != "prefill" else True
    workers = draw(st.integers(1, 4))
    weights = [draw(st.integers(0, 3)) for _ in range(workers)]
    if sum(weights) == 0:
        weights[0] = 1
    seed = draw(st.integers(0, 2**31 - 1))
    return b, hkv, group, d, q_lens, kv_lens, causal, weights, seed


@settings(max_examples=60, deadline=None)
@given(cases())
def test_reference_attention_matches_torch_sdpa(case):
    b, hkv, group, d, q_lens, kv_lens, causal, _, seed = case
    q, k, v = _inputs(seed, b, hkv, group, d, q_lens, kv_lens)
    ours = attention(q, k, v, q_lens, kv_lens, causal=causal)
    ref = _sdpa_reference(q, k, v, q_lens, kv_lens, causal)
    assert (ours - ref).abs().max().item() <= TOL


@settings(max_examples=80, deadline=None)
@given(cases())
def test_head_split_equals_single_worker(case):
    b, hkv, group, d, q_lens, kv_lens, causal, weights, seed = case
    q, k, v = _inputs(seed, b, hkv, group, d, q_lens, kv_lens)
    full = attention(q, k, v, q_lens, kv_lens, causal=causal)
    split = head_split_attention(q, k, v, weights, q_lens, kv_lens, causal=causal)
    assert split.shape == full.shape
    assert (split - full).abs().max().item() <= TOL


@settings(max_examples=80, deadline=None)
@given(cases(), st.sampled_from([1, 4, 16]))
def test_block_split_lse_merge_equals_single_worker(case, block_size):
    b, hkv, group, d, q_lens, kv_lens, causal, weights, seed = case
    q, k, v = _inputs(seed, b, hkv, group, d, q_lens, kv_lens)
    full, full_lse = attention_with_lse(q, k, v, q_lens, kv_lens, causal=causal)
    shards = plan_block_split(k.shape[1], block_size, weights)
    parts = [block_shard_attention(q, k, v, s, q_lens, kv_lens, causal=causal) for s in shards]
    merged, lse = merge_lse(parts)
    assert (merged - full).abs().max().item() <= TOL
    valid = torch.isfinite(full_lse)
    assert torch.equal(valid, torch.isfinite(lse))
    assert (lse[valid] - full_lse[valid]).abs().max().item() <= TOL
    assert not torch.isnan(merged).any()


def test_gqa_groups_move_with_their_kv_head():
    shards = plan_head_split(num_q_heads=8, num_kv_heads=2, weights=[1, 1])
    assert [s.kv_heads for s in shards] == [(0,), (1,)]
    assert [s.q_heads for s in shards] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    shards = plan_head_split(num_q_heads=32, num_kv_heads=8, weights=[3, 1])
    assert [len(s.kv_heads) for s in shards] == [6, 2]
    assert sum(len(s.q_heads) for s in shards) == 32


def test_a_wrong_gqa_assignment_is_detectable():
    """Sanity of the test itself: pairing query heads with the wrong KV head changes the output."""
    q, k, v = _inputs(0, 1, 2, 2, 8, [5], [5])
    full = attention(q, k, v)
    swapped = attention(q, k.flip(2), v.flip(2))
    assert (full - swapped).abs().max().item() > 1e-2


def test_block_split_is_exact_on_a_long_decode_context():
    q, k, v = _inputs(7, 2, 2, 4, 32, [1, 1], [500, 333])
    full = attention(q, k, v, [1, 1], [500, 333])
    out = block_split_attention(q, k, v, [1, 2, 1], 16, [1, 1], [500, 333])
    assert (out - full).abs().max().item() <= TOL


def test_naive_average_merge_is_wrong():
    """Averaging partial outputs instead of LSE-weighting them is not exact: the merge matters."""
    q, k, v = _inputs(3, 1, 1, 1, 8, [1], [32])
    full = attention(q, k, v, [1], [32])
    parts = [block_shard_attention(q, k, v, s, [1], [32]) for s in plan_block_split(32, 8, [1, 1])]
    naive = (parts[0][0] + parts[1][0]) / 2
    assert (naive - full).abs().max().item() > 1e-3


@pytest.mark.parametrize(
    "call",
    [
        lambda: plan_head_split(6, 4, [1]),
        lambda: plan_head_split(8, 2, [0, 0]),
        lambda: plan_block_split(10, 0, [1]),
        lambda: attention(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 2, 4)),
        lambda: merge_lse([]),
    ],
)
def test_bad_input_is_a_clear_error(call):
    with pytest.raises(LlmplanError):
        call()
