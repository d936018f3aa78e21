"""The live table of a fleet bench: each host's stage (edgekit.device.fleet's on_update)."""

from __future__ import annotations

import threading

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from edgekit.device.fleet import Host
from edgekit.terminal import printable


class FleetTable:
    """Each host's stage: a live rich table on a terminal (stderr), else one line per stage change
    on stdout."""

    def __init__(self, hosts: list[Host], live: bool):
        self.rows = {h.label: ("waiting", "") for h in hosts}
        self.lock = threading.Lock()
        self.live = None
        self.last: dict[str, str] = {}
        if live:
            self.live = Live(self._table(), console=Console(stderr=True, markup=False), refresh_per_second=4)
            self.live.start()

    def _table(self):
        t = Table(title="edgekit bench")
        t.add_column("host")
        t.add_column("stage")
        t.add_column("detail", overflow="ellipsis", no_wrap=True, max_width=80)
        for label, (stage, detail) in self.rows.items():
            style = "red" if stage == "failed" else "green" if stage == "done" else None
            t.add_row(printable(label, 60), stage, printable(detail, 200), style=style)
        return t

    def __call__(self, label: str, stage: str, detail: str) -> None:
        with self.lock:
            self.rows[label] = (stage, detail)
            if self.live is not None:
                self.live.update(self._table())
            elif self.last.get(label) != stage:
                self.last[label] = stage
                click.echo(printable(f"{label}: {stage} {detail}", 300))

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
