from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from edgekit.cli._progress import progress_bars, stdout_console
from edgekit.cli.report import results_table
from edgekit.demo import GEMMA_PROMPT, run_demo
from edgekit.results import BenchResult
from edgekit.terminal import printable


@click.command()
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), default=Path("demo-out"),
              show_default=True, help="Folder for the checkpoint, exports, results and report.")
@click.option("-p", "--n-prompt", default=128, show_default=True)
@click.option("-n", "--n-gen", default=32, show_default=True)
@click.option("-r", "--repetitions", default=3, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--force", is_flag=True, help="Replace the output folder if it exists and is not empty.")
def demo(out_dir, n_prompt, n_gen, repetitions, threads, force):
    """Offline end to end: synth a small Qwen2, export GGUF Q4_K_M + Q8_0 and ONNX INT4, bench, report."""
    with progress_bars() as report:
        outcome = run_demo(out_dir, n_prompt=n_prompt, n_gen=n_gen, repetitions=repetitions, threads=threads,
                           force=force, progress=report, say=lambda s: click.echo(s, err=True))
    console = stdout_console()
    console.print(results_table([BenchResult.load(p) for p in outcome.result_files]))
    if outcome.completion is not None:
        console.print(Text.assemble(("Gemma-3-270M Q4_K_M says:", "bold"), f" {GEMMA_PROMPT}",
                                    (printable(outcome.completion, 2000), "italic")))
    for note in outcome.notes:
        console.print(f"note: {note}")
    click.echo(f"report: {outcome.report.resolve()}")
