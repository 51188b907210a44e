"""Operator profiles in and out: Vidur-format tables and llmplan's own, with their metadata.

A profile directory holds per-layer operator timings for one (GPU, model) pair:

* **Vidur format** (``compute/<gpu>/<org>/<model>/mlp.csv``, as published with Vidur, MLSys 2024):
  columns ``time_stats.<op>.median`` (ms) for ``emb``, ``input_layernorm``, ``attn_pre_proj``,
  ``attn_rope``, ``attn_post_proj``, ``post_attention_layernorm``, ``mlp_up_proj``, ``mlp_act``,
  ``mlp_down_proj``, ``add``, plus ``num_tokens``, ``num_tensor_parallel_workers`` and the model
  dims (``n_head``, ``n_kv_head``, ``n_embd``, ``n_expanded_embd``, ``vocab_size``,
  ``use_gated_mlp``). The GPU is the ``<gpu>`` folder name; the dtype is float16.
* **llmplan format**: the same ``mlp.csv`` columns plus a ``profile.json`` beside it carrying a
  :class:`ProfileMeta` (``llmplan calibrate --ops`` writes both; attention rows, when measured,
  go to ``attention.csv``).

:class:`ProfileMeta` is the one description of what a profile was measured on (GPU, model dims,
dtype, TP degrees); :meth:`ProfileMeta.check_matches` refuses to price something else with it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmplan.errors import LlmplanError

if TYPE_CHECKING:
    from llmplan.models.spec import ModelSpec

GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
SMALL_OPS = ("input_layernorm", "attn_rope", "post_attention_layernorm", "mlp_act", "add")
ITER_OPS = ("emb",)  # once per iteration, not per layer
ALL_OPS = GEMM_OPS + SMALL_OPS + ITER_OPS
# How many times an op runs per decoder layer (two residual adds).
PER_LAYER = {**{op: 1 for op in GEMM_OPS + SMALL_OPS}, "add": 2}
OVERRIDE_FLAG = "--allow-profile-mismatch"

# Vidur's folder names -> llmplan GPU spec keys (Vidur profiled DGX A100 80GB and 4x A40 nodes).
VIDUR_GPUS = {"a100": "A100-SXM-80GB", "a40": "A40", "h100": "H100-SXM"}


@dataclass(frozen=True, slots=True)
class ModelDims:
    """The shapes a layer's operators see (what must match for a profile to price a model)."""

    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    gated_mlp: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ModelDims:
        return cls(
            spec.hidden_size,
            spec.num_attention_heads,
            spec.num_key_value_heads,
            spec.intermediate_size,
            spec.vocab_size,
            spec.gated_mlp,
        )

    def describe(self) -> str:
        return (
            f"hidden {self.hidden_size}, heads {self.num_attention_heads}/{self.num_key_value_heads}, "
            f"ffn {self.intermediate_size}"
        )


