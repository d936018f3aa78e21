from __future__ import annotations

import json
from pathlib import Path

import click

from edgekit import options
from edgekit.cli._progress import progress_bars, stdout_console
from edgekit.cli._ssh import ssh_options
from edgekit.cli.deploy import StageLines
from edgekit.converters.gguf import export_gguf, parse_quants
from edgekit.converters.onnx import export_onnx
from edgekit.converters.onnx_int4 import Int4Options
from edgekit.converters.tensorrt_export import export_tensorrt
from edgekit.device.deploy import DeployOptions
from edgekit.device.tensorrt_remote import build_edgellm_on_device, build_on_device
from edgekit.device.transport import open_transport
from edgekit.errors import EdgekitError


@click.group()
def export():
    """Export a Hugging Face checkpoint to a deployable format."""


@export.command("gguf")
@click.argument("checkpoint")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder: one GGUF per quantization plus manifest.json.")
@click.option("--quant", default="Q4_K_M", show_default=True,
              help=f"Comma-separated types in llama.cpp spelling: {options.listed(options.GGUF_QUANTS)}.")
@click.option("--verify/--no-verify", default=None,
              help="Check logits against transformers (F16) and KL vs F16 (quantized). "
                   "Default: on up to 3B parameters.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for quantization and checks (default: all cores).")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def gguf(checkpoint, out_dir, quant, verify, threads, force, as_json):
    """Convert CHECKPOINT (a local folder or a hub id) to GGUF and quantize it."""
    quants = parse_quants(quant)
    with progress_bars(not as_json) as report:
        manifest = export_gguf(checkpoint, out_dir, quants, verify=verify, threads=threads, force=force,
                               progress=report)
    if as_json:
        click.echo(json.dumps(manifest.model_dump(), indent=2))
        return
    _print_files(manifest, f"{out_dir}  ({manifest.n_params / 1e6:.1f}M params, {manifest.architecture}, "
                           f"pre-tokenizer {manifest.tokenizer.get('tokenizer_pre')})")


@export.command("onnx")
@click.argument("checkpoint")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder: model.onnx (the graph), model.onnx_data (the weights), genai_config.json, "
                   "tokenizer files, manifest.json. It loads in onnxruntime-genai unchanged.")
@click.option("--precision", type=click.Choice(options.ONNX_PRECISIONS), default="int4", show_default=True,
              help="fp32: exact, 4 bytes/weight. fp16: half the size, for GPU providers (CPU runs it slowly). "
                   "int4: MatMul weights packed to 4 bits (MatMulNBits), ~1/7 of fp32, activations fp32.")
@click.option("--block-size", type=int, default=32, show_default=True,
              help="INT4: weights per scale. Smaller blocks track the weights closer but add scale bytes "
                   "(32: 0.5 extra bit/weight; 128: 0.125).")
@click.option("--symmetric/--asymmetric", default=True, show_default=True,
              help="INT4: symmetric blocks need no zero point (smaller, faster); asymmetric ones fit "
                   "skewed blocks better.")
@click.option("--accuracy-level", type=click.IntRange(0, 4), default=4, show_default=True,
              help="INT4 compute type of CPU kernels: 4 quantizes activations to int8 per block (fastest), "
                   "1 keeps fp32 (exact dequantized math, slower), 2 fp16, 3 bf16, 0 the provider's default. "
                   "GPU providers ignore it.")
@click.option("--quantize-embedding", is_flag=True,
              help="INT4: also pack the token embedding (GatherBlockQuantized, opset 21): much smaller files "
                   "for large vocabularies; needs onnxruntime >= 1.20 on the device.")
@click.option("--verify/--no-verify", default=None,
              help="fp32/fp16: logits vs transformers. int4: vs a dequantized-weights reference, KL vs the fp32 "
                   "graph. Default: on up to 3B parameters.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for the checks (default: all cores).")
@click.option("--logits", type=click.Choice(options.ONNX_LOGITS), default="last", show_default=True,
              help="last: the lm_head sees only the last position (as llama.cpp computes it): less prompt work "
                   "and no n x vocab buffer; all: logits for every position (perplexity, scoring).")
@click.option("--fuse", is_flag=True,
              help="Run ONNX Runtime's transformer optimizer: rotary embeddings and residual+RMSNorm become "
                   "RotaryEmbedding / SkipSimplifiedLayerNormalization contrib ops (fewer, larger kernels, and "
                   "cos/sin tables for the whole context in the file; the speed-up measured: docs/benchmarks.md). "
                   "The file then needs ONNX Runtime (CPU, CUDA), not TensorRT's parser; the checks run on the "
                   "fused graph.")
