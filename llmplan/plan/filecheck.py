"""Check a saved plan document before it becomes a :class:`~llmplan.plan.types.Plan`.

A plan file is user data (edited by hand, truncated, from another version): every field that
later commands compute with is checked here, so a bad one is refused in one line naming the
file and the field, instead of a device map over layers -3..3 or a division by a zero batch.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from llmplan.errors import LlmplanError
from llmplan.validate import MAX_COUNT, integer, mapping, number, sequence

_GPU_ID = re.compile(r"^GPU\d+$")
FIX = "regenerate it with `llmplan plan --out FILE`"


def check_plan_dict(
    d: Any, where: str, *, version: int, stage_fields: set[str], workload_fields: set[str]
) -> dict[str, Any]:
    """``d`` if it is a well-formed plan document, else one line naming ``where`` and the field.

    ``version`` (the newest plan format) and the field names of a stage and of the workload come
    from :mod:`llmplan.plan.types`, which calls this; passed in so this module need not import it.
    """
    mapping(d, f"{where}", FIX)
    _check_head(d, where, version)
    if "model_spec" not in d:
        raise LlmplanError(f"{where}: not a llmplan plan (no 'model_spec'); {FIX}")
    spec = mapping(d["model_spec"], f"{where}: model_spec", FIX)
    n_layers = _check_model_spec(spec, f"{where}: model_spec")
    if "instances" not in d:
        raise LlmplanError(f"{where}: not a llmplan plan (no 'instances'); {FIX}")
    instances = sequence(d["instances"], f"{where}: instances", FIX)
    if not instances:
        raise LlmplanError(f"{where}: instances is empty; a plan places at least one instance; {FIX}")
    for i, inst in enumerate(instances):
        _check_instance(inst, f"{where}: instances[{i}]", stage_fields, n_layers)
    _check_rest(d, where, workload_fields)
    return d


def _check_head(d: dict[str, Any], where: str, version: int) -> None:
    """The format version (not newer than this llmplan's) and the model and mode names."""
    if "version" in d:
        v = d["version"] = integer(d["version"], f"{where}: version", lo=1, fix=FIX)
        if v > version:
            raise LlmplanError(
                f"{where}: plan format v{v} is newer than this llmplan (v{version}); upgrade llmplan"
            )
    for key in ("model", "mode"):
        if key not in d:
            raise LlmplanError(f"{where}: not a llmplan plan (no {key!r}); {FIX}")
        if not isinstance(d[key], str) or not d[key]:
            raise LlmplanError(f"{where}: {key} must be a non-empty string (got {d[key]!r}); {FIX}")


def _check_instance(inst: Any, at: str, stage_fields: set[str], n_layers: int | None) -> None:
    """One instance: a role, and stages that cover the model's layers contiguously from 0."""
    inst = mapping(inst, at, FIX)
    if not isinstance(inst.get("role", "both"), str):
        raise LlmplanError(f"{at}.role must be both, prefill or decode; {FIX}")
    stages = sequence(inst.get("stages"), f"{at}.stages", FIX)
    if not stages:
        raise LlmplanError(f"{at} has no stages; {FIX}")
    expect = 0
    for j, st in enumerate(stages):
        expect = _check_stage(st, f"{at}.stages[{j}]", stage_fields, expect)
    if n_layers is not None and expect != n_layers:
        raise LlmplanError(f"{at} places layers 0-{expect - 1} but the model has {n_layers}; {FIX}")


def _check_stage(st: Any, at: str, stage_fields: set[str], expect: int) -> int:
    """One stage: known fields, distinct GPU ids, layers [start, end) starting where the previous
    stage ended (``expect``), finite sizes and times. Returns its ``layer_end``."""
    st = mapping(st, at, FIX)
    unknown = sorted(set(st) - stage_fields)
    if unknown:
        raise LlmplanError(f"{at} has unknown field(s) {', '.join(unknown)}; {FIX}")
    gpus = sequence(st.get("gpus"), f"{at}.gpus", FIX)
    if not gpus or not all(isinstance(g, str) and _GPU_ID.match(g) for g in gpus):
        raise LlmplanError(f"{at}.gpus must be a non-empty list of GPU ids (GPU0...), got {gpus!r}")
    if len(set(gpus)) != len(gpus):
        raise LlmplanError(f"{at}.gpus names a GPU twice ({gpus}); {FIX}")
    # Whole floats (4.0) are accepted and stored back as ints: later code ranges over them.
    start = st["layer_start"] = integer(st.get("layer_start"), f"{at}.layer_start", lo=0, fix=FIX)
    end = st["layer_end"] = integer(st.get("layer_end"), f"{at}.layer_end", lo=1, fix=FIX)
    if end <= start:
        raise LlmplanError(f"{at}: layer_end {end} must be above layer_start {start}; {FIX}")
    if start != expect:
        raise LlmplanError(
            f"{at}: layers start at {start} but the previous stage ended at {expect}; stages must "
            f"cover the layers contiguously; {FIX}"
        )
    for key in ("weights_gib", "kv_gib", "free_gib", "prefill_s", "decode_s"):
        if key in st:
            number(st[key], f"{at}.{key}", fix=FIX)
    for key in ("weights_gib", "kv_gib", "prefill_s", "decode_s"):
        if key in st:
            number(st[key], f"{at}.{key}", lo=0, fix=FIX)
    if st.get("local_index") is not None:
        st["local_index"] = integer(st["local_index"], f"{at}.local_index", lo=0, fix=FIX)
    return end


def _check_rest(d: dict[str, Any], where: str, workload_fields: set[str]) -> None:
    """The workload (known fields, whole positive counts) and the optional sections' kinds."""
    wl = mapping(d.get("workload", {}), f"{where}: workload", FIX) if "workload" in d else {}
    unknown = sorted(set(wl) - workload_fields)
    if unknown:
        raise LlmplanError(f"{where}: workload has unknown field(s) {', '.join(unknown)}; {FIX}")
    for key, value in wl.items():
        if value is not None or key in ("max_batch", "input_len", "output_len"):
            wl[key] = integer(value, f"{where}: workload.{key}", lo=1, hi=MAX_COUNT, fix=FIX)
    for key in ("a1", "a2"):
        if key in d:
            number(d[key], f"{where}: {key}", lo=0, fix=FIX)
    for key in ("metrics", "params"):
        if key in d:
            mapping(d[key], f"{where}: {key}", FIX)
    if "explanation" in d:
        sequence(d["explanation"], f"{where}: explanation", FIX)
    if "workload" in d:
        mapping(d["workload"], f"{where}: workload", FIX)
    if d.get("pd") is not None:
        mapping(d["pd"], f"{where}: pd", FIX)


_SPEC_SIZES = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "vocab_size",
)  # fmt: skip


