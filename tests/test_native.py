"""A crash inside a native library ends as one error line, never a silently dead command.

The crashes here are real: the child reads address 0 (SIGSEGV, what llama.cpp's AMX path
does at ldtilecfg on Intel AMX CPUs) or raises SIGILL (what a wheel built for another CPU
does), through functions of Python's standard library, in the isolated child that
edgekit.native starts.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgekit import native
from edgekit.cli import cli
from edgekit.errors import EdgekitError


def test_values_and_edgekit_errors_cross_the_boundary():
    assert native.call("os.path:join", "a", "b", library="test", what="a join") == "a/b"
    with pytest.raises(EdgekitError) as e:
        native.call("edgekit.synth:get_preset", "no-such-preset", library="edgekit", what="a lookup")
    assert e.value.problem == "unknown preset 'no-such-preset'" and "choose one of" in e.value.fix


def test_segfault_is_one_line_naming_library_signal_step_and_fix():
    with pytest.raises(EdgekitError) as e:
        native.call("faulthandler:_read_null", library="llama.cpp", what="decode of m.gguf")
    text = str(e.value)
    assert text.startswith("llama.cpp crashed (SIGSEGV) in decode of m.gguf")
    assert "without AMX" in text and "#20824" in text and "\n" not in text


def test_sigill_names_the_cpu_mismatch():
    with pytest.raises(EdgekitError, match=r"llama.cpp crashed \(SIGILL\) in load.*instructions this machine lacks"):
        native.call("signal:raise_signal", signal.SIGILL, library="llama.cpp", what="load")


def test_other_exceptions_and_oom_kills_are_one_line():
    with pytest.raises(EdgekitError, match=r"^the parse failed \(json: JSONDecodeError: Expecting value"):
        native.call("json:loads", "not json", library="json", what="the parse")
    with pytest.raises(EdgekitError, match=r"crashed \(SIGKILL\).*OOM killer|crashed \(SIGKILL\).*free memory"):
        native.call("signal:raise_signal", signal.SIGKILL, library="optimum-onnx", what="the export")
    with pytest.raises(EdgekitError, match="custom fix"):
        native.call("signal:raise_signal", signal.SIGKILL, library="x", what="y", fixes={"SIGKILL": "custom fix"})


def test_a_hung_child_is_killed_at_the_timeout():
    with pytest.raises(EdgekitError, match="did not finish a nap within 1 s"):
        native.call("time:sleep", 60, library="test", what="a nap", timeout_s=1)


def test_progress_reaches_the_parent(tiny_qwen2, tmp_path):
    from edgekit.checkpoint import open_checkpoint
    from edgekit.converters.gguf import quantize_gguf, write_base_gguf

    base = tmp_path / "f16.gguf"
    write_base_gguf(open_checkpoint(str(tiny_qwen2)), base)
    seen = []
    quantize_gguf(base, tmp_path / "q.gguf", "Q4_0", threads=2, progress=lambda *a: seen.append(a))
    assert seen and seen[-1][1] == seen[-1][2] and seen[-1][0] == "quantize → q.gguf"


def test_the_current_folder_is_never_importable_in_a_child(tmp_path, monkeypatch):
    """A stray module where the user stands (here one shadowing a real name) is never run."""
    marker = tmp_path / "ran"
    for name in ("llama_cpp.py", "edgekit_stray.py"):
        (tmp_path / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(EdgekitError, match="ModuleNotFoundError"):
        native.call("importlib:import_module", "edgekit_stray", library="test", what="an import")
    assert native.call("importlib.util:find_spec", "llama_cpp", library="test", what="a lookup").origin != str(
        tmp_path / "llama_cpp.py")
    assert not marker.exists()


def test_export_with_a_crashing_llama_cpp_is_one_line_and_leaves_nothing(tiny_qwen2, tmp_path, monkeypatch):
    from edgekit import parity

    def crashing(path, ids, threads=None):  # llama.cpp dies in the logits check, as on an AMX CPU
        return native.call("faulthandler:_read_null", library="llama.cpp", what=f"decode of {path.name}")

    monkeypatch.setattr(parity, "llamacpp_logits", crashing)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["export", "gguf", str(tiny_qwen2), "-o", str(out), "--threads", "2"])
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "llama.cpp crashed (SIGSEGV) in decode of tiny-qwen2-F16.gguf" in lines[0]
    assert "Traceback" not in r.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_bench_runs_in_a_child_and_survives_its_crash(tiny_qwen2, tmp_path, monkeypatch):
    """`edgekit bench` itself, as a user runs it, with the runner's process dying mid-run."""
    script = ("import sys, edgekit.native as n; real = n.call\n"
              "def call(function, *a, **k):\n"
              "    if function != 'edgekit.bench:bench_artifact':\n"
              "        return real(function, *a, **k)\n"
              "    return real('faulthandler:_read_null', library=k['library'], what=k['what'])\n"
              "n.call = call\n"
              "from edgekit.cli import main; sys.argv = ['edgekit'] + sys.argv[1:]; main()")
    from edgekit.converters.gguf import export_gguf

    export_gguf(str(tiny_qwen2), tmp_path / "g", ["Q4_0"], verify=False, threads=2)
    run = subprocess.run([sys.executable, "-c", script, "bench", str(tmp_path / "g"), "-p", "8", "-n", "4",
                          "-r", "1", "-o", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith(
        "error: llama.cpp crashed (SIGSEGV) in the benchmark of tiny-qwen2-Q4_0.gguf"), run.stderr
    assert "Fatal Python error" not in run.stderr and not (tmp_path / "r.json").exists()


def _alive(pid: int) -> bool:
    from edgekit.atomic import pid_alive

    return pid_alive(pid)


def test_a_child_and_what_it_started_die_with_a_parent_killed_by_sigkill(tmp_path):
    """kill -9 of edgekit (a CI timeout, the OOM killer) used to leave its native child running,
    slowing every later measurement. Here the parent calls a child that starts a grandchild (as a
    power sensor's process would) and waits; the parent is then SIGKILLed: neither stays."""
    import time

    pids = tmp_path / "pids"
    # the child runs sh (the grandchild), which writes both pids and sleeps
    script = f'echo $PPID $$ > {pids}.tmp && mv {pids}.tmp {pids} && sleep 300'
    parent = subprocess.Popen([sys.executable, "-c", f"""
from edgekit import native
native.call("subprocess:run", ["sh", "-c", {script!r}], library="test", what="a long call")
"""])
    deadline = time.monotonic() + 60  # a hang guard, not a speed check
    while not (pids.exists() and len(pids.read_text().split()) == 2):
        assert time.monotonic() < deadline and parent.poll() is None, "the child never started"
        time.sleep(0.1)
    child, grandchild = map(int, pids.read_text().split())
    assert _alive(child) and _alive(grandchild)
    parent.kill()
    parent.wait()
    while (_alive(child) or _alive(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the native child outlived its parent"
    assert not _alive(grandchild), "what the child started outlived it"


def test_the_folders_of_dead_parents_are_removed_and_live_ones_kept(tmp_path):
    import os
    import time

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    old = time.time() - 3600
    stale, mine, fresh = (tmp_path / f"{native.CHILD_DIR_PREFIX}{dead}-abc", tmp_path / f"{native.CHILD_DIR_PREFIX}"
                          f"{os.getpid()}-abc", tmp_path / f"{native.CHILD_DIR_PREFIX}{dead}-new")
    for d in (stale, mine, fresh):
        d.mkdir()
        (d / "in.pickle").write_bytes(b"x")
    for d in (stale, mine):
        os.utime(d, (old, old))
    other = tmp_path / "edgekit-children-of-someone"  # not ours by name: never touched
    other.mkdir()
    assert native.remove_stale_child_dirs(tmp_path) == [stale]
    assert not stale.exists() and mine.exists() and fresh.exists() and other.exists()
