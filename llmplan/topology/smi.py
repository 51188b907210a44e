"""Parsers for ``nvidia-smi topo -m`` and ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits``.

``topo -m`` output reaches us in many shapes (../shared/fixtures/topology): tab-separated with ragged
padding, tabs collapsed to spaces by the page it was pasted into, doubled tabs, the block indented, NIC
columns named ``NIC<n>`` (with a ``NIC Legend``) or raw (``mlx5_0``), affinity columns present, absent or
empty, the legend present, cut or missing. So the parser tokenises on any whitespace rather than on tab
positions (which fails on re-spaced pastes), and places the affinity values by a rule that holds for every
driver: NIC rows print none, GPU rows always print ``NUMA Affinity`` and ``GPU NUMA ID`` (a number or
``N/A``) and only ``CPU Affinity`` can be blank (a cgroup without CPUs on that node), so the values are
right-aligned onto the affinity columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from llmplan.errors import LlmplanError
from llmplan.topology.links import parse_cell

AFFINITY_COLUMNS = ("CPU Affinity", "NUMA Affinity", "GPU NUMA ID")
_GPU = re.compile(r"^GPU(\d+)$")
_CPULIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_NIC_LEGEND = re.compile(r"^\s*(NIC\d+)\s*:\s*(\S+)\s*$")
_NA = {"N/A", "[N/A]", "[Not Supported]", "Not Supported", ""}


@dataclass
class TopoGpu:
    index: int
    cpu_affinity: str | None = None
    numa_node: int | None = None
    gpu_numa_id: int | None = None


@dataclass
class TopoMatrix:
    """What one ``topo -m`` block says. Link cells are normalised (``SOC`` -> ``SYS``)."""

    gpus: list[TopoGpu]
    nics: list[str]  # NIC names in column order (mlx5_0, or NIC0 if unnamed)
    gpu_links: dict[tuple[int, int], str] = field(default_factory=dict)  # (i, j), i < j -> "NV18"
    gpu_nic_links: dict[tuple[int, int], str] = field(default_factory=dict)  # (gpu, nic position) -> "PIX"
    columns: tuple[str, ...] = ()  # affinity columns that were printed


def _err(lineno: int, msg: str) -> LlmplanError:
    return LlmplanError(f"nvidia-smi topo -m text, line {lineno}: {msg}")


def _split_header(tokens: list[str], lineno: int) -> tuple[list[str], list[str]]:
    devices: list[str] = []
    i = 0
    while i < len(tokens) and tokens[i] not in ("CPU", "NUMA", "GPU"):
        devices.append(tokens[i])
        i += 1
    rest = " ".join(tokens[i:])
    columns: list[str] = []
    while rest:
        for name in AFFINITY_COLUMNS:
            if rest.startswith(name):
                columns.append(name)
                rest = rest[len(name) :].lstrip()
                break
        else:
            raise _err(
                lineno,
                f"unknown header column starting at {rest!r}; expected device columns "
                f"(GPU0, NIC0, mlx5_0, ...) followed by {', '.join(AFFINITY_COLUMNS)}",
            )
    return devices, columns


def _is_header(tokens: list[str]) -> bool:
    return (
        bool(tokens)
        and tokens[0] == "GPU0"
        and (len(tokens) == 1 or parse_cell(tokens[1]) is None and tokens[1] != "X")
    )


def _numa(value: str, lineno: int, column: str) -> int | None:
    if value in _NA:
        return None
    if not _CPULIST.match(value):
        raise _err(lineno, f"{column} {value!r} is not a NUMA node id or N/A")
    return int(re.split(r"[-,]", value)[0])  # a multi-node affinity: its first node is the GPU's home


@dataclass
class _Header:
    """The header row: device columns in order, the affinity columns printed, where the GPUs are."""

    lineno: int
    devices: list[str]
    columns: list[str]
    gpu_cols: list[int]  # positions of the GPU columns
    gpu_index: dict[int, int]  # position -> GPU index (GPU3 -> 3)
    nic_cols: list[int]


def _find_header(lines: list[str]) -> _Header:
    start = next((n for n, line in enumerate(lines) if _is_header(line.split())), None)
    if start is None:
        first = next((n for n, line in enumerate(lines) if line.strip()), 0)
        raise _err(
            first + 1,
            "expected the `nvidia-smi topo -m` header row (GPU0 GPU1 ... CPU Affinity "
            "NUMA Affinity); paste the whole output of `nvidia-smi topo -m`",
        )
    devices, columns = _split_header(lines[start].split(), start + 1)
    gpu_cols = [n for n, d in enumerate(devices) if _GPU.match(d)]
    if not gpu_cols:
        raise _err(start + 1, "the header names no GPU columns")
    if len(set(devices)) != len(devices):
        raise _err(start + 1, "the header repeats a column name")
    gpu_index = {n: int(_GPU.match(devices[n]).group(1)) for n in gpu_cols}  # type: ignore[union-attr]
    nic_cols = [n for n in range(len(devices)) if n not in gpu_index]
    return _Header(start + 1, devices, columns, gpu_cols, gpu_index, nic_cols)


def _check_row_cells(label: str, pos: int, cells: list[str], devices: list[str], lineno: int) -> None:
    """One matrix row's link cells: one per device column, ``X`` on the diagonal, links elsewhere."""
    ndev = len(devices)
    nlinks = next((k for k, t in enumerate(cells) if t != "X" and parse_cell(t) is None), len(cells))
    if nlinks < ndev and (nlinks == len(cells) or _CPULIST.match(cells[nlinks]) or cells[nlinks] in _NA):
        # the row ran out of link cells (what follows is affinity): a cell is missing, not misspelt
        raise _err(
            lineno,
            f"row {label} has {nlinks} link cells, expected {ndev} "
            f"(one per column {devices[0]}..{devices[-1]})",
        )
    for c, cell in enumerate(cells):
        if c == pos:
            if cell != "X":
                raise _err(lineno, f"row {label}: expected the self cell X in column {label}, got {cell!r}")
        elif parse_cell(cell) is None:
            raise _err(
                lineno,
                f"row {label}, column {devices[c]}: {cell!r} is not a link "
                "(expected X, NV<n>, PIX, PXB, PHB, NODE or SYS)",
            )