@click.option("--method", type=click.Choice(options.ONNX_METHODS), default="stream", show_default=True,
              help="stream: trace one block on a small template of the model, assemble every layer and stream "
                   "the weights one tensor at a time (peak RAM: about 2-3x the largest tensor, 7B/8B fit in 8 GB). "
                   "trace: optimum-onnx's trace of the whole model (about 2.1x the FP32 weights). Both write the "
                   "same graph, name for name.")
@click.option("--memory-check/--no-memory-check", default=True, show_default=True,
              help="Refuse up front when the export's estimated peak RAM is more than is available (stream: "
                   "1.5 GB + 2-3 copies of the largest tensor; trace: 2.1x the FP32 weights, 2.3x the FP16 ones; "
                   "where those come from: docs/benchmarks.md).")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def onnx_cmd(checkpoint, out_dir, precision, block_size, symmetric, accuracy_level, quantize_embedding, verify,
             threads, logits, fuse, method, memory_check, force, as_json):
    """Export CHECKPOINT (a local folder or a hub id) to an ONNX decoder with KV cache."""
    opts = Int4Options(block_size=block_size, symmetric=symmetric, accuracy_level=accuracy_level,
                       quantize_embedding=quantize_embedding)
    with progress_bars(not as_json) as report:
        manifest = export_onnx(checkpoint, out_dir, precision, opts, verify=verify, threads=threads, force=force,
                               memory_check=memory_check, logits=logits, fuse=fuse, progress=report, method=method)
    if as_json:
        click.echo(json.dumps(manifest.model_dump(), indent=2))
        return
    _print_files(manifest, f"{out_dir}  ({manifest.n_params / 1e6:.1f}M params, {manifest.architecture}, "
                           f"ONNX opset {manifest.opset})")


