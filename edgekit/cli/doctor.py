"""`edgekit doctor`: print what this install can do (edgekit.doctor), as a table or as JSON."""

from __future__ import annotations

import json

import click

from edgekit.cli._progress import stdout_console
from edgekit.doctor import run_doctor

STATUS_STYLE = {"ok": "green", "warn": "yellow", "missing": "red", "info": "dim"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help='Print one JSON object: {"checks", "warnings", "ok"}.')
def doctor(as_json):
    """What this install can do, one line each.

    Python, llama.cpp's build against this CPU (AMX, instruction sets it lacks), ONNX Runtime and its
    providers, export libraries, power sensors, SSH clients, the detected target. Problems are printed
    as `warning: <problem>; <fix>`; the exit code is 0 with warnings too (it is a report)."""
    report = run_doctor()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for col in ("check", "status", "detail"):
        table.add_column(col)
    for c in report.checks:  # Text, never markup: details come from outside (device names, versions)
        detail = c.detail + (f"; {c.fix}" if c.fix and c.status in ("warn", "missing") else "")
        table.add_row(Text(c.name), Text(c.status, style=STATUS_STYLE[c.status]), Text(detail))
    stdout_console().print(table)
    for line in warning_lines(report.warnings):
        click.echo(line)


def warning_lines(warnings: list[tuple[str, str]]) -> list[str]:
    """`warning: <problem>; <fix>`, one line each (whitespace folded)."""
    return [f"warning: {' '.join(problem.split())}; {' '.join(fix.split())}" for problem, fix in warnings]
