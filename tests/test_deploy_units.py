"""The pure parts of deploy, on recorded device output: what the device report says, which
Python is chosen, the preflight's refusals at their edges, destinations, host keys, recipes and
the device doctor's verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.device.checks import runtime_problems
from edgekit.device.facts import Device, choose_python, parse_device_report, remote_dir_expr, rsync_can_resume
from edgekit.device.preflight import Need, preflight
from edgekit.device.transport import host_key_problem, parse_destination
from edgekit.errors import EdgekitError
from edgekit.plan import OS_RESERVE_BYTES, Target, fits, memory_need, plan, resolve_models, usable_memory

FIXTURES = Path(__file__).parent / "fixtures" / "deploy"

MACOS = """dir=/Users/ana/.edgekit
system=Darwin
machine=arm64
python=3.9.6 yes /usr/bin/python3
python=3.12.7 yes /opt/homebrew/bin/python3.12
free_dir=/Users/ana
df=/dev/disk3s5  971350180 402318820 541086496    43%    /System/Volumes/Data
memsize=17179869184
rsync=openrsync: protocol version 29
sha256=shasum
"""

JETPACK5 = """dir=/home/nvidia/.edgekit
system=Linux
machine=aarch64
python=3.8.10 yes /usr/bin/python3
nopython=python3.13
free_dir=/home/nvidia
df=/dev/mmcblk0p1   59600812 21021432  36125640      37% /
meminfo=MemTotal:       31989172 kB
meminfo=MemAvailable:   29128328 kB
rsync=rsync  version 3.1.3  protocol version 31
sha256=sha256sum
"""


def test_the_linux_report_as_recorded():
    d = parse_device_report((FIXTURES / "device-report-linux-x86_64.txt").read_text())
    assert (d.remote_dir, d.system, d.machine, d.free_dir) == ("/root/.edgekit", "Linux", "x86_64", "/root")
    assert d.free_bytes == 69858372 * 1024 and d.mem_total_bytes == 24683584 * 1024
    assert d.mem_available_bytes == 24138080 * 1024 and d.sha256_tool == "sha256sum"
    assert [p.version for p in d.pythons] == [(3, 11, 7), (3, 11, 7)] and d.missing_pythons[0] == "python3.13"
    assert rsync_can_resume(d.rsync)
    assert choose_python(d, None, "linux").path == "/root/.pyenv/shims/python3"


def test_the_arm64_debian_report_as_recorded():
    """glibc from getconf, libstdc++'s newest GLIBCXX_ version from the library itself."""
    d = parse_device_report((FIXTURES / "device-report-linux-aarch64-debian12.txt").read_text())
    assert (d.system, d.machine, d.glibc, d.glibcxx) == ("Linux", "aarch64", (2, 36), (3, 4, 30))
    assert d.tools == set()  # a minimal install: no compiler, so llama.cpp cannot be built there
    assert parse_device_report(MACOS).glibc is None and parse_device_report(MACOS).glibcxx is None
    assert parse_device_report("libc=glibc 2.31\nlibstdcxx=GLIBCXX_3.4.28\n").glibc == (2, 31)
    odd = parse_device_report("libc=musl 1.2\nlibstdcxx=GLIBCXX_x\n")
    assert odd.glibc is None and odd.glibcxx is None


