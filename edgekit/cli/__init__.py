"""The `edgekit` command line: argument parsing only, and the one error boundary.

Commands are registered in a plain dict of module paths and imported only when
invoked or listed, and each command module imports the library (torch,
transformers, llama_cpp, onnx) inside its function body, so `edgekit --help`
never imports any of them.
"""

from __future__ import annotations

import importlib

import click

from edgekit import __version__
from edgekit.errors import EdgekitError

# name -> "module:attribute" of a click command; a plugin could add entries here.
COMMANDS: dict[str, str] = {
    "synth": "edgekit.cli.synth:synth",
    "export": "edgekit.cli.export:export",
    "inspect": "edgekit.cli.inspect:inspect_cmd",
    "bench": "edgekit.cli.bench:bench",
    "report": "edgekit.cli.report:report",
    "demo": "edgekit.cli.demo:demo",
    "power": "edgekit.cli.power:power",
    "targets": "edgekit.cli.targets:targets",
    "probe": "edgekit.cli.targets:probe",
    "doctor": "edgekit.cli.doctor:doctor",
}


class EdgekitGroup(click.Group):
    """Lazy command loading plus the error boundary: EdgekitError -> one line, exit 1."""

    def list_commands(self, ctx):
        return sorted(set(COMMANDS) | set(super().list_commands(ctx)))

    def get_command(self, ctx, name):
        if name in COMMANDS:
            module, attr = COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgekitError as e:
            fail(str(e))
        except OSError as e:
            from edgekit.atomic import is_disk_full

            if is_disk_full(e):
                fail(f"disk full while writing ({e.filename or 'output'}); nothing was left at the output path; "
                     "free space or choose an output folder on another disk")
            if e.filename:  # permissions, a folder where a file was expected, a vanished path
                fail(f"cannot access {e.filename}: {e.strerror or e}; check the path and its permissions")
            raise
        except Terminated:
            click.echo("terminated (SIGTERM); nothing was left at the output path", err=True)
            ctx.exit(143)
        except KeyboardInterrupt:
            click.echo("interrupted; nothing was left at the output path", err=True)
            ctx.exit(130)


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(1)


@click.group(cls=EdgekitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
def cli():
    """Convert, deploy and benchmark quantized small language models on edge devices."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd, CI runners, `timeout`, `kill`), raised where the main thread is, so that it
    unwinds like Ctrl-C: temporary folders removed, child processes killed, one line, exit 143."""


def _on_sigterm(_signum, _frame) -> None:
    raise Terminated()


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    cli(prog_name="edgekit")
