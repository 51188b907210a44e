"""``--source auto|nvml|smi|file:PATH|preset:NAME`` -> the topology graph."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import networkx as nx
import yaml

import llmplan.topology.serialize as serialize
from llmplan.errors import LlmplanError
from llmplan.topology.graph import HostLayout, NetLink, apply_power_caps, build_graph, validate_graph
from llmplan.topology.nvml import PynvmlDevices, RecordedDevices, layout_from_nvml
from llmplan.topology.presets import (
    layout_from_matrix,
    layouts_from_spec,
    load_preset,
    preset_names,
    records_from_query,
)
from llmplan.topology.smi import QUERY_FIELDS, parse_query_gpu, parse_topo_matrix
from llmplan.topology.sysfs import sysfs_nics
from llmplan.validate import read_text

SMI_TIMEOUT_S = 30


def _no_gpu_message(reasons: list[str]) -> str:
    return (
        f"no NVIDIA GPU found ({'; '.join(reasons)}); use --source preset:NAME "
        f"({', '.join(preset_names())}) or --source file:PATH (a saved `nvidia-smi topo -m` output, "
        "a --json export or a preset YAML)"
    )


def _from_nvml() -> HostLayout:
    dev = PynvmlDevices()
    try:
        layout = layout_from_nvml(dev)
    finally:
        dev.close()
    layout.nics, layout.gpu_nic_links = sysfs_nics(layout.gpus)
    return layout


def _from_recording(data: dict, path: Path, **build) -> nx.Graph:
    layout = layout_from_nvml(RecordedDevices(data))
    nics = data.get("nics") or []
    bad = LlmplanError(f"{path}: each `nics` entry needs `name` and `links` (one cell per GPU)")
    try:
        layout.nics = [str(n["name"]) for n in nics]
        if any(len(n["links"]) != len(layout.gpus) for n in nics):
            raise bad
        layout.gpu_nic_links = {
            (i, k): str(cell) for k, n in enumerate(nics) for i, cell in enumerate(n["links"])
        }
    except (KeyError, TypeError):
        raise bad from None
    return build_graph([layout], name=path.stem, source=f"file:{path}", **build)


def _run_smi(args: list[str]) -> str:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise LlmplanError("nvidia-smi is not on PATH")
    try:
        proc = subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LlmplanError(f"nvidia-smi {' '.join(args)} failed ({exc})") from None
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise LlmplanError(f"nvidia-smi {' '.join(args)} exited {proc.returncode}: {msg[0] if msg else ''}")
    return proc.stdout


def _from_smi() -> HostLayout:
    matrix = parse_topo_matrix(_run_smi(["topo", "-m"]))
    query = parse_query_gpu(_run_smi([f"--query-gpu={QUERY_FIELDS}", "--format=csv,noheader,nounits"]))
    return layout_from_matrix(matrix, records_from_query(query) if query else None)


_FILE_FIX = "give the path of a saved `nvidia-smi topo -m` output, a --json export or a preset YAML"


def _from_file(path: Path, **build) -> nx.Graph:
    G = _read_file(path, **build)
    return validate_graph(G, str(path))


def _read_file(path: Path, **build) -> nx.Graph:
    text = read_text(path, "topology file", _FILE_FIX)
    where = str(path)
    stripped = text.lstrip()
    if not stripped:
        raise LlmplanError(f"topology file {path} is empty; {_FILE_FIX}")
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LlmplanError(f"{where}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
        if isinstance(data, dict) and "nvml_recording" in data:
            return _from_recording(data, path, **build)
        G = serialize.from_dict(data, where)
        if build.get("power_caps"):
            apply_power_caps(G, build["power_caps"])
        return G
    if path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise LlmplanError(f"{where}: not valid YAML ({exc.__class__.__name__}); fix the file") from None
        if isinstance(data, dict) and "nvml_recording" in data:
            return _from_recording(data, path, **build)
        hosts, net = layouts_from_spec(data, where)
        return build_graph(
            hosts, name=str(data.get("name", path.stem)), source=f"file:{path}", net=net, **build
        )
    try:  # not a matrix: the parser's "line N: expected ..." message, prefixed with the file
        matrix = parse_topo_matrix(text)
        query = parse_query_gpu(text)
        layout = layout_from_matrix(matrix, records_from_query(query) if query else None)
    except LlmplanError as exc:
        raise LlmplanError(f"{where}: {exc}") from None
    return build_graph([layout], name=path.stem, source=f"file:{path}", **build)


def load_topology(
    source: str, power_caps: dict[int, float] | None = None, *, gpu_model: str | None = None
) -> nx.Graph:
    """The topology graph for ``source`` (``auto``, ``nvml``, ``smi``, ``file:PATH``, ``preset:NAME``).

    ``power_caps`` maps GPU index to watts (``--power-cap``); ``gpu_model`` names the GPUs' model when the
    source does not (a bare ``topo -m`` file).
    """
    build = {"power_caps": power_caps, "gpu_model": gpu_model}
    source = source.strip()
    if source.startswith("preset:"):
        hosts, net, name = load_preset(source[len("preset:") :])
        return build_graph(hosts, name=name, source=source, net=net, **build)
    if source.startswith("file:"):
        return _from_file(Path(source[len("file:") :]).expanduser(), **build)
    if source == "nvml":
        return validate_graph(build_graph([_from_nvml()], name="nvml", source="nvml", **build), "nvml")
    if source == "smi":
        return validate_graph(build_graph([_from_smi()], name="nvidia-smi", source="smi", **build), "smi")
    if source == "auto":
        reasons = []
        for name, fn in (("nvml", _from_nvml), ("smi", _from_smi)):
            try:
                layout = fn()
            except LlmplanError as exc:
                reasons.append(f"{name}: {exc}")
                continue
            return validate_graph(build_graph([layout], name=name, source=name, **build), name)
        raise LlmplanError(_no_gpu_message(reasons))
    raise LlmplanError(
        f"unknown --source {source!r}; use auto, nvml, smi, file:PATH or preset:NAME "
        f"({', '.join(preset_names())})"
    )


def discover(source: str = "auto", power_caps: dict[int, float] | None = None, **kw) -> nx.Graph:
    """Alias of :func:`load_topology` with ``auto`` as the default source."""
    return load_topology(source, power_caps, **kw)


__all__ = ["load_topology", "discover", "NetLink"]
