"""`llmplan topology`: discover GPUs and links into a graph; print it, export JSON/GraphML."""

from __future__ import annotations

from pathlib import Path

import typer

from llmplan.cli._flags import POWER_CAP_HELP, POWER_CAP_METAVAR, parse_power_caps

HELP = """Discover GPUs and links (NVML, nvidia-smi, file or preset) into a graph.

Sources: [bold]auto[/] tries NVML, then nvidia-smi; [bold]nvml[/]; [bold]smi[/]
(`nvidia-smi topo -m` + `--query-gpu`); [bold]file:PATH[/] (a saved `nvidia-smi topo -m` output, optionally
followed by `nvidia-smi --query-gpu=index,name,memory.total,power.limit,pci.bus_id
--format=csv,noheader,nounits` lines; a --json export; a preset-format YAML; an NVML recording);
[bold]preset:NAME[/] (dgx-h100, dgx-a100, 8x-a100-pcie, 4x-rtx3090, 2x-rtx4090, hetero-a100-l40s,
dgx-h100-x8/x32/x64).

Examples:

  llmplan topology --source preset:4x-rtx3090

  llmplan topology --source preset:dgx-h100 --power-cap 0=350 --power-cap 1=350 --json > t.json

  llmplan topology --source file:t.json --graphml t.graphml
"""


def register(app: typer.Typer) -> None:
    @app.command("topology", help=HELP)
    def topology(
        source: str = typer.Option(
            "auto", "--source", "-s", help="auto | nvml | smi | file:PATH | preset:NAME"
        ),
        power_cap: list[str] = typer.Option(
            [], "--power-cap", metavar=POWER_CAP_METAVAR, help=POWER_CAP_HELP
        ),
        gpu_model: str | None = typer.Option(
            None,
            "--gpu-model",
            help="GPU model for sources that do not name it (a bare topo -m file), e.g. H100-SXM.",
        ),
        as_json: bool = typer.Option(
            False, "--json", help="Print the graph as JSON (schema llmplan.topology v1) instead of tables."
        ),
        graphml: Path | None = typer.Option(None, "--graphml", help="Also write the graph as GraphML."),
        record_nvml: Path | None = typer.Option(
            None,
            "--record-nvml",
            help="Save what NVML answered as a replayable recording (load it with --source file:PATH).",
        ),
    ) -> None:
        import warnings

        from llmplan.cli._common import console, err_console

        caps = parse_power_caps(power_cap)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from llmplan.topology import load_topology

            G = load_topology(source, caps or None, gpu_model=gpu_model)
            if record_nvml is not None:
                _record(record_nvml)
        for w in caught:
            err_console.print(f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)
        if graphml is not None:
            from llmplan.topology.serialize import write_graphml

            write_graphml(G, graphml)
        if as_json:
            import sys

            from llmplan.topology.serialize import dumps

            sys.stdout.write(dumps(G) + "\n")
            return
        from llmplan.topology.render import render

        render(G, console)
        if graphml is not None:
            console.print(f"wrote {graphml}")


def _record(path: Path) -> None:
    import json

    from llmplan.topology.nvml import PynvmlDevices, layout_from_nvml, record
    from llmplan.topology.sysfs import sysfs_nics

    dev = PynvmlDevices()
    try:
        data = record(dev)
        gpus = layout_from_nvml(dev).gpus
    finally:
        dev.close()
    names, links = sysfs_nics(gpus)
    data["nics"] = [
        {"name": n, "links": [links[(i, k)] for i in range(len(gpus))]} for k, n in enumerate(names)
    ]
    path.write_text(json.dumps(data, indent=1) + "\n")
