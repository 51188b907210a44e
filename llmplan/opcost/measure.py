"""``llmplan calibrate --ops``: time a layer's operators on the local device, in Vidur's table format.

Each operator of :data:`llmplan.opcost.profiles.ALL_OPS` runs on random tensors of the model's
shapes (one GPU's share at TP ``t``: heads and FFN width divided by ``t``) at every token count of
the grid; the median of ``repeats`` timed runs is kept (CUDA events on a GPU, ``perf_counter`` on
CPU). The output directory holds ``mlp.csv`` (Vidur columns, milliseconds) and ``profile.json``
(:class:`~llmplan.opcost.profiles.ProfileMeta`, including the device's measured matmul peak and
copy bandwidth, which the spec-sheet path uses for a device with no spec entry, e.g. a CPU).
Attention is timed apart into ``attention.csv`` (:func:`measure_attention`): causal prefill of
``T`` tokens and decode of ``B`` sequences over ``C`` context tokens each, with
``scaled_dot_product_attention`` over contiguous K/V (not the paged layout: a lower bound on
a paged kernel's time).
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmplan.errors import LlmplanError
from llmplan.fileio import write_text_atomic
from llmplan.opcost.profiles import ALL_OPS, ModelDims, ProfileMeta

DEFAULT_TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


def _timer(device: Any) -> Callable[[Callable[[], Any], int], float]:
    import torch

    if device.type == "cuda":

        def run_cuda(fn: Callable[[], Any], repeats: int) -> float:
            fn()
            torch.cuda.synchronize(device)
            out = []
            for _ in range(repeats):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                out.append(a.elapsed_time(b) * 1e-3)
            return statistics.median(out)

        return run_cuda

    def run_cpu(fn: Callable[[], Any], repeats: int) -> float:
        fn()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return statistics.median(out)

    return run_cpu


def device_peaks(device: Any, dtype: Any, repeats: int = 3) -> tuple[float, float]:
    """Measured (matmul FLOP/s, copy bytes/s) of the device: a square GEMM and a large copy."""
    import torch

    timer = _timer(device)
    n = 1024 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = timer(lambda: a @ b, repeats)
    flops = 2 * n**3 / t
    x = torch.empty(32 * 2**20 if device.type == "cpu" else 512 * 2**20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    t = timer(lambda: y.copy_(x), repeats)
    return flops, 2 * x.numel() / t


def measure_ops(
    dims: ModelDims,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    tp: int = 1,
    tokens: Sequence[int] = DEFAULT_TOKENS,
    repeats: int = 3,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """One row per token count: ``time_stats.<op>.median`` in ms plus the shape columns."""
    import torch
    import torch.nn.functional as F

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LlmplanError("--device cuda but torch sees no CUDA device; use --device cpu")
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if dt is None:
        raise LlmplanError(f"--dtype {dtype} is not one of float32, bfloat16, float16")
    timer = _timer(dev)
    h, a, g, d, i = (
        dims.hidden_size,
        dims.num_attention_heads,
        dims.num_key_value_heads,
        dims.head_dim,
        dims.intermediate_size,
    )
    if a % tp or i % tp:
        raise LlmplanError(f"TP {tp} does not divide {a} heads and FFN width {i}; pick a divisor")
    a_l, g_l, i_l = a // tp, max(1, -(-g // tp)), i // tp
    up = (2 if dims.gated_mlp else 1) * i_l

    def w(n: int, k: int) -> Any:
        return torch.randn(n, k, device=dev, dtype=dt) / k**0.5

    w_qkv, w_o, w_up, w_down = w((a_l + 2 * g_l) * d, h), w(h, a_l * d), w(up, h), w(h, i_l)
    norm_w = torch.ones(h, device=dev, dtype=dt)
    emb = torch.randn(max(1, dims.vocab_size // tp), h, device=dev, dtype=dt)

    def fns_for(n_tok: int) -> dict[str, Callable[[], Any]]:
        x = torch.randn(n_tok, h, device=dev, dtype=dt)
        xa = torch.randn(n_tok, a_l * d, device=dev, dtype=dt)
        xi = torch.randn(n_tok, i_l, device=dev, dtype=dt)
        xu = torch.randn(n_tok, up, device=dev, dtype=dt)
        q = torch.randn(n_tok, a_l + g_l, d, device=dev, dtype=dt)
        cos = torch.randn(n_tok, 1, d // 2, device=dev, dtype=dt)
        sin = torch.randn(n_tok, 1, d // 2, device=dev, dtype=dt)
        ids = torch.randint(0, emb.shape[0], (n_tok,), device=dev)

        def rms() -> Any:
            v = x.float().pow(2).mean(-1, keepdim=True)
            return (x.float() * torch.rsqrt(v + 1e-5)).to(dt) * norm_w

        def rope() -> Any:
            q1, q2 = q[..., : d // 2], q[..., d // 2 :]
            return torch.cat((q1 * cos - q2 * sin, q2 * cos + q1 * sin), dim=-1)

        def act() -> Any:
            if dims.gated_mlp:
                return F.silu(xu[:, :i_l]) * xu[:, i_l:]
            return F.gelu(xu)

        return {
            "emb": lambda: F.embedding(ids, emb),
            "input_layernorm": rms,
            "attn_pre_proj": lambda: F.linear(x, w_qkv),
            "attn_rope": rope,
            "attn_post_proj": lambda: F.linear(xa, w_o),
            "post_attention_layernorm": rms,
            "mlp_up_proj": lambda: F.linear(x, w_up),
            "mlp_act": act,
            "mlp_down_proj": lambda: F.linear(xi, w_down),
            "add": lambda: x + x,
        }

    rows = []
    for n_tok in tokens:
        fns = fns_for(n_tok)
        row: dict[str, float] = {}
        with torch.inference_mode():
            for op in ALL_OPS:
                row[f"time_stats.{op}.median"] = timer(fns[op], repeats) * 1e3
        row.update(
            n_head=a,
            n_kv_head=g,
            n_embd=h,
            n_expanded_embd=i,
            vocab_size=dims.vocab_size,
            use_gated_mlp=dims.gated_mlp,
            num_tokens=n_tok,
            num_tensor_parallel_workers=tp,
        )
        rows.append(row)
        if progress:
            progress(n_tok)
    return rows


def write_profile(out: Path, meta: ProfileMeta, rows: list[dict[str, Any]]) -> Path:
    """``out/mlp.csv`` (Vidur columns) + ``out/profile.json``; a profile of other dims there is refused."""
    out.mkdir(parents=True, exist_ok=True)
    pj = out / "profile.json"
    if pj.is_file():
        try:
            old = ProfileMeta.from_dict(json.loads(pj.read_text()), source=str(pj))
        except (json.JSONDecodeError, LlmplanError):
            old = None
        if old is not None and (old.dims != meta.dims or old.gpu != meta.gpu):
            raise LlmplanError(
                f"{out} already holds a profile of {old.model} on {old.gpu}; write to another --out directory"
            )
    fields = list(rows[0].keys())
    import io

    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=fields)
    wr.writeheader()
    wr.writerows(rows)
    write_text_atomic(out / "mlp.csv", buf.getvalue())
    write_text_atomic(pj, json.dumps(meta.to_dict(), indent=2) + "\n")
    return out


ATTN_PREFILL = (128, 512, 2048)
ATTN_DECODE = (1, 8, 32, 128)


def measure_attention(
    dims: ModelDims,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    tp: int = 1,
    max_tokens: int = 2048,
    context: int = 1024,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """Rows ``phase, num_tokens, batch, context, time_ms`` for one GPU's share of the heads."""
    import torch
    import torch.nn.functional as F

    dev = torch.device(device)
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    timer = _timer(dev)
    a_l = dims.num_attention_heads // tp
    d = dims.head_dim

    def run(b: int, q_len: int, kv_len: int, causal: bool) -> float:
        q = torch.randn(b, a_l, q_len, d, device=dev, dtype=dt)
        k = torch.randn(b, a_l, kv_len, d, device=dev, dtype=dt)
        v = torch.randn(b, a_l, kv_len, d, device=dev, dtype=dt)
        with torch.inference_mode():
            return timer(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), repeats)

    rows: list[dict[str, Any]] = []
    for t in [x for x in ATTN_PREFILL if x <= max_tokens] or [max_tokens]:
        rows.append({"phase": "prefill", "num_tokens": t, "batch": 1, "context": 0,
                     "time_ms": run(1, t, t, True) * 1e3})  # fmt: skip
    for b in [x for x in ATTN_DECODE if x <= max_tokens] or [1]:
        rows.append({"phase": "decode", "num_tokens": b, "batch": b, "context": context,
                     "time_ms": run(b, 1, context, False) * 1e3})  # fmt: skip
    for r in rows:
        r["num_tensor_parallel_workers"] = tp
    return rows


def write_attention(out: Path, rows: list[dict[str, Any]]) -> Path:
    import io

    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
    wr.writeheader()
    wr.writerows(rows)
    return write_text_atomic(out / "attention.csv", buf.getvalue())
