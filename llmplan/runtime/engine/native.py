"""The engine's compiled CPU operations (``csrc/cpu_ops.c``), built once per machine with the
system's C compiler and loaded with ctypes:

* the decode-attention kernel, which :func:`llmplan.runtime.engine.attention.paged_attention`
  uses for the decode rows of fp32 models on CPU;
* the linear kernel, which :func:`llmplan.runtime.engine.model.linear` uses for fp32 products of
  :data:`LINEAR_ROWS` rows (decode batches) over a copy of the weight packed for it
  (:func:`pack_linear`);
* the element-wise steps between a decoder layer's products (:func:`rms_norm` with the residual
  add before it, :func:`rope_kv` with the KV-cache write, :func:`silu_mul`), which
  :mod:`llmplan.runtime.engine.model` uses for fp32 activations on CPU;
* :func:`bind_threads`, which pins the engine thread's OpenMP threads one per CPU
  (``llmplan serve --cpu-bind``, as vLLM's ``VLLM_CPU_OMP_THREADS_BIND``).

Why a kernel: in plain torch ops a decode row costs two small matmuls and a softmax per row per
layer, each a dispatch, and the CPU GEMM reads one head's 256-byte keys, spaced a whole token
apart, well below the memory bandwidth. The kernel streams each
row's blocks in order, all heads of a token at once, and shares the rows out over PyTorch's own
OpenMP threads. Measured on this project's 2-core Xeon, one layer of 32 rows of 12 heads x 64,
ms, torch ops / kernel: figures in docs/serve-reference.md ("Round 5").

Where it is used: the device is a CPU, queries and pools are fp32 and the pools contiguous, and
the kernel built. Otherwise the torch path runs, which gives the same values (both are tested
against a float64 reference).

Why a linear kernel: a decode step multiplies a few rows by every weight of the model, so it
must both stream the weights from memory and do the arithmetic. oneDNN's fp32 matmul (what the
engine used before, and what vLLM's CPU backend uses) does the two in turn; the kernel prefetches
the next weight panel while it computes on the current one. Measured on this project's Xeon (the
weights of one llama-120m step, 1 and 2 threads): 0.73-0.82x oneDNN's time at 16-64 rows, 0.87-0.96x
at 4-8 and 96-128 rows; at 1-4 rows, where the product is a pure weight stream, about the plain
GEMM's (sgemv) time, 0.9-1.02x; figures in docs/serve-reference.md ("Round 6").

Why compiled element-wise steps: between its four products a layer ran about 30 torch ops
(RMSNorm alone is seven on CPU: pow, sum, div, add, rsqrt, two muls), each a dispatch, an
allocation and, after a weight has streamed through L2, a cache refill: 4.0-4.4 ms of a single
request's 22.5-23.1 ms step went outside the products and attention (llama-120m, 1 thread). Each
step is now one call and one pass over its rows: RMSNorm sums its squares in vector lanes
(another order than torch's: last-bit differences), SiLU uses the C library's vector ``expf``,
RoPE rounds each product before the sum as the torch ops do (equal bit for bit).

``LLMPLAN_DECODE_KERNEL`` chooses for all of them:

* ``auto`` (default): the kernel where it builds; a failed build logs one warning and the torch
  path runs;
* ``torch``: never build or use it;
* ``native``: the kernel or an error naming why it is unavailable.

The library is cached under ``$LLMPLAN_CACHE_DIR`` (default ``~/.cache/llmplan``), named by a hash
of the source, the compiler and its flags, and the CPU's feature flags (it is built with
``-march=native``); ``CC`` picks the compiler (default ``cc``).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from llmplan.errors import LlmplanError

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "cpu_ops.c"
MODES = ("auto", "torch", "native")
# Tried in order: the first that compiles is kept. Not -ffast-math: its finite-math assumptions
# would change what a NaN score gives, and linking it sets flush-to-zero for the whole process.
_FLAG_SETS = (
    (
        "-O3",
        "-march=native",
        "-fno-math-errno",
        "-fno-trapping-math",
        "-fassociative-math",
        "-fno-signed-zeros",
        "-fopenmp",
    ),
    ("-O3", "-fno-math-errno", "-fopenmp"),
    ("-O3",),
)


class NativeKernelError(LlmplanError):
    """``LLMPLAN_DECODE_KERNEL`` is not a choice, or is ``native`` and the kernel is unavailable."""


@dataclass(frozen=True, slots=True)
class KernelState:
    """What this process uses for decode attention on CPU."""

    fn: object | None  # the loaded decode-attention function, or None: the torch path
    reason: str  # one line: the library's path, or why the torch path runs
    bind: object | None = None  # the loaded thread-binding function (None with fn)
    linear: object | None = None  # the loaded linear kernel (None with fn)
    glue: Glue | None = None  # the element-wise steps between products (None with fn)


@dataclass(frozen=True, slots=True)
class Glue:
    """The loaded element-wise steps between a decoder layer's products (see :func:`rms_norm`,
    :func:`silu_mul`, :func:`rope_kv`)."""

    rms_norm: object
    silu_mul: object
    rope_kv: object


def mode() -> str:
    """``LLMPLAN_DECODE_KERNEL``, checked: one of :data:`MODES`."""
    m = os.environ.get("LLMPLAN_DECODE_KERNEL", "auto").strip().lower() or "auto"
    if m not in MODES:
        raise NativeKernelError(f"LLMPLAN_DECODE_KERNEL={m!r} is not a choice; use one of {', '.join(MODES)}")
    return m


def _cache_dir() -> Path:
    base = os.environ.get("LLMPLAN_CACHE_DIR")
    return Path(base) if base else Path.home() / ".cache" / "llmplan"


def _cpuinfo_line(*keys: str) -> str | None:
    """The first line of /proc/cpuinfo that starts with one of ``keys``; None where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(keys):
                return line
    except OSError:
        pass
    return None


