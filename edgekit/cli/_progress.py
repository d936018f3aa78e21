"""Rich progress bars for library callbacks of the form (label, done, total)."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def progress_bars(enabled: bool = True):
    from rich.console import Console

    console = Console(file=sys.stderr, markup=False)  # labels may come from a device
    if not enabled or not console.is_terminal:  # bars only on a terminal: a log or a pipe gets no blank lines
        yield None
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bars:  # the summary table replaces them
        tasks: dict[str, int] = {}

        def report(label: str, done: float, total: float) -> None:
            if label not in tasks:
                tasks[label] = bars.add_task(label, total=total or None)
            bars.update(tasks[label], completed=done, total=total or None)

        yield report


def stdout_console():
    """A rich console for tables: its real width on a terminal, 160 columns in logs and pipes.
    Markup is off: table cells and lines hold text from results and devices, and a `[link=...]`
    or `[red]` there must print as written (styles come as rich Text objects)."""
    from rich.console import Console

    console = Console(markup=False)
    return console if console.is_terminal else Console(width=160, markup=False)
