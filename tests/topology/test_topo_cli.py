"""`llmplan topology` through typer's CliRunner and one real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import networkx as nx
import pytest
from typer.testing import CliRunner

from llmplan.cli.app import app
from llmplan.errors import LlmplanError
from llmplan.topology import load_topology

runner = CliRunner()


def test_table_and_matrix_for_the_uellm_preset():
    r = runner.invoke(app, ["topology", "--source", "preset:4x-rtx3090"])
    assert r.exit_code == 0, r.output
    assert "NVIDIA GeForce RTX 3090" in r.output and "150/350" in r.output and "(x0.75)" in r.output
    assert "PIX 24" in r.output and "NODE 24" in r.output


def test_big_graph_is_summarised():
    r = runner.invoke(app, ["topology", "--source", "preset:dgx-h100-x8"])
    assert r.exit_code == 0, r.output
    assert "64 GPUs on 8 hosts" in r.output and "NET" in r.output
    assert "GPU63" not in r.output  # one host's matrix, not a 64x64 one


def test_json_loads_back_to_the_same_graph_with_caps(tmp_path):
    r = runner.invoke(
        app, ["topology", "-s", "preset:hetero-a100-l40s", "--power-cap", "GPU2=175W", "--json"]
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["schema"] == "llmplan.topology" and data["version"] == 1
    assert data["gpus"][2]["power_limit_w"] == 175.0 and data["gpus"][2]["compute_scale"] < 1
    path = tmp_path / "t.json"
    path.write_text(r.stdout)
    G = load_topology("preset:hetero-a100-l40s", power_caps={2: 175})
    assert nx.utils.graphs_equal(G, load_topology(f"file:{path}"))


def test_graphml_is_written_and_readable(tmp_path):
    out = tmp_path / "t.graphml"
    r = runner.invoke(app, ["topology", "-s", "preset:dgx-a100", "--graphml", str(out)])
    assert r.exit_code == 0, r.output
    H = nx.read_graphml(out)
    assert H.nodes["GPU0"]["model"] == "A100-SXM-80GB" and H.edges["GPU0", "GPU1"]["link"] == "NV12"
    assert "pci_bus_id" not in H.nodes["GPU0"]  # None is left out: GraphML has no null


def test_bad_power_cap_is_a_one_line_error():
    r = runner.invoke(app, ["topology", "-s", "preset:4x-rtx3090", "--power-cap", "0 250"])
    assert isinstance(r.exception, LlmplanError)
    assert "expected GPU=WATTS" in str(r.exception)


def test_unknown_model_warning_is_printed(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("\tGPU0\tGPU1\nGPU0\t X \tPIX\nGPU1\tPIX\t X \n")
    r = runner.invoke(app, ["topology", "-s", f"file:{f}"])
    assert r.exit_code == 0
    assert "warning:" in r.output and "--gpu-model" in r.output


@pytest.mark.timeout(120)
def test_subprocess_run_prints_the_table_without_torch_or_pandas():
    code = (
        "import sys; from llmplan.cli.app import main\n"
        "sys.argv = ['llmplan', 'topology', '--source', 'preset:4x-rtx3090']\n"
        "try:\n    main()\nfinally:\n"
        "    print('HEAVY:', sorted(m for m in ('torch', 'pandas') if m in sys.modules))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100)
    assert p.returncode == 0, p.stderr
    assert "GPU3" in p.stdout and "PIX 24" in p.stdout
    assert "HEAVY: []" in p.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-c",
            "from llmplan.cli.app import main; import sys; "
            "sys.argv=['llmplan','topology','--source','preset:nope']; main()",
        ],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert bad.returncode == 2 and "unknown preset 'nope'" in bad.stderr and len(bad.stderr.splitlines()) == 1
