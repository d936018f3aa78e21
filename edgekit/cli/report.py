from __future__ import annotations

from pathlib import Path

import click

from edgekit import options
from edgekit.atomic import check_output_file
from edgekit.cli._progress import stdout_console
from edgekit.report import (
    COLUMNS,
    REPRO_COLUMNS,
    device_name,
    label,
    load_results,
    reproducibility_rows,
    result_files,
    rows,
    write_report,
)
from edgekit.report import by_device as grouped


def results_table(results, by_device: bool = False):
    """The comparison table; `by_device`: grouped by device, with a device column, and a second
    table of what makes each number reproducible (power mode, clocks, throttling, runtime build,
    edgekit version): rich renders a list of tables in order."""
    from rich.table import Table

    if by_device:
        results = grouped(results)
    table = Table()
    for c in (["device"] if by_device else []) + COLUMNS:
        table.add_column(c, justify="left" if c in ("device", "artifact", "runtime", "target") else "right")
    for r, row in zip(results, rows(results)):
        table.add_row(*([device_name(r)] if by_device else []), *row)
    if not by_device:
        return table
    from rich.console import Group

    repro = Table(title="What each number ran on")
    for c in ["artifact", *REPRO_COLUMNS]:
        repro.add_column(c, overflow="fold", max_width=40 if c == "build" else None)
    for r, row in zip(results, reproducibility_rows(results)):
        repro.add_row(label(r), *row)
    return Group(table, repro)


@click.command()
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="report.html (table + plots) or report.md (table): the suffix picks the format "
                   f"({options.listed(options.REPORT_SUFFIXES)}).")
@click.option("--plan", "with_plan", is_flag=True,
              help="Add edgekit plan's predicted tg beside each measured one (efficiency fitted on the other results).")
def report(results, output, with_plan):
    """Compare RESULTS (JSON files from edgekit bench -o or edgekit eval -o, or folders such as
    results/ from edgekit bench --host) in a table and plots, grouped by device, with quality
    (perplexity, KL) beside speed where an eval of the same artifact is given."""
    files = result_files(list(results))
    check_output_file(output, inputs=tuple(files))
    path = write_report(files, output, with_plan)

    loaded, _evals = load_results(files)  # eval results fill the report's quality columns
    if loaded:
        stdout_console().print(results_table(loaded, by_device=len({r.host.hostname for r in loaded}) > 1))
    click.echo(f"wrote {path}")