@dataclass(frozen=True, slots=True)
class ProfileMeta:
    """What a profile was measured on. Shared by the cost model, ``calibrate`` and ``bench``."""

    gpu: str  # llmplan GPU spec key ("A100-SXM-80GB", "A40", "cpu")
    model: str
    dims: ModelDims
    dtype: str = "float16"
    tp: tuple[int, ...] = (1,)
    source: str = ""  # "vidur" | "llmplan"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tp"] = list(self.tp)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "profile") -> ProfileMeta:
        try:
            return cls(
                gpu=str(d["gpu"]),
                model=str(d["model"]),
                dims=ModelDims(**d["dims"]),
                dtype=str(d.get("dtype", "float16")),
                tp=tuple(int(t) for t in d.get("tp", (1,))),
                source=str(d.get("source", "llmplan")),
                extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise LlmplanError(
                f"{source}: profile metadata is incomplete ({type(e).__name__}: {e}); "
                "re-measure with `llmplan calibrate --ops`"
            ) from None

    def mismatch(
        self,
        *,
        gpu: str | None = None,
        dims: ModelDims | None = None,
        dtype: str | None = None,
        tp: int | None = None,
    ) -> str | None:
        """Why this profile cannot price the given target, or None when it can."""
        if gpu is not None and gpu != self.gpu:
            return f"it was measured on {self.gpu}, not {gpu}"
        if dims is not None and dims != self.dims:
            return f"it was measured for {self.dims.describe()}, not {dims.describe()}"
        if dtype is not None and _dtype_class(dtype) != _dtype_class(self.dtype):
            return f"it was measured in {self.dtype}, not {dtype}"
        if tp is not None and tp not in self.tp:
            return f"it has TP {'/'.join(map(str, self.tp))}, not TP {tp}"
        return None

    def check_matches(
        self,
        *,
        gpu: str | None = None,
        dims: ModelDims | None = None,
        dtype: str | None = None,
        tp: int | None = None,
        allow_mismatch: bool = False,
        where: str = "profile",
    ) -> None:
        """Raise a one-line :class:`LlmplanError` when the profile does not match what it prices."""
        why = self.mismatch(gpu=gpu, dims=dims, dtype=dtype, tp=tp)
        if why and not allow_mismatch:
            raise LlmplanError(
                f"{where} ({self.model}) does not match: {why}; "
                f"give a matching profile or pass {OVERRIDE_FLAG} to use it anyway"
            )


def _dtype_class(dtype: str) -> str:
    """float16 and bfloat16 run the same tensor-core rate on Ampere and later."""
    return "16bit" if dtype in ("float16", "bfloat16", "fp16", "bf16", "half") else dtype


@dataclass(slots=True)
class OpProfile:
    """Per-layer operator timings of one (GPU, model): ``times[op]`` in seconds per row."""

    meta: ProfileMeta
    tokens: np.ndarray  # (rows,)
    tp: np.ndarray  # (rows,)
    times: dict[str, np.ndarray]  # op -> seconds (median), NaN when not measured
    path: str = ""
    # attention rows (llmplan profiles only): (phase, tokens or batch, context, tp, seconds)
    attention: list[tuple[str, int, int, int, float]] = field(default_factory=list)

    def rows(self, tp: int | None = None) -> np.ndarray:
        return np.arange(len(self.tokens)) if tp is None else np.flatnonzero(self.tp == tp)


def _bool(v: str) -> bool:
    return str(v).strip().lower() in ("true", "1", "yes")


def read_mlp_csv(path: Path, meta: ProfileMeta | None = None, gpu: str | None = None) -> OpProfile:
    """Read one Vidur-format ``mlp.csv`` (and llmplan's, which has the same columns)."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise LlmplanError(f"cannot read profile {path}: {e.strerror}") from None
    if not rows:
        raise LlmplanError(f"profile {path} has no rows; re-measure it")
    need = ("num_tokens", "num_tensor_parallel_workers", "n_embd", "n_head", "n_kv_head", "n_expanded_embd")
    missing = [c for c in need if c not in rows[0]]
    if missing:
        raise LlmplanError(
            f"{path} is not a Vidur-format operator table (no column {missing[0]!r}); "
            "give a compute/<gpu>/<model>/mlp.csv or a directory written by `llmplan calibrate --ops`"
        )
    try:
        r0 = rows[0]
        dims = ModelDims(
            hidden_size=int(r0["n_embd"]),
            num_attention_heads=int(r0["n_head"]),
            num_key_value_heads=int(r0["n_kv_head"]),
            intermediate_size=int(r0["n_expanded_embd"]),
            vocab_size=int(r0.get("vocab_size") or 0),
            gated_mlp=_bool(r0.get("use_gated_mlp", "True")),
        )
        tokens = np.array([int(r["num_tokens"]) for r in rows])
        tps = np.array([int(r["num_tensor_parallel_workers"]) for r in rows])
        times: dict[str, np.ndarray] = {}
        for op in ALL_OPS:
            col = f"time_stats.{op}.median"
            if col in r0:
                times[op] = (
                    np.array([float(r[col]) if r[col] not in ("", None) else np.nan for r in rows]) * 1e-3
                )
    except (TypeError, ValueError) as e:
        raise LlmplanError(
            f"{path}: a row does not parse ({e}); the file is damaged, re-measure it"
        ) from None
    if meta is None:
        model = path.parent.name
        meta = ProfileMeta(
            gpu=gpu or "unknown",
            model=model,
            dims=dims,
            dtype="float16",
            tp=tuple(sorted({int(t) for t in tps})),
            source="vidur",
            extra={"org": path.parent.parent.name},
        )
    elif meta.dims != dims:
        raise LlmplanError(
            f"{path}: its dims ({dims.describe()}) disagree with profile.json ({meta.dims.describe()}); "
            "re-measure with `llmplan calibrate --ops`"
        )
    return OpProfile(meta, tokens, tps, times, str(path))


def _gpu_from_path(p: Path) -> str | None:
    for part in reversed(p.parts):
        if part.lower() in VIDUR_GPUS:
            return VIDUR_GPUS[part.lower()]
    return None


def read_profile_dir(d: Path) -> OpProfile:
    """One profile directory (``mlp.csv`` + optional ``profile.json``)."""
    meta = None
    mj = d / "profile.json"
    if mj.is_file():
        try:
            meta = ProfileMeta.from_dict(json.loads(mj.read_text()), source=str(mj))
        except json.JSONDecodeError as e:
            raise LlmplanError(
                f"{mj} is not valid JSON ({e}); re-measure with `llmplan calibrate --ops`"
            ) from None
    prof = read_mlp_csv(d / "mlp.csv", meta, gpu=_gpu_from_path(d))
    ac = d / "attention.csv"
    if ac.is_file():
        try:
            with ac.open(newline="") as f:
                prof.attention = [
                    (r["phase"], int(r["num_tokens"]), int(r["context"]),
                     int(r["num_tensor_parallel_workers"]), float(r["time_ms"]) * 1e-3)
                    for r in csv.DictReader(f)
                ]  # fmt: skip
        except (KeyError, ValueError) as e:
            raise LlmplanError(
                f"{ac} does not parse ({e}); re-measure with `llmplan calibrate --ops`"
            ) from None
    return prof


def discover(root: str | Path) -> list[OpProfile]:
    """Every operator profile under ``root`` (Vidur tree or llmplan directories), sorted by path."""
    r = Path(root)
    if not r.exists():
        raise LlmplanError(f"profile directory {r} does not exist; give the folder that holds mlp.csv files")
    files = [r] if r.is_file() else sorted(r.rglob("mlp.csv"))
    if not files:
        raise LlmplanError(
            f"no operator profile (mlp.csv) under {r}; point --profiles at a Vidur compute/ tree "
            "or a directory written by `llmplan calibrate --ops`"
        )
    out = []
    for f in files:
        out.append(
            read_profile_dir(f.parent) if f.name == "mlp.csv" else read_mlp_csv(f, gpu=_gpu_from_path(f))
        )
    return out


# ---------------------------------------------------------------------------------- network
@dataclass(slots=True)
class NetProfile:
    """NCCL timings: one collective on one cluster, rows of (workers, devices per node, bytes, seconds)."""

    cluster: str
    collective: str  # all_reduce | send_recv
    workers: np.ndarray
    devices_per_node: np.ndarray
    size: np.ndarray
    time_s: np.ndarray

    def intra_node(self) -> np.ndarray:
        return self.devices_per_node >= self.workers


def read_network_csv(path: Path) -> NetProfile:
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        kind = rows[0]["collective"]
        col = f"time_stats.{kind}.median"
        return NetProfile(
            cluster=path.parent.name,
            collective=kind,
            workers=np.array([int(r["num_workers"]) for r in rows]),
            devices_per_node=np.array([int(r["devices_per_node"]) for r in rows]),
            size=np.array([float(r["size"]) for r in rows]),
            time_s=np.array([float(r[col]) for r in rows]) * 1e-3,
        )
    except (OSError, IndexError, KeyError, ValueError) as e:
        raise LlmplanError(
            f"{path} is not a Vidur network table ({type(e).__name__}: {e}); "
            "give network/<cluster>/{all_reduce,send_recv}.csv"
        ) from None


def discover_network(root: str | Path) -> list[NetProfile]:
    r = Path(root)
    return [read_network_csv(f) for f in sorted(r.rglob("*.csv")) if f.stem in ("all_reduce", "send_recv")]


def group_by_gpu(profiles: Iterable[OpProfile]) -> dict[str, list[OpProfile]]:
    out: dict[str, list[OpProfile]] = {}
    for p in profiles:
        out.setdefault(p.meta.gpu, []).append(p)
    return out
