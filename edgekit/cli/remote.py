from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli._ssh import ssh_options
from edgekit.device.facts import resolve_remote_dir
from edgekit.device.runs import fetch_runs
from edgekit.device.transport import open_transport
from edgekit.terminal import printable


@click.command()
@click.option("--host", required=True, help="user@host[:port], ssh://user@host:port, or a Host alias.")
@click.option("--remote-dir", default="~/.edgekit", show_default=True, help="The folder edgekit deploy used.")
@click.option("--results", "results_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("results"),
              show_default=True, help="Runs land in RESULTS/<host>/<artifact>/<UTC time>/.")
@ssh_options
def fetch(host, remote_dir, results_dir, ssh_options, ssh_config, accept_new_host_key):
    """Bring back every finished remote bench run not pulled yet (e.g. after a dropped connection)."""
    with open_transport(host, ssh_options, ssh_config, accept_new_host_key) as transport:
        fetched = fetch_runs(transport, resolve_remote_dir(transport, remote_dir), host=host, results=results_dir)
    folders, running = fetched.folders, fetched.running
    for f in folders:
        status = "result" if (f / "result.json").is_file() else "failed run (status.json says why)"
        click.echo(f"fetched {f} ({status})")
    if running:
        click.echo(f"still running on {printable(host, 100)}: {', '.join(running)} (fetch again when they end)")
    for name in fetched.refused:
        click.echo(f"warning: {printable(host, 100)} lists a run {name}, which is not a run id edgekit makes: "
                   "not fetched", err=True)
    if not folders and not running:
        click.echo(f"nothing to fetch from {printable(host, 100)}: every finished run is already here")
