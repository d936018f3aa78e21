from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the specs as JSON.")
def targets(as_json):
    """Known device targets: memory, bandwidth, CPU, accelerator, power sensor (with sources in --json)."""
    from edgekit.targets.specs import SPECS

    if as_json:
        click.echo(json.dumps([s.to_dict() for s in SPECS.values()], indent=2))
        return
    from rich.table import Table

    from edgekit.cli._progress import stdout_console

    table = Table()
    for col in ("target", "RAM GB", "bandwidth GB/s", "CPU", "accelerator", "power sensor"):
        table.add_column(col)
    for s in SPECS.values():
        table.add_row(s.name, "-" if s.ram_gb is None else f"{s.ram_gb:g}",
                      "measured" if s.bandwidth_gb_s is None else f"{s.bandwidth_gb_s:g}", s.cpu, s.accelerator,
                      s.power_sensor or "-")
    stdout_console().print(table)


@click.command()
@click.option("--record", type=click.Path(path_type=Path), help="Store each fact command's raw output here.")
@click.option("--json", "as_json", is_flag=True)
def probe(record, as_json):
    """Detect the target this machine is and print its facts (--record keeps them as fixtures)."""
    from edgekit.probe import probe as run_probe

    result = run_probe(record=record)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"target: {result['target']} ({result['family']}) via {result['transport']}")
    for k, v in result["detected"].items():
        click.echo(f"  {k}: {v}")
    if record:
        click.echo(f"recorded {len(result['facts_recorded'])} fact(s) in {record}")
