"""Deploy and bench on a device over real OpenSSH: sshd instances on 127.0.0.1 stand in for
devices, each with its own HOME and a PATH that starts with a folder of fakes (a `df` that
reports a full disk, a `cat` whose /proc/meminfo is small, an old `python3`) which the fault
tests fill and empty. Installs use local wheels (tests/devices.py repacks this venv's own
distributions, plus the llama-cpp-python wheel this machine built): no network, no compile."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from devices import (
    AWKWARD_DIR,
    BASE_PYTHON,
    DEVICE_ROOTS,
    ONNX_ROOTS,
    _device,
    flags,
    free_port,
    wheelhouse,
)
from helpers import assert_one_line_error

from edgekit.cli import cli


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """edgekit's cache (logs, wheels) in a folder of the test's own, for the module."""
    from edgekit.llamacpp_build import wheel_dir

    wheels = tmp_path_factory.mktemp("wheels")
    wheelhouse(wheels, DEVICE_ROOTS + ONNX_ROOTS)  # before EDGEKIT_CACHE moves: the llama wheel is found there
    assert any(p.name.startswith("llama_cpp_python-") for p in wheels.iterdir()), wheel_dir()
    old = os.environ.get("EDGEKIT_CACHE")
    os.environ["EDGEKIT_CACHE"] = str(tmp_path_factory.mktemp("edgekit-cache"))
    yield wheels
    if old is None:
        os.environ.pop("EDGEKIT_CACHE")
    else:
        os.environ["EDGEKIT_CACHE"] = old


@pytest.fixture(scope="module")
def device(tmp_path_factory, cache):
    yield from _device(tmp_path_factory.mktemp("device-a"))


@pytest.fixture(scope="module")
def gguf(exported, tiny_qwen2) -> Path:
    folder, _manifest = exported(tiny_qwen2)
    return folder / f"{tiny_qwen2.name}-Q4_K_M.gguf"


def invoke(args, **kw):
    return CliRunner().invoke(cli, args, catch_exceptions=False, **kw)


def test_deploy_through_a_host_alias_then_nothing_twice(device, cache, gguf, tmp_path):
    """Deploy through an ssh_config Host alias into a folder with a space and quotes; a second
    deploy sends nothing; the device venv holds only the device set (no torch, transformers...)."""
    config = tmp_path / "ssh_config"
    opts = dict(o.split("=", 1) for o in device.options)
    config.write_text(f"Host edgedev\n  HostName 127.0.0.1\n  User {device.dest.split('@')[0]}\n"
                      f"  Port {opts['Port']}\n  IdentityFile {opts['IdentityFile']}\n  IdentitiesOnly yes\n"
                      f"  UserKnownHostsFile {opts['UserKnownHostsFile']}\n")
    args = ["deploy", str(gguf), "--host", "edgedev", "--ssh-config", str(config), "--accept-new-host-key",
            "--remote-dir", device.remote, "--python", BASE_PYTHON, "--wheels", str(cache)]
    r = invoke([*args, "--json"])
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert first["sent_bytes"] == gguf.stat().st_size + (gguf.parent / "manifest.json").stat().st_size
    model = Path(first["model_path"])
    assert model.read_bytes() == gguf.read_bytes() and model.is_symlink()
    assert str(model).startswith(device.remote + "/models/")
    store = Path(device.remote) / "store" / "sha256"
    from edgekit.manifest import sha256_of

    assert (store / sha256_of(gguf)).is_file() and not list((Path(device.remote) / "store" / "incoming").iterdir())
    manifest = json.loads((Path(device.remote) / "deploy.json").read_text())
    assert manifest["runtimes"]["llama.cpp"]["version"] and manifest["runtimes"]["llama.cpp"]["backends"] == ["CPU"]
    assert sha256_of(gguf) in manifest["models"]

    r = invoke(args)
    assert r.exit_code == 0, r.output
    assert "already deployed: nothing transferred" in r.stdout
    venv_python = Path(device.remote) / "venv" / "bin" / "python"
    code = ("import importlib.util as u; print([m for m in ('torch', 'transformers', 'optimum', 'safetensors', "
            "'matplotlib', 'tokenizers') if u.find_spec(m)])")
    assert subprocess.run([str(venv_python), "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_the_device_set_runs_bench_and_doctor(device, gguf, cache):
    """A venv with only the device dependency set runs `edgekit bench` and `edgekit doctor`."""
    invoke(["deploy", str(gguf), *device.args("--wheels", str(cache))])
    edgekit = [str(Path(device.remote) / "venv" / "bin" / "python"), "-m", "edgekit"]  # pip's script cannot hold a "
    model = next((Path(device.remote) / "models").glob(f"{gguf.stem}-*")) / gguf.name
    r = subprocess.run([*edgekit, "bench", str(model), "-p", "8", "-n", "4", "-r", "1", "--json"],
                       capture_output=True, text=True, cwd=device.home)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["metrics"]["tg_tok_s"]["mean"] > 0 and result["artifact"]["quant"] == "Q4_K_M"
    r = subprocess.run([*edgekit, "doctor", "--json"], capture_output=True, text=True, cwd=device.home)
    report = json.loads(r.stdout)
    assert {c["name"]: c["status"] for c in report["checks"]}["llama.cpp build"] == "ok"


def test_remote_bench_brings_result_and_logs_back_and_report_reads_them(device, gguf, cache, tmp_path):
    results = tmp_path / "results"
    r = invoke(["bench", str(gguf), *device.args("--wheels", str(cache)), "-p", "8", "-n", "4", "-r", "2",
                "--results", str(results)])
    assert r.exit_code == 0, r.output
    (folder,) = [p.parent for p in results.rglob("result.json")]
    assert folder.parent.parent.name == device.dest and folder.parent.name.startswith(gguf.stem)
    assert {p.name for p in folder.iterdir()} >= {"result.json", "job.json", "status.json", "progress.log", "log"}
    from edgekit.results import BenchResult

    result = BenchResult.load(folder / "result.json")
    assert result.settings.repetitions == 2 and len(result.metrics.tg_tok_s.samples) == 2
    assert result.artifact.path.startswith(device.remote)  # it ran there, on the deployed copy
    assert len(folder.joinpath("progress.log").read_text().splitlines()) == 2 * 3  # pp, tg, ttft x 2
    r = invoke(["report", str(results), "-o", str(tmp_path / "report.md")])
    assert r.exit_code == 0, r.output
    assert gguf.name in (tmp_path / "report.md").read_text()
    # pulled: a fetch finds nothing new
    r = invoke(["fetch", "--host", device.dest, *flags(device.options), "--remote-dir", device.remote,
                "--results", str(results)])
    assert r.exit_code == 0 and "nothing to fetch" in r.output


def test_onnx_folder_deploys_with_onnxruntime_and_benches(device, cache, onnx_export, tiny_qwen2, tmp_path):
    folder, _manifest = onnx_export(tiny_qwen2, "int4")
    results = tmp_path / "results"
    r = invoke(["bench", str(folder), *device.args("--wheels", str(cache)), "-p", "8", "-n", "4", "-r", "1",
                "--results", str(results), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["runtime"]["name"] == "onnxruntime" and result["metrics"]["tg_tok_s"]["mean"] > 0
    deployed = json.loads((Path(device.remote) / "deploy.json").read_text())
    assert set(deployed["runtimes"]) == {"llama.cpp", "onnxruntime"}
    key = next(k for k, a in deployed["artifacts"].items() if a["format"] == "onnx")
    there = {p.name for p in (Path(device.remote) / "models" / key).iterdir()}
    assert {"model.onnx", "genai_config.json", "manifest.json"} <= there
    assert "CPUExecutionProvider" in deployed["runtimes"]["onnxruntime"]["backends"]  # as the device's doctor read them
    r = invoke(["deploy", str(folder), *device.args("--wheels", str(cache))])
    assert r.exit_code == 0 and "already deployed: nothing transferred" in r.output, r.output


# ---------------------------------------------------------------- faults


def _upload_cut_then_resumed(device, gguf_big: Path, extra_env: dict, method: str, tmp_path):
    """Start a rate-limited deploy, kill it (and its ssh) once part of the file is on the device,
    then deploy again: the second run sends only the rest, and the checksum matches."""
    from edgekit.manifest import sha256_of

    sha = sha256_of(gguf_big)
    partial = Path(device.remote) / "store" / "incoming" / f"{sha}.partial"
    env = {**os.environ, **extra_env}
    argv = [sys.executable, "-m", "edgekit", "deploy", str(gguf_big), *device.args(), "--bwlimit", "64"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120  # a hang guard, not a measurement
    while not (partial.exists() and partial.stat().st_size > 64 * 1024):
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "the upload never started"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the workstation side dies: ssh and rsync/sftp with it
    proc.wait()
    kept = partial.stat().st_size
    assert 0 < kept < gguf_big.stat().st_size
    r = subprocess.run(argv[:-2] + ["--json"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["resumed_bytes"] >= kept * 0.5 and out["sent_bytes"] < gguf_big.stat().st_size
    assert any(method in what and "sha256 verified" in what for _, what in out["steps"])
    assert Path(out["model_path"]).read_bytes() == gguf_big.read_bytes() and not partial.exists()


@pytest.fixture(scope="module")
def big_gguf(exported, tiny_llama) -> Path:
    folder, _ = exported(tiny_llama)
    return folder / f"{tiny_llama.name}-F16.gguf"


def test_cut_upload_resumes_by_rsync(device, big_gguf, cache, tmp_path):
    assert shutil.which("rsync"), "rsync is needed for this test (apt-get install rsync; .ci/run does)"
    invoke(["deploy", str(big_gguf.with_name(big_gguf.name.replace("F16", "Q4_0"))),
            *device.args("--wheels", str(cache))])  # venv and runtime in place: the cut falls in the upload
    _upload_cut_then_resumed(device, big_gguf, {}, "rsync", tmp_path)


def test_cut_upload_resumes_by_sftp_without_rsync(device, big_gguf, exported, tiny_llama, cache, tmp_path):
    """rsync hidden from this machine's PATH: the sftp reput path."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("ssh", "scp", "sftp"):
        os.symlink(shutil.which(tool), tools / tool)
    other = big_gguf.with_name(big_gguf.name.replace("F16", "Q4_K_M"))
    copy = _fresh_copy(big_gguf, tmp_path)  # the rsync test's file is on the device already
    invoke(["deploy", str(other), *device.args("--wheels", str(cache))])
    _upload_cut_then_resumed(device, copy, {"PATH": f"{tools}:{Path(sys.executable).parent}"}, "sftp", tmp_path)


