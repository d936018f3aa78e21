from __future__ import annotations

import json
import statistics
from pathlib import Path

import click

from edgekit import options
from edgekit.errors import EdgekitError
from edgekit.power.logs import parse_log


@click.group()
def power():
    """Power sensors: recompute figures from raw logs."""


@power.command("parse", help="Watts per reading from a raw LOGFILE of SENSOR "
                             f"({options.listed(options.POWER_LOG_SENSORS)}).")
@click.argument("sensor")
@click.argument("logfile", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print every reading as JSON.")
def parse(sensor, logfile, as_json):
    """Watts per reading from a raw LOGFILE of SENSOR (the help names options.POWER_LOG_SENSORS); an unknown
    SENSOR is one error line naming the known ones (edgekit.power.logs.parse_log)."""
    if logfile.is_dir():
        raise EdgekitError(f"{logfile} is a folder, not a log file", "pass the raw sensor log kept beside the results")
    if not logfile.is_file():
        raise EdgekitError(f"{logfile} does not exist", "pass the raw sensor log kept beside the results")
    watts = parse_log(sensor, logfile.read_bytes())
    summary = {"sensor": sensor, "readings": len(watts), "mean_w": statistics.fmean(watts),
               "min_w": min(watts), "max_w": max(watts)}
    if as_json:
        click.echo(json.dumps({**summary, "watts": watts}, indent=2))
    else:
        click.echo(f"{sensor}: {len(watts)} reading(s), mean {summary['mean_w']:.3f} W "
                   f"(min {summary['min_w']:.3f}, max {summary['max_w']:.3f})")
