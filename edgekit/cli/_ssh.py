"""The SSH options every command that reaches a device shares (probe, deploy, bench --host,
fetch), and the one place a destination becomes an SSHTransport."""

from __future__ import annotations

import re
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


def parse_destination(text: str) -> tuple[str, list[str]]:
    """A --host value as (what ssh is given, the ssh options it implies): `user@host:port` and
    `[v6]:port` become the host and Port=port (ssh itself does not read `:port`); `ssh://...`, a
    Host alias, `user@host` and bare IPv6 addresses pass as they are. Pure."""
    if text.startswith("ssh://"):
        return text, []
    m = re.fullmatch(r"(?:([^@\s]+)@)?\[([0-9A-Fa-f:.%\w]+)\]:(\d+)", text)
    if m:
        user, host, port = m.groups()
        return (f"{user}@{host}" if user else host), [f"Port={port}"]
    user, at, hostport = text.rpartition("@")
    if hostport.count(":") == 1:
        host, port = hostport.split(":")
        if port.isdigit() and host:
            return f"{user}{at}{host}", [f"Port={port}"]
    return text, []


def open_transport(host: str, ssh_options=(), ssh_config: Path | None = None, accept_new_host_key: bool = False):
    """An SSHTransport to `host`: the port of a `host:port` destination first, then the user's
    options (ssh keeps the first value of each), then the host-key policy: unknown keys refused
    unless `accept_new_host_key`, changed keys always."""
    from edgekit.errors import EdgekitError
    from edgekit.transport import SSHTransport

    if ssh_config is not None and not Path(ssh_config).is_file():
        raise EdgekitError(f"--ssh-config {ssh_config} does not exist", "pass an ssh_config file")
    destination, implied = parse_destination(host)
    policy = "accept-new" if accept_new_host_key else "yes"
    # the port written into the destination is this host's own: it goes before --ssh-option's
    return SSHTransport(destination, [*implied, *ssh_options, f"StrictHostKeyChecking={policy}"],
                        config=str(ssh_config) if ssh_config else None)
