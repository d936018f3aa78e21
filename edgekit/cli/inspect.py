from __future__ import annotations

import json
from pathlib import Path

import click

from edgekit.cli._progress import stdout_console
from edgekit.inspect import inspect_artifact


@click.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
def inspect_cmd(path, as_json):
    """Show architecture, parameters, quantization, size and tokenizer facts of PATH.

    PATH is a GGUF file or an edgekit export folder.
    """
    facts = inspect_artifact(path)
    if as_json:
        click.echo(json.dumps(facts, indent=2, default=str))
        return
    from rich.table import Table

    table = Table(show_header=False, title=str(path))
    table.add_column("fact", style="bold")
    table.add_column("value")
    for key, value in _flatten(facts):
        table.add_row(key, value)
    stdout_console().print(table)


def _flatten(facts: dict, prefix: str = ""):
    for key, value in facts.items():
        if isinstance(value, dict) and value and key != "tensor_types":
            yield from _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    yield from _flatten({k: v for k, v in item.items() if k != "verify"}, f"{prefix}{key}[{i}].")
                else:
                    yield f"{prefix}{key}[{i}]", str(item)
        else:
            yield f"{prefix}{key}", str(value)
