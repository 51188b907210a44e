"""A Llama-family decoder (Llama 2/3, Mistral, Qwen2) over the paged KV cache.

The model is stage-friendly: it holds a contiguous range of decoder layers
``[layer_start, layer_end)``; only the first stage embeds tokens and only the last one
normalises and projects to logits. Every layer carries its own device, so a HELR device
map (layers split over devices) and, later, layer migration between workers are a matter
of which layers a stage holds and where. Layer indices are global, so a layer's KV pool
and its weights keep their identity when moved.

q/k/v and gate/up are fused into one matmul each (fewer, larger GEMMs; the loader maps HF
names onto the fused weights). For fp32 on CPU the steps between the products run compiled
(:mod:`llmplan.runtime.engine.native`): the residual add with the RMSNorm after it, RoPE with
the KV-cache write, SiLU x up.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from llmplan.runtime.engine import native
from llmplan.runtime.engine.attention import AttnMetadata, paged_attention
from llmplan.runtime.engine.config import ModelConfig
from llmplan.runtime.engine.kvcache import PagedKVCache

# On CPU, MKL's sgemm re-packs the whole weight on every call, which dominates when a few
# rows multiply a large weight (decode). Two paths skip that, each over a copy of the weight
# made once in its own layout:
# * fp32 with native.LINEAR_ROWS rows (1..128): the compiled linear kernel (native.py), which
#   streams the packed weight while it computes; 0.73-0.82x oneDNN's time at 16-64 rows and no
#   slower than oneDNN or the plain GEMM elsewhere in its range (docs/serve-reference.md, "Round 6");
# * otherwise, 4..96 rows in fp32 or bf16: oneDNN's matmul over a weight reordered once into its
#   blocked layout (1.2-3x faster than sgemm there, measured on this project's Xeon, 1 thread,
#   4096x768 and 32000x768 weights; slower at 1-2 rows and about even from 128 rows).
# * fp32 with PREFILL_ROWS rows (prefill chunks) on CPUs not Intel's: oneDNN's matmul over the
#   weight as it is (no copy). There MKL's sgemm takes a generic path: oneDNN was 1.04-1.18x
#   faster at 129-2048 rows on a Zen 4 EPYC. On Intel CPUs the plain GEMM stays (oneDNN, even
#   over its packed copy, was about even with it from 128 rows on the Xeon of round 3):
#   docs/serve-reference.md, "Round 7".
# A packed copy is made on first use and kept per
# weight and kind (invalidated when the weight is written in place): a second copy of the
# weights, so only the first PACK_BUDGET_BYTES of them (per process) get one and the rest keep
# the plain path. Set PACKED_ROWS = range(0) to turn oneDNN's path off; LLMPLAN_DECODE_KERNEL=torch
# turns the compiled kernel off.
PACKED_ROWS = range(4, 97)
PREFILL_ROWS = range(0) if native.intel_cpu() else range(129, 2**62)
PACK_BUDGET_BYTES = 2 * 2**30
_PACK_HINT = 64  # the batch size oneDNN picks the weight layout for
# (id(weight), kind) -> (version, data_ptr, packed)
_packed: dict[tuple[int, str], tuple[int, int, torch.Tensor]] = {}
_packed_bytes = 0
_pack_ok = torch.backends.mkldnn.is_available()
# Without oneDNN, MKL's sgemm takes a slow kernel for x @ W.T with 7..15 rows (32-45 ms for
# 12 layers' weights vs 28 ms for the same product computed as (W @ x.T).T).
_TRANSPOSED_ROWS = range(7, 16)


def _pack_onednn(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), _PACK_HINT)


_PACKERS = {"onednn": _pack_onednn, "native": native.pack_linear}


def _packed_weight(weight: torch.Tensor, kind: str) -> torch.Tensor | None:
    """``weight`` in ``kind``'s layout (made on first use), or None past the memory budget."""
    global _packed_bytes
    key = (id(weight), kind)
    ver = -1 if weight.is_inference() else weight._version
    hit = _packed.get(key)
    if hit is not None and hit[0] == ver and hit[1] == weight.data_ptr():
        return hit[2]
    size = weight.numel() * weight.element_size()
    if hit is None:
        if _packed_bytes + size > PACK_BUDGET_BYTES:
            return None
        _packed_bytes += size
        weakref.finalize(weight, _forget, key, size)
    packed = _PACKERS[kind](weight)
    _packed[key] = (ver, weight.data_ptr(), packed)
    return packed


