from __future__ import annotations

from pathlib import Path

import click

from edgekit import options


def results_table(results):
    from rich.table import Table

    from edgekit.report import COLUMNS, rows

    table = Table()
    for c in COLUMNS:
        table.add_column(c, justify="left" if c in ("artifact", "runtime", "target") else "right")
    for row in rows(results):
        table.add_row(*row)
    return table


@click.command()
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="report.html (table + plots) or report.md (table): the suffix picks the format "
                   f"({options.listed(options.REPORT_SUFFIXES)}).")
def report(results, output):
    """Compare RESULTS (JSON files from edgekit bench -o) in a table and plots."""
    from edgekit.cli._progress import stdout_console

    from edgekit.report import write_report
    from edgekit.results import BenchResult

    from edgekit.atomic import check_output_file

    check_output_file(output, inputs=tuple(results))
    path = write_report(list(results), output)
    stdout_console().print(results_table([BenchResult.load(p) for p in results]))
    click.echo(f"wrote {path}")
