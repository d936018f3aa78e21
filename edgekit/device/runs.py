"""Bench on a device: the run starts detached there (edgekit.device.agent), its progress streams back,
and its files come home to `<results>/<host>/<artifact key>/<run id>/`.

Contract:
- `remote_bench()` sends the BenchSettings whole (job.json), so the device runs exactly what a
  local `edgekit bench` would (edgekit.bench.bench_artifact, on the device, with its own target
  detection, power sensor and clock/power-mode capture). The run survives a dropped connection;
  losing it is an EdgekitError that says how to fetch the result later.
- A run still going after `timeout_s` is ended there (its process group), with a clear line.
- `fetch_runs()` brings back every finished run not yet pulled (result.json, status.json,
  progress.log, log, job.json), into a temporary folder renamed whole, then marks it pulled on
  the device. A failed run comes back too (status.json says why), without result.json.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from edgekit.device.job import JOB_FILE, BenchJob, EvalJob, job_json, parse_job
from edgekit.device.untrusted import inside, is_run_id
from edgekit.errors import EdgekitError
from edgekit.formats import get_format
from edgekit.terminal import printable

RUN_FILES = ("job.json", "status.json", "result.json", "eval.json", "progress.log", "log")


def safe_name(text: str) -> str:
    """A folder name for a host or artifact label: letters, digits, `._-@`, the rest `_`."""
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", text).strip("._") or "host"


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@dataclass
class RunOutcome:
    """A run that ended well on the device, its files brought back to `folder`."""

    host: str
    run_id: str
    folder: Path


def _venv_python(remote_dir: str) -> str:
    return shlex.quote(f"{remote_dir}/venv/bin/python")


def remote_bench(transport, remote_dir: str, model_path: str, fmt: str, artifact_key: str, settings, *,
                 host: str, results: Path, timeout_s: float,
                 progress: Callable[[str, float, float], None] | None = None) -> RunOutcome:
    """Run one bench on the device behind `transport` (deployed under `remote_dir`) and bring its
    files back; see the module docstring. A run that fails there (or runs past `timeout_s`) is an
    EdgekitError saying why, after its files came back."""
    job = BenchJob(model=model_path, format=fmt, artifact_key=artifact_key, host=host, settings=settings,
                   timeout_s=timeout_s, library=get_format(fmt).library)
    return remote_job(transport, remote_dir, job, host=host, results=results, timeout_s=timeout_s, progress=progress,
                      what="bench")


def remote_job(transport, remote_dir: str, job: BenchJob | EvalJob, *, host: str, results: Path, timeout_s: float,
               progress: Callable[[str, float, float], None] | None = None, files: dict[str, Path] | None = None,
               what: str = "bench") -> RunOutcome:
    """One edgekit.device.agent run on the device: job.json (and `files`, by name, into the run folder),
    started detached, followed, ended after `timeout_s`, its files fetched."""
    q = shlex.quote
    run_id = new_run_id()
    run = f"{remote_dir}/runs/{run_id}"
    r = transport.run(f"mkdir -p -- {q(run)}", timeout_s=30)
    if r.returncode != 0:
        raise EdgekitError(f"cannot create {run} on {host} ({r.stderr.strip()[-200:]})",
                           "check the remote folder (edgekit deploy --remote-dir)")
    for name, local in (files or {}).items():
        transport.put(Path(local), f"{run}/{name}")
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / JOB_FILE).write_text(job_json(job), encoding="utf-8")
        transport.put(Path(d) / "job.json", f"{run}/job.json")
    py = _venv_python(remote_dir)
    started = transport.run(f"{py} -m edgekit.device.agent start {q(run)}", timeout_s=60)
    if started.returncode == 3:  # the agent's word for "another run is going on there"
        raise EdgekitError(f"the {what} did not start on {host}: {printable(started.stderr, 200)}",
                           f"wait for that run to end (edgekit fetch --host {host} brings it back), then retry")
    if started.returncode != 0:
        raise EdgekitError(f"the {what} did not start on {host} ({printable(started.stderr.strip() or 'no output', 200)})",
                           "deploy again (edgekit deploy), then retry")
    status: dict = {}

    def on_line(line: str) -> None:
        if line.startswith("progress "):
            parts = line.split(" ", 3)
            if len(parts) == 4 and progress:
                try:
                    progress(printable(parts[3], 100), float(parts[1]), float(parts[2]))
                except ValueError:
                    pass
        elif line.startswith("status "):
            try:
                status.update(json.loads(line[len("status "):]))
            except json.JSONDecodeError:
                pass

    try:
        followed = transport.run(f"{py} -m edgekit.device.agent follow {q(run)}", timeout_s=timeout_s + 30, on_output=on_line)
    except EdgekitError as e:
        raise EdgekitError(f"lost the connection to {host} during the {what} ({e.problem}); the run goes on there "
                           f"as {run_id}", f"`edgekit fetch --host {host}` brings its result back when it ends") from None
    if followed.returncode == 124:
        transport.run(f"{py} -m edgekit.device.agent kill {q(run)} {q(f'ran past --timeout {timeout_s:g} s')}", timeout_s=60)
        fetch_run(transport, remote_dir, run_id, host=host, results=results)
        raise EdgekitError(f"the {what} on {host} ran past --timeout {timeout_s:g} s and was ended there (its process "
                           "group killed)", "raise --timeout, or ask for less work (-p, -n, -r; --chunks)")
    folder = fetch_run(transport, remote_dir, run_id, host=host, results=results)
    if not status.get("ok"):
        raise EdgekitError(f"the {what} on {host} {status.get('error') or 'left no status'}",
                           f"its log and status are in {folder}")
    return RunOutcome(host, run_id, folder)


def fetch_run(transport, remote_dir: str, run_id: str, *, host: str, results: Path) -> Path:
    """Bring one run's files back into <results>/<host>/<artifact key>/<run id>/ (whole, or not at
    all) and mark it pulled on the device. The folder's path is returned. `run_id` and the artifact
    key the device's job.json names are checked (edgekit.device.untrusted) before they become a
    path; a folder fetched before is kept as it is, never replaced: a fetch deletes nothing it did
    not create itself."""
    if not is_run_id(run_id):
        raise EdgekitError(f"{printable(host, 100)} lists a run {printable(repr(run_id), 100)}, which is not a run id "
                           "edgekit makes", "nothing was fetched for it; look at the device's runs folder")
    q = shlex.quote
    run = f"{remote_dir}/runs/{run_id}"
    listed = transport.run(f"cd -- {q(run)} && ls -A", timeout_s=30)
    names = set(listed.stdout.split()) if listed.returncode == 0 else set()
    if "job.json" not in names:
        raise EdgekitError(f"{host} has no run {run_id} under {remote_dir}/runs", "list them with `edgekit fetch`")
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=results, prefix=f".fetch-{run_id}-"))
    try:
        for name in RUN_FILES:
            if name in names:
                transport.get(f"{run}/{name}", tmp / name)
        try:
            key = parse_job((tmp / JOB_FILE).read_text(encoding="utf-8")).artifact_key
        except ValueError:  # not a job edgekit wrote
            key = "artifact"
        final = inside(results, safe_name(host), safe_name(key or "artifact"), run_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        if not final.exists():  # else fetched before, whole (a rename): kept, this copy dropped
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    transport.run(f"touch -- {q(run + '/pulled')}", timeout_s=30)
    return final


def list_runs(transport, remote_dir: str) -> list[dict]:
    """The device's runs: {"id", "status", "pulled", "running"} each (edgekit.device.agent list)."""
    q = shlex.quote
    r = transport.run(f"[ -d {q(remote_dir + '/runs')} ] || exit 0; "
                      f"{_venv_python(remote_dir)} -m edgekit.device.agent list {q(remote_dir + '/runs')}", timeout_s=60)
    out = []
    for line in r.stdout.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


@dataclass
class Fetched:
    """What `fetch_runs` did: the local folders of the runs it brought back, the ids of runs still
    running there, and what the device listed that is not a run id edgekit makes (never fetched)."""

    folders: list[Path] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def fetch_runs(transport, remote_dir: str, *, host: str, results: Path) -> Fetched:
    """Every finished run not pulled yet, brought back (fetch_run)."""
    out = Fetched()
    there = transport.run(f"[ -d {shlex.quote(remote_dir + '/runs')} ]", timeout_s=30)
    if there.returncode != 0:
        raise EdgekitError(f"{printable(host, 100)} has no edgekit runs folder under {printable(remote_dir, 200)} "
                           "(nothing was deployed or benched there)", "pass the --remote-dir the deploy used")
    for run in list_runs(transport, remote_dir):
        run_id = run.get("id") if isinstance(run, dict) else run
        if not is_run_id(run_id):
            out.refused.append(printable(repr(run_id), 100))
            continue
        if run.get("status") is None:
            if run.get("running"):
                out.running.append(run_id)
            continue
        if not run.get("pulled"):
            out.folders.append(fetch_run(transport, remote_dir, run_id, host=host, results=results))
    return out