def _forget(key: tuple[int, str], size: int) -> None:
    global _packed_bytes
    _packed.pop(key, None)
    _packed_bytes -= size


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    global _pack_ok
    if x.device.type == "cpu" and x.dim() == 2 and not (
        torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    ):
        rows = x.shape[0]
        if (
            rows in native.LINEAR_ROWS
            and x.dtype == weight.dtype == torch.float32
            and native.state().linear is not None
        ):
            packed = _packed_weight(weight, "native")
            if packed is not None:
                return native.linear(x, packed, weight.shape[0], bias)
        if _pack_ok and x.dtype in (torch.float32, torch.bfloat16):
            # oneDNN over its packed copy (decode batches), or over the weight as it is (prefill
            # chunks in fp32, CPUs not Intel's): the two row ranges do not overlap.
            try:
                if rows in PACKED_ROWS:
                    w = _packed_weight(weight, "onednn")
                elif rows in PREFILL_ROWS and x.dtype == weight.dtype == torch.float32:
                    w = weight
                else:
                    w = None
                if w is not None:
                    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), w, bias, "none", [], "")
            except RuntimeError:  # a build or CPU without this oneDNN path: plain GEMMs from now on
                _pack_ok = False
        if rows in _TRANSPOSED_ROWS:
            y = torch.mm(weight, x.t()).t().contiguous()
            return y if bias is None else y + bias
    return F.linear(x, weight, bias)


