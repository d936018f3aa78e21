"""The SSH options every command that reaches a device shares (probe, deploy, bench --host,
fetch); edgekit.device.transport.open_transport turns them into an SSHTransport."""

from __future__ import annotations

from pathlib import Path

import click


def ssh_options(f):
    """--ssh-option, --ssh-config and --accept-new-host-key, in that order in --help."""
    f = click.option("--accept-new-host-key", is_flag=True,
                     help="Trust a device whose host key is not in known_hosts yet, and remember it "
                          "(StrictHostKeyChecking=accept-new). A changed key is always refused.")(f)
    f = click.option("--ssh-config", type=click.Path(path_type=Path, dir_okay=False),
                     help="An ssh_config file read instead of ~/.ssh/config (ssh -F), e.g. for Host aliases.")(f)
    f = click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE",
                     help="Extra ssh -o option, repeatable (e.g. Port=2222, IdentityFile=~/.ssh/pi).")(f)
    return f
