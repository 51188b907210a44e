"""The compiled element-wise steps between a layer's products (``native.rms_norm``,
``native.silu_mul``, ``native.rope_kv``) against float64 references and the torch ops they replace:
one row to many (the OpenMP split), strided rows, GQA heads, the KV write, one and two threads; and
a decoder layer with the steps on equal to it with them off."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmplan.runtime.engine import model as m
from llmplan.runtime.engine import native
from llmplan.runtime.engine.attention import AttnMetadata, PrefillSpan

native_only = pytest.mark.parametrize("decode_kernel", ["native"], indirect=True)
ROWS = [1, 3, 70]  # 70 rows of 768 are past the size where the rows are shared out over threads


@pytest.fixture(params=[1, 2])
def threads(request):
    old = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(old)


def _ulps(got: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest error in units of fp32 rounding of the reference's magnitude."""
    scale = ref.abs().clamp_min(2**-126) * 2**-23
    return float(((got.double() - ref) / scale).abs().max())


@pytest.mark.parametrize("rows", ROWS)
@native_only
def test_rms_norm_matches_float64_with_and_without_residual(decode_kernel, threads, rows):
    g = torch.Generator().manual_seed(rows)
    x, res = torch.randn(rows, 768, generator=g), torch.randn(rows, 768, generator=g)
    w = torch.randn(768, generator=g)
    eps = 1e-5
    for residual in (None, res):
        h, s = native.rms_norm(x, w, eps, residual=residual)
        want_s = x if residual is None else x + residual  # the add is one rounding, as torch's
        assert torch.equal(s, want_s)
        sd = want_s.double()
        ref = sd * torch.rsqrt(sd.pow(2).mean(-1, keepdim=True) + eps) * w.double()
        assert _ulps(h, ref) < 8
        torch.testing.assert_close(h, F.rms_norm(want_s, (768,), w, eps), rtol=2e-6, atol=1e-6)


@native_only
def test_rms_norm_keeps_rows_apart(decode_kernel):
    """A row's scale comes from its own squares only: a huge row leaves the others as they were."""
    x = torch.randn(4, 96)
    w = torch.ones(96)
    alone, _ = native.rms_norm(x[1:2], w, 1e-6)
    x[2] *= 1e6
    together, _ = native.rms_norm(x, w, 1e-6)
    assert torch.equal(together[1:2], alone)