def _cross(spec_name, report, monkeypatch, tmp_path, *, toolchain=True, runtime="llama.cpp", **options):
    """What Deployer._cross answers for a target on a recorded device, with a (fake) aarch64 cross
    compiler on this machine's PATH or none."""
    from edgekit.device.deploy import Deployer, DeployOptions
    from edgekit.runtimes import get_runtime
    from edgekit.targets.specs import all_specs

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++"):
        (bin_dir / name).unlink(missing_ok=True)
        if toolchain:
            (bin_dir / name).write_text("#!/bin/sh\necho 12.2.0\n")
            (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    d = Deployer(None, "pi", DeployOptions(**options))
    return d._cross(all_specs()[spec_name], parse_device_report(report), get_runtime(runtime))


def test_deploy_cross_builds_for_cpu_only_arm64_linux_when_it_can(monkeypatch, tmp_path):
    arm64 = (FIXTURES / "device-report-linux-aarch64-debian12.txt").read_text()
    x86 = (FIXTURES / "device-report-linux-x86_64.txt").read_text()
    toolchain, args = _cross("rpi5-8gb", arm64, monkeypatch, tmp_path)
    assert toolchain.cc == str(tmp_path / "bin" / "aarch64-linux-gnu-gcc") and toolchain.version == "12.2.0"
    assert "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16" in args and "-DCMAKE_SYSTEM_PROCESSOR=aarch64" in args
    assert "-DGGML_CPU_ARM_ARCH=armv8-a" in _cross("linux", arm64, monkeypatch, tmp_path)[1]
    # by default, silently not when it cannot: the device builds (or --wheels serves) as before
    cannot = [("jetson-agx-orin-64gb", arm64, {}), ("linux", x86, {}), ("apple-m1", MACOS, {}),
              ("rpi5-8gb", arm64, {"toolchain": False}), ("rpi5-8gb", arm64, {"runtime": "onnxruntime"})]
    for spec, report, kw in cannot:
        assert _cross(spec, report, monkeypatch, tmp_path, **kw) is None, spec
    assert _cross("rpi5-8gb", arm64, monkeypatch, tmp_path, cross_build=False) is None
    # asked for with --cross-build: each reason is the one line
    reasons = ["GGML_CUDA: edgekit cross-builds CPU-only llama.cpp", "for aarch64 only, not x86_64",
               "pi runs Darwin: edgekit cross-builds llama.cpp for Linux only",
               "this workstation has no aarch64-linux-gnu cross compiler", "does not cross-build ONNX Runtime"]
    for (spec, report, kw), reason in zip(cannot, reasons):
        with pytest.raises(EdgekitError, match=reason):
            _cross(spec, report, monkeypatch, tmp_path, cross_build=True, **kw)
    with pytest.raises(EdgekitError) as e:
        _cross("rpi5-8gb", arm64, monkeypatch, tmp_path, cross_build=True, toolchain=False)
    assert "sudo apt-get install g++-aarch64-linux-gnu" in e.value.fix


def test_macos_reads_sysctl_and_has_no_resumable_rsync():
    d = parse_device_report(MACOS)
    assert d.mem_total_bytes == 16 * 2**30 and d.mem_available_bytes is None and d.sha256_tool == "shasum"
    assert not rsync_can_resume(d.rsync) and not rsync_can_resume("rsync  version 2.6.9  protocol version 29")
    assert rsync_can_resume("rsync  version 3.0.0  protocol version 30") and not rsync_can_resume(None)
    # /usr/bin/python3 is 3.9: the next candidate that is new enough
    assert choose_python(d, None, "apple-m").path == "/opt/homebrew/bin/python3.12"
    with pytest.raises(EdgekitError) as e:
        choose_python(d, "/usr/bin/python3", "apple-m")
    assert "3.9.6" in str(e.value) and "brew install python@3.12" in str(e.value)


def test_jetpack5_python_38_is_refused_with_what_to_install():
    d = parse_device_report(JETPACK5)
    with pytest.raises(EdgekitError) as e:
        choose_python(d, None, "jetson")
    assert "3.8.10 (/usr/bin/python3)" in e.value.problem and "python3.10" in e.value.fix
    d.pythons[0].version, d.pythons[0].has_venv = (3, 10, 12), False
    with pytest.raises(EdgekitError) as e:
        choose_python(d, None, "jetson")
    assert "no venv module" in e.value.problem and "python3.10-venv" in e.value.fix


def _device(free: int | None, total: int | None, available: int | None = None) -> Device:
    return Device("/r", free_bytes=free, free_dir="/r", mem_total_bytes=total, mem_available_bytes=available)


def test_preflight_disk_at_the_edge():
    need = Need(model_bytes=700 * 2**20, venv_bytes=300 * 2**20, runtime_bytes=0)
    assert preflight(_device(need.disk_bytes, 64 * 2**30), need, "pi") == []  # exactly enough
    with pytest.raises(EdgekitError) as e:
        preflight(_device(need.disk_bytes - 1, 64 * 2**30), need, "pi")
    assert "not enough disk on pi" in e.value.problem and "model 700.0 MiB, venv 300.0 MiB" in e.value.problem
    assert "disk" in preflight(_device(None, 64 * 2**30), need, "pi")[0]


def test_preflight_ram_at_the_edge_and_a_busy_device():
    weights, kv = 4 * 2**30, 2**30
    need = Need(weights_bytes=weights, kv_bytes=kv, ctx=8192, n_vocab=151936)
    # plan's rule: MemTotal less max(1 GiB, 10 %) for the OS (here the 1 GiB), the need with a ubatch of logits
    usable_total = memory_need(weights, kv, 151936) + OS_RESERVE_BYTES
    assert usable_memory("jetson", usable_total)[0] == need.ram_bytes > weights + kv
    assert preflight(_device(2**40, usable_total, usable_total), need, "orin", "jetson") == []
    with pytest.raises(EdgekitError) as e:
        preflight(_device(2**40, usable_total - 2**20), need, "orin", "jetson")
    assert "weights 4.00 GiB + KV cache at ctx 8192 1.00 GiB" in e.value.problem and "--ctx" in e.value.fix
    warnings = preflight(_device(2**40, usable_total, 2**30), need, "orin", "jetson")
    assert len(warnings) == 1 and "available now" in warnings[0]


def test_plan_and_deploy_give_one_answer_for_a_16_gb_mac():
    """One fit rule: on a 16 GB Mac (Metal's working-set cap, 67 %: ~10.7 GB) plan and deploy's
    preflight agree for the model plan sizes and for one in the gap where they disagreed (deploy
    allowed 90 % of RAM, ~14.4 GB)."""
    ram = 16 * 10**9  # plan's spec figure, as a device's hw.memsize would report it
    usable, why = usable_memory("apple-m", ram)
    assert usable == int(ram * 0.67) and "Metal" in why
    target = Target("m-16gb", ram, usable, why, 100.0, "test", "apple-m")
    (model,) = resolve_models("r1-distill-qwen-1.5b")
    row = next(r for r in plan([model], [target], ["F16"], ctx=4096))
    vocab = int(model.config["vocab_size"])
    gap = 12 * 10**9  # over the cap, under the old 90 %
    assert memory_need(gap, row.kv_bytes, vocab) < 0.9 * ram
    for weights in (row.weights_bytes, gap):
        need = Need(weights_bytes=weights, kv_bytes=row.kv_bytes, ctx=4096, n_vocab=vocab)
        plan_says, _ = fits(memory_need(weights, row.kv_bytes, vocab), usable)
        if weights == row.weights_bytes:
            assert plan_says is row.fits is True and need.ram_bytes == row.need_bytes
        if plan_says:
            assert preflight(_device(2**40, ram), need, "mac", "apple-m") == []
        else:
            with pytest.raises(EdgekitError) as e:
                preflight(_device(2**40, ram), need, "mac", "apple-m")
            assert "Metal working-set cap" in e.value.problem and weights == gap


def test_remote_dir_words():
    assert remote_dir_expr("~/.edgekit") == '"$HOME"/.edgekit'
    assert remote_dir_expr("~") == '"$HOME"'
    assert remote_dir_expr("/srv/it's here") == "'/srv/it'\"'\"'s here'"
    with pytest.raises(EdgekitError):
        remote_dir_expr("~pi/x")


@pytest.mark.parametrize("text,want", [
    ("pi@10.0.0.5:2222", ("pi@10.0.0.5", ["Port=2222"])),
    ("10.0.0.5:22", ("10.0.0.5", ["Port=22"])),
    ("[fe80::1%eth0]:2200", ("fe80::1%eth0", ["Port=2200"])),
    ("pi@[::1]:2200", ("pi@::1", ["Port=2200"])),
    ("fe80::1", ("fe80::1", [])),
    ("ssh://pi@host:2222", ("ssh://pi@host:2222", [])),
    ("jetson", ("jetson", [])),
    ("pi@host", ("pi@host", [])),
])
def test_destinations(text, want):
    assert parse_destination(text) == want


def test_host_key_refusals_from_recorded_ssh_output():
    unknown = host_key_problem((FIXTURES / "ssh-unknown-host-key.txt").read_text())
    changed = host_key_problem((FIXTURES / "ssh-changed-host-key.txt").read_text())
    assert "not known" in unknown[0] and "--accept-new-host-key" in unknown[1]
    assert "CHANGED" in changed[0] and "ssh-keygen -R" in changed[1]
    assert host_key_problem("ssh: connect to host 10.0.0.5 port 22: Connection refused") is None


def test_recipes_run_with_the_venv_pip():
    from edgekit.targets.specs import SPECS, parse_pip_command, runtime_install

    jet = runtime_install(SPECS["jetson-agx-orin-64gb"], "llama.cpp", "aarch64")
    assert dict(jet.env) == {"CMAKE_ARGS": "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=87",
                             "CUDACXX": "/usr/local/cuda/bin/nvcc"}
    # a generic Linux device gets the portable flags of its own CPU, never -march=native
    x86 = dict(runtime_install(SPECS["linux"], "llama.cpp", "x86_64").env)["CMAKE_ARGS"]
    assert "-DGGML_NATIVE=OFF" in x86 and "-DGGML_AVX512=OFF" in x86
    arm = dict(runtime_install(SPECS["linux-nvidia"], "llama.cpp", "aarch64").env)["CMAKE_ARGS"]
    assert "-DGGML_NATIVE=OFF" in arm and arm.endswith("-DGGML_CUDA=on")
    ort = runtime_install(SPECS["jetson-agx-orin-64gb"], "onnxruntime")
    assert ort.requirements == ("onnxruntime-gpu",) and "--index-url" in ort.args
    with pytest.raises(ValueError):
        parse_pip_command("curl https://x | sh")


def test_recorded_doctor_output_of_an_arm64_device():
    """Real `edgekit doctor --json` of an arm64 device (Debian under qemu-user; README in the
    fixtures): onnxruntime 1.20.1 loads (its providers are the record's backends), 1.32.0 crashes on
    import there, which fails the deploy with the doctor's own line."""
    import json

    from edgekit.device.checks import runtime_backends
    from edgekit.targets.specs import SPECS

    ok = json.loads((FIXTURES / "doctor-arm64-onnxruntime-1.20.1.json").read_text())
    crash = json.loads((FIXTURES / "doctor-arm64-onnxruntime-1.32.0-crash.json").read_text())
    assert runtime_problems(ok, "onnxruntime", SPECS["linux"]) == []
    assert runtime_backends(ok, "onnxruntime") == (["AzureExecutionProvider", "CPUExecutionProvider"], "1.20.1")
    (problem, fix), = runtime_problems(crash, "onnxruntime", SPECS["linux"])
    assert problem.startswith("onnxruntime crashed (SIGSEGV)") and fix
    # the same device has no llama.cpp: a llama.cpp deploy there fails on it
    assert runtime_problems(ok, "llama.cpp")[0][0] == "llama-cpp-python is not installed"


DOCTOR_JETSON_CPU_BUILD = {
    "ok": False,
    "checks": [{"name": "llama.cpp build", "status": "ok", "detail": "CPU: NEON ARM_FMA", "data": {
        "backends": ["CPU"], "system_info": "CPU : NEON = 1 | ARM_FMA = 1 |"}},
        {"name": "llama.cpp GPU offload", "status": "warn", "detail": "no", "data": {"gpu_offload": False}}],
    "warnings": [{"problem": "llama.cpp is built without GPU offload on jetson-agx-orin-64gb (Ampere GPU): bench "
                             "runs on the CPU", "fix": "reinstall it for jetson-agx-orin-64gb: `CMAKE_ARGS=...`"}],
}


def test_a_jetson_llama_cpp_without_cuda_is_a_failed_deploy():
    problems = runtime_problems(DOCTOR_JETSON_CPU_BUILD, "llama.cpp")
    assert len(problems) == 1 and "without GPU offload" in problems[0][0]
    assert runtime_problems(DOCTOR_JETSON_CPU_BUILD, "onnxruntime")[0][0].startswith("onnxruntime is not installed")
    fine = {**DOCTOR_JETSON_CPU_BUILD, "warnings": []}
    assert runtime_problems(fine, "llama.cpp") == []


def test_a_device_command_streams_to_its_log_and_stops_at_its_timeout(tmp_path, monkeypatch):
    """What a runtime build on the device gets: its lines in a local log as they come, the last
    one on the progress line, and a stop at the deadline naming the log."""
    from edgekit.device.deploy import Deployer, DeployOptions
    from edgekit.device.transport import LocalTransport

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    stages = []
    d = Deployer(LocalTransport(), "pi", DeployOptions(), lambda s, detail: stages.append((s, detail)))
    with pytest.raises(EdgekitError) as e:
        d._logged("echo 'Building wheel'; echo '[3/9] ggml.c'; sleep 30", "building", "the llama.cpp build",
                  "llama-build", 1.0, "raise --build-timeout", "read the log")
    assert "ran past 1 s" in e.value.problem and e.value.fix == "raise --build-timeout"
    (log,) = (tmp_path / "logs").glob("pi-*-llama-build.log")
    assert log.read_text().splitlines()[1:] == ["Building wheel", "[3/9] ggml.c"] and str(log) in e.value.problem
    assert stages[-1] == ("building", "the llama.cpp build: [3/9] ggml.c")
    with pytest.raises(EdgekitError) as e:
        d._logged("echo 'error: no compiler'; exit 1", "building", "the llama.cpp build", "llama-build", 10.0,
                  "raise --build-timeout", "read the log")
    assert "failed on pi: error: no compiler" in e.value.problem


def test_sha256_is_read_once_per_file_state(tmp_path, monkeypatch):
    """A second deploy of a multi-GB model does not read it again: its sha256 is kept under its
    path, size and mtime, and a changed file (new mtime) is read again."""
    import hashlib
    import json
    import os

    from edgekit.device.wheels import cached_sha256

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "m.gguf"
    f.write_bytes(b"weights")
    assert cached_sha256(f) == hashlib.sha256(b"weights").hexdigest()
    store = tmp_path / "cache" / "sha256.json"
    (key,) = json.loads(store.read_text())
    store.write_text(json.dumps({key: "remembered"}))
    assert cached_sha256(f) == "remembered"  # not read again
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1))
    assert cached_sha256(f) == hashlib.sha256(b"weights").hexdigest()