def _proj(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    return linear(x, layer.weight, layer.bias)


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    dim = cfg.head_dim
    # Same expression as transformers' default RoPE init so the tables match bit for bit.
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    sc = cfg.rope_scaling
    if not sc:
        return inv_freq
    factor = float(sc["factor"])
    if sc["rope_type"] == "linear":
        return inv_freq / factor
    # llama3: keep high frequencies, divide low ones by factor, interpolate in between.
    low, high = float(sc["low_freq_factor"]), float(sc["high_freq_factor"])
    old_len = float(sc["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


class Rope(nn.Module):
    """cos/sin tables for every position, indexed per token (positions are ragged)."""

    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        inv_freq = rope_inv_freq(cfg)
        pos = torch.arange(cfg.max_position_embeddings, dtype=torch.float32)
        # Half tables: rotate-half repeats each frequency over both halves of the head.
        freqs = torch.outer(pos, inv_freq)
        self.register_buffer("cos", freqs.cos().to(device=device, dtype=dtype), persistent=False)
        self.register_buffer("sin", freqs.sin().to(device=device, dtype=dtype), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[positions], self.sin[positions]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE (rotate-half form) on ``[T, heads, head_dim]``; q and k heads go through together.

    ``cos``/``sin`` are ``[T, head_dim / 2]``. Each half is written in place of a
    ``cat`` of the rotated copy; the values equal HF's ``x * cos + rotate_half(x) * sin`` bit
    for bit (``a + (-b) * s`` and ``a - b * s`` round the same)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos.unsqueeze(1), sin.unsqueeze(1)
    out = torch.empty_like(x)
    o1, o2 = out[..., :half], out[..., half:]
    torch.mul(x1, c, out=o1)
    o1.sub_(x2 * s)
    torch.mul(x2, c, out=o2)
    o2.add_(x1 * s)
    return out


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size, device=device, dtype=dtype), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if native.glue_usable(x):
            return native.rms_norm(x, self.weight, self.eps)[0]  # one pass, one call
        if x.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)  # one fused op
        # Half precision: normalise in fp32, scale in the input dtype, as transformers does.
        dt = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dt)

    def add(self, x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(norm(x + delta), x + delta)``: a residual add and the norm after it, in one pass
        where the compiled steps run."""
        if native.glue_usable(x) and delta.dtype == torch.float32:
            return native.rms_norm(x, self.weight, self.eps, residual=delta)
        x = x + delta
        return self(x), x


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, index: int, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.index = index
        self.device = device
        self.cfg = cfg
        h = cfg.hidden_size
        kw = {"device": device, "dtype": dtype}
        self.input_layernorm = RMSNorm(h, cfg.rms_norm_eps, device, dtype)
        self.qkv_proj = nn.Linear(h, cfg.q_size + 2 * cfg.kv_size, bias=cfg.attention_bias, **kw)
        self.o_proj = nn.Linear(cfg.q_size, h, bias=cfg.o_bias, **kw)
        self.post_attention_layernorm = RMSNorm(h, cfg.rms_norm_eps, device, dtype)
        self.gate_up_proj = nn.Linear(h, 2 * cfg.intermediate_size, bias=cfg.mlp_bias, **kw)
        self.down_proj = nn.Linear(cfg.intermediate_size, h, bias=cfg.mlp_bias, **kw)
        self.requires_grad_(False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        meta: AttnMetadata,
        kv: PagedKVCache,
    ) -> torch.Tensor:
        cfg = self.cfg
        k_cache, v_cache = kv.layer(self.index)
        q, k, v, written = self._qkv(x, cos, sin, (k_cache, v_cache, meta))
        a = paged_attention(q, k, v, k_cache, v_cache, meta, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                            write=not written)  # fmt: skip
        return self.finish(x, a)

    # The two halves around attention, shared with layers whose attention runs elsewhere
    # (llmplan.runtime.workers.offload).
    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Rotated ``q [T, H, hd]`` and ``k``, ``v [T, KVH, hd]`` of the normed input."""
        q, k, v, _ = self._qkv(x, cos, sin)
        return q, k, v

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, write=None):
        """:meth:`qkv`, and whether the new keys and values are in the pools already: with
        ``write = (k_pool, v_pool, meta)`` the compiled RoPE step writes them where it runs
        (fp32 contiguous pools on CPU), in the same pass that rotates them."""
        cfg = self.cfg
        h = self.input_layernorm(x)
        t = h.shape[0]
        qkv = _proj(h, self.qkv_proj)
        v = qkv[:, cfg.q_size + cfg.kv_size :].reshape(t, cfg.num_kv_heads, cfg.head_dim)
        if native.glue_usable(qkv) and cos.dtype == torch.float32:
            cache = None
            if write is not None and native.kv_writable(write[0], write[1]):
                k_pool, v_pool, meta = write
                cache = (k_pool, v_pool, meta.native_slots(k_pool.shape[0] * k_pool.shape[1]))
            q, k = native.rope_kv(qkv, cos, sin, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cache)
            return q, k, v, cache is not None
        qk = _rotate(qkv[:, : cfg.q_size + cfg.kv_size].view(t, -1, cfg.head_dim), cos, sin)
        q, k = qk.split((cfg.num_heads, cfg.num_kv_heads), dim=1)
        return q, k, v, False

    def finish(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Output projection of the attention ``a [T, H*hd]``, residual, then the MLP."""
        h, x = self.post_attention_layernorm.add(x, _proj(a, self.o_proj))
        gate_up = _proj(h, self.gate_up_proj)
        if native.glue_usable(gate_up):
            act = native.silu_mul(gate_up)
        else:
            gate, up = gate_up.chunk(2, dim=-1)
            act = F.silu(gate) * up
        return x + _proj(act, self.down_proj)


class LlamaModel(nn.Module):
    """Decoder layers ``[layer_start, layer_end)`` of a Llama-family model.

    ``layer_devices[i]`` is the device of global layer ``i`` (entries outside the range are
    ignored). The embedding lives with the first layer, the final norm and LM head with the
    last one.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        layer_devices: Sequence[torch.device],
        dtype: torch.dtype,
        layer_start: int = 0,
        layer_end: int | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.dtype = dtype
        self.layer_start = layer_start
        self.layer_end = cfg.num_layers if layer_end is None else layer_end
        if not 0 <= self.layer_start < self.layer_end <= cfg.num_layers:
            raise ValueError(f"bad layer range [{layer_start}, {layer_end}) for {cfg.num_layers} layers")
        if len(layer_devices) != cfg.num_layers:
            raise ValueError("layer_devices must name a device for every layer")
        self.layer_devices = [torch.device(d) for d in layer_devices]
        self.is_first = self.layer_start == 0
        self.is_last = self.layer_end == cfg.num_layers
        first_dev = self.layer_devices[self.layer_start]
        last_dev = self.layer_devices[self.layer_end - 1]
        self.embed_tokens = (
            nn.Embedding(cfg.vocab_size, cfg.hidden_size, device=first_dev, dtype=dtype)
            if self.is_first
            else None
        )
        self.layers = nn.ModuleList(
            DecoderLayer(cfg, i, self.layer_devices[i], dtype)
            for i in range(self.layer_start, self.layer_end)
        )
        self.ropes = {
            d: Rope(cfg, d, dtype)
            for d in {self.layer_devices[i] for i in range(self.layer_start, self.layer_end)}
        }
        if self.is_last:
            self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, last_dev, dtype)
            if cfg.tie_word_embeddings and self.embed_tokens is not None:
                self.lm_head_weight = self.embed_tokens.weight
            else:
                self.lm_head_weight = nn.Parameter(
                    torch.empty(cfg.vocab_size, cfg.hidden_size, device=last_dev, dtype=dtype),
                    requires_grad=False,
                )
        self.requires_grad_(False)

    @property
    def input_device(self) -> torch.device:
        return self.layer_devices[self.layer_start]

    @property
    def output_device(self) -> torch.device:
        return self.layer_devices[self.layer_end - 1]

    @torch.inference_mode()
    def forward(
        self,
        inputs: torch.Tensor,
        positions: torch.Tensor,
        meta: AttnMetadata,
        kv: PagedKVCache,
        logits_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``inputs``: token ids ``[T]`` (first stage) or hidden states ``[T, hidden]``.

        Returns hidden states for an intermediate stage, else logits (fp32) of the rows
        ``logits_index`` (the tokens that sample; all tokens when None).
        """
        x = self.embed_tokens(inputs) if self.is_first else inputs
        tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor, AttnMetadata]] = {}
        for layer in self.layers:
            dev = layer.device
            if dev not in tables:
                cos, sin = self.ropes[dev](positions.to(dev))
                tables[dev] = (cos, sin, meta.to(dev))
            cos, sin, m = tables[dev]
            x = layer(x.to(dev), cos, sin, m, kv)
        if not self.is_last:
            return x
        if logits_index is not None:
            x = x[logits_index.to(x.device)]
        x = self.norm(x)
        return linear(x, self.lm_head_weight).float()