def _print_files(manifest, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("file", "quant", "size", "seconds", "check"):
        table.add_column(col, justify="right" if col in ("size", "seconds") else "left")
    for f in manifest.files:
        table.add_row(f.file, f.quant, f"{f.size_bytes / 2**20:.1f} MiB", f"{f.seconds:.1f}", _check_text(f.verify))
    stdout_console().print(table)


def _check_text(v: dict | None) -> str:
    if not v:
        return "-"
    if "vs_dequantized" in v:
        d, q = v["vs_dequantized"], v["vs_fp32"]
        return (f"vs dequantized {d['rel_p999_diff']:.1e}x std, KL {q['kl_mean']:.2e} vs F32, "
                f"top-1 {q['top1_agreement']:.0%}")
    if "kl_mean" in v:
        return f"KL {v['kl_mean']:.2e} vs {v.get('vs', 'F16')}, top-1 {v['top1_agreement']:.0%}"
    return f"max|Δlogit| {v['max_abs_diff']:.2e}, top-1 {v['top1_agreement']:.0%}"


@export.command("tensorrt")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder: model.engine, manifest.json (what the engine is bound to, its profiles, the "
                   "source ONNX's sha256), genai_config.json and the tokenizer, build.log.")
@click.option("--precision", type=click.Choice(options.TENSORRT_PRECISIONS), default="int4", show_default=True,
              help="fp16: from an FP16 ONNX export. int4: weight-only INT4 (blocked INT4 DequantizeLinear, "
                   "symmetric), FP16 activations; an FP16 export is quantized to that form first.")
@click.option("--max-prompt", type=click.IntRange(1), default=512, show_default=True,
              help="Longest prompt of the prefill profile (tokens).")
@click.option("--max-context", type=click.IntRange(2), default=4096, show_default=True,
              help="Longest context of the decode profile: the engine never runs beyond it.")
@click.option("--engine", "engine_kind", type=click.Choice(("generic", "edgellm")), default="generic",
              show_default=True,
              help="generic: TensorRT's own engine of edgekit's ONNX export, run by edgekit's TensorRT runner. "
                   "edgellm: TensorRT Edge-LLM's (NVIDIA's LLM runtime for Jetson): the checkpoint is exported "
                   "here by Edge-LLM's exporter (in a venv edgekit makes and keeps), built on the device by its "
                   "llm_build (--on) and benched by its llm_bench.")
@click.option("--builder", type=click.Choice(options.TENSORRT_BUILDERS), default="tensorrt", show_default=True,
              help="tensorrt: this machine's TensorRT, for its own GPU. tensorrt-rtx: TensorRT-RTX, which builds "
                   "without a GPU for RTX GPUs (--sm); it cannot build for a Jetson.")
@click.option("--sm", "target_sm", metavar="SM86",
              help="tensorrt-rtx: the GPU architecture to build for (SM75, SM80, SM86, SM89, SM120; default SM80).")
@click.option("--workspace", "workspace_mib", type=click.IntRange(1), metavar="MIB",
              help="The builder's workspace limit (default: TensorRT's).")
@click.option("--block-size", type=int, default=32, show_default=True, help="INT4: weights per scale.")
@click.option("--on", "host", metavar="DEST",
              help="Build on this device over SSH (user@host[:port] or a Host alias), with its trtexec: the graph "
                   "is sent with deploy (no runtime installed), the engine stays in the device's cache, OUT gets "
                   "its manifest. Deploy's --remote-dir, --python and --wheels apply.")
@click.option("--remote-dir", default="~/.edgekit", show_default=True, help="With --on: edgekit's folder there.")
@click.option("--target", "device_target", default="auto", show_default=True,
              help="With --on: the device, as `edgekit targets` names it (auto: detected).")
@click.option("--python", "device_python", metavar="PATH|NAME", help="With --on: the device Python for the venv.")
@click.option("--wheels", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="With --on: an offline device's wheels (pip --no-index).")
@click.option("--build-timeout", "build_timeout_s", type=float, default=3 * 3600.0, show_default=True,
              help="With --on: seconds the device's trtexec or llm_build may take.")
@click.option("--no-memory-check", is_flag=True,
              help="With --on: build even where the device's RAM looks too small for the build (plan's rule).")
@ssh_options
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def tensorrt_cmd(source, out_dir, precision, max_prompt, max_context, engine_kind, builder, target_sm, workspace_mib,
                 block_size, host, remote_dir, device_target, device_python, wheels, build_timeout_s, no_memory_check, ssh_options,
                 ssh_config, accept_new_host_key, force, as_json):
    """Build a TensorRT engine from SOURCE: an ONNX export folder (edgekit export onnx --precision fp16) or a
    checkpoint (exported to FP16 ONNX first). Two optimisation profiles from the model's own dims: prefill (a
    prompt of 1..--max-prompt tokens) and decode (one token, a cache of 0..--max-context-1). An engine runs
    only on the GPU and TensorRT version that built it: the manifest says which. With --engine edgellm, SOURCE is
    a checkpoint (or Edge-LLM's ONNX of one) and the engine is built on the device (--on)."""
    if engine_kind == "edgellm" and host is None:
        raise EdgekitError("an Edge-LLM engine is built by Edge-LLM's llm_build on the device it will run on",
                           "pass --on DEST (on the Jetson itself: --on localhost)")
    if host is not None:
        manifest = _tensorrt_on(host, source, out_dir, precision, max_prompt, max_context, workspace_mib, block_size,
                                remote_dir, device_target, device_python, wheels, build_timeout_s, ssh_options, ssh_config,
                                accept_new_host_key, force, as_json, engine_kind, not no_memory_check)
    else:
        with progress_bars(not as_json) as report:
            manifest = export_tensorrt(source, out_dir, precision, max_prompt=max_prompt, max_context=max_context,
                                       builder=builder, target_sm=target_sm, workspace_mib=workspace_mib,
                                       block_size=block_size, force=force, progress=report)
    if as_json:
        click.echo(json.dumps(manifest.model_dump(), indent=2))
        return
    _print_files(manifest, f"{out_dir}  ({manifest.n_params / 1e6:.1f}M params, {manifest.architecture}, "
                           f"{manifest.engine.builder})")
    stdout_console().print(f"this engine {manifest.engine.runs_only_on}")


def _tensorrt_on(host, source, out_dir, precision, max_prompt, max_context, workspace_mib, block_size, remote_dir,
                 device_target, device_python, wheels, build_timeout_s, ssh_options, ssh_config, accept_new_host_key, force, as_json,
                 engine_kind="generic", memory_check=True):
    lines = StageLines(host, quiet=as_json)
    options = DeployOptions(remote_dir=remote_dir, python=device_python, wheels=wheels, ctx=max_context,
                            target=device_target)
    try:
        with open_transport(host, ssh_options, ssh_config, accept_new_host_key) as transport:
            if engine_kind == "edgellm":
                with progress_bars(not as_json) as report:
                    manifest, cached = build_edgellm_on_device(
                        transport, host, source, out_dir, precision, max_prompt=max_prompt, max_context=max_context,
                        deploy_options=options, force=force, timeout_s=build_timeout_s, stage=lines,
                        progress=report, memory_check=memory_check)
            else:
                manifest, cached = build_on_device(transport, host, source, out_dir, precision,
                                                   max_prompt=max_prompt, max_context=max_context,
                                                   workspace_mib=workspace_mib, block_size=block_size,
                                                   deploy_options=options, force=force, timeout_s=build_timeout_s,
                                                   stage=lines, memory_check=memory_check)
    finally:
        lines.close()
    if not as_json:
        stdout_console().print(f"{'found in the device cache (skipped the build): ' if cached else 'built: '}"
                               f"{host}:{manifest.engine.location}")
    return manifest