def test_a_jetson_onnxruntime_without_its_gpu_providers_is_a_failed_deploy():
    from edgekit.targets.specs import SPECS

    def doctor(providers):
        return {"warnings": [], "checks": [
            {"name": "onnxruntime", "status": "ok", "detail": "1.32.0 (onnxruntime)", "data": {}},
            {"name": "onnxruntime providers", "status": "ok", "detail": ", ".join(providers),
             "data": {"providers": providers}}]}

    jetson, pi = SPECS["jetson-agx-orin-64gb"], SPECS["rpi5-8gb"]
    (problem, fix), = runtime_problems(doctor(["AzureExecutionProvider", "CPUExecutionProvider"]), "onnxruntime",
                                       jetson)
    assert "none of TensorrtExecutionProvider, CUDAExecutionProvider" in problem and "onnxruntime-gpu" in fix
    assert runtime_problems(doctor(["CUDAExecutionProvider", "CPUExecutionProvider"]), "onnxruntime", jetson) == []
    assert runtime_problems(doctor(["CPUExecutionProvider"]), "onnxruntime", pi) == []  # a Pi has no GPU EP to want


def test_a_device_without_compilers_is_refused_before_a_llama_cpp_build():
    from edgekit.device.preflight import build_tools_problem

    d = parse_device_report((FIXTURES / "device-report-linux-x86_64.txt").read_text())
    assert d.tools == {"cc", "c++", "cmake"} and build_tools_problem(d, "linux", "pi") is None
    bare = parse_device_report(JETPACK5)  # no tool= lines: no compiler on PATH
    e = build_tools_problem(bare, "jetson", "orin")
    assert "orin has no cc or c++" in e.problem and "build-essential" in e.fix and "--wheels" in e.fix
    mac = parse_device_report(MACOS + "tool=cc\n")
    assert "xcode-select --install" in build_tools_problem(mac, "apple-m", "mac").fix