_Rows = dict[int, tuple[int, list[str], list[str]]]  # column position -> (lineno, link cells, tail)


def _read_rows(lines: list[str], h: _Header) -> tuple[_Rows, int]:
    """The matrix rows after the header, up to a blank line or the legend (whose index is returned)."""
    devices, ndev = h.devices, len(h.devices)
    rows: _Rows = {}
    end = len(lines)
    for n in range(h.lineno, len(lines)):
        tokens = lines[n].split()
        if not tokens or tokens[0].rstrip(":") in ("Legend", "NIC"):
            end = n
            break
        label = tokens[0]
        if label not in devices:
            raise _err(
                n + 1, f"expected a matrix row starting with one of {', '.join(devices)}, got {label!r}"
            )
        pos = devices.index(label)
        if pos in rows:
            raise _err(n + 1, f"row {label} appears twice")
        cells = tokens[1 : 1 + ndev]
        _check_row_cells(label, pos, cells, devices, n + 1)
        rows[pos] = (n + 1, cells, tokens[1 + ndev :])
    missing = [devices[c] for c in h.gpu_cols if c not in rows]
    if missing:
        raise _err(end + 1, f"no matrix row for {', '.join(missing)}; the matrix looks truncated")
    return rows, end


def _gpu_affinity(h: _Header, c: int, lineno: int, tail: list[str]) -> TopoGpu:
    """GPU column ``c``'s affinity values, right-aligned onto the printed affinity columns."""
    columns = h.columns
    if len(tail) > len(columns):
        raise _err(
            lineno,
            f"row {h.devices[c]} has {len(tail)} values after the link cells, expected at "
            f"most {len(columns)} ({', '.join(columns) or 'none'})",
        )
    values = dict(zip(columns[len(columns) - len(tail) :], tail, strict=True))
    cpu = values.get("CPU Affinity")
    if cpu is not None and cpu not in _NA and not _CPULIST.match(cpu):
        raise _err(lineno, f"CPU Affinity {cpu!r} is not a CPU list such as 0-23,48-71")
    return TopoGpu(
        index=h.gpu_index[c],
        cpu_affinity=None if cpu in _NA else cpu,
        numa_node=_numa(values.get("NUMA Affinity", ""), lineno, "NUMA Affinity"),
        gpu_numa_id=_numa(values.get("GPU NUMA ID", ""), lineno, "GPU NUMA ID"),
    )


