from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from edgekit.cli._ssh import ssh_options
from edgekit.device.deploy import Deployer, DeployOptions
from edgekit.device.transport import open_transport
from edgekit.runtimes import deployable
from edgekit.terminal import printable

# the keyword arguments deploy_options adds; the command receives them as one dict, `deploy_kw`
DEPLOY_KEYS = ("remote_dir", "runtime", "device_python", "wheels", "bwlimit_kib_s", "build_timeout_s",
               "share_device_builds", "cross_build")


def deploy_options(f):
    """The options of a deploy, shared by `edgekit deploy`, `bench --host` and `eval --host`; the
    command receives them as one dict, `deploy_kw` (make_options turns it into DeployOptions)."""

    @functools.wraps(f)
    def gathered(*args, **kwargs):
        return f(*args, deploy_kw={k: kwargs.pop(k) for k in DEPLOY_KEYS}, **kwargs)

    g = gathered
    for option in reversed([
        click.option("--remote-dir", default="~/.edgekit", show_default=True,
                     help="Folder on the device for edgekit's venv, the model store and runs."),
        click.option("--runtime", type=click.Choice(deployable()), default=None,
                     help="Runtime to install (default: the artifact's: llama.cpp for GGUF, onnxruntime for ONNX)."),
        click.option("--python", "device_python", metavar="PATH|NAME",
                     help="The device Python to make the venv from (default: the first of python3, python3.13 ... "
                          "python3.10 that is 3.10+ and has venv)."),
        click.option("--wheels", type=click.Path(path_type=Path, file_okay=False, exists=True),
                     help="Offline device: push this folder's wheels and install from them only (pip --no-index). "
                          "Runtime wheels built on devices are kept in ~/.cache/edgekit/device-wheels/."),
        click.option("--bwlimit", "bwlimit_kib_s", type=click.IntRange(1), metavar="KIB_S",
                     help="Cap the model upload's rate (KiB/s)."),
        click.option("--build-timeout", "build_timeout_s", type=float, default=3 * 3600.0, show_default=True,
                     help="Seconds a runtime build on the device may take."),
        click.option("--share-device-builds", is_flag=True,
                     help="Let a runtime wheel another device of the same kind built serve this one too (its "
                          "origin is recorded in deploy.json). By default a wheel a device built serves only "
                          "that device."),
        click.option("--cross-build/--no-cross-build", "cross_build", default=None,
                     help="Build llama.cpp for a CPU-only arm64 Linux device (Raspberry Pi 5, generic arm64) on "
                          "this workstation with its aarch64 cross compiler (g++-aarch64-linux-gnu), cached in "
                          "~/.cache/edgekit/cross-wheels/, instead of on the device. Default: whenever that "
                          "compiler is installed and the device can load the wheel (its glibc and libstdc++)."),
    ]):
        g = option(g)
    return ssh_options(g)


def make_options(target: str, ctx: int, deploy_kw: dict) -> DeployOptions:
    """DeployOptions from a command's --target, context and deploy_options' `deploy_kw`."""
    kw = dict(deploy_kw)
    return DeployOptions(target=target, ctx=ctx, python=kw.pop("device_python"), **kw)


def remote_run_options(f):
    """--timeout and --results of a run on a device (bench --host, eval --host)."""
    f = click.option("--results", "results_dir", type=click.Path(path_type=Path, file_okay=False),
                     default=Path("results"), show_default=True,
                     help="With --host: each run's files land in RESULTS/<host>/<artifact>/<UTC time>/.")(f)
    return click.option("--timeout", "timeout_s", default=3600.0, show_default=True,
                        help="With --host: seconds a device's run may take before it is ended there.")(f)


class StageLines:
    """Deploy stages: on a terminal a spinner on stderr with the latest line; otherwise one line on
    stdout per stage change (stderr keeps only the error line, if there is one)."""

    def __init__(self, host: str, quiet: bool = False):
        self.host, self.quiet, self.last = host, quiet, None
        self.status = None

        if not quiet and sys.stderr.isatty():
            from rich.console import Console

            self.status = Console(stderr=True, markup=False).status(f"{host}: connecting")
            self.status.start()

    def __call__(self, stage: str, detail: str) -> None:
        if self.status is not None:
            self.status.update(printable(f"{self.host}: {stage} {detail}", 160))
        elif not self.quiet and stage != self.last:
            click.echo(printable(f"{self.host}: {stage} {detail}", 300))
        self.last = stage

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()


@click.command()
@click.argument("artifact", type=click.Path(path_type=Path, exists=True))
@click.option("--host", required=True, help="user@host[:port], ssh://user@host:port, or a Host alias.")
@click.option("--target", default="auto", show_default=True, help="auto (detect), or a name from `edgekit targets`.")
@click.option("--ctx", default=4096, show_default=True, help="Context the RAM check sizes the KV cache for.")
@deploy_options
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
def deploy(artifact, host, target, ctx, deploy_kw, ssh_options, ssh_config, accept_new_host_key, as_json):
    """Put edgekit, a runtime and ARTIFACT on a device over SSH; every step is skipped when done.

    Checks the device first (Python 3.10+, free disk, RAM for the weights and KV cache), then: a
    venv with this machine's edgekit, the runtime by the target's recipe, the model into a
    content-addressed store (resumable, sha256 verified there), `edgekit doctor` on the device.
    """
    options = make_options(target, ctx, deploy_kw)
    lines = StageLines(host, quiet=as_json)
    try:
        with open_transport(host, ssh_options, ssh_config, accept_new_host_key) as transport:
            result = Deployer(transport, host, options, lines).run(artifact)
    finally:
        lines.close()
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    print_summary(result)


def print_summary(result) -> None:
    for step in result.steps:
        click.echo(f"  {step.name}: {printable(step.detail, 300)}")
    for w in result.warnings:
        click.echo(f"warning: {printable(w, 300)}")
    if result.changed:
        click.echo(f"deployed {result.artifact_key} to {result.host}:{result.model_path} "
                   f"({result.sent_bytes} bytes sent)")
    else:
        click.echo(f"already deployed: nothing transferred ({result.host}:{result.model_path})")