def test_a_device_too_old_for_the_cross_built_wheel_builds_its_own(monkeypatch, tmp_path):
    """The cached cross-built wheel needs glibc 2.34 (its libraries' version references): a device
    with 2.31 is not sent it; by default a warning says so and the device builds, with --cross-build
    it is the one error line."""
    import json
    import zipfile

    from edgekit.crossbuild import ORIGIN, cross_wheel_dir
    from edgekit.device.deploy import Deployer, DeployOptions, DeployResult
    from edgekit.manifest import sha256_of
    from edgekit.runtimes import get_runtime
    from edgekit.targets.specs import all_specs

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    report = (FIXTURES / "device-report-linux-aarch64-debian12.txt").read_text()
    toolchain, args = _cross("rpi5-8gb", report, monkeypatch, tmp_path)
    folder = cross_wheel_dir("aarch64", args, toolchain)
    folder.mkdir(parents=True)
    wheel = folder / "llama_cpp_python-0.3.36-py3-none-linux_aarch64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("llama_cpp/lib/libllama.so", b"\x7fELF...\0GLIBC_2.17\0GLIBC_2.34\0GLIBCXX_3.4.30\0")
    (folder / "origin.json").write_text(json.dumps({"wheel": wheel.name, "sha256": sha256_of(wheel), "origin": ORIGIN}))

    class NoPut:
        def put(self, *a, **kw):
            raise AssertionError("the wheel must not be sent")

    rt, old = get_runtime("llama.cpp"), parse_device_report(report.replace("glibc 2.36", "glibc 2.31"))
    for cross_build in (None, True):
        d = Deployer(NoPut(), "pi", DeployOptions(cross_build=cross_build), stage=lambda *a: None)
        result = DeployResult("pi", "/r", "rpi5-8gb", "rpi5", "k", "/r/m", "gguf", "3.11.2")
        cross = d._cross(all_specs()["rpi5-8gb"], old, rt)
        if cross_build is None:
            assert d._cross_wheel("/r", old, rt, *cross, result) is None
            assert result.warnings == ["the llama.cpp wheel cross-built here cannot load on pi (it needs glibc 2.34 "
                                       "and the device has 2.31): built on the device instead"]
        else:
            with pytest.raises(EdgekitError, match="cannot load on pi: it needs glibc 2.34"):
                d._cross_wheel("/r", old, rt, *cross, result)
    sent = []
    NoPut.put = lambda self, src, dst: sent.append((src, dst))
    new = parse_device_report(report)
    got = Deployer(NoPut(), "pi", DeployOptions(), stage=lambda *a: None)._cross_wheel(
        "/r", new, rt, *cross, DeployResult("pi", "/r", "rpi5-8gb", "rpi5", "k", "/r/m", "gguf", "3.11.2"))
    assert got == (f"/r/wheels/{wheel.name}", ORIGIN, sha256_of(wheel)) and sent == [(wheel, got[0])]


