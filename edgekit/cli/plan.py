from __future__ import annotations

import json
from pathlib import Path

import click

from edgekit.cli._progress import stdout_console
from edgekit.converters.gguf import QUANT_TYPES
from edgekit.errors import EdgekitError
from edgekit.plan import QUANTS, TENSORRT_QUANTS, calibrate, resolve_models, resolve_targets, trained_context
from edgekit.plan import plan as make_plan


@click.command()
@click.argument("model")
@click.option("--target", default="all", show_default=True,
              help="A name from `edgekit targets`, all (every target with RAM and bandwidth), or local (this machine).")
@click.option("--quant", default="all", show_default=True,
              help="Q4_K_M, Q8_0, ONNX-INT4, F16 (comma-separated), any llama.cpp quant, TRT-FP16 or TRT-INT4 "
                   "(TensorRT engines: NVIDIA targets), or all (the first four).")
@click.option("--ctx", default=4096, show_default=True, help="Context the KV cache is sized for.")
@click.option("--prompt", default=512, show_default=True, help="Prompt tokens of the TTFT figure.")
@click.option("--results", "results_dir", type=click.Path(path_type=Path, exists=True),
              help="edgekit bench results (files or folders, e.g. results/): calibrate efficiency per target x "
                   "runtime and show measured beside predicted.")
@click.option("--json", "as_json", is_flag=True, help="Rows as JSON (stable order and rounding), for scripts.")
def plan(model, target, quant, ctx, prompt, results_dir, as_json):
    """What fits where and how fast: memory (weights per quant by llama.cpp's own quantizer, KV
    cache, overhead) against each target's usable memory, and predicted tokens/s from bandwidth.

    MODEL: r1 (the DeepSeek-R1 family: 1.5B, 7B, 8B, 14B, 32B, 70B distills and the 671B MoE, from
    their published configs), one of them (r1-distill-qwen-7b, ...), a checkpoint folder, or a hub id.
    """
    if ctx < 1 or prompt < 1:
        raise EdgekitError("--ctx and --prompt must be at least 1", "pass a positive number of tokens")

    quants = list(QUANTS) if quant == "all" else [q.strip() for q in quant.split(",") if q.strip()]
    for q in quants:
        if q not in QUANTS and q not in TENSORRT_QUANTS and q not in QUANT_TYPES:
            raise EdgekitError(f"unknown quantization '{q}'",
                               f"pass all, or some of {', '.join(QUANTS + TENSORRT_QUANTS)} or a llama.cpp type "
                               f"({', '.join(QUANT_TYPES)})")
    models = resolve_models(model)
    rows = make_plan(models, resolve_targets(target), quants, ctx=ctx, prompt=prompt, cal=calibrate(results_dir))
    for m in models:
        trained = trained_context(m)
        if trained and ctx > trained:
            click.echo(f"warning: --ctx {ctx} is beyond {m.name}'s trained context of {trained} tokens: its rows "
                       "size a KV cache no run of it could use", err=True)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2, sort_keys=True))
        return
    from rich.table import Table

    def gib(n):
        return "-" if n is None else f"{n / 2**30:.2f}"

    def num(x, spec):
        return "-" if x is None else format(x, spec)

    measured = any(r.measured_tg_tok_s for r in rows)
    table = Table(title=f"plan at ctx {ctx} (GiB; tok/s predicted)")
    cols = ["model", "quant", "target", "weights", "KV", "need", "usable", "fits", "tg tok/s", "pp tok/s",
            f"TTFT s ({prompt})", "J/token"] + (["measured tg", "error"] if measured else [])
    for c in cols:
        table.add_column(c, justify="left" if c in ("model", "quant", "target", "fits") else "right")
    for r in rows:
        table.add_row(r.model, r.quant, r.target, gib(r.weights_bytes), gib(r.kv_bytes), gib(r.need_bytes),
                      gib(r.usable_bytes), {True: "yes", False: "NO", None: "-"}[r.fits], num(r.tg_tok_s, ".1f"),
                      num(r.pp_tok_s, ".0f"), num(r.ttft_s, ".2f"), num(r.j_per_tok, ".3f"),
                      *([num(r.measured_tg_tok_s, ".1f"), num(r.error * 100 if r.error is not None else None, "+.0f")
                         + ("%" if r.error is not None else "")] if measured else []))
    console = stdout_console()
    console.print(table)
    notes: dict[str, None] = {}
    for r in rows:
        for k, v in r.sources.items():
            notes.setdefault(f"{k}: {v}", None)
    for n in notes:
        console.print(f"  {n}", markup=False, highlight=False)
