from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgekit import native, options
from edgekit.atomic import check_output_file, write_text_atomic
from edgekit.bench import check_context, check_settings, resolve_artifact
from edgekit.cli._fleet_table import FleetTable
from edgekit.cli._progress import progress_bars, stdout_console
from edgekit.cli.deploy import deploy_options, make_options, remote_run_options
from edgekit.cli.report import results_table
from edgekit.device.fleet import Host, bench_fleet
from edgekit.device.inventory import read_inventory
from edgekit.errors import EdgekitError
from edgekit.formats import get_format
from edgekit.report import COLUMNS, rows, write_report
from edgekit.runners.onnxruntime import parse_providers
from edgekit.settings import BenchSettings, LlamaCppOptions, OnnxRuntimeOptions, TensorRTOptions
from edgekit.terminal import printable  # warnings quote the device's own state text


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
              show_default=True, help="JSON layout of -o/--json: edgekit's schema, or llama.cpp llama-bench's `-o json` "
                   "(every field, in its order; llama.cpp's scripts/compare-llama-bench.py reads it).")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON on stdout.")
@click.option("--host", "hosts", multiple=True,
              help="Bench on a device over SSH instead of here (repeatable: a fleet): user@host[:port], "
                   "ssh://user@host:port or a Host alias. Deploys first unless --no-deploy.")
@click.option("--inventory", type=click.Path(path_type=Path, dir_okay=False),
              help="Bench on the hosts of an Ansible inventory (YAML or INI; needs the fleet extra).")
@click.option("--limit", help="With --inventory: an Ansible host pattern (a group, a host, a:b, !x).")
@click.option("--parallel", default=4, show_default=True, type=click.IntRange(1), help="Hosts at a time.")
@click.option("--no-deploy", is_flag=True, help="With --host: use what is deployed; fail if it is not there.")
@remote_run_options
@deploy_options
def bench(artifact, n_prompt, n_gen, repetitions, threads, gpu_layers, ctx, n_batch, n_ubatch, flash_attn, providers,
          graph_opt, power, target, output, fmt, as_json, hosts, inventory, limit, parallel, no_deploy, timeout_s,
          results_dir, deploy_kw, ssh_options,
          ssh_config, accept_new_host_key):
    """Measure prompt processing, generation, TTFT, memory and power of ARTIFACT.

    ARTIFACT is a GGUF file (llama.cpp), an .onnx decoder (ONNX Runtime) or an edgekit export folder.
    With --host or --inventory the run happens on each device (deployed first), with the same settings.
    """
    path, artifact_fmt = resolve_artifact(artifact)
    settings = BenchSettings(  # sent whole to the run: a child process here, or a device
        n_prompt=n_prompt, n_gen=n_gen, repetitions=repetitions, threads=threads, ctx=ctx, power=power,
        target="auto" if (hosts or inventory) and target == "auto" else target,
        llama_cpp=LlamaCppOptions(gpu_layers=gpu_layers, n_batch=n_batch, n_ubatch=n_ubatch, flash_attn=flash_attn),
        onnxruntime=OnnxRuntimeOptions(providers=parse_providers(providers), graph_opt=graph_opt, n_batch=n_batch),
        tensorrt=TensorRTOptions(n_batch=n_batch))
    if output:  # before minutes of work: never over the model, never a folder
        check_output_file(output, inputs=(Path(artifact), path))
    check_context(path, artifact_fmt, n_prompt, n_gen)  # before a child starts or a device is touched
    if hosts or inventory:
        need = check_settings(n_prompt, n_gen, repetitions, ctx)  # refused here, before any device is touched
        options = make_options(target, max(need, ctx), deploy_kw)
        return _bench_remote(artifact, settings, options, hosts, inventory, limit, parallel, no_deploy, timeout_s,
                             results_dir, ssh_options, ssh_config, accept_new_host_key, output, fmt, as_json)
    runtime_name = get_format(artifact_fmt).library
    with progress_bars(not as_json) as report:
        # in a child: its peak RSS is the run's own, and a crash in the runtime is one error line
        result = native.call("edgekit.bench:bench_artifact", path, settings, fmt=artifact_fmt, library=runtime_name,
                             what=f"the benchmark of {path.name}", progress=report)
    _emit(result, output, fmt, as_json)


