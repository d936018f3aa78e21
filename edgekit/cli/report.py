from __future__ import annotations

from pathlib import Path

import click

from edgekit import options


def results_table(results, by_device: bool = False):
    """The comparison table; `by_device`: grouped by device, with what makes each number
    reproducible (power mode, clocks, throttling, runtime build, edgekit version) beside it."""
    from rich.table import Table

    from edgekit.report import COLUMNS, REPRO_COLUMNS, by_device as grouped, reproducibility_rows, rows

    table = Table()
    if by_device:
        results = grouped(results)
    for c in COLUMNS + (REPRO_COLUMNS if by_device else []):
        table.add_column(c, justify="left" if c in ("artifact", "runtime", "target", *REPRO_COLUMNS) else "right")
    extra = reproducibility_rows(results) if by_device else [[] for _ in results]
    for row, more in zip(rows(results), extra):
        table.add_row(*row, *more)
    return table


@click.command()
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="report.html (table + plots) or report.md (table): the suffix picks the format "
                   f"({options.listed(options.REPORT_SUFFIXES)}).")
def report(results, output):
    """Compare RESULTS (JSON files from edgekit bench -o, or folders such as results/ from
    edgekit bench --host) in a table and plots, grouped by device."""
    from edgekit.cli._progress import stdout_console

    from edgekit.report import write_report
    from edgekit.results import BenchResult

    from edgekit.atomic import check_output_file

    from edgekit.report import result_files

    files = result_files(list(results))
    check_output_file(output, inputs=tuple(files))
    path = write_report(files, output)
    loaded = [BenchResult.load(p) for p in files]
    stdout_console().print(results_table(loaded, by_device=len({r.host.hostname for r in loaded}) > 1))
    click.echo(f"wrote {path}")
