from __future__ import annotations

import json
from pathlib import Path

import click

from edgekit.atomic import check_output_dir
from edgekit.cli._progress import stdout_console
from edgekit.cli._ssh import ssh_options
from edgekit.device.probe import probe as run_probe
from edgekit.device.transport import RecordedTransport, open_transport
from edgekit.errors import EdgekitError
from edgekit.targets.specs import all_specs
from edgekit.targets.state import describe
from edgekit.terminal import printable  # the device (or recording) may say anything: escape codes too


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the specs as JSON.")
def targets(as_json):
    """Known device targets: memory, bandwidth, CPU, accelerator, power sensor (with sources in --json)."""
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in all_specs().values()], indent=2))
        return
    from rich.table import Table

    table = Table()
    for col in ("target", "RAM GB", "bandwidth GB/s", "CPU", "accelerator", "power sensor"):
        table.add_column(col)
    for s in all_specs().values():
        table.add_row(s.name, "-" if s.ram_gb is None else f"{s.ram_gb:g}",
                      "measured" if s.bandwidth_gb_s is None else f"{s.bandwidth_gb_s:g}", s.cpu, s.accelerator,
                      s.power_sensor or "-")
    stdout_console().print(table)


@click.command()
@click.option("--record", type=click.Path(path_type=Path),
              help="Store the raw output of every fact and state command here (fixture layout, commands.txt).")
@click.option("--force", is_flag=True, help="Replace an existing --record folder.")
@click.option("--replay", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Read the facts from a recording (another device's --record folder) instead of this machine.")
@click.option("--host", help="Probe a device over SSH: user@host[:port], a Host alias from ~/.ssh/config, or "
                             "ssh://user@host:port (key-based login; nothing is installed there).")
@ssh_options
@click.option("--json", "as_json", is_flag=True)
def probe(record, force, replay, host, ssh_options, ssh_config, accept_new_host_key, as_json):
    """Detect the target this machine is, print its facts and its clock/power-mode/thermal state
    (--record keeps the raw outputs, so a device's owner can contribute them as test fixtures)."""
    if record:
        check_output_dir(record, force)

    if host and replay:
        raise EdgekitError("--host and --replay both name where the facts come from", "pass one of them")
    if host is not None:  # --host '' is a mistake, not this machine
        with open_transport(host, ssh_options, ssh_config, accept_new_host_key) as transport:
            result = run_probe(transport, record=record, force=force)
    else:
        result = run_probe(RecordedTransport(replay) if replay else None, record=record, force=force)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return

    click.echo(f"target: {result['target']} ({result['family']}) via {printable(result['transport'])}")
    for k, v in result["detected"].items():
        click.echo(f"  {k}: {printable(v)}")
    if result["state"]:
        click.echo("state:")

        for k, v in result["state"].items():
            click.echo(f"  {k}: {printable(describe(k, v))}")
    for warning in result["warnings"]:
        click.echo(f"warning: {printable(warning)}")
    if record:
        click.echo(f"recorded {len(result['facts_recorded'])} fact(s) and {len(result['state_recorded'])} "
                   f"state output(s) in {record}")
