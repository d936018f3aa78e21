from __future__ import annotations

from pathlib import Path

import click

from edgekit.atomic import check_output_file, write_text_atomic
from edgekit.cli._progress import progress_bars, stdout_console
from edgekit.cli.deploy import StageLines, deploy_options, make_options, remote_run_options
from edgekit.device.deploy import Deployer
from edgekit.device.job import EvalJob
from edgekit.device.runs import remote_job
from edgekit.device.transport import open_transport
from edgekit.errors import EdgekitError
from edgekit.eval import check_options, read_text, run_eval
from edgekit.formats import resolve_artifact
from edgekit.results import EvalResult
from edgekit.terminal import printable


@click.command("eval")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--reference", default=None,
              help="Compare with this model of the same vocabulary: an F16/BF16 GGUF, an FP32 ONNX export, or the "
                   "Hugging Face checkpoint (folder or cached hub id, run through transformers in float32). Adds "
                   "KL divergence (mean, median, p99, max), the same-top-token rate and the mean change in the "
                   "correct token's probability. Both models are loaded at once.")
@click.option("--text", "text", type=click.Path(path_type=Path), default=None,
              help="A UTF-8 text file to score. Default: the public-domain English text shipped with edgekit "
                   "(Pride and Prejudice, chapters 1-4).")
@click.option("--chunks", type=int, default=None, help="Evaluate at most N chunks (default: all the text holds).")
@click.option("--ctx", type=int, default=None,
              help="Tokens per chunk (default: the model's context, at most 512); the second half of each is scored.")
@click.option("--threads", type=int, default=None, help="CPU threads (default: the CPUs this process may use).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the result JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON on stdout.")
@click.option("--host", help="Evaluate on a device over SSH (its runtime's numerics are the ones that ship): "
                             "ARTIFACT and an artifact --reference are deployed first.")
@remote_run_options
@deploy_options
def eval_cmd(artifact, reference, text, chunks, ctx, threads, output, as_json, host, timeout_s, results_dir,
             deploy_kw, ssh_options, ssh_config,
             accept_new_host_key):
    """Perplexity of ARTIFACT on real English text, and with --reference its divergence from it.

    ARTIFACT is a GGUF file (llama.cpp, its own tokenizer) or an ONNX export (ONNX Runtime, with the
    tokenizer.json beside it). Scored as llama.cpp's llama-perplexity scores: chunks of --ctx tokens, each
    from an empty cache, the first half context only. An ONNX export written with `--logits last` (the
    default) is stepped token by token through the scored half: the same numbers, slower than one written
    with `edgekit export onnx --logits all`.
    """
    check_options(ctx, chunks, threads)  # before anything is read
    if output:
        model, _fmt = resolve_artifact(artifact)
        inputs = tuple(p for p in (Path(artifact), model, text, Path(reference) if reference else None) if p)
        check_output_file(output, inputs=inputs)
    if host is not None:
        result = _eval_on_device(artifact, reference, text, chunks, ctx, threads, host, timeout_s, results_dir,
                                 make_options("auto", ctx or 512, deploy_kw),
                                 ssh_options, ssh_config, accept_new_host_key, as_json)
    else:
        with progress_bars(not as_json) as report:
            result = run_eval(artifact, reference=reference, text=text, chunks=chunks, ctx=ctx, threads=threads,
                              progress=report)
    _emit(result, output, as_json)


def _eval_on_device(artifact, reference, text, chunks, ctx, threads, host, timeout_s, results_dir, options,
                    ssh_options, ssh_config, accept_new_host_key, as_json):
    """Deploy ARTIFACT (and a GGUF reference), run edgekit eval there detached (edgekit.device.agent), bring
    the run back; the EvalResult as the device computed it."""
    resolve_artifact(artifact)  # a GGUF or an ONNX export (deploy installs tokenizers with onnxruntime)
    if reference is not None:
        ref_path = Path(reference)
        try:
            kind = resolve_artifact(ref_path)[1].name if ref_path.exists() else None
        except EdgekitError:  # a checkpoint folder, an export folder with several models...
            kind = None
        if kind is None:
            raise EdgekitError(f"--reference {reference}: on a device the reference must be an artifact (a GGUF or an "
                               "ONNX export): transformers does not run there",
                               "pass the F16/BF16 GGUF or the FP32 ONNX export of the same model")
    read_text(text)  # a missing, binary or empty --text is refused here, before anything reaches the device
    lines = StageLines(host, quiet=as_json)
    try:
        with open_transport(host, ssh_options, ssh_config, accept_new_host_key) as t:
            deployed = Deployer(t, host, options, lines).run(artifact)
            ref = Deployer(t, host, options, lines).run(Path(reference)).model_path if reference else None
            job = EvalJob(kind="eval", model=deployed.model_path, reference=ref, artifact_key=deployed.artifact_key,
                          text="text.txt" if text else None, chunks=chunks, ctx=ctx, threads=threads, host=host,
                          timeout_s=timeout_s)
            lines("evaluating", "on the device")
            run = remote_job(t, deployed.remote_dir, job, host=host, results=results_dir, timeout_s=timeout_s,
                             files={"text.txt": Path(text)} if text else None, what="eval",
                             progress=lambda label, done, total: lines("evaluating", f"{done:g}/{total:g}"))
    finally:
        lines.close()
    if not as_json:
        click.echo(f"result and logs: {run.folder}")
    return EvalResult.load(run.folder / "eval.json")


def _emit(result, output: Path | None, as_json: bool) -> None:
    text = result.to_json()
    if output:
        write_text_atomic(output, text + "\n")
    if as_json:
        click.echo(text)
        return
    from rich.table import Table

    console = stdout_console()
    table = Table(show_header=False, title=f"{Path(result.artifact.path).name} ({result.runtime.name} "
                                           f"{result.runtime.backend}, {result.settings.threads} threads)")
    table.add_row("text", f"{Path(result.text.name).name}: {result.text.tokens} tokens")
    table.add_row("scored", f"{result.n_tokens} tokens: {result.chunks} chunks of {result.ctx}, second halves")
    table.add_row("perplexity", f"{result.perplexity:.4f} ± {result.perplexity_stderr:.4f}")
    kl = result.kl
    if kl is not None:
        d = kl.kl_divergence
        table.add_row("reference", f"{Path(kl.reference.path).name} ({kl.reference_runtime.name})")
        table.add_row("reference perplexity", f"{kl.reference_perplexity:.4f}")
        table.add_row("ln(PPL / reference PPL)", f"{kl.ln_ppl_ratio:.5f}")
        table.add_row("KL mean / median", f"{d.mean:.6f} / {d.median:.6f}")
        table.add_row("KL p99 / max", f"{d.p99:.6f} / {d.max:.6f}")
        table.add_row("same top token", f"{kl.same_top_rate:.2%}")
        table.add_row("mean Δp", f"{kl.delta_p_mean:+.3%} ± {kl.delta_p_stdev:.3%}")
    table.add_row("seconds", f"{result.seconds:.1f}")
    console.print(table)
    for w in result.warnings:
        console.print(f"warning: {printable(w)}", markup=False)
    if output:
        console.print(f"wrote {output}")