def _emit(result, output, fmt, as_json) -> None:
    """The result as -o FILE, --json, or a table with its power line and warnings."""
    text = json.dumps(result.to_llama_bench(), indent=2) if fmt == "llama-bench" else result.to_json()
    if output:
        write_text_atomic(output, text + "\n")
    if as_json:
        click.echo(text)
        return
    path = Path(result.artifact.path)
    from rich.table import Table

    console = stdout_console()
    table = Table(show_header=False, title=f"{path.name} ({result.runtime.name} {result.runtime.backend}, "
                                           f"{result.settings.threads} threads)")
    for name, value in zip(COLUMNS[3:], rows([result])[0][3:]):
        table.add_row(name, value)
    table.add_row("load s", f"{result.metrics.load_s:.3f}")
    console.print(table)
    if result.power.source is None:
        console.print(f"power: none ({result.power.unavailable})")

    for w in result.warnings:
        console.print(f"warning: {printable(w)}", markup=False)
    if output:
        console.print(f"wrote {output}")


def _bench_remote(artifact, settings, options, hosts, inventory, limit, parallel, no_deploy, timeout_s, results_dir,
                  ssh_options, ssh_config, accept_new_host_key, output, fmt, as_json) -> None:
    """bench --host/--inventory: every host through edgekit.device.fleet; one line per failed host on
    stderr, exit 1 when any failed; the merged table (grouped by device) and report file."""
    fleet: list[Host] = [Host(h, h, tuple(ssh_options)) for h in hosts]
    if inventory:
        fleet += [Host(h.name, h.destination, (*ssh_options, *h.ssh_options), h.python)
                  for h in read_inventory(inventory, limit)]
    elif limit:
        raise EdgekitError("--limit needs --inventory", "pass --inventory FILE, or drop --limit")
    if output and len(fleet) > 1:
        raise EdgekitError("-o names one result file, and this bench has several hosts",
                           f"leave -o out: each host's result lands under {results_dir}/<host>/")
    table = FleetTable(fleet, live=sys.stderr.isatty() and not as_json) if not as_json else None
    try:
        outcomes = bench_fleet(fleet, artifact, settings, options, parallel=parallel, no_deploy=no_deploy,
                               timeout_s=timeout_s, results=results_dir, ssh_config=ssh_config,
                               accept_new_host_key=accept_new_host_key, on_update=table)
    except KeyboardInterrupt:  # the CLI's boundary then says interrupted/terminated, exit 130/143
        click.echo("stopped following: a run already started goes on on its device; `edgekit fetch --host HOST` "
                   "brings it back when it ends", err=True)
        raise
    finally:
        if table is not None:
            table.close()
    done = [o for o in outcomes if o.ok]
    if len(fleet) == 1 and done:
        _emit(done[0].result, output, fmt, as_json)
        click.echo(f"result and logs: {done[0].folder}", err=as_json)
    elif done:
        if as_json:
            click.echo(json.dumps([json.loads(o.result.to_json()) for o in done], indent=2))
        else:
            stdout_console().print(results_table([o.result for o in done], by_device=True))
        stamp = done[0].folder.name
        report = write_report([o.folder / "result.json" for o in done], results_dir / f"fleet-{stamp}.md")
        click.echo(f"merged report: {report}", err=as_json)

    for o in outcomes:
        for w in o.warnings:
            click.echo(f"warning: {o.host.label}: {printable(w, 300)}", err=True)
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        click.echo(f"error: {printable(o.host.label, 80)}: {printable(o.error or 'failed', 600)}", err=True)
    if failed:
        raise click.exceptions.Exit(1)
