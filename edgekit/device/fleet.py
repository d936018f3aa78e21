"""One artifact benched on one or many devices: each host deployed (or not, with no_deploy),
benched there, its result brought back; hosts run concurrently (`parallel` at a time), each with
its own SSH connection, and one failing host is reported without stopping the others.

`on_update(label, stage, detail)` is told every stage change (connecting, installing,
uploading NN%, benching d/t, done, failed: reason), for a live table or plain lines."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from edgekit.device.deploy import Deployer
from edgekit.device.runs import remote_bench
from edgekit.device.transport import open_transport
from edgekit.errors import EdgekitError
from edgekit.results import BenchResult


@dataclass(frozen=True)
class Host:
    label: str                     # how results and the table name it
    destination: str               # what --host or the inventory gave
    ssh_options: tuple[str, ...] = ()
    python: str | None = None      # the device Python (an inventory's ansible_python_interpreter)


@dataclass
class HostOutcome:
    host: Host
    ok: bool = False
    stage: str = "waiting"
    error: str | None = None
    folder: Path | None = None
    result: object = None          # BenchResult
    deploy: object = None          # DeployResult
    warnings: list[str] = field(default_factory=list)


def bench_host(host: Host, artifact: Path, settings, deploy_options, *, no_deploy: bool, timeout_s: float,
               results: Path, ssh_config=None, accept_new_host_key: bool = False,
               on_update: Callable[[str, str, str], None] | None = None,
               connections: list | None = None) -> HostOutcome:
    """Deploy (unless no_deploy), bench and fetch on one host. Errors end in the outcome, never raised.
    `connections`, when given, holds the host's open transport while it works (bench_fleet closes
    them to end every host's work at once)."""
    outcome = HostOutcome(host)
    update = on_update or (lambda *a: None)

    def stage(name: str, detail: str) -> None:
        outcome.stage = name
        update(host.label, name, detail)

    try:
        options = replace(deploy_options, python=host.python or deploy_options.python)
        with open_transport(host.destination, host.ssh_options, ssh_config, accept_new_host_key) as transport:
            if connections is not None:
                connections.append(transport)
            deployer = Deployer(transport, host.label, options, stage)
            if no_deploy:
                deployed = deployer.find_deployed(artifact)
            else:
                deployed = deployer.run(artifact)
            outcome.deploy = deployed
            outcome.warnings += deployed.warnings

            def progress(label: str, done: float, total: float) -> None:
                stage("benching", f"{done:g}/{total:g}")

            stage("benching", "starting")
            run = remote_bench(transport, deployed.remote_dir, deployed.model_path, deployed.format,
                               deployed.artifact_key, settings, host=host.label, results=results,
                               timeout_s=timeout_s, progress=progress)
            outcome.folder = run.folder
            outcome.result = BenchResult.load(run.folder / "result.json")
            outcome.ok = True
            stage("done", f"{outcome.result.metrics.tg_tok_s.mean:.1f} tg tok/s" if outcome.result.metrics.tg_tok_s
                  else "done")
    except EdgekitError as e:
        outcome.error = str(e)
        stage("failed", e.problem)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # one host's bug must not end the others: said, with its type
        outcome.error = f"{type(e).__name__}: {e}; please report this"
        stage("failed", outcome.error)
    return outcome


def bench_fleet(hosts: list[Host], artifact: Path, settings, deploy_options, *, parallel: int = 4, **kw) -> list[HostOutcome]:
    """bench_host on every host, `parallel` at a time; outcomes in the hosts' order."""
    if len({h.label for h in hosts}) != len(hosts):
        raise EdgekitError("the same host is listed twice", "list each device once")
    connections: list = []
    pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts))))
    futures = [pool.submit(bench_host, h, artifact, settings, deploy_options, connections=connections, **kw)
               for h in hosts]
    try:
        return [f.result() for f in futures]
    except BaseException:  # Ctrl-C, SIGTERM: every follow ends now (the runs go on on the devices)
        for f in futures:
            f.cancel()
        for transport in list(connections):
            transport.close()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