def test_unknown_and_changed_host_keys_are_refused(device, gguf, tmp_path):
    opts = [o for o in device.options if not o.startswith(("UserKnownHostsFile", "StrictHostKeyChecking"))]
    known = tmp_path / "known_hosts"
    base = ["deploy", str(gguf), "--host", device.dest, *flags([*opts, f"UserKnownHostsFile={known}"]),
            "--remote-dir", device.remote, "--python", BASE_PYTHON]
    assert_one_line_error(invoke(base), "host key is not known", "--accept-new-host-key")
    assert not known.exists() or known.read_text() == ""
    probe = ["probe", "--host", device.dest, *flags([*opts, f"UserKnownHostsFile={known}"])]
    r = invoke([*probe, "--accept-new-host-key"])
    assert r.exit_code == 0, r.output
    assert subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{device.port}", "-f", str(known)],
                          capture_output=True).returncode == 0  # remembered (hashed or not)
    assert invoke(probe).exit_code == 0  # and known from now on, without the flag
    # the device's key changes (reinstalled, or someone in between): refused even with the flag
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{device.port} {other[0]} {other[1]}\n")
    assert_one_line_error(invoke([*base, "--accept-new-host-key"]), "host key has CHANGED", "ssh-keygen -R")


def _fresh_copy(gguf: Path, folder: Path) -> Path:
    """`gguf` with its last byte (tensor data) flipped: still a whole GGUF, but one no device holds."""
    copy = folder / "fresh" / gguf.name
    copy.parent.mkdir(exist_ok=True)
    data = bytearray(gguf.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    return copy


def test_full_disk_is_refused_before_anything_is_uploaded(device, tmp_path, exported, tiny_llama):
    device.fake("df", "echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
                      "echo '/dev/fake 100000 99900 100 100% /'\n")
    try:
        gguf = _fresh_copy(exported(tiny_llama)[0] / f"{tiny_llama.name}-Q4_K_M.gguf", tmp_path)
        before = sorted(p.name for p in (Path(device.remote) / "store" / "sha256").iterdir()) \
            if Path(device.remote).exists() else []
        line = assert_one_line_error(invoke(["deploy", str(gguf), *device.args()]), "not enough disk",
                                     "0.1 MiB free", "--remote-dir")
        assert "model" in line
        after = sorted(p.name for p in (Path(device.remote) / "store" / "sha256").iterdir()) \
            if Path(device.remote).exists() else []
        assert before == after
    finally:
        device.clear_fakes()


def test_a_model_too_big_for_the_ram_is_refused_before_upload(device, gguf, tmp_path):
    # 280 MiB: plan's rule keeps 1 GiB for the OS, so nothing is usable
    device.fake("cat", 'if [ "$1" = /proc/meminfo ]; then echo "MemTotal:  286720 kB"; '
                       'echo "MemAvailable: 131072 kB"; else exec /bin/cat "$@"; fi\n')
    copy = _fresh_copy(gguf, tmp_path)
    try:
        assert_one_line_error(invoke(["deploy", str(copy), *device.args()]), "does not fit in", "RAM",
                              "weights 1.1 MiB", "KV cache at ctx 4096 4.0 MiB",
                              "usable 0.0 MiB of 280.0 MiB", "RAM less 1.0 GiB for the OS", "smaller quantization")
    finally:
        device.clear_fakes()
    from edgekit.manifest import sha256_of

    assert not (Path(device.remote) / "store" / "sha256" / sha256_of(copy)).exists()


def test_a_device_python_too_old_is_refused_with_what_to_install(device, gguf):
    device.fake("python3", 'case "$*" in *version_info*) echo 3.8.10;; esac; exit 0\n')  # venv: "yes"
    try:
        line = assert_one_line_error(
            invoke(["deploy", str(gguf), "--host", device.dest, *flags(device.options), "--remote-dir",
                    device.remote + "-old", "--python", "python3"]),  # the name: the fake is first on PATH
            "too old", "3.8.10", "needs 3.10")
        assert "--python" in line
    finally:
        device.clear_fakes()
    assert not Path(device.remote + "-old").exists()


def test_a_hung_remote_run_is_ended_at_the_timeout(device, gguf, cache, tmp_path):
    """The model the run opens is a FIFO nobody writes: the run hangs in open(); --timeout ends
    it there, process group and all, and says so."""
    from edgekit.device.runs import remote_bench
    from edgekit.device.transport import open_transport
    from edgekit.errors import EdgekitError
    from edgekit.settings import BenchSettings

    invoke(["deploy", str(gguf), *device.args("--wheels", str(cache))])
    fifo = tmp_path / "hangs.gguf"
    os.mkfifo(fifo)
    with open_transport(device.dest, device.options) as t:
        with pytest.raises(EdgekitError) as e:
            remote_bench(t, device.remote, str(fifo), "gguf", "hung", BenchSettings(n_prompt=8, n_gen=4),
                         host=device.dest, results=tmp_path / "results", timeout_s=3)
    assert "ran past --timeout 3 s" in str(e.value) and "\n" not in str(e.value)
    (folder,) = (tmp_path / "results").rglob("status.json")
    status = json.loads(folder.read_text())
    assert status["ok"] is False
    from edgekit.device.agent import _alive

    assert not _alive(Path(device.remote) / "runs" / folder.parent.name)  # ended there, not left hanging


def test_sigterm_during_bench_host_stops_following_at_once_and_the_run_goes_on(device, gguf, cache, tmp_path):
    """SIGTERM (or Ctrl-C) while bench --host follows a long run: it used to follow the run to its
    end. Now the follow ends at once, the line says the run goes on there and how to fetch it,
    and the exit code is 143; the run itself goes on on the device."""
    from edgekit.device.agent import _alive

    remote = device.remote + "-sigterm"  # a runs folder of its own: the run it leaves is no other test's
    invoke(["deploy", str(gguf), *device.args("--wheels", str(cache), "--remote-dir", remote)])
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from edgekit.cli import main; sys.argv[0] = "
                             "'edgekit'; main()", "bench", str(gguf), *device.args("--no-deploy", "--remote-dir", remote),
                             "-p", "8",
                             "-n", "64", "-r", "100000", "--results", str(tmp_path / "results")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runs = Path(remote) / "runs"
    deadline = time.monotonic() + 120  # hang guards, not speed checks
    running = []
    while not running and time.monotonic() < deadline and proc.poll() is None:
        running = [r for r in runs.iterdir() if (r / "progress.log").exists() and _alive(r)] if runs.is_dir() else []
        time.sleep(0.2)
    assert running, "the remote run never started"
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("bench --host went on following after SIGTERM")
    assert proc.returncode == 143, out
    assert "goes on on its device" in out and "edgekit fetch --host" in out and "Traceback" not in out
    (run,) = running
    assert _alive(run)  # the run goes on there
    subprocess.run([f"{remote}/venv/bin/python", "-m", "edgekit.device.agent", "kill", str(run), "test over"],
                   check=True, capture_output=True)
    while _alive(run) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(run)


def test_a_dropped_connection_during_the_bench_then_fetch(device, gguf, cache, tmp_path):
    from edgekit.device.runs import remote_bench
    from edgekit.device.transport import open_transport
    from edgekit.errors import EdgekitError
    from edgekit.settings import BenchSettings

    invoke(["deploy", str(gguf), *device.args("--wheels", str(cache))])
    model = next((Path(device.remote) / "models").glob(f"{gguf.stem}-*")) / gguf.name
    t = open_transport(device.dest, device.options)

    def drop(label, done, total):  # the first progress line: the run is going; cut the connection
        subprocess.run([*t.base, "-O", "exit", t.destination], capture_output=True)

    with pytest.raises(EdgekitError) as e:
        remote_bench(t, device.remote, str(model), "gguf", "dropped", BenchSettings(n_prompt=64, n_gen=64,
                     repetitions=40), host=device.dest, results=tmp_path / "results", timeout_s=120, progress=drop)
    t.close()
    assert "lost the connection" in str(e.value) and "edgekit fetch --host" in str(e.value)
    deadline = time.monotonic() + 120  # hang guard
    while True:
        r = invoke(["fetch", "--host", device.dest, *flags(device.options), "--remote-dir", device.remote,
                    "--results", str(tmp_path / "results")])
        assert r.exit_code == 0, r.output
        if list((tmp_path / "results").rglob("result.json")):
            break
        assert time.monotonic() < deadline and "still running" in r.output, r.output
        time.sleep(0.5)
    (result,) = (tmp_path / "results").rglob("result.json")
    from edgekit.results import BenchResult

    assert len(BenchResult.load(result).metrics.tg_tok_s.samples) == 40


# ---------------------------------------------------------------- fleet


@pytest.fixture(scope="module")
def device_b(tmp_path_factory, cache):
    yield from _device(tmp_path_factory.mktemp("device-b"))


def test_fleet_two_devices_and_a_dead_port(device, device_b, gguf, cache, tmp_path):
    """Two sshd 'devices' and one port nobody listens on: two results, one failure line, exit 1,
    and one merged report with a row per device."""
    common = [o for o in device.options if not o.startswith(("Port=", "IdentityFile="))]
    keys = tmp_path / "key"
    shutil.copy(device.root / "client_key", keys)
    (device_b.root / "authorized_keys").write_text((device.root / "client_key.pub").read_text())
    dead = free_port()
    results = tmp_path / "results"
    hosts = [f"{device.dest}:{device.port}", f"{device_b.dest}:{device_b.port}", f"{device.dest}:{dead}"]
    args = ["bench", str(gguf), *[a for h in hosts for a in ("--host", h)], *flags([*common, f"IdentityFile={keys}"]),
            "--remote-dir", "~/" + AWKWARD_DIR, "--python", BASE_PYTHON, "--wheels", str(cache),
            "-p", "8", "-n", "4", "-r", "1", "--results", str(results), "--parallel", "3"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1, r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and f":{dead}" in errors[0] and "cannot reach" in errors[0], r.stderr
    found = sorted(results.rglob("result.json"))
    from edgekit.device.runs import safe_name

    assert len(found) == 2 and {p.parents[2].name for p in found} == {safe_name(hosts[0]), safe_name(hosts[1])}
    (report,) = results.glob("fleet-*.md")
    text = report.read_text()
    assert text.count(gguf.name) >= 2 and "What each number ran on" in text


def test_fleet_from_an_ansible_inventory_with_a_limit(device, device_b, gguf, cache, tmp_path):
    """The hosts come from an INI inventory read by ansible-core (ansible_host/port/user/key and
    the interpreter); --limit keeps one group; --no-deploy uses what is there."""
    import importlib.util

    if importlib.util.find_spec("ansible") is None:
        pytest.skip("ansible-core is not installed (the fleet extra)")
    user = device.dest.split("@")[0]
    known = dict(o.split("=", 1) for o in device.options)["UserKnownHostsFile"]
    (device_b.root / "authorized_keys").write_text((device.root / "client_key.pub").read_text())
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "[boards]\n"
        f"alpha ansible_host=127.0.0.1 ansible_port={device.port}\n"
        f"beta ansible_host=127.0.0.1 ansible_port={device_b.port}\n"
        "[spare]\n"
        "gamma ansible_host=192.0.2.1\n"
        "[all:vars]\n"
        f"ansible_user={user}\nansible_ssh_private_key_file={device.root / 'client_key'}\n"
        f"ansible_python_interpreter={BASE_PYTHON}\n")
    results = tmp_path / "results"
    base = ["bench", str(gguf), "--inventory", str(inventory), "--limit", "boards",
            "--ssh-option", f"UserKnownHostsFile={known}", "--accept-new-host-key", "--remote-dir", "~/" + AWKWARD_DIR,
            "-p", "8", "-n", "4", "-r", "1", "--results", str(results)]
    r = CliRunner().invoke(cli, [*base, "--wheels", str(cache)])
    assert r.exit_code == 0, r.output
    assert sorted(p.parents[2].name for p in results.rglob("result.json")) == ["alpha", "beta"]
    r = CliRunner().invoke(cli, [*base, "--no-deploy"])
    assert r.exit_code == 0, r.output
    assert len(list(results.rglob("result.json"))) == 4 and "connecting" in r.output and "installing" not in r.output
    other = _fresh_copy(gguf, tmp_path)  # never deployed: --no-deploy refuses it on each host
    r = CliRunner().invoke(cli, [*base[:1], str(other), *base[2:], "--no-deploy"])
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.exit_code == 1 and len(errors) == 2 and all("is not deployed on" in e for e in errors), r.output


def test_a_runtime_that_cannot_run_the_artifact_is_refused(device, gguf):
    assert_one_line_error(invoke(["deploy", str(gguf), *device.args("--runtime", "onnxruntime")]),
                          "--runtime onnxruntime does not run GGUF files", "--runtime llama.cpp")


def _fake_llama_sdist(folder: Path) -> Path:
    """A stand-in llama-cpp-python sdist of the pinned version that builds in a second (pure
    Python, no llama.cpp inside): it exercises the build-on-device path, not llama.cpp."""
    import tarfile

    from edgekit.llamacpp_build import LLAMA_CPP_PYTHON_VERSION as V

    src = folder / f"llama_cpp_python-{V}"
    (src / "llama_cpp").mkdir(parents=True)
    (src / "llama_cpp" / "__init__.py").write_text("# a stand-in: no llama.cpp here\n")
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "llama_cpp_python"\nversion = "{V}"\n[tool.setuptools]\npackages = ["llama_cpp"]\n')
    out = folder / f"llama_cpp_python-{V}.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(src, arcname=src.name)
    return out


def test_a_runtime_built_on_the_device_serves_that_device_and_others_only_when_shared(device, device_b, gguf, cache,
                                                                                    tmp_path):
    """No wheel for the device: pip builds one there (a stand-in sdist here), its log streams to the
    local log folder, and the wheel comes back to the cache as that device's build (origin.json:
    built on whom, sha256). Another device of the same kind builds its own (a wheel a device built
    is its word only), unless --share-device-builds lets the first one's serve it, which deploy.json
    and a warning then say. The stand-in has no llama.cpp, so the device's doctor fails each
    deploy: what a broken build on a device looks like."""
    from edgekit.llamacpp_build import cache_root

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for w in cache.iterdir():
        if not w.name.startswith("llama_cpp_python-"):
            shutil.copy(w, wheels / w.name)
    wheelhouse(wheels, ["setuptools"])  # the isolated build environment installs it from --wheels
    _fake_llama_sdist(tmp_path / "sdist").rename(wheels / _fake_llama_sdist(tmp_path / "sdist2").name)
    kinds = cache_root() / "device-wheels"
    assert list(kinds.glob("linux-llama-cpp-python-*/built-on/*/llama_cpp_python-*.whl")) == []
    line = assert_one_line_error(invoke(["deploy", str(gguf), *device.args("--wheels", str(wheels)),
                                         "--remote-dir", device.remote + "-build"]), "failed its check")
    (wheel,) = kinds.glob("linux-llama-cpp-python-*/built-on/*/llama_cpp_python-*.whl")
    origin = json.loads((wheel.parent / "origin.json").read_text())
    from edgekit.manifest import sha256_of

    assert origin["built_on"] == device.dest and origin["sha256"] == sha256_of(wheel)
    (log,) = (cache_root() / "logs").glob("*-llama-build.log")
    text = log.read_text()  # the command (the portable flags of this CPU, never -march=native) and pip's lines
    assert "CMAKE_ARGS='-DGGML_NATIVE=OFF" in text.splitlines()[0] and "Successfully built llama-cpp-python" in text
    assert "llama" in line
    opts = [o for o in device.options if not o.startswith("Port=")]
    (device_b.root / "authorized_keys").write_text((device.root / "client_key.pub").read_text())
    built_b = device_b.home / "build" / "wheels" / "built"

    def deploy_b(*more):
        return invoke(["deploy", str(gguf), "--host", f"{device_b.dest}:{device_b.port}", *flags(opts), "--remote-dir",
                       str(device_b.home / "build"), "--python", BASE_PYTHON, "--wheels", str(wheels), "--json",
                       *more])

    r = deploy_b("--share-device-builds")
    assert r.exit_code == 1 and "failed its check" in r.stderr
    assert not built_b.exists() or not list(built_b.iterdir())  # not built again: the first device's wheel, shared
    assert (device_b.home / "build" / "wheels" / wheel.name).is_file()
    r = deploy_b("--remote-dir", str(device_b.home / "build2"))  # not shared: device b builds its own
    assert r.exit_code == 1 and "failed its check" in r.stderr
    assert list((device_b.home / "build2" / "wheels" / "built").glob("llama_cpp_python-*.whl"))
    assert len(list(kinds.glob("linux-llama-cpp-python-*/built-on/*/origin.json"))) == 2


def test_a_runtime_cross_built_here_is_pushed_and_recorded(device, gguf, cache, tmp_path, monkeypatch):
    """An arm64 Linux device (its `uname -m` answers aarch64) and an aarch64 cross compiler here:
    the llama.cpp wheel comes from edgekit's cross-build cache, nothing is built on the device (it
    has no compiler on its PATH), and deploy.json records where the wheel came from and its sha256.
    The device is x86-64 underneath, so this machine's own llama.cpp wheel stands in for the
    cross-built one (a real cross build: tests/test_crossbuild.py, slow). With --cross-build, a
    device whose glibc is older than the wheel needs is refused in one line, and the wheel is not pushed."""
    from edgekit.crossbuild import ORIGIN, cross_cmake_args, cross_toolchain, cross_wheel_dir
    from edgekit.manifest import sha256_of
    from edgekit.targets.specs import all_specs

    here = tmp_path / "bin"
    here.mkdir()
    for name in ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++"):
        (here / name).write_text("#!/bin/sh\necho 12.2.0\n")
        (here / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{here}:{os.environ['PATH']}")
    toolchain = cross_toolchain("aarch64")
    folder = cross_wheel_dir("aarch64", cross_cmake_args(all_specs()["linux"], "aarch64", toolchain), toolchain)
    folder.mkdir(parents=True)
    (llama,) = cache.glob("llama_cpp_python-*.whl")
    shutil.copy(llama, folder / llama.name)
    (folder / "origin.json").write_text(json.dumps({"wheel": llama.name, "sha256": sha256_of(llama),
                                                    "origin": ORIGIN}))
    wheels = tmp_path / "wheels"  # everything else the device installs, offline
    wheels.mkdir()
    for w in cache.iterdir():
        if w != llama:
            shutil.copy(w, wheels / w.name)
    device.fake("uname", '[ "$1" = -m ] && { echo aarch64; exit 0; }\nexec /bin/uname "$@"\n')
    for tool in ("cc", "c++", "cmake"):
        device.fake(tool, "exit 127\n")  # found on PATH but no compiler: the device cannot build
    remote = device.remote + "-cross"
    try:
        r = invoke(["deploy", str(gguf), *device.args("--wheels", str(wheels), "--target", "linux", "--json"),
                    "--remote-dir", remote])
        assert r.exit_code == 0, r.output
        steps = dict(json.loads(r.stdout)["steps"])
        assert steps["llama.cpp wheel"].startswith("cross-built on this workstation earlier for aarch64 (armv8-a")
        record = json.loads((Path(remote) / "deploy.json").read_text())["runtimes"]["llama.cpp"]
        assert record["wheel"] == llama.name and record["wheel_origin"] == ORIGIN
        assert record["wheel_sha256"] == sha256_of(llama) and not (Path(remote) / "wheels" / "built").exists()
        device.fake("getconf", 'echo "glibc 2.31"\n')  # Ubuntu 20.04's (JetPack 5)
        line = assert_one_line_error(
            invoke(["deploy", str(gguf), *device.args("--wheels", str(wheels), "--target", "linux", "--cross-build"),
                    "--remote-dir", remote + "-old"]), "cannot load on")
        assert "it needs glibc 2.34 and the device has 2.31" in line and "--no-cross-build" in line
        assert not list((Path(remote + "-old") / "wheels").glob("llama_cpp_python-*"))  # nothing pushed
    finally:
        device.clear_fakes()


def test_eval_on_the_device_gives_what_eval_gives_here(device, cache, exported, tiny_qwen2, tmp_path):
    """edgekit eval --host deploys the artifact and its GGUF reference, evaluates there (a detached
    run, like bench) and brings eval.json back; on this same machine and build the numbers are the
    ones a local eval gives."""
    folder, _ = exported(tiny_qwen2)
    q4, f16 = folder / f"{tiny_qwen2.name}-Q4_0.gguf", folder / f"{tiny_qwen2.name}-F16.gguf"
    common = [str(q4), "--reference", str(f16), "--chunks", "2", "--ctx", "64", "--threads", "2", "--json"]
    here = json.loads(invoke(["eval", *common]).stdout)
    results = tmp_path / "results"
    r = invoke(["eval", *common, *device.args("--wheels", str(cache)), "--results", str(results)])
    assert r.exit_code == 0, r.output
    there = json.loads(r.stdout)
    assert there["perplexity"] == here["perplexity"] and there["n_tokens"] == here["n_tokens"] > 0
    assert there["kl"]["kl_divergence"] == here["kl"]["kl_divergence"]
    assert there["artifact"]["path"].startswith(device.remote) and there["host"]["reached_as"] == device.dest
    (fetched,) = results.rglob("eval.json")
    assert json.loads(fetched.read_text())["perplexity"] == there["perplexity"]
    assert_one_line_error(invoke(["eval", str(q4), "--reference", str(tiny_qwen2), *device.args()]),
                          "the reference must be an artifact")


def test_eval_of_an_onnx_export_on_the_device(device, cache, onnx_export, tiny_qwen2, tmp_path):
    """An ONNX INT4 export against its FP32 export, both deployed (onnxruntime, onnx and tokenizers
    in the device venv): the device's numbers are the local ones."""
    int4, _ = onnx_export(tiny_qwen2, "int4")
    fp32, _ = onnx_export(tiny_qwen2, "fp32")
    common = [str(int4), "--reference", str(fp32), "--chunks", "1", "--ctx", "32", "--threads", "2", "--json"]
    here = json.loads(invoke(["eval", *common]).stdout)
    r = invoke(["eval", *common, *device.args("--wheels", str(cache)), "--results", str(tmp_path / "results")])
    assert r.exit_code == 0, r.output
    there = json.loads(r.stdout)
    assert there["perplexity"] == here["perplexity"] and there["kl"]["kl_divergence"] == here["kl"]["kl_divergence"]
    assert there["runtime"]["name"] == "onnxruntime" and there["artifact"]["path"].startswith(device.remote)


def test_a_tensorrt_engine_is_built_on_the_device_and_kept_there(device, cache, onnx_export, tiny_qwen2, tmp_path):
    """export tensorrt --on: the INT4 QDQ graph is made here and deployed (no runtime installed
    there), the device's trtexec (a stand-in printing TensorRT 10.3's lines on an Orin) builds,
    the engine stays in the device's cache and OUT records it; a second export of the same model
    and settings is skipped there; inspect reads OUT; a device without trtexec is one line."""
    from edgekit.manifest import ExportManifest

    fixtures = Path(__file__).parent / "fixtures" / "tensorrt"
    calls = tmp_path / "trtexec-calls.txt"
    calls.write_text("")
    device.fake("trtexec", f'FAKE_TRTEXEC_CALLS={calls} exec {BASE_PYTHON} {fixtures / "fake_trtexec.py"} "$@"\n')
    fp16, _ = onnx_export(tiny_qwen2, "fp16")
    remote = device.remote + "-trt"
    base = ["export", "tensorrt", str(fp16), "--precision", "int4", "--max-prompt", "32", "--max-context", "256",
            "--on", device.dest, *flags(device.options), "--remote-dir", remote, "--python", BASE_PYTHON,
            "--wheels", str(cache)]
    try:
        r = invoke([*base, "-o", str(tmp_path / "one")])
        assert r.exit_code == 0, r.output
        m = ExportManifest.read(tmp_path / "one")
        e = m.engine
        assert (e.builder, e.tensorrt_version, e.device, e.compute_capability) == ("trtexec", "10.3.0", "Orin", "8.7")
        assert e.built_on == device.dest and e.location.startswith(f"{remote}/engines/") and e.precision == "int4"
        engine = Path(e.location)
        assert engine.is_file() and m.files[0].size_bytes == engine.stat().st_size
        assert "runs only on Orin (compute capability 8.7) with TensorRT 10.3.0" == e.runs_only_on
        assert "Selected Device: Orin" in (tmp_path / "one" / "build.log").read_text()
        assert not (tmp_path / "one" / "model.engine").exists()  # it stays where it runs
        assert json.loads((Path(remote) / "deploy.json").read_text())["runtimes"] == {}  # no runtime installed
        (argv,) = calls.read_text().splitlines()
        assert "--stronglyTyped" in argv and f"--onnx={remote}/models/" in argv
        r = invoke([*base, "-o", str(tmp_path / "two")])
        assert r.exit_code == 0, r.output
        assert "found in the device cache (skipped the build)" in r.output and len(calls.read_text().splitlines()) == 1
        assert ExportManifest.read(tmp_path / "two").engine.location == e.location
        r = invoke(["inspect", str(tmp_path / "one"), "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["model"]["location"] == e.location
        device.clear_fakes()
        assert_one_line_error(invoke([*base, "--max-context", "128", "-o", str(tmp_path / "three")]),
                              "this device has neither TensorRT's Python bindings nor trtexec")
        assert not (tmp_path / "three").exists()
        device.fake("trtexec", f'FAKE_TRTEXEC_CALLS={calls} exec {BASE_PYTHON} {fixtures / "fake_trtexec.py"} "$@"\n')
        # deploy --runtime tensorrt: a device with trtexec but no Python bindings can build, not run
        deploy = ["deploy", str(tmp_path / "one"), "--runtime", "tensorrt", "--host", device.dest,
                  *flags(device.options), "--remote-dir", remote, "--wheels", str(cache)]
        line = assert_one_line_error(invoke([*deploy, "--python", BASE_PYTHON]), "lacks python bindings")
        assert "python3-libnvinfer" in line
        # a system Python with the bindings (JetPack's, here a stand-in package): linked into the venv
        system = tmp_path / "dist-packages"
        (system / "tensorrt").mkdir(parents=True)
        (system / "tensorrt" / "__init__.py").write_text('__version__ = "10.3.0"\n')
        (system / "tensorrt-10.3.0.dist-info").mkdir()
        (system / "tensorrt-10.3.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: tensorrt\n"
                                                                        "Version: 10.3.0\n")
        device.fake("python3-jetpack", f'PYTHONPATH={system} exec {BASE_PYTHON} "$@"\n')
        r = invoke([*deploy, "--python", str(device.fakes / "python3-jetpack"), "--json"])
        assert r.exit_code == 0, r.output
        steps = dict(json.loads(r.stdout)["steps"])
        assert steps["tensorrt"] == "linked tensorrt 10.3.0" and "python bindings" in steps["doctor"]
        assert (Path(remote) / "venv" / "system-links" / "tensorrt").is_symlink()
        # the runner starts there and stops at what the device lacks (CUDA and a GPU), in one line
        r = invoke(["bench", str(tmp_path / "one"), "--host", device.dest, *flags(device.options), "--remote-dir",
                    remote, "--no-deploy", "-p", "8", "-n", "4", "-r", "1", "--results", str(tmp_path / "results")])
        assert_one_line_error(r, "CUDA")
    finally:
        device.clear_fakes()


def _fake_edgellm_venv(tmp_path: Path, fake: Path) -> Path:
    """A venv-shaped folder whose exporter and quantizer are the stand-ins (run by its python, as edgekit runs them)."""
    venv = tmp_path / "edgellm-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(BASE_PYTHON)
    for script, role in (("tensorrt-edgellm-export", "export"), ("tensorrt-edgellm-quantize", "quantize")):
        path = venv / "bin" / script
        path.write_text(f"import runpy, sys\nsys.argv = [sys.argv[0], {role!r}, *sys.argv[1:]]\n"
                        f"runpy.run_path({str(fake)!r}, run_name='__main__')\n")
        path.chmod(0o755)
    return venv


def test_an_edgellm_engine_is_exported_here_built_there_deployed_and_benched(device, cache, tiny_qwen2, tmp_path,
                                                                             monkeypatch):
    """The Edge-LLM path end to end against the sshd device, with stand-ins for Edge-LLM's
    exporter (here), llm_build and llm_bench (on the device's PATH): export --engine edgellm --on
    exports with the exporter's own venv, deploys the ONNX, builds with llm_build and keeps the
    engine there; a second export is found in the device cache; INT4 quantizes on the CPU with
    edgekit's own calibration text; deploy --runtime tensorrt links no bindings (none there) and
    checks the device has llm_bench; bench --host drives llm_bench and its CSV becomes the
    result; report reads it."""
    from edgekit.manifest import ExportManifest
    from edgekit.results import BenchResult

    fake = Path(__file__).parent / "fixtures" / "tensorrt" / "fake_edgellm.py"
    calls = tmp_path / "edgellm-calls.txt"
    calls.write_text("")
    monkeypatch.setenv("FAKE_EDGELLM_CALLS", str(calls))
    monkeypatch.setenv("EDGEKIT_EDGELLM_VENV", str(_fake_edgellm_venv(tmp_path, fake)))
    quantizer = tmp_path / "quantizer-modules"  # what the real quantizer imports, present in the stand-in's venv
    for module in ("modelopt", "datasets", "einops"):
        (quantizer / module).mkdir(parents=True)
        (quantizer / module / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(quantizer))
    for tool in ("llm_build", "llm_bench"):
        device.fake(tool, f'FAKE_EDGELLM_CALLS={calls} exec {BASE_PYTHON} {fake} {tool} "$@"\n')
    remote = device.remote + "-edgellm"
    base = ["export", "tensorrt", str(tiny_qwen2), "--engine", "edgellm", "--max-prompt", "64", "--max-context", "256",
            "--on", device.dest, *flags(device.options), "--remote-dir", remote, "--python", BASE_PYTHON,
            "--wheels", str(cache)]
    try:
        r = invoke([*base, "--precision", "fp16", "-o", str(tmp_path / "fp16")])
        assert r.exit_code == 0, r.output
        m = ExportManifest.read(tmp_path / "fp16")
        e = m.engine
        assert (e.engine, e.builder, e.tensorrt_version, e.precision) == ("edgellm", "llm_build", "10.13.3", "fp16")
        assert e.location.startswith(f"{remote}/engines/") and Path(e.location, "llm.engine").is_file()
        assert (e.max_prompt, e.max_context) == (64, 256) and e.dims == {"layers": 2, "kv_heads": 2, "head_size": 64}
        assert "and Edge-LLM 0.11.0" in e.runs_only_on and m.files[0].size_bytes == \
            Path(e.location, "llm.engine").stat().st_size
        assert "LLM engine built successfully." in (tmp_path / "fp16" / "build.log").read_text()
        built = [ln for ln in calls.read_text().splitlines() if ln.startswith("llm_build")]
        assert len(built) == 1 and "--maxInputLen 64 --maxKVCacheCapacity 256" in built[0]
        assert f"--onnxDir {remote}/models/" in built[0]  # the deployed copy of the export made here
        r = invoke([*base, "--precision", "fp16", "-o", str(tmp_path / "again")])
        assert r.exit_code == 0, r.output
        assert "found in the device cache (skipped the build)" in r.output
        assert len([ln for ln in calls.read_text().splitlines() if ln.startswith("llm_build")]) == 1
        monkeypatch.delenv("PYTHONPATH")  # a venv of the user's without the quantizer's packages: said, not changed
        line = assert_one_line_error(invoke([*base, "--precision", "int4", "-o", str(tmp_path / "int4")]),
                                     "lacks what tensorrt-edgellm-quantize imports")
        assert "nvidia-modelopt==0.45.0" in line and not (tmp_path / "int4").exists()
        monkeypatch.setenv("PYTHONPATH", str(quantizer))
        r = invoke([*base, "--precision", "int4", "-o", str(tmp_path / "int4")])
        assert r.exit_code == 0, r.output
        quantized = [ln for ln in calls.read_text().splitlines() if ln.startswith("quantize")]
        assert len(quantized) == 1 and "--device cpu" in quantized[0]
        assert ExportManifest.read(tmp_path / "int4").engine.block_size == 128

        r = invoke(["inspect", str(tmp_path / "fp16"), "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["model"]["engine"] == "edgellm"
        r = invoke(["deploy", str(tmp_path / "fp16"), "--runtime", "tensorrt", *device.args("--wheels", str(cache)),
                    "--json"])
        assert r.exit_code == 0, r.output
        steps = dict(json.loads(r.stdout)["steps"])
        assert steps["tensorrt"].startswith("no Python bindings") and "llm_bench" in steps["doctor"]
        results = tmp_path / "results"
        r = invoke(["bench", str(tmp_path / "fp16"), *device.args("--wheels", str(cache)), "-p", "32", "-n", "16",
                    "-r", "2", "--results", str(results), "-o", str(tmp_path / "result.json")])
        assert r.exit_code == 0, r.output
        result = BenchResult.load(tmp_path / "result.json")
        assert result.runtime.name == "tensorrt" and result.runtime.backend == "CUDA"
        s = result.settings.tensorrt
        assert (s.engine, s.precision, s.tensorrt_version) == ("edgellm", "fp16", "10.13.3")
        prefill_s, step_s = (2 + 0.05 * 32) / 1000, (12 + 0.001 * 8) / 1000  # the stand-in's times
        assert result.metrics.pp_tok_s.mean == pytest.approx(32 / prefill_s, rel=1e-4)
        assert result.metrics.tg_tok_s.mean == pytest.approx(1 / step_s, rel=1e-4)
        assert result.metrics.ttft_s.mean == pytest.approx(prefill_s, rel=1e-4)
        benched = [ln for ln in calls.read_text().splitlines() if ln.startswith("llm_bench")]
        assert len(benched) == 3 * 2 and all("--iterations 10" in ln for ln in benched)
        assert any("--mode decode --pastKVLen 8" in ln for ln in benched)
        r = invoke(["report", str(tmp_path / "result.json"), "-o", str(tmp_path / "report.md")])
        assert r.exit_code == 0, r.output
        assert "tensorrt" in (tmp_path / "report.md").read_text()
        # a device without llm_bench cannot run an Edge-LLM engine: said at deploy, by its doctor
        device.clear_fakes()
        r = invoke(["deploy", str(tmp_path / "int4"), "--runtime", "tensorrt", *device.args("--wheels", str(cache))])
        assert_one_line_error(r, "lacks llm_bench, which this artifact needs to run")
    finally:
        device.clear_fakes()