def test_a_failed_cross_build_falls_back_to_the_device_by_default(monkeypatch, tmp_path):
    """A cross build that fails (no sdist offline, a CMake error) is a warning and the device's own
    build by default; with --cross-build it is the error."""
    from edgekit.device import deploy as deploy_mod
    from edgekit.device.deploy import Deployer, DeployOptions, DeployResult
    from edgekit.runtimes import get_runtime

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    report = (FIXTURES / "device-report-linux-aarch64-debian12.txt").read_text()
    toolchain, args = _cross("rpi5-8gb", report, monkeypatch, tmp_path)

    def failing(*a, **kw):
        raise EdgekitError("could not download the llama-cpp-python 0.3.36 sdist (pip exit 1)", "check the index")

    monkeypatch.setattr(deploy_mod, "cross_wheel", failing)
    device, rt = parse_device_report(report), get_runtime("llama.cpp")
    result = DeployResult("pi", "/r", "rpi5-8gb", "rpi5", "k", "/r/m", "gguf", "3.11.2")
    d = Deployer(None, "pi", DeployOptions(), stage=lambda *a: None)
    assert d._cross_wheel("/r", device, rt, toolchain, args, result) is None
    assert "the cross build of llama.cpp for pi failed (could not download" in result.warnings[0]
    with pytest.raises(EdgekitError, match="could not download"):
        Deployer(None, "pi", DeployOptions(cross_build=True), stage=lambda *a: None)._cross_wheel(
            "/r", device, rt, toolchain, args, result)