def _add_links(matrix: TopoMatrix, h: _Header, rows: _Rows) -> None:
    """GPU-GPU links (the matrix must be symmetric) and GPU-NIC links into ``matrix``."""
    devices, gpu_index = h.devices, h.gpu_index
    for a in h.gpu_cols:
        la, cells_a, _ = rows[a]
        for b in h.gpu_cols:
            if b <= a:
                continue
            cell = parse_cell(cells_a[b])[0]  # type: ignore[index]
            back = parse_cell(rows[b][1][a])[0]  # type: ignore[index]
            if cell != back:
                raise _err(
                    rows[b][0],
                    f"matrix is not symmetric: {devices[a]}->{devices[b]} is {cell} on "
                    f"line {la} but {devices[b]}->{devices[a]} is {back}",
                )
            i, j = sorted((gpu_index[a], gpu_index[b]))
            matrix.gpu_links[(i, j)] = cell
        for k, nc in enumerate(h.nic_cols):
            matrix.gpu_nic_links[(gpu_index[a], k)] = parse_cell(cells_a[nc])[0]  # type: ignore[index]


def parse_topo_matrix(text: str) -> TopoMatrix:
    """Parse the matrix (and NIC legend) of ``nvidia-smi topo -m``; errors name the line and the fix."""
    lines = text.splitlines()
    h = _find_header(lines)
    rows, end = _read_rows(lines, h)
    gpus = [_gpu_affinity(h, c, rows[c][0], rows[c][2]) for c in h.gpu_cols]
    if sorted(g.index for g in gpus) != list(range(len(gpus))):
        raise _err(h.lineno, "GPU columns must be GPU0..GPU<n-1> without gaps")
    matrix = TopoMatrix(
        gpus=sorted(gpus, key=lambda g: g.index),
        nics=[h.devices[c] for c in h.nic_cols],
        columns=tuple(h.columns),
    )
    _add_links(matrix, h, rows)
    legend = {}
    for line in lines[end:]:
        m = _NIC_LEGEND.match(line)
        if m:
            legend[m.group(1)] = m.group(2)
    matrix.nics = [legend.get(name, name) for name in matrix.nics]
    return matrix


@dataclass
class QueryGpu:
    index: int
    name: str
    memory_mib: float | None
    power_limit_w: float | None
    pci_bus_id: str | None


QUERY_FIELDS = "index,name,memory.total,power.limit,pci.bus_id"
_QUERY_LINE = re.compile(r"^\s*\d+\s*,")


def _num(value: str, lineno: int, what: str) -> float | None:
    value = value.strip()
    if value in _NA:
        return None
    try:
        return float(value.split()[0])  # tolerate a unit left in ("81559 MiB") when nounits was forgotten
    except ValueError:
        raise LlmplanError(
            f"nvidia-smi --query-gpu CSV, line {lineno}: {what} {value!r} is not a number "
            f"or [N/A]; run nvidia-smi --query-gpu={QUERY_FIELDS} "
            "--format=csv,noheader,nounits"
        ) from None


def parse_query_gpu(text: str) -> list[QueryGpu]:
    """Parse ``--query-gpu=index,name,memory.total,power.limit,pci.bus_id --format=csv,noheader,nounits``.

    Lines that do not start with ``<index>,`` (a header, a topo matrix in the same file) are skipped.
    """
    out: list[QueryGpu] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not _QUERY_LINE.match(line):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5:
            raise LlmplanError(
                f"nvidia-smi --query-gpu CSV, line {n}: {len(parts)} fields, expected 5 "
                f"({QUERY_FIELDS}); run nvidia-smi --query-gpu={QUERY_FIELDS} "
                "--format=csv,noheader,nounits"
            )
        name = ",".join(parts[1:-3]).strip()  # a name with a comma in it keeps it
        bus = parts[-1]
        out.append(
            QueryGpu(
                int(parts[0]),
                name,
                _num(parts[-3], n, "memory.total"),
                _num(parts[-2], n, "power.limit"),
                None if bus in _NA else bus,
            )
        )
    return out