@pytest.mark.parametrize("rows", ROWS)
@native_only
def test_silu_mul_matches_float64(decode_kernel, threads, rows):
    g = torch.Generator().manual_seed(10 + rows)
    gu = torch.randn(rows, 2 * 2048, generator=g) * 4
    got = native.silu_mul(gu)
    gate, up = gu.double().chunk(2, dim=-1)
    ref = gate / (1 + torch.exp(-gate)) * up
    assert got.shape == (rows, 2048)
    assert _ulps(got, ref) < 8
    torch.testing.assert_close(got, F.silu(gu[:, :2048]) * gu[:, 2048:], rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize(("heads", "kv_heads"), [(12, 12), (8, 2)])
@native_only
def test_rope_equals_the_torch_ops_bit_for_bit_and_writes_the_pools(
    decode_kernel, threads, rows, heads, kv_heads
):
    hd = 64
    g = torch.Generator().manual_seed(rows * heads)
    width = (heads + 2 * kv_heads) * hd
    wide = torch.randn(rows, width + 5, generator=g)
    qkv = wide[:, 2 : 2 + width]  # rows width + 5 floats apart, as a slice of a wider buffer
    pos = torch.randint(0, 500, (rows,), generator=g)
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
    freqs = torch.outer(pos.float(), inv)
    cos, sin = freqs.cos(), freqs.sin()
    want = m._rotate(qkv[:, : (heads + kv_heads) * hd].reshape(rows, -1, hd), cos, sin)
    v = qkv[:, (heads + kv_heads) * hd :].reshape(rows, kv_heads, hd)

    q, k = native.rope_kv(qkv, cos, sin, heads, kv_heads, hd)
    assert torch.equal(q, want[:, :heads]) and torch.equal(k, want[:, heads:])

    blocks, bs = 40, 4
    kc = torch.full((blocks, bs, kv_heads, hd), 7.0)
    vc = torch.full((blocks, bs, kv_heads, hd), 7.0)
    slots = torch.randperm(blocks * bs, generator=g)[:rows]
    meta = AttnMetadata(slot_mapping=slots, num_decode=rows)
    q2, k2 = native.rope_kv(qkv, cos, sin, heads, kv_heads, hd, (kc, vc, meta.native_slots(blocks * bs)))
    assert torch.equal(q2, q) and torch.equal(k2, k)
    kf, vf = kc.view(-1, kv_heads, hd), vc.view(-1, kv_heads, hd)
    assert torch.equal(kf[slots], k) and torch.equal(vf[slots], v)
    untouched = torch.ones(blocks * bs, dtype=torch.bool)
    untouched[slots] = False
    assert (kf[untouched] == 7.0).all() and (vf[untouched] == 7.0).all()


def test_slots_outside_the_pool_are_refused():
    meta = AttnMetadata(slot_mapping=torch.tensor([3, 160]), num_decode=2)
    with pytest.raises(ValueError, match="outside the KV pool"):
        meta.native_slots(160)
    assert meta.native_slots(161).tolist() == [3, 160]


@native_only
def test_empty_inputs_do_not_reach_the_library(decode_kernel):
    h, s = native.rms_norm(torch.empty(0, 8), torch.ones(8), 1e-5, residual=torch.empty(0, 8))
    assert h.shape == s.shape == (0, 8)
    assert native.silu_mul(torch.empty(0, 16)).shape == (0, 8)
    q, k = native.rope_kv(torch.empty(0, 3 * 8), torch.empty(0, 4), torch.empty(0, 4), 1, 1, 8)
    assert q.shape == (0, 1, 8) and k is not None and k.shape == (0, 1, 8)


@pytest.mark.parametrize("rows", [1, 5])
@native_only
def test_a_layer_with_the_steps_on_equals_it_with_them_off(decode_kernel, tiny_cfg, monkeypatch, rows):
    """One sequence through a decoder layer (norms, RoPE and KV write, SiLU x up), a prefill of
    ``rows`` tokens then one decode token, with the compiled steps and with the torch ops: the same
    pools and outputs within rounding (the norm's sum of squares is summed in another order)."""
    from llmplan.runtime.engine.kvcache import PagedKVCache
    from llmplan.runtime.engine.loader import init_dummy_weights

    model = m.LlamaModel(tiny_cfg, [torch.device("cpu")] * tiny_cfg.num_layers, torch.float32)
    init_dummy_weights(model, seed=1)
    layer = model.layers[0]
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows + 1, tiny_cfg.hidden_size, generator=g)
    rope = model.ropes[torch.device("cpu")]
    table = torch.arange(2)
    steps = [  # (tokens, positions, metadata)
        (x[:rows], torch.arange(rows), AttnMetadata(slot_mapping=torch.arange(rows), num_decode=0,
                                                    prefills=[PrefillSpan(0, rows, 0, table, 0)])),
        (x[rows:], torch.tensor([rows]), AttnMetadata(slot_mapping=torch.tensor([rows]), num_decode=1,
                                                      decode_block_tables=table.view(1, 2),
                                                      decode_lens=(rows + 1,), decode_starts=(0,))),
    ]  # fmt: skip
    outs, pools = [], []
    for on in (False, True):
        monkeypatch.setattr(native, "GLUE_STEPS", on)
        kv = PagedKVCache(tiny_cfg, 4, 4, model.layer_devices, torch.float32)
        outs.append([layer(xs, *rope(pos), meta, kv) for xs, pos, meta in steps])
        pools.append([t.clone() for t in kv.layer(layer.index)])
    for off, on in zip(*pools, strict=True):  # the pools' untouched slots stay zero on both
        torch.testing.assert_close(on, off, rtol=1e-5, atol=1e-6)
    for off, on in zip(*outs, strict=True):
        torch.testing.assert_close(on, off, rtol=1e-5, atol=1e-5)


def test_portable_build_gives_the_same_values(portable_build):
    """Built without -march=native (the fallback flag set), the steps give the same values."""
    assert portable_build.glue is not None
    g = torch.Generator().manual_seed(7)
    x, r = torch.randn(3, 200, generator=g), torch.randn(3, 200, generator=g)
    w = torch.randn(200, generator=g)
    h, s = native.rms_norm(x, w, 1e-5, residual=r)
    torch.testing.assert_close(h, F.rms_norm(x + r, (200,), w, 1e-5), rtol=2e-6, atol=1e-6)
    gu = torch.randn(3, 64, generator=g)
    torch.testing.assert_close(native.silu_mul(gu), F.silu(gu[:, :32]) * gu[:, 32:], rtol=2e-6, atol=1e-7)
    qkv = torch.randn(3, 3 * 16, generator=g)
    cos, sin = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    q, k = native.rope_kv(qkv, cos, sin, 1, 1, 16)
    want = m._rotate(qkv[:, :32].reshape(3, 2, 16), cos, sin)
    assert torch.equal(q, want[:, :1]) and torch.equal(k, want[:, 1:])
