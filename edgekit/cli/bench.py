from __future__ import annotations

import json
from pathlib import Path

import click

from edgekit import options


@click.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("-p", "--n-prompt", default=512, show_default=True, help="Prompt tokens per pp test.")
@click.option("-n", "--n-gen", default=128, show_default=True, help="Generated tokens per tg test.")
@click.option("-r", "--repetitions", default=5, show_default=True, help="Repetitions of each test.")
@click.option("--threads", type=int, default=None,
              help="CPU threads. Default: the target's big cores, else the CPUs this process may use.")
@click.option("--gpu-layers", type=int, default=None,
              help="Layers offloaded to the GPU (99: all). Default: the target's (all on Jetson and Apple), else 0.")
@click.option("--ctx", default=0, help="Context size (default: what the run needs).")
@click.option("--batch", "n_batch", default=2048, show_default=True, help="Logical batch for prompt decoding.")
@click.option("--ubatch", "n_ubatch", default=512, show_default=True, help="Physical batch.")
@click.option("--flash-attn", type=click.Choice(options.FLASH_ATTN), default="auto", show_default=True,
              help="llama.cpp only.")
@click.option("--providers", default=None,
              help="ONNX only: execution providers in order, e.g. cuda,cpu or tensorrt,cuda,cpu "
                   f"({options.listed(options.PROVIDER_SHORT_NAMES)}, or ONNX Runtime's full names). "
                   "Default: the target's, filtered by what this onnxruntime build has.")
@click.option("--graph-opt", type=click.Choice(options.GRAPH_OPT_LEVELS), default="all",
              show_default=True, help="ONNX only: ONNX Runtime graph optimization level.")
@click.option("--power", default="auto", show_default=True,
              help=f"Power sensor: {options.listed(options.POWER_CHOICES)} (or an installed plugin's). auto: the "
                   "target's own sensor on an edge device, else NVML when the work runs on an NVIDIA GPU and RAPL "
                   "on the CPU. Without one the run completes and says why.")
@click.option("--target", default="auto", show_default=True,
              help="The device the run is on: a name from `edgekit targets` (its bandwidth sets the roofline) "
                   "or any label.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the result JSON here.")
@click.option("--format", "fmt", type=click.Choice(options.RESULT_FORMATS), default="edgekit",
              show_default=True, help="JSON layout of -o/--json: edgekit's schema or llama-bench's field names.")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON on stdout.")
def bench(artifact, n_prompt, n_gen, repetitions, threads, gpu_layers, ctx, n_batch, n_ubatch, flash_attn, providers,
          graph_opt, power, target, output, fmt, as_json):
    """Measure prompt processing, generation, TTFT, memory and power of ARTIFACT.

    ARTIFACT is a GGUF file (llama.cpp), an .onnx decoder (ONNX Runtime) or an edgekit export folder.
    """
    from edgekit import native
    from edgekit.bench import resolve_artifact
    from edgekit.cli._progress import progress_bars
    from edgekit.runners.onnxruntime import parse_providers

    from edgekit.settings import BenchSettings, LlamaCppOptions, OnnxRuntimeOptions

    path, artifact_fmt = resolve_artifact(artifact)
    settings = BenchSettings(  # sent whole to the run, here a child process (later a device)
        n_prompt=n_prompt, n_gen=n_gen, repetitions=repetitions, threads=threads, ctx=ctx, power=power,
        target=target,
        llama_cpp=LlamaCppOptions(gpu_layers=gpu_layers, n_batch=n_batch, n_ubatch=n_ubatch, flash_attn=flash_attn),
        onnxruntime=OnnxRuntimeOptions(providers=parse_providers(providers), graph_opt=graph_opt, n_batch=n_batch))
    if output:  # before minutes of work: never over the model, never a folder
        from edgekit.atomic import check_output_file

        check_output_file(output, inputs=(Path(artifact), path))
    runtime = "llama.cpp" if artifact_fmt == "gguf" else "ONNX Runtime"
    with progress_bars(not as_json) as report:
        # in a child: its peak RSS is the run's own, and a crash in the runtime is one error line
        result = native.call("edgekit.bench:bench_artifact", path, settings, fmt=artifact_fmt, library=runtime,
                             what=f"the benchmark of {path.name}", progress=report)
    text = json.dumps(result.to_llama_bench(), indent=2) if fmt == "llama-bench" else result.to_json()
    if output:
        from edgekit.atomic import atomic_file

        output.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(output) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
    if as_json:
        click.echo(text)
        return
    from edgekit.cli._progress import stdout_console
    from rich.table import Table

    from edgekit.report import COLUMNS, rows

    console = stdout_console()
    table = Table(show_header=False, title=f"{path.name} ({result.runtime.name} {result.runtime.backend}, "
                                           f"{result.settings.threads} threads)")
    for name, value in zip(COLUMNS[3:], rows([result])[0][3:]):
        table.add_row(name, value)
    table.add_row("load s", f"{result.metrics.load_s:.3f}")
    console.print(table)
    if result.power.source is None:
        console.print(f"power: none ({result.power.unavailable})")
    from edgekit.terminal import printable  # warnings quote the device's own state text

    for w in result.warnings:
        console.print(f"warning: {printable(w)}", markup=False)
    if output:
        console.print(f"wrote {output}")
