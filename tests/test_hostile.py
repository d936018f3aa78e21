"""Hostile input and hostile surroundings: each ends as the promise says (one line `error: problem;
fix`, exit 1 or Click's usage exit 2, no traceback, nothing half-written, nothing of the user's
lost). One table-driven test per class: configs, tokenizers, output paths, recordings and
devices, signals and stray files, numbers in logs and results, a full disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

from edgekit.cli import cli

EDGEKIT = [sys.executable, "-c", "import sys; from edgekit.cli import main; sys.argv[0] = 'edgekit'; main()"]


def run(*args, env=None, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, input=input)


def _no_leftovers(folder: Path, name: str) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(f".{name}")], "temporary files left"


# ---------------------------------------------------------------- configs


def _set(path, value):
    def edit(cfg):
        node = cfg
        for key in path[:-1]:
            node = node[key]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return edit


_DELETE = object()
HOSTILE_CONFIGS = {  # case -> (edit, words the one line must hold)
    "architectures an int": (_set(["architectures"], 7), "architectures must be a list"),
    "architectures a string": (_set(["architectures"], "Qwen2ForCausalLM"), "architectures must be a list"),
    "hidden_size a string": (_set(["hidden_size"], "abc"), "hidden_size"),
    "no attention heads": (_set(["num_attention_heads"], 0), "num_attention_heads"),
    "negative layers": (_set(["num_hidden_layers"], -1), "num_hidden_layers"),
    "a bool for a size": (_set(["intermediate_size"], True), "intermediate_size"),
    "kv heads not dividing": (_set(["num_key_value_heads"], 3), "not a multiple of num_key_value_heads"),
    "Qwen2 class labelled llama": (_set(["model_type"], "llama"), "model_type 'llama'"),
    "no model_type": (_set(["model_type"], _DELETE), "model_type is missing"),
    "eps a string": (_set(["rms_norm_eps"], "1e-6"), "rms_norm_eps"),
}


# ---------------------------------------------------------------- tokenizers


HOSTILE_TOKENIZERS = {
    "split pattern a string": (lambda tj: tj["pre_tokenizer"]["pretokenizers"][0].update(pattern="\\s+"),
                               "pattern"),
    "added token without content": (lambda tj: tj["added_tokens"][0].pop("content"), "content"),
    "added token id a string": (lambda tj: tj["added_tokens"][0].update(id="x"), "id"),
    "vocab ids negative": (lambda tj: tj["model"]["vocab"].update({"zz": -5}), "vocab"),
    "ids beyond vocab_size": (lambda tj: tj["added_tokens"][0].update(id=10**6), "beyond the model's vocab_size"),
}


HOSTILE_FILES = {**{("config.json", k): v for k, v in HOSTILE_CONFIGS.items()},
                 **{("tokenizer.json", k): v for k, v in HOSTILE_TOKENIZERS.items()}}


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
@pytest.mark.parametrize("file,case", list(HOSTILE_FILES), ids=[f"{f}: {c}" for f, c in HOSTILE_FILES])
def test_hostile_configs_and_tokenizers_are_one_line_in_both_exports(tiny_qwen2, tmp_path, file, case, fmt):
    """One validation (edgekit.hf_schema) serves both exports: the same line for GGUF and ONNX."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_qwen2, ckpt)
    data = json.loads((ckpt / file).read_text())
    edit, words = HOSTILE_FILES[file, case]
    edit(data)
    (ckpt / file).write_text(json.dumps(data))
    out = tmp_path / "out"
    assert_one_line_error(run("export", fmt, ckpt, "-o", out, "--no-verify"), words)
    assert not out.exists()
    _no_leftovers(tmp_path, "out")


# ---------------------------------------------------------------- output paths


@pytest.fixture(scope="module")
def gguf_file(tiny_qwen2, tmp_path_factory):
    from edgekit.converters.gguf import export_gguf

    out = tmp_path_factory.mktemp("g") / "g"
    export_gguf(str(tiny_qwen2), out, ["Q4_0"], verify=False, threads=2)
    return out / "tiny-qwen2-Q4_0.gguf"


