from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def export():
    """Export a Hugging Face checkpoint to a deployable format."""


@export.command("gguf")
@click.argument("checkpoint")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder: one GGUF per quantization plus manifest.json.")
@click.option("--quant", default="Q4_K_M", show_default=True,
              help="Comma-separated types in llama.cpp spelling: Q4_K_M, Q4_0, Q5_K_M, Q8_0, F16, BF16, ...")
@click.option("--verify/--no-verify", default=None,
              help="Check logits against transformers (F16) and KL vs F16 (quantized). "
                   "Default: on up to 3B parameters.")
@click.option("--threads", type=int, default=None, help="Threads for quantization and checks (default: all cores).")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def gguf(checkpoint, out_dir, quant, verify, threads, force, as_json):
    """Convert CHECKPOINT (a local folder or a hub id) to GGUF and quantize it."""
    from edgekit.cli._progress import progress_bars
    from edgekit.converters.gguf import export_gguf, parse_quants

    quants = parse_quants(quant)
    with progress_bars(not as_json) as report:
        manifest = export_gguf(checkpoint, out_dir, quants, verify=verify, threads=threads, force=force,
                               progress=report)
    if as_json:
        click.echo(json.dumps(manifest.model_dump(), indent=2))
        return
    from edgekit.cli._progress import stdout_console
    from rich.table import Table

    table = Table(title=f"{out_dir}  ({manifest.n_params / 1e6:.1f}M params, {manifest.architecture}, "
                        f"pre-tokenizer {manifest.tokenizer.get('tokenizer_pre')})")
    for col in ("file", "quant", "size", "seconds", "check"):
        table.add_column(col, justify="right" if col in ("size", "seconds") else "left")
    for f in manifest.files:
        table.add_row(f.file, f.quant, f"{f.size_bytes / 2**20:.1f} MiB", f"{f.seconds:.1f}", _check_text(f.verify))
    stdout_console().print(table)


def _check_text(v: dict | None) -> str:
    if not v:
        return "-"
    if "kl_mean" in v:
        return f"KL {v['kl_mean']:.2e} vs {v.get('vs', 'F16')}, top-1 {v['top1_agreement']:.0%}"
    return f"max|Δlogit| {v['max_abs_diff']:.2e}, top-1 {v['top1_agreement']:.0%}"

