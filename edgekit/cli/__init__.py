"""The `edgekit` command line: argument parsing only, and the one error boundary.

Commands are a registry (edgekit.registry): edgekit's own in the plain dict COMMANDS, plus the
"edgekit.commands" entry points of installed plugins (a builtin wins over a plugin of the same
name). A command module is imported only when its command runs or shows its own --help:
`edgekit --help` lists edgekit's commands from SHORT_HELP. Command modules import the library at
their top; the library imports heavy libraries (torch, transformers, llama_cpp, onnx, gguf) where
it uses them, so no --help imports any of them. Choice lists come from edgekit.options.
"""

from __future__ import annotations

import signal

import click

from edgekit import __version__
from edgekit.atomic import is_disk_full
from edgekit.errors import EdgekitError
from edgekit.registry import COMMANDS_GROUP, Registry
from edgekit.terminal import printable

# name -> "module:attribute" of a click command: edgekit's own; plugins add "edgekit.commands" entry points
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
    "deploy": "edgekit.cli.deploy:deploy",
    "fetch": "edgekit.cli.remote:fetch",
    "plan": "edgekit.cli.plan:plan",
    "eval": "edgekit.cli.eval:eval_cmd",
}
COMMAND_REGISTRY = Registry(COMMANDS_GROUP, COMMANDS, what="command")
# name -> the first line of its help, as `edgekit --help` lists it without importing the command
# (its module imports the library it drives); tests/test_registry.py checks each against the command
SHORT_HELP: dict[str, str] = {
    "synth": 'Write a Hugging Face checkpoint with random seeded weights.',
    "export": 'Export a Hugging Face checkpoint to a deployable format.',
    "inspect": 'Show architecture, parameters, quantization, size and tokenizer facts of PATH.',
    "bench": 'Measure prompt processing, generation, TTFT, memory and power of ARTIFACT.',
    "report": 'Compare RESULTS (JSON files from edgekit bench -o or edgekit eval -o, or folders such as results/ from edgekit bench --host) in a table and plots, grouped by device, with quality (perplexity, KL) beside speed where an eval of the same artifact is given.',
    "demo": 'Offline end to end: synth a small Qwen2, export GGUF Q4_K_M + Q8_0 and ONNX INT4, bench, report.',
    "power": 'Power sensors: recompute figures from raw logs.',
    "targets": 'Known device targets: memory, bandwidth, CPU, accelerator, power sensor (with sources in --json).',
    "probe": "Detect the target this machine is, print its facts and its clock/power-mode/thermal state (--record keeps the raw outputs, so a device's owner can contribute them as test fixtures).",
    "doctor": 'What this install can do, one line each.',
    "deploy": 'Put edgekit, a runtime and ARTIFACT on a device over SSH; every step is skipped when done.',
    "fetch": 'Bring back every finished remote bench run not pulled yet (e.g. after a dropped connection).',
    "plan": "What fits where and how fast: memory (weights per quant by llama.cpp's own quantizer, KV cache, overhead) against each target's usable memory, and predicted tokens/s from bandwidth.",
    "eval": 'Perplexity of ARTIFACT on real English text, and with --reference its divergence from it.',
}


class EdgekitGroup(click.Group):
    """Lazy command loading plus the error boundary: EdgekitError -> one line, exit 1."""

    def list_commands(self, ctx):
        return sorted(set(COMMAND_REGISTRY.names()) | set(super().list_commands(ctx)))

    def get_command(self, ctx, name):
        """The command `name`; a plugin that fails to load, or loads something that is not a click
        command, raises EdgekitError (one error line when it is invoked)."""
        if name not in COMMAND_REGISTRY:
            return super().get_command(ctx, name)
        command = COMMAND_REGISTRY.load(name)
        if not isinstance(command, click.Command):
            raise EdgekitError(f"the command plugin '{name}' from {COMMAND_REGISTRY.describe(name)} is a "
                               f"{type(command).__name__}, not a click command",
                               "point its edgekit.commands entry point at a click command")
        return command

    def format_commands(self, ctx, formatter):
        """The command list of --help: edgekit's own from SHORT_HELP (nothing imported), plugins
        loaded. A plugin that fails to load is listed with its error instead of ending the help with
        a traceback: one broken package does not hide the other commands."""
        rows: list[tuple[str, str]] = []
        limit = formatter.width - 6 - max((len(name) for name in self.list_commands(ctx)), default=0)
        for name in self.list_commands(ctx):
            if name in SHORT_HELP:  # a builtin wins over a plugin of the same name
                rows.append((name, click.Command(name, help=SHORT_HELP[name]).get_short_help_str(limit)))
                continue
            try:
                command = self.get_command(ctx, name)
            except EdgekitError as e:
                rows.append((name, f"(unusable: {e.problem})"))
                continue
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgekitError as e:
            fail(str(e))
        except OSError as e:
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
    """The one error line. Messages quote paths and what devices and native libraries said, so
    they go through edgekit.terminal.printable here, once: no escape codes, one line."""
    click.echo(f"error: {printable(message, 4000)}", err=True)
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
    signal.signal(signal.SIGTERM, _on_sigterm)
    cli(prog_name="edgekit")
