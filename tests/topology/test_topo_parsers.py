"""Malformed `topo -m` / `--query-gpu` input fails with the line number and what was expected."""

from __future__ import annotations

import pytest

from llmplan.errors import LlmplanError
from llmplan.topology.smi import parse_query_gpu, parse_topo_matrix

GOOD = """\
\tGPU0\tGPU1\tGPU2\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID
GPU0\t X \tNV4\tSYS\t0-15\t0\t\tN/A
GPU1\tNV4\t X \tSYS\t0-15\t0\t\tN/A
GPU2\tSYS\tSYS\t X \t16-31\t1\t\tN/A
"""


def _bad(text: str) -> str:
    with pytest.raises(LlmplanError) as exc:
        parse_topo_matrix(text)
    return str(exc.value)


def test_good_matrix_parses():
    m = parse_topo_matrix(GOOD)
    assert m.gpu_links == {(0, 1): "NV4", (0, 2): "SYS", (1, 2): "SYS"}
    assert [g.numa_node for g in m.gpus] == [0, 0, 1]


def test_soc_from_old_drivers_reads_as_sys():
    assert parse_topo_matrix(GOOD.replace("SYS", "SOC")).gpu_links[(0, 2)] == "SYS"


def test_not_a_matrix():
    msg = _bad("\n\nNVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver\n")
    assert "line 3" in msg and "header" in msg


def test_short_row_names_line_and_expected_count():
    msg = _bad(GOOD.replace("GPU1\tNV4\t X \tSYS", "GPU1\tNV4\t X "))
    assert "line 3" in msg and "expected 3" in msg


def test_unknown_cell():
    msg = _bad(GOOD.replace("GPU2\tSYS\tSYS", "GPU2\tSYS\tQPI"))
    assert "line 4" in msg and "'QPI'" in msg and "NV<n>" in msg


def test_self_cell_must_be_x():
    msg = _bad(GOOD.replace("GPU1\tNV4\t X ", "GPU1\tNV4\tPIX"))
    assert "line 3" in msg and "self cell X" in msg


def test_asymmetric_matrix():
    msg = _bad(GOOD.replace("GPU2\tSYS\tSYS", "GPU2\tSYS\tPHB"))
    assert "line 4" in msg and "not symmetric" in msg


def test_truncated_matrix():
    msg = _bad("\n".join(GOOD.splitlines()[:3]) + "\n")
    assert "no matrix row for GPU2" in msg and "line 4" in msg


def test_unknown_row_label():
    msg = _bad(GOOD + "mlx5_0\tPIX\tPIX\tSYS\t X\n")
    assert "line 5" in msg and "mlx5_0" in msg


def test_bad_numa_value():
    msg = _bad(GOOD.replace("16-31\t1", "16-31\tone"))
    assert "line 4" in msg and "NUMA" in msg


def test_too_many_affinity_values():
    msg = _bad(GOOD.replace("0-15\t0\t\tN/A", "0-15\t0\t\tN/A\t7", 1))
    assert "line 2" in msg and "at most 3" in msg


def test_unknown_header_column():
    msg = _bad(GOOD.replace("GPU NUMA ID", "Magic Column"))
    assert "line 1" in msg and "Magic Column" in msg


QUERY = """\
0, NVIDIA H100 80GB HBM3, 81559, 700.00, 00000000:19:00.0
1, NVIDIA GB10, [N/A], [N/A], 0000000F:01:00.0
"""


def test_query_gpu_accepts_na():
    rows = parse_query_gpu(QUERY)
    assert (
        rows[0].name == "NVIDIA H100 80GB HBM3"
        and rows[0].memory_mib == 81559
        and rows[0].power_limit_w == 700
    )
    assert (
        rows[1].memory_mib is None
        and rows[1].power_limit_w is None
        and rows[1].pci_bus_id == "0000000F:01:00.0"
    )


def test_query_gpu_bad_number_names_line():
    with pytest.raises(LlmplanError, match="line 2: memory.total 'lots'"):
        parse_query_gpu(QUERY.replace("[N/A], [N/A]", "lots, 5"))


def test_query_gpu_too_few_fields():
    with pytest.raises(LlmplanError, match="line 1: 3 fields, expected 5"):
        parse_query_gpu("0, NVIDIA L4, 23034\n")


def test_header_without_leading_tab():
    text = "GPU0\tGPU1\tCPU Affinity\tNUMA Affinity\nGPU0\t X \tPIX\t0-7\t0\nGPU1\tPIX\t X \t0-7\t0\n"
    m = parse_topo_matrix(text)
    assert len(m.gpus) == 2 and m.gpu_links == {(0, 1): "PIX"} and m.gpus[1].cpu_affinity == "0-7"


def test_preamble_before_the_matrix_is_skipped():
    m = parse_topo_matrix("GPU Topology:\n" + GOOD)
    assert len(m.gpus) == 3