def _check_model_spec(spec: dict[str, Any], where: str) -> int:
    """The plan's embedded model: the sizes the cost model divides and multiplies by are positive
    whole numbers, the names are text, and the whole builds a ModelSpec. Returns the layer count."""
    from llmplan.models.spec import ModelSpec

    for key in ("name", "family"):
        if not isinstance(spec.get(key), str):
            raise LlmplanError(f"{where}.{key} must be text (got {spec.get(key)!r}); {FIX}")
    sizes = {k: integer(spec.get(k), f"{where}.{k}", lo=1, hi=1 << 24, fix=FIX) for k in _SPEC_SIZES}
    spec.update(sizes)
    for f in dataclasses.fields(ModelSpec):  # every other field present: of its declared kind
        if f.name in sizes or f.name not in spec or spec[f.name] is None:
            continue
        v, at = spec[f.name], f"{where}.{f.name}"
        kind = str(f.type).split("|")[0].strip()
        if kind == "int":
            spec[f.name] = integer(v, at, lo=0, hi=1 << 30, fix=FIX)
        elif kind == "float":
            number(v, at, lo=0, hi=1e12, fix=FIX)
        elif kind == "bool" and not isinstance(v, bool):
            raise LlmplanError(f"{at} must be true or false (got {v!r}); {FIX}")
        elif kind == "str" and not isinstance(v, str):
            raise LlmplanError(f"{at} must be text (got {v!r}); {FIX}")
        elif kind.startswith("dict") and not isinstance(v, dict):
            raise LlmplanError(f"{at} must be an object (got {v!r}); {FIX}")
    try:
        ModelSpec.from_dict(spec)
    except (TypeError, ValueError, KeyError, ZeroDivisionError) as exc:
        raise LlmplanError(
            f"{where} does not describe a model ({type(exc).__name__}: {exc}); {FIX}"
        ) from None
    return sizes["num_hidden_layers"]