def test_output_paths_that_are_inputs_or_folders_are_refused_before_any_work(gguf_file, tmp_path, monkeypatch):
    model_bytes = gguf_file.read_bytes()
    bench = ["bench", gguf_file, "-p", 8, "-n", 4, "-r", 1, "--power", "none"]
    cases = [  # (args, words)
        ([*bench, "-o", gguf_file], "is the input"),
        ([*bench, "-o", tmp_path], "is a folder"),
    ]
    import edgekit.native

    def no_run(*_a, **_k):
        raise AssertionError("the benchmark started before its output path was checked")

    with monkeypatch.context() as m:
        m.setattr(edgekit.native, "call", no_run)  # refused before the run's child is even started
        for args, words in cases:
            assert_one_line_error(run(*args), words)
    assert gguf_file.read_bytes() == model_bytes
    assert not [p for p in tmp_path.iterdir()], "nothing written beside"
    r = run(*bench, "-o", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert_one_line_error(run("report", tmp_path / "r.json", "-o", tmp_path), "is a folder")
    assert_one_line_error(run("report", tmp_path / "r.json", "-o", tmp_path / "r.json"), "is the input")
    assert json.loads((tmp_path / "r.json").read_text())["schema_version"]


def test_force_never_replaces_home_cwd_root_or_a_folder_above_them(tiny_qwen2, tmp_path, monkeypatch):
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    (tmp_path / "a" / "keep.txt").write_text("mine")
    monkeypatch.chdir(deep)
    for args in (["export", "gguf", tiny_qwen2, "-o", "..", "--force", "--no-verify"],
                 ["export", "gguf", tiny_qwen2, "-o", ".", "--force", "--no-verify"],
                 ["export", "onnx", tiny_qwen2, "-o", "../..", "--force", "--no-verify"],
                 ["synth", "tiny-qwen2", ".", "--force"],
                 ["synth", "tiny-qwen2", "..", "--force"],
                 ["probe", "--record", ".", "--force"],
                 ["probe", "--record", "/", "--force"],
                 ["demo", "-o", "..", "--force"],
                 ["export", "gguf", tiny_qwen2, "-o", Path.home(), "--force", "--no-verify"]):
        assert_one_line_error(run(*args), "home, current or root folder, or one above them")
    assert (tmp_path / "a" / "keep.txt").read_text() == "mine" and deep.is_dir()


def test_demo_keeps_what_the_user_has_in_its_folder(tmp_path):
    out = tmp_path / "mine"
    (out / "gguf").mkdir(parents=True)
    (out / "gguf" / "notes.txt").write_text("keep me")
    assert_one_line_error(run("demo", "-o", out), "already exists and is not empty", "--force")
    assert (out / "gguf" / "notes.txt").read_text() == "keep me"


def test_a_folder_that_appears_during_an_export_is_not_replaced(tiny_qwen2, tmp_path, monkeypatch):
    from edgekit.converters import gguf as conv

    out = tmp_path / "out"
    real = conv.check_gguf_complete

    def someone_else_writes(path):  # mid-export, another program creates the output folder
        real(path)
        out.mkdir(exist_ok=True)
        (out / "theirs.txt").write_text("theirs")

    monkeypatch.setattr(conv, "check_gguf_complete", someone_else_writes)
    assert_one_line_error(run("export", "gguf", tiny_qwen2, "-o", out, "--quant", "Q4_0", "--no-verify"),
                          "appeared while this command ran", "not replaced")
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    _no_leftovers(tmp_path, "out")


# ---------------------------------------------------------------- recordings and devices


def _recording(folder: Path, facts: dict[str, str]) -> Path:
    folder.mkdir()
    for name, text in facts.items():
        (folder / f"{name}.txt").write_text(text)
    return folder


def test_device_text_with_escape_sequences_is_printed_clean(tmp_path):
    evil = "\x1b[2J\x1b[H\x1b]0;owned\x07\x1b[31mRaspberry Pi 5 Model B Rev 1.0\x1b[0m\u202e"
    rec = _recording(tmp_path / "rec", {"uname_m": "aarch64\n", "uname_s": "Linux\n",
                                        "device_tree_model": evil + "\x00",
                                        "meminfo": "MemTotal:  8000000 kB\n"})
    r = run("probe", "--replay", rec)
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "\u202e" not in r.output and "\x07" not in r.output
    assert "Raspberry Pi 5 Model B Rev 1.0" in r.output
    r = run("probe", "--replay", rec, "--json")
    assert "\x1b" not in r.output  # JSON escapes it
    assert json.loads(r.output)["transport"].startswith("recorded:")


def test_empty_recordings_and_empty_hosts_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("probe", "--replay", tmp_path / "empty"), "holds no recorded facts")
    _recording(tmp_path / "junk", {"notes": "hello"})
    assert_one_line_error(run("probe", "--replay", tmp_path / "junk"), "holds no recorded facts")
    assert_one_line_error(run("probe", "--host", ""), "is not an SSH destination")
    assert_one_line_error(run("probe", "--host", "-oProxyCommand=x"), "is not an SSH destination")


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")
def test_a_host_that_accepts_and_never_answers_ends_at_the_first_command(tmp_path):
    """A listener on 127.0.0.1 that accepts and stays silent: one line after one timeout, not 13."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    before = set(Path("/tmp").glob("ek-*"))
    try:
        line = assert_one_line_error(run("probe", "--host", "nobody@127.0.0.1", "--ssh-option", f"Port={port}",
                                         "--ssh-option", "ConnectTimeout=3",
                                         "--ssh-option", f"UserKnownHostsFile={tmp_path / 'kh'}"),
                                     "cannot reach nobody@127.0.0.1")
        assert "`ssh nobody@127.0.0.1 true`" in line
        # the first command that cannot reach the host ends the run: one connection, not one per command
        assert len(held) == 1, f"{len(held)} connection attempts"
    finally:
        stop.set()
        for c in held:
            c.close()
        server.close()
    assert set(Path("/tmp").glob("ek-*")) == before, "the SSH control folder was left behind"


def test_the_suggested_ssh_command_quotes_the_destination():
    from edgekit.device.transport import SSHTransport

    t = SSHTransport("x;touch /tmp/pwned;y@127.0.0.1", ["Port=1", "ConnectTimeout=2"])
    try:
        with pytest.raises(Exception) as e:
            t.run("true", timeout_s=5)
        assert "`ssh 'x;touch /tmp/pwned;y@127.0.0.1' true`" in str(e.value)
    finally:
        t.close()


# ---------------------------------------------------------------- signals and stray files


def test_sigterm_mid_export_is_one_line_and_leaves_nothing(tiny_qwen2, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([*EDGEKIT, "export", "gguf", str(tiny_qwen2), "-o", str(out), "--threads", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.partial-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # into the conversion or the checks
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    lines = [ln for ln in err.splitlines() if ln.strip() and "%" not in ln and "→" not in ln]
    assert lines[-1] == "terminated (SIGTERM); nothing was left at the output path", err
    assert "Traceback" not in err
    time.sleep(0.5)  # the killed child's files go with it
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_stray_module_in_the_current_folder_is_never_run(tiny_qwen2, tmp_path):
    marker = tmp_path / "RAN"
    for name in ("llama_cpp.py", "gguf.py", "onnxruntime.py", "edgekit.py"):
        (tmp_path / name).write_text(f"open({str(marker)!r}, 'a').write({name!r})\nraise SystemExit(0)\n")
    exe = shutil.which("edgekit") or str(Path(sys.executable).parent / "edgekit")
    run_ = subprocess.run([exe, "export", "gguf", str(tiny_qwen2), "-o", str(tmp_path / "out"), "--quant", "Q4_0",
                           "--threads", "2"], cwd=tmp_path, capture_output=True, text=True)
    assert run_.returncode == 0, run_.stderr
    assert not marker.exists(), marker.read_text()
    assert (tmp_path / "out" / "tiny-qwen2-Q4_0.gguf").is_file()


# ---------------------------------------------------------------- numbers in logs and results


def test_hostile_numbers_in_logs_results_and_options(tmp_path, tiny_qwen2):
    pmic = tmp_path / "pmic.txt"
    pmic.write_text("  VDD_CORE_A current(0)=1.2.3A\n  VDD_CORE_V volt(8)=0.8A\n")
    assert_one_line_error(run("power", "parse", "rpi5", pmic), "no rpi5 readings")
    plist = (b'<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>elapsed_ns</key>'
             b'<integer>1000000000</integer><key>processor</key><dict><key>cpu_power</key><string>lots</string>'
             b'</dict></dict></plist>\x00')
    (tmp_path / "pm.txt").write_bytes(plist)
    assert_one_line_error(run("power", "parse", "powermetrics", tmp_path / "pm.txt"), "no powermetrics readings")
    (tmp_path / "pm2.txt").write_text("*** Sampled system activity (Mon) (1000.1ms elapsed) ***\nCPU Power: lots mW\n")
    assert_one_line_error(run("power", "parse", "powermetrics", tmp_path / "pm2.txt"), "no powermetrics readings")
    assert_one_line_error(run("power", "parse", "rpi5", tmp_path), "is a folder, not a log file")
    (tmp_path / "r.json").write_text(json.dumps({"schema_version": "2"}))
    assert_one_line_error(run("report", tmp_path / "r.json", "-o", tmp_path / "r.md"), "schema_version \"2\"")
    for fmt in ("gguf", "onnx"):
        r = run("export", fmt, tiny_qwen2, "-o", tmp_path / "o", "--threads", "-1")
        assert r.exit_code == 2 and "--threads" in r.output and "Traceback" not in r.output


def test_corrupt_gguf_keeps_llama_cpps_own_log_quiet(gguf_file, tmp_path):
    bad = tmp_path / "bad.gguf"
    data = bytearray(gguf_file.read_bytes())
    data[8:24] = b"\xff" * 16  # tensor and metadata counts: nonsense
    bad.write_bytes(bytes(data))
    proc = subprocess.run([*EDGEKIT, "inspect", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith("error: ") and "gguf_init" not in proc.stderr


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a 3 MB tmpfs")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_a_full_disk_is_one_line_naming_the_disk_not_memory(tiny_qwen2, small_disk, fmt):
    out = small_disk / "out"
    line = assert_one_line_error(run("export", fmt, tiny_qwen2, "-o", out, "--no-verify"), "disk full")
    assert "RAM" not in line and "memory" not in line
    assert list(small_disk.iterdir()) == []


def test_an_error_line_quoting_outside_text_carries_no_escape_codes(tmp_path):
    """Error lines quote paths and what devices said: the one error boundary prints them clean."""
    from click.testing import CliRunner

    from edgekit.cli import cli

    odd = tmp_path / "model\x1b[2J\x1b]0;pwned\x07.gguf"
    r = CliRunner().invoke(cli, ["inspect", str(odd)])
    line = assert_one_line_error(r, "does not exist")
    assert "\x1b" not in line and "\x07" not in line and "model.gguf" in line.replace("[2J", "")
