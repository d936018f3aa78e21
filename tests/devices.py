"""Test devices: real OpenSSH servers on 127.0.0.1 with throwaway keys (install openssh-server;
.ci/run does), and a wheelhouse of the device dependency set repacked from this venv's own
installed distributions (no network), for deploys that install with --wheels."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.path.exists(p)),
                                    None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(d: Path, sftp: bool = True, extra: str = ""):
    """An sshd on 127.0.0.1 for this user (with or without an SFTP subsystem, plus `extra`
    sshd_config lines); yields (destination, options, port). Stopped by PID afterwards."""
    if SSHD is None or shutil.which("ssh") is None:
        pytest.skip("OpenSSH server/client not installed (apt-get install openssh-server openssh-client)")
    for key in ("host_key", "client_key"):
        if not (d / key).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        + ("Subsystem sftp internal-sftp\n" if sftp else "") + extra)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"sshd did not start: {server.stderr.read().decode()[-500:]}")
            time.sleep(0.1)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    options = [f"Port={port}", f"IdentityFile={d / 'client_key'}", "IdentitiesOnly=yes",
               f"UserKnownHostsFile={d / 'known_hosts'}", "StrictHostKeyChecking=accept-new"]
    try:
        yield f"{user}@127.0.0.1", options, port
    finally:
        server.terminate()
        server.wait(timeout=10)


def flags(options) -> list[str]:
    return [a for o in options for a in ("--ssh-option", o)]


# ---------------------------------------------------------------- wheels without a network


def _closure(roots: list[str]) -> list:
    """The installed distributions `roots` need, recursively (markers evaluated here)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: dict[str, metadata.Distribution] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        dist = metadata.distribution(req.name)
        seen[name] = dist
        for spec in dist.requires or []:
            sub = Requirement(spec)
            if sub.marker is None or sub.marker.evaluate({"extra": ""}):
                todo.append(sub)
    return list(seen.values())


def repack(dist, out: Path) -> Path:
    """A wheel of an installed distribution, from its RECORD and WHEEL files (`wheel pack`)."""
    base = Path(dist.locate_file(""))
    info = Path(dist._path)  # the .dist-info folder
    tmp = out / f".pack-{info.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    for f in dist.files or []:
        if str(f).startswith("..") or f.suffix == ".pyc" or "__pycache__" in f.parts:
            continue
        src = base / f
        if src.is_file():
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp / f)
    for extra in ("INSTALLER", "REQUESTED", "direct_url.json"):
        (tmp / info.name / extra).unlink(missing_ok=True)
    before = set(out.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "wheel", "pack", str(tmp), "-d", str(out)], check=True, capture_output=True)
    shutil.rmtree(tmp)
    return next(iter(set(out.glob("*.whl")) - before))


DEVICE_ROOTS = ["click", "numpy", "rich", "pydantic", "gguf", "llama-cpp-python"]
ONNX_ROOTS = ["onnxruntime", "onnx", "tokenizers"]


def wheelhouse(out: Path, roots: list[str]) -> Path:
    """`out` filled with wheels of the installed distributions `roots` need, and the
    llama-cpp-python wheel this machine built (edgekit.llamacpp_build's cache)."""
    out.mkdir(parents=True, exist_ok=True)
    for dist in _closure(roots):
        if dist.metadata["Name"].lower().replace("_", "-") in ("llama-cpp-python", "edgekit"):
            continue
        repack(dist, out)
    from edgekit.llamacpp_build import wheel_dir

    for w in wheel_dir().glob("llama_cpp_python-*.whl"):
        shutil.copy(w, out / w.name)
    return out


# ---------------------------------------------------------------- devices with a PATH of fakes


BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)  # the interpreter this venv was made from
AWKWARD_DIR = "dev it's \"here\""


class Device:
    def __init__(self, root: Path, dest: str, options: list[str], port: int):
        self.root, self.dest, self.options, self.port = root, dest, options, port
        self.home, self.fakes = root / "home", root / "fakes"
        self.remote = str(self.home / AWKWARD_DIR)

    def fake(self, name: str, script: str) -> None:
        p = self.fakes / name
        p.write_text("#!/bin/sh\n" + script)
        p.chmod(0o755)

    def clear_fakes(self) -> None:
        for p in self.fakes.iterdir():
            p.unlink()

    def args(self, *more: str) -> list[str]:
        return ["--host", self.dest, *flags(self.options), "--remote-dir", self.remote, "--python", BASE_PYTHON,
                *more]


def _device(root: Path):
    (root / "home").mkdir(parents=True)
    (root / "fakes").mkdir()
    extra = f"SetEnv HOME={root / 'home'} PATH={root / 'fakes'}:/usr/local/bin:/usr/bin:/bin\n"
    for dest, options, port in serve(root, sftp=True, extra=extra):
        yield Device(root, dest, options, port)