def _cpu_flags() -> str:
    return _cpuinfo_line("flags", "Features") or platform.processor()


def intel_cpu() -> bool:
    """Whether this CPU is Intel's (``vendor_id`` GenuineIntel): MKL's sgemm takes its fastest
    paths there and a slower generic one on other vendors' CPUs."""
    vendor = _cpuinfo_line("vendor_id")
    return "GenuineIntel" in vendor if vendor is not None else "intel" in platform.processor().lower()


def _compiler_id(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _build() -> tuple[Path | None, str]:
    """Compile (or find cached) the library: its path, or None and why not."""
    cc = os.environ.get("CC") or "cc"
    exe = shutil.which(cc)
    if exe is None:
        return None, f"no C compiler ({cc!r} not found; set CC to one)"
    try:
        src = SOURCE.read_text()
    except OSError as e:
        return None, f"the kernel's source is missing ({e}); reinstall llmplan"
    ident = (src, exe, _compiler_id(exe), _cpu_flags())  # what every flag set's key shares
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256("\0".join((*ident, *flags)).encode()).hexdigest()[:16]
        out = _cache_dir() / f"cpu_ops-{key}.so"
        if out.exists():
            return out, f"{out}"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
            os.close(fd)
        except OSError as e:
            return None, f"cannot write the kernel cache {out.parent} ({e}); set LLMPLAN_CACHE_DIR"
        cmd = [exe, *flags, "-fPIC", "-shared", str(SOURCE), "-o", tmp, "-lm"]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as e:
            res = None
            errors.append(str(e))
        if res is not None and res.returncode == 0:
            os.replace(tmp, out)  # atomic: a concurrent build of the same key writes the same bytes
            return out, f"{out}"
        Path(tmp).unlink(missing_ok=True)
        if res is not None:
            errors.append((res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1])
    return None, f"{cc} could not compile {SOURCE.name}: {errors[-1] if errors else 'unknown error'}"


def _load() -> KernelState:
    m = mode()
    if m == "torch":
        return KernelState(None, "LLMPLAN_DECODE_KERNEL=torch")
    path, why = _build()
    fn = bind = lin = glue = None
    if path is not None:
        try:
            lib = ctypes.CDLL(str(path))
            fn, bind, lin = lib.llmplan_decode_attention, lib.llmplan_bind_threads, lib.llmplan_linear
            glue = Glue(lib.llmplan_rms_norm, lib.llmplan_silu_mul, lib.llmplan_rope_kv)
        except (OSError, AttributeError) as e:
            fn, why = None, f"cannot load {path}: {e}"
    if fn is None:
        if m == "native":
            raise NativeKernelError(f"LLMPLAN_DECODE_KERNEL=native but the kernel is unavailable: {why}")
        log.warning("decode attention and linear run on torch ops (slower): %s", why)
        return KernelState(None, why)
    p, i = ctypes.c_void_p, ctypes.c_int64
    fn.argtypes = [p, p, p, p, i, p, p, i, i, i, i, i, ctypes.c_float, i, i]
    fn.restype = ctypes.c_int
    bind.argtypes = [p, i]
    bind.restype = ctypes.c_int
    lin.argtypes = [p, i, p, p, p, i, i, i, i, i]
    lin.restype = ctypes.c_int
    glue.rms_norm.argtypes = [p, p, p, p, p, i, i, ctypes.c_float, i]
    glue.silu_mul.argtypes = [p, p, i, i, i]
    glue.rope_kv.argtypes = [p, i, p, p, p, p, p, p, p, i, i, i, i, i]
    for f in (glue.rms_norm, glue.silu_mul, glue.rope_kv):
        f.restype = None
    return KernelState(fn, why, bind, lin, glue)


_state: KernelState | None = None


def state() -> KernelState:
    """The process's kernel (built and loaded on first call; cached)."""
    global _state
    if _state is None:
        _state = _load()
    return _state


def reset() -> None:
    """Forget the loaded state: the next :func:`state` reads ``LLMPLAN_DECODE_KERNEL`` again."""
    global _state
    _state = None


def usable(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> bool:
    """Whether these operands can take the kernel (and it is loaded)."""
    return (
        q.device.type == "cpu"
        and q.dtype == k_cache.dtype == v_cache.dtype == torch.float32
        and k_cache.is_contiguous()
        and v_cache.is_contiguous()
        and state().fn is not None
    )


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    tables: torch.Tensor,
    lens: torch.Tensor,
    out: torch.Tensor,
) -> None:
    """``out[r] = softmax(q[r] K_r^T / sqrt(head_dim)) V_r`` for each decode row ``r``.

    ``q`` and ``out`` ``[rows, heads, head_dim]`` contiguous fp32; pools
    ``[blocks, block_size, kv_heads, head_dim]``; ``tables`` ``[rows, max_blocks]`` int64
    contiguous, whose first ``ceil(lens[r] / block_size)`` entries are valid block ids; ``lens``
    ``[rows]`` int64, each at least 1. The caller checks the block ids (see
    ``AttnMetadata.native_tables``): the kernel reads whatever they point at."""
    fn = state().fn
    assert fn is not None, "decode_attention without a loaded kernel: check usable() first"
    rows, heads, hd = q.shape
    _, bs, kvh, _ = k_cache.shape
    threads = torch.get_num_threads()
    parts = min(kvh, max(1, -(-threads // rows)))  # split a row's heads when rows < threads
    per_item = -(-kvh // parts)
    rc = fn(
        q.data_ptr(),
        k_cache.data_ptr(),
        v_cache.data_ptr(),
        tables.data_ptr(),
        tables.shape[1],
        lens.data_ptr(),
        out.data_ptr(),
        rows,
        heads,
        kvh,
        hd,
        bs,
        hd**-0.5,
        per_item,
        threads,
    )
    if rc:
        raise MemoryError("decode attention kernel: a scratch buffer could not be allocated")


LINEAR_NB = 32  # output columns per packed panel (LIN_NB in csrc/cpu_ops.c)
# The row counts model.linear gives the kernel: past 128 a general GEMM is as fast (see the module
# docstring).
LINEAR_ROWS = range(1, 129)


def pack_linear(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` ``[N, K]`` as the linear kernel reads it: ``[ceil(N / 32), K, 32]`` contiguous
    fp32, each panel 32 output columns, those past ``N`` zero."""
    n, k = weight.shape
    panels = -(-n // LINEAR_NB)
    padded = torch.zeros(panels * LINEAR_NB, k, dtype=torch.float32)
    padded[:n] = weight.detach()
    return padded.view(panels, LINEAR_NB, k).transpose(1, 2).contiguous()


def linear(x: torch.Tensor, packed: torch.Tensor, n: int, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ W.T (+ bias)`` for ``x`` ``[rows, K]`` fp32 on CPU (any row count; the engine gives
    it :data:`LINEAR_ROWS`), ``packed`` = :func:`pack_linear` of ``W`` ``[n, K]``, ``bias`` None or
    ``[n]``."""
    lin = state().linear
    assert lin is not None, "native.linear without a loaded kernel: check state().linear first"
    rows, k = x.shape
    assert packed.shape[1] == k and packed.shape[0] * LINEAR_NB >= n, (x.shape, packed.shape, n)
    if x.stride(1) != 1:
        x = x.contiguous()
    if bias is not None:
        bias = bias.detach().to(torch.float32).contiguous()
    if rows == 0 or n == 0 or k == 0:  # nothing to stream (the kernel divides its passes by these)
        y = torch.zeros(rows, n, dtype=torch.float32)
        return y if bias is None else y + bias
    y = torch.empty(rows, n, dtype=torch.float32)
    lin(
        x.data_ptr(),
        x.stride(0),
        packed.data_ptr(),
        None if bias is None else bias.data_ptr(),
        y.data_ptr(),
        n,
        rows,
        n,
        k,
        torch.get_num_threads(),
    )
    return y


# False runs the element-wise steps on torch ops even where they are compiled
# (benchmarks/engine_batched.py --ab glue); LLMPLAN_DECODE_KERNEL=torch turns them off with the rest.
GLUE_STEPS = True


def glue_usable(x: torch.Tensor) -> bool:
    """Whether ``x`` (an fp32 activation on CPU) can take the compiled element-wise steps."""
    return GLUE_STEPS and x.device.type == "cpu" and x.dtype == torch.float32 and state().glue is not None


def kv_writable(k_cache: torch.Tensor, v_cache: torch.Tensor) -> bool:
    """Whether :func:`rope_kv` can write these pools (fp32, contiguous, on CPU)."""
    return (
        k_cache.device.type == v_cache.device.type == "cpu"
        and k_cache.dtype == v_cache.dtype == torch.float32
        and k_cache.is_contiguous()
        and v_cache.is_contiguous()
    )


def _glue() -> Glue:
    g = state().glue
    assert g is not None, "compiled element-wise step without a loaded kernel: check glue_usable() first"
    return g


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm of ``s = x (+ residual)`` over the last dimension, scaled by ``weight``: returns
    ``(normed, s)`` (``s`` is ``x`` itself without a residual). fp32 on CPU; ``x`` and
    ``residual`` ``[..., n]``, ``weight`` ``[n]``. The sum of squares is summed in vector lanes,
    so it can differ from ``torch.rms_norm`` in the last bit."""
    n = x.shape[-1]
    x = x.contiguous()
    w = weight.contiguous()
    out = torch.empty_like(x)
    res = None if residual is None else residual.contiguous()
    s = x if res is None else torch.empty_like(x)
    rows = x.numel() // n if n else 0
    if rows:
        _glue().rms_norm(
            x.data_ptr(), None if res is None else res.data_ptr(), None if res is None else s.data_ptr(),
            w.data_ptr(), out.data_ptr(), rows, n, eps, torch.get_num_threads(),
        )  # fmt: skip
    return out, s


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` of a fused gate/up product ``[rows, 2n]`` (fp32 on CPU) -> ``[rows, n]``.
    Uses the C library's vector ``expf``, which can differ from torch's in the last bit."""
    rows, two_n = gate_up.shape
    n = two_n // 2
    gate_up = gate_up.contiguous()
    out = torch.empty(rows, n, dtype=torch.float32)
    if rows and n:
        _glue().silu_mul(gate_up.data_ptr(), out.data_ptr(), rows, n, torch.get_num_threads())
    return out


def rope_kv(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
    kv_heads: int,
    head_dim: int,
    cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE (rotate-half) of the queries and keys in a fused q/k/v product ``qkv`` ``[T, (heads +
    2 kv_heads) head_dim]`` (rows may be strided), with ``cos``/``sin`` ``[T, head_dim / 2]``:
    returns the rotated queries ``[T, heads, head_dim]`` and keys ``[T, kv_heads, head_dim]``,
    both new contiguous tensors, equal bit for bit to the torch ops
    (``x1 c - x2 s``, ``x2 c + x1 s``). With ``cache = (k_pool, v_pool, slots)`` the rotated keys
    and the values are also written to the pools' rows ``slots`` (int64, each checked by the caller
    to lie within the pools: see ``AttnMetadata.native_slots``)."""
    t = qkv.shape[0]
    if qkv.stride(1) != 1:
        qkv = qkv.contiguous()
    cos, sin = cos.contiguous(), sin.contiguous()
    q = torch.empty(t, heads, head_dim, dtype=torch.float32)
    k = torch.empty(t, kv_heads, head_dim, dtype=torch.float32)
    kc = vc = slots = None
    if cache is not None:
        kc, vc, slots = cache
    if t:
        _glue().rope_kv(
            qkv.data_ptr(), qkv.stride(0), cos.data_ptr(), sin.data_ptr(), q.data_ptr(),
            k.data_ptr(), None if slots is None else slots.data_ptr(),
            None if kc is None else kc.data_ptr(), None if vc is None else vc.data_ptr(),
            t, heads, kv_heads, head_dim, torch.get_num_threads(),
        )  # fmt: skip
    return q, k


def parse_cpus(spec: str, threads: int | None) -> tuple[int, ...] | None:
    """``--cpu-bind``: ``none`` -> None; ``auto`` -> the first ``threads`` CPUs this process may
    run on; a list (``0-3``, ``0,2,4``) -> those CPUs, one per thread, each allowed to this
    process. LlmplanError when the list and ``threads`` disagree or a CPU is not allowed."""
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return None
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not allowed:
        raise LlmplanError("--cpu-bind needs Linux (sched_setaffinity); use --cpu-bind none")
    if spec == "auto":
        n = threads or len(allowed)
        if n > len(allowed):
            raise LlmplanError(f"--cpu-bind auto: --threads {n} but this process may use {len(allowed)} CPUs")
        return tuple(allowed[:n])
    cpus: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise LlmplanError(
            f"--cpu-bind {spec!r} is not a CPU list; give none, auto, or CPUs like 0-3 or 0,2"
        ) from None
    bad = sorted(set(cpus) - set(allowed))
    if bad or len(set(cpus)) != len(cpus) or not cpus:
        raise LlmplanError(
            f"--cpu-bind {spec}: CPUs must be distinct and among those this process may use "
            f"({', '.join(map(str, allowed))})"
        )
    if threads is not None and threads != len(cpus):
        raise LlmplanError(
            f"--cpu-bind names {len(cpus)} CPU(s) for --threads {threads}; name one per thread"
        )
    return tuple(cpus)


def bind_threads(cpus: tuple[int, ...]) -> str:
    """Pin the calling thread's ``len(cpus)`` intra-op threads, thread i to ``cpus[i]`` (call it
    on the thread that runs the steps, after ``torch.set_num_threads(len(cpus))``). Without the
    compiled library, the calling thread is only restricted to the set (its OpenMP threads,
    created later, inherit it). Returns one line saying which was done."""
    os.sched_setaffinity(0, set(cpus))  # this thread, and the OpenMP threads it starts
    fn = state().bind
    if fn is None:
        return f"threads restricted to CPUs {sorted(cpus)} (not pinned one per CPU: {state().reason})"
    arr = (ctypes.c_int64 * len(cpus))(*cpus)
    rc = fn(arr, len(cpus))
    if rc:
        return f"threads restricted to CPUs {sorted(cpus)} (pinning one per CPU failed: code {rc})"
    return f"thread i pinned to CPU {list(cpus)}[i]"
