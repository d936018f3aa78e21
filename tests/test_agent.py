"""The device side of a run (edgekit.device.agent), on run folders here: a pid file never makes it
signal a process that is not the run's, a run whose process vanished is reported lost, two runs
do not measure each other, and a wrong call is one usage line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from edgekit.device import agent


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _run(runs, name, pid_text=None, age_s=0.0):
    run = runs / name
    run.mkdir(parents=True)
    (run / "job.json").write_text(json.dumps({"kind": "bench", "model": "m.gguf", "artifact_key": "m",
                                              "settings": {}}))
    if pid_text is not None:
        (run / "pid").write_text(pid_text)
    if age_s:
        old = time.time() - age_s
        os.utime(run, (old, old))
    return run


def _status(run):
    return json.loads((run / "status.json").read_text())


def test_kill_never_signals_a_process_that_is_not_the_run(tmp_path, sleeper, capsys):
    """The pid file names a live process that is someone else's (a pid reused, or a hostile file):
    kill writes the run's status and leaves that process alone."""
    for token in ("", agent.process_start(sleeper.pid) or ""):  # no start time recorded; the right one
        run = _run(tmp_path / f"runs{len(token)}", "20261203T120000Z-abc123", f"{sleeper.pid}\n{token}\n")
        assert agent.kill(run, "ran past --timeout") == 0
        assert sleeper.poll() is None, "a process that is not the run's was signalled"
        assert _status(run) == {**_status(run), "ok": False, "error": "ran past --timeout"}


def test_a_reused_pid_is_not_the_run_and_the_run_is_lost(tmp_path, sleeper, capsys):
    runs = tmp_path / "runs"
    reused = _run(runs, "20261203T120000Z-aaaaaa", f"{sleeper.pid}\nticks 1\n", age_s=3600)
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
    gone = _run(runs, "20261203T120000Z-bbbbbb", f"{dead_pid}\n\n", age_s=3600)
    fresh = _run(runs, "20261203T120000Z-cccccc")  # just made, not started yet: not lost
    assert not agent._alive(reused) and not agent._alive(gone)
    assert agent.list_runs(runs) == 0
    listed = {r["id"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    for run in (reused, gone):
        assert listed[run.name]["running"] is False and "was lost" in listed[run.name]["status"]["error"]
    assert listed[fresh.name]["status"] is None


def test_a_second_run_is_refused_while_one_is_going_on(tmp_path, sleeper, capsys):
    runs = tmp_path / "runs"
    _run(runs, "20261203T120000Z-aaaaaa", f"{sleeper.pid}\n{agent.process_start(sleeper.pid) or ''}\n")
    second = _run(runs, "20261203T120000Z-bbbbbb")
    assert agent.start(second) == 3
    assert "another edgekit run is going on" in capsys.readouterr().err
    assert "not started" in _status(second)["error"] and (second / "pulled").exists()
    assert not (second / "pid").exists()  # nothing was started


@pytest.mark.parametrize("argv, code, words", [([], 2, "usage:"), (["frobnicate", "x"], 2, "usage:"),
                                               (["kill"], 2, "usage:"), (["follow", "/nonexistent"], 1, "no run at")])
def test_a_wrong_call_is_one_line_not_a_traceback(argv, code, words):
    r = subprocess.run([sys.executable, "-m", "edgekit.device.agent", *argv], capture_output=True, text=True)
    assert r.returncode == code and words in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
