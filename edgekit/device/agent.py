"""Detached bench runs on a device: `python -m edgekit.device.agent VERB RUNDIR`, run by the workstation
through the transport, in the device venv.

A run folder holds job.json (written by the workstation: the model path, BenchSettings, the
timeout; or, with "kind": "eval", edgekit eval's arguments), and, as the run goes: pid (the run's process group), progress.log (one line per
progress event: `progress <done> <total> <label>`), log (the run's stdout/stderr), result.json
(eval.json for an eval; written whole: temp name, then rename), status.json (last, also whole: {"ok": bool, "error":
str|None, "ended_utc": str}), and `pulled` once the workstation has the result.

Verbs:
- start: starts `run` in a new session (it survives the SSH connection's end) and prints its pid.
- run: the bench through edgekit.native (a crash in the runtime is an error line, not a silent
  end), bounded by the job's timeout (the child's process group is killed), then status.json.
- follow: prints progress.log's lines as they come until status.json exists, then
  `status <json>`; exit 0. The workstation streams this; losing the connection loses nothing.
- kill: ends the run's process group (SIGTERM, then SIGKILL) and writes status.json if the run
  could not.
- list: one JSON line per run folder under RUNDIR (a runs folder): id, status, pulled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from edgekit import native
from edgekit.atomic import atomic_file, pid_alive
from edgekit.device.job import EvalJob, read_job
from edgekit.errors import EdgekitError

POLL_S = 0.2


def _write_whole(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _status(run: Path, ok: bool, error: str | None) -> None:
    if not (run / "status.json").exists():
        _write_whole(run / "status.json", json.dumps({"ok": ok, "error": error,
                                                      "ended_utc": datetime.now(timezone.utc).isoformat(
                                                          timespec="seconds")}) + "\n")


def process_start(pid: int) -> str | None:
    """What tells process `pid` from a later one with the same number: its start time (Linux:
    /proc/<pid>/stat's starttime in clock ticks since boot; elsewhere `ps -o lstart=`), or None."""
    try:
        return "ticks " + Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        pass
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return f"lstart {' '.join(out.stdout.split())}" if out.returncode == 0 and out.stdout.strip() else None


def running_runs(runs: Path, but: Path | None = None) -> list[str]:
    """The runs under `runs` whose process is alive (and is theirs), `but` aside."""
    return [d.name for d in sorted(runs.iterdir()) if d.is_dir() and d != but
            and not (d / "status.json").exists() and _alive(d)] if runs.is_dir() else []


def start(run: Path) -> int:
    """Start the run detached; refused (exit 3) while another run of this device is going on, since
    two runs at once measure each other."""
    busy = running_runs(run.parent, but=run)
    if busy:
        _status(run, False, f"not started: another edgekit run ({', '.join(busy)}) was going on")
        (run / "pulled").touch()  # nothing to bring back
        print(f"another edgekit run is going on on this device ({', '.join(busy)}): one at a time, or each "
              "measures the other", file=sys.stderr, flush=True)
        return 3
    log = open(run / "log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.device.agent", "run", str(run)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(run))
    (run / "pid").write_text(f"{proc.pid}\n{process_start(proc.pid) or ''}\n")
    print(proc.pid, flush=True)
    return 0


def run(run: Path) -> int:
    job = read_job(run)
    timeout_s = job.timeout_s
    progress_log = open(run / "progress.log", "a", encoding="utf-8", buffering=1)

    def progress(label: str, done: float, total: float) -> None:
        progress_log.write(f"progress {done:g} {total:g} {label}\n")

    def on_term(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    try:
        if isinstance(job, EvalJob):  # edgekit eval --host: relative paths are files put in the run folder
            def here(p):
                return None if p is None else str(run / p) if not Path(p).is_absolute() else p

            # through a child, as a bench: `follow`, `list` and `kill` start without the measuring code
            result = native.call("edgekit.eval:run_eval", Path(job.model), reference=here(job.reference),
                                 text=Path(here(job.text)) if job.text else None, chunks=job.chunks, ctx=job.ctx,
                                 threads=job.threads, library="edgekit eval", what=f"the evaluation of {job.model}",
                                 progress=progress, timeout_s=timeout_s)
            name = "eval.json"
        else:
            result = native.call("edgekit.bench:bench_artifact", Path(job.model), job.settings, fmt=job.format,
                                 library=job.library, what=f"the benchmark of {job.model}",
                                 progress=progress, timeout_s=timeout_s)
            name = "result.json"
            if job.host and result.target == "local host":  # "this machine": here a device over SSH
                result.target = result.target_state.get("family") or "linux"
        if job.host:
            result.host.reached_as = job.host
        _write_whole(run / name, result.to_json() + "\n")
        _status(run, True, None)
        return 0
    except EdgekitError as e:
        if timeout_s and time.monotonic() - t0 >= timeout_s:  # native.call ended it at the deadline
            _status(run, False, f"ran past --timeout {timeout_s:g} s and was ended there (its process group killed)")
        else:
            _status(run, False, f"failed: {e}")
        return 1
    except KeyboardInterrupt:
        _status(run, False, "was ended by a signal (edgekit's --timeout, or kill)")
        return 1
    except Exception as e:  # a bug: said in the status, the traceback in the log
        traceback.print_exc()
        _status(run, False, f"failed: {type(e).__name__}: {e}")
        return 1


def follow(run: Path, skip: int = 0) -> int:
    seen = 0
    while True:
        done = (run / "status.json").exists()  # read before the log: its last lines are then complete
        try:
            lines = (run / "progress.log").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines[max(seen, skip):]:
            print(line, flush=True)
        seen = max(seen, len(lines))
        if done:
            print("status " + (run / "status.json").read_text(encoding="utf-8").strip(), flush=True)
            return 0
        if not _alive(run):
            time.sleep(1.0)  # it may have written status.json just now
            if not (run / "status.json").exists():
                _status(run, False, "ended without a result (killed, or the device restarted); "
                                    f"see {run / 'log'}")
            continue
        time.sleep(POLL_S)


def _pid(run: Path) -> tuple[int, str | None] | None:
    """(pid, its start time as start() recorded it) of the run's process, from its pid file."""
    try:
        lines = (run / "pid").read_text().splitlines()
        return int(lines[0].strip()), (lines[1].strip() or None) if len(lines) > 1 else None
    except (OSError, ValueError, IndexError):
        return None


def _alive(run: Path) -> bool:
    """Is the run's own process alive: its pid running, and (where start() could read one) with
    the start time it had, so that a pid the system gave to another process since is not it."""
    found = _pid(run)
    if found is None or not pid_alive(found[0]):
        return False
    return found[1] is None or process_start(found[0]) == found[1]


def kill(run: Path, reason: str) -> int:
    """End the run's process group, if the process the pid file names is still the run's (its start
    time as recorded, and a run of this agent); a pid now someone else's is never signalled."""
    found = _pid(run)
    if found is not None and _alive(run) and _is_agent_run(found[0], run):
        pid = found[0]
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _alive(run):
                time.sleep(0.1)
            if not _alive(run):
                break
    _status(run, False, reason)
    print("killed", flush=True)
    return 0


def _is_agent_run(pid: int, run: Path) -> bool:
    """Does process `pid` run `edgekit.device.agent run <run>` (its command line; True where the
    system shows none)?"""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return b"edgekit.device.agent" in argv and str(run).encode() in argv
    except OSError:
        pass
    try:
        out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return True
    return out.returncode != 0 or ("edgekit.device.agent" in out.stdout and str(run) in out.stdout)


LOST_AFTER_S = 60.0  # a run folder without a process or a status, older than this, is lost


def list_runs(runs: Path) -> int:
    """One JSON line per run: id, status, pulled, running. A run whose process is gone without a
    status (the device restarted, the OOM killer) gets one saying it was lost, so it is fetched
    and reported as what it is instead of waiting forever."""
    for d in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        status = _read_status(d)
        running = status is None and _alive(d)
        if status is None and not running and time.time() - d.stat().st_mtime > LOST_AFTER_S:
            _status(d, False, "was lost: its process ended without a status (the device restarted, or it was "
                              "killed from outside)")
            status = _read_status(d)
        print(json.dumps({"id": d.name, "status": status, "pulled": (d / "pulled").exists(),
                          "running": running}), flush=True)
    return 0


def _read_status(run: Path) -> dict | None:
    try:
        status = json.loads((run / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


USAGE = ("usage: python -m edgekit.device.agent start|run|follow|kill RUNDIR [ARG] | list RUNSDIR "
         "(what edgekit runs on a device; see edgekit.device.agent)")


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("start", "run", "follow", "kill", "list"):
        print(USAGE, file=sys.stderr)
        return 2
    verb, folder = argv[0], Path(argv[1])
    if verb != "list" and not (folder / "job.json").is_file():
        print(f"no run at {folder} (no job.json there)", file=sys.stderr)
        return 1
    if verb == "start":
        return start(folder)
    if verb == "run":
        return run(folder)
    if verb == "follow":
        return follow(folder, int(argv[2]) if len(argv) > 2 else 0)
    if verb == "kill":
        return kill(folder, argv[2] if len(argv) > 2 else "killed")
    return list_runs(folder)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
