from __future__ import annotations

from pathlib import Path

import click

from edgekit import options
from edgekit.cli._progress import progress_bars
from edgekit.synth import PRESETS, synthesize


@click.command(help="Write a Hugging Face checkpoint with random seeded weights.\n\n"
                    f"PRESET ({options.listed(options.SYNTH_PRESETS)}) gives the exact shapes of a real model "
                    "or a small one for tests and demos; --list describes each.")
@click.argument("preset", required=False)
@click.argument("out_dir", required=False, type=click.Path(path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Seed for the random weights.")
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists.")
@click.option("--list", "list_presets", is_flag=True, help="List the presets and exit.")
def synth(preset, out_dir, seed, force, list_presets):
    """Write a Hugging Face checkpoint with random seeded weights of PRESET (edgekit.synth.PRESETS) to OUT_DIR."""
    if list_presets or not preset:
        for p in PRESETS.values():
            click.echo(f"{p.name:24s} {p.description}")
        if not list_presets:
            raise click.UsageError("give a PRESET and an OUT_DIR")
        return
    if out_dir is None:
        raise click.UsageError("give an OUT_DIR")

    with progress_bars() as report:
        summary = synthesize(preset, out_dir, seed=seed, force=force, progress=report)
    click.echo(f"wrote {summary['path']}: {summary['n_params'] / 1e6:.1f}M params, "
               f"{summary['bytes'] / 1e9:.2f} GB in {summary['shards']} file(s), "
               f"tokenizer {summary['tokenizer_tokens']} tokens, vocab_size {summary['vocab_size']}")

