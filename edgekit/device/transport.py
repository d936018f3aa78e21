"""Where commands run and files go: this machine (LocalTransport), a device over SSH
(SSHTransport), or a recording of one (RecordedTransport). Probe, deploy and remote bench all go
through the Transport protocol: run() for commands, put()/get() for files, close() at the end."""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from edgekit.device.recording import FILES_DIR, Recording
from edgekit.errors import EdgekitError

PARTIAL_MARK = ".partial-"  # as edgekit.atomic names its temporary outputs


@dataclass
class CommandResult:
    command: str
    returncode: int
    stdout: str
    stderr: str


class Transport(Protocol):
    """The machine behind a transport, as commands and files.

    run(command, timeout_s, on_output): `command` through a POSIX sh on that machine. The result
    holds the exit status and the whole stdout and stderr (decoded as UTF-8, bad bytes replaced).
    `on_output`, when given, is called with each stdout line (without its line ending; a last line
    without one is passed too) as the line arrives, in order, on the calling thread, before run()
    returns. A command still running after `timeout_s` (whether or not it prints) is stopped and
    answers returncode 124 with stdout "" and stderr "timed out after <timeout_s> s". An exception
    raised by `on_output` stops the command and propagates. Failing to reach the machine at all is
    an EdgekitError, never a CommandResult.

    put(local, remote) copies the file `local` of this machine to the path `remote` on the
    transport's machine; get(remote, local) copies the other way. For both:
      - atomic at the destination: the data goes to `<destination>.partial-<pid>` beside it, which
        is then renamed over the destination, so the destination is either as it was or whole;
        on failure the temporary file is removed;
      - an existing destination file is replaced (its mode follows the source's for a new file);
      - the destination's folder must exist;
      - a missing source, a folder where a file is expected (source or destination), a permission
        error, or any other failure is one EdgekitError naming the path and the fix;
      - any path works, spaces, quotes and shell or glob characters included: paths are never
        interpreted by a shell or a glob. A remote path relative to nothing is relative to the home
        folder over SSH (and to the current folder locally); a leading `~/` means the home folder.

    close() ends what the transport holds open (the SSH master connection); calling it again does
    nothing.

    `resumable_methods` says which resumable uploads the transport can make: the `method`s its
    put_resumable(local, remote, method, bwlimit_kib_s, on_progress) takes ("rsync", "sftp");
    empty when it has none (then callers use put)."""

    name: str
    resumable_methods: tuple[str, ...]

    def run(self, command: str, timeout_s: float = 30.0,
            on_output: Callable[[str], None] | None = None) -> CommandResult: ...

    def put(self, local: Path, remote: str) -> None: ...

    def get(self, remote: str, local: Path) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- shared pieces


def _stream(args, timeout_s: float, on_output: Callable[[str], None] | None, shell: bool = False,
            own_group: bool = False) -> tuple[int | None, str, str]:
    """Run `args` with stdin from /dev/null, handing each stdout line to `on_output` as it arrives.
    (returncode, stdout, stderr); returncode None when `timeout_s` passed first, the process then
    killed (its whole process group with `own_group`, so a shell's children go too). The pipes are
    read by threads and the deadline kept here, so a command that stalls without printing still
    ends on time."""
    deadline = time.monotonic() + timeout_s
    proc = subprocess.Popen(args, shell=shell, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=own_group)
    lines: queue.Queue = queue.Queue()
    err: list[str] = []

    def pump_stdout() -> None:
        try:
            for line in proc.stdout:
                lines.put(line)
        finally:
            lines.put(None)

    def pump_stderr() -> None:
        err.append(proc.stderr.read())

    pumps = [threading.Thread(target=pump_stdout, daemon=True), threading.Thread(target=pump_stderr, daemon=True)]
    for pump in pumps:
        pump.start()
    out: list[str] = []
    finished = False
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None, "".join(out), "".join(err)
            if line is None:
                break
            out.append(line)
            if on_output is not None:
                on_output(line[:-1] if line.endswith("\n") else line)
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None, "".join(out), "".join(err)
        pumps[1].join(timeout=max(0.0, deadline - time.monotonic()))
        if pumps[1].is_alive():  # exited, but something it started still holds stderr open
            return None, "".join(out), ""
        finished = True
        return proc.returncode, "".join(out), "".join(err)
    finally:
        if not finished:  # timed out, or on_output raised: stop it (and, with own_group, what it started)
            try:
                if own_group:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        for pump in pumps:
            pump.join(timeout=1.0)
        if not any(pump.is_alive() for pump in pumps):
            proc.stdout.close()
            proc.stderr.close()


def _check_remote_path(remote: str, where: str) -> str:
    """`remote` as given, refused when it cannot name a file; `where` names it in the error."""
    if not remote or remote.endswith("/") or remote in ("~", ".", ".."):
        raise EdgekitError(f"'{where}' does not name a file", "name the file itself, e.g. models/model.gguf")
    if remote.startswith("~") and not remote.startswith("~/"):
        raise EdgekitError(f"'{where}': ~user paths are not supported",
                           "pass an absolute path, one relative to the home folder, or one starting with ~/")
    return remote


def _check_source(src: Path, label: str) -> None:
    if not src.exists():
        raise EdgekitError(f"{label} does not exist", "check the path of the file to copy")
    if src.is_dir():
        raise EdgekitError(f"{label} is a folder, not a file", "name a file; copy a folder's files one by one")


def _check_destination(dst: Path, label: str, source_name: str) -> None:
    if dst.is_dir():
        raise EdgekitError(f"{label} is a folder", f"name the file to write, e.g. {label.rstrip('/')}/{source_name}")
    parent = dst.parent
    if not parent.is_dir():
        raise EdgekitError(f"cannot write {label}: the folder {parent} does not exist", "create the folder first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EdgekitError(f"cannot write {label} (permission denied in {parent})",
                           "choose a folder you can write, or fix its permissions")


def _copy_file(src: Path, dst: Path, src_label: str | None = None, dst_label: str | None = None) -> None:
    """Copy `src` to `dst` on this machine through `<dst>.partial-<pid>` and os.replace, with the
    contract of Transport.put/get. The labels name the paths in errors (default: the paths)."""
    src_label, dst_label = src_label or str(src), dst_label or str(dst)
    _check_source(src, src_label)
    _check_destination(dst, dst_label, src.name)
    tmp = dst.with_name(f"{dst.name}{PARTIAL_MARK}{os.getpid()}")
    try:
        shutil.copyfile(src, tmp)
        shutil.copymode(src, tmp)
        os.replace(tmp, dst)
    except OSError as e:
        which = src_label if e.filename is not None and Path(e.filename) == src else dst_label
        why = e.strerror or str(e)
        if isinstance(e, PermissionError):
            raise EdgekitError(f"cannot {'read' if which == src_label else 'write'} {which} (permission denied)",
                               "fix the file's permissions, or choose another path") from None
        raise EdgekitError(f"cannot copy {src_label} to {dst_label} ({why})",
                           "check the paths and the free space at the destination") from None
    finally:
        try:
            tmp.unlink()
        except OSError:  # renamed, or never created
            pass


def _local_path(remote: str) -> Path:
    return Path(remote).expanduser()


# ---------------------------------------------------------------- the transports


class _ClosesOnExit:
    """`with transport:` closes it afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalTransport(_ClosesOnExit):
    """This machine: commands through /bin/sh, files copied between two paths of this machine."""

    name = "local"
    resumable_methods: tuple[str, ...] = ()

    def run(self, command: str, timeout_s: float = 30.0,
            on_output: Callable[[str], None] | None = None) -> CommandResult:
        returncode, out, err = _stream(command, timeout_s, on_output, shell=True, own_group=True)
        if returncode is None:
            return CommandResult(command, 124, "", f"timed out after {timeout_s} s")
        return CommandResult(command, returncode, out, err)

    def put(self, local: Path, remote: str) -> None:
        """Copy `local` to `remote` (a path of this machine; relative to the current folder)."""
        _copy_file(Path(local), _local_path(_check_remote_path(remote, remote)), dst_label=remote)

    def get(self, remote: str, local: Path) -> None:
        """Copy `remote` (a path of this machine) to `local`."""
        _copy_file(_local_path(_check_remote_path(remote, remote)), Path(local), src_label=remote)

    def close(self) -> None:
        pass


class RecordedTransport(_ClosesOnExit):
    """Answers commands from a recording (`edgekit probe --record DIR`, or a fixture folder in the
    same layout, described in edgekit.recording): a command the recording does not hold fails as a
    missing command would on the device (127). get() returns files recorded under files/; put()
    is refused: a recording cannot receive files."""

    resumable_methods: tuple[str, ...] = ()

    def __init__(self, folder):
        self.recording = Recording(folder)
        self.folder = self.recording.folder
        self.files = self.recording.files  # command -> recorded file name
        self.name = f"recorded:{self.folder.name}"

    def run(self, command: str, timeout_s: float = 30.0,
            on_output: Callable[[str], None] | None = None) -> CommandResult:
        text = self.recording.output(command)
        if text is None:
            return CommandResult(command, 127, "", f"not in the recording {self.folder}")
        if on_output is not None:
            lines = text.split("\n")
            for line in lines[:-1] if lines[-1] == "" else lines:
                on_output(line)
        return CommandResult(command, 0, text, "")

    def put(self, local: Path, remote: str) -> None:
        raise EdgekitError(f"cannot copy {local} to {remote}: a recording cannot receive files "
                           f"({self.folder} is replayed)",
                           "put files on a device (--host) or on this machine, not on a --replay recording")

    def get(self, remote: str, local: Path) -> None:
        """Copy the file recorded for `remote` (<recording>/files/<remote>) to `local`."""
        source = self.recording.file(_check_remote_path(remote, remote))
        if source is None:
            raise EdgekitError(f"{remote} is not in the recording {self.folder} (no file under {FILES_DIR}/ for it)",
                               f"add it as {self.folder / FILES_DIR}/{remote.lstrip('/')}, or read it from the "
                               "device itself (--host)")
        _copy_file(source, Path(local), src_label=f"{remote} (recorded as {source})")

    def close(self) -> None:
        pass


class SSHTransport(_ClosesOnExit):
    """Runs commands on a device with the system's OpenSSH client, so ~/.ssh/config, agents and
    known_hosts apply as they do for `ssh` itself. One master connection is shared by every
    command and every file copy (ControlMaster; closed by close()), so a probe's dozen commands
    cost one handshake. BatchMode: a host that would ask for a password or a host-key confirmation
    fails at once with ssh's own message instead of hanging.

    Files go through the system's scp on the same ControlPath: in SFTP mode (`scp -s`, OpenSSH
    8.7 and later; the default from 9.0) the remote path is taken literally (a downloaded path has
    its glob characters escaped); in the legacy SCP mode (older clients, or a device without an
    SFTP server, which is tried when the SFTP subsystem is refused) the path goes through the
    remote shell and is shell-quoted. Uploads land as `<remote>.partial-<pid>` and are renamed with
    a remote `mv -f`, so the destination is never half-written."""

    resumable_methods: tuple[str, ...] = ("rsync", "sftp")

    def __init__(self, destination: str, options: list[str] | tuple[str, ...] = (), config: str | None = None):
        if not destination or destination.startswith("-"):
            raise EdgekitError(f"'{destination}' is not an SSH destination",
                               "pass user@host, a Host alias from ~/.ssh/config, or ssh://user@host:port")
        self.ssh = shutil.which("ssh")
        if self.ssh is None:
            raise EdgekitError("the OpenSSH client (ssh) is not installed",
                               "install it (Debian/Ubuntu: apt-get install openssh-client)")
        self.destination = destination
        self.name = f"ssh:{destination}"
        # a short private folder for the control socket: unix socket paths are limited to 104-108 bytes,
        # and macOS's $TMPDIR alone is ~50 (%C adds 40)
        self._control_dir = tempfile.mkdtemp(prefix="ek-", dir="/tmp" if os.path.isdir("/tmp") else None)
        os.chmod(self._control_dir, 0o700)
        self._closed = False
        self._scp_mode: str | None = None  # "sftp" or "legacy", chosen on the first copy
        # the user's options first: for each option ssh keeps the first value it is given
        self.config = config  # an ssh_config file read instead of ~/.ssh/config (ssh -F)
        self.base = [self.ssh, *(["-F", str(config)] if config else []),
                     *[arg for option in options for arg in ("-o", option)],
                     "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                     "-o", "ServerAliveInterval=15", "-o", "ControlMaster=auto",
                     "-o", f"ControlPath={self._control_dir}/%C", "-o", "ControlPersist=120"]

    def run(self, command: str, timeout_s: float = 30.0,
            on_output: Callable[[str], None] | None = None) -> CommandResult:
        """`command` through the device's POSIX sh (login shells differ: zsh on macOS, fish, ...)."""
        argv = [*self.base, self.destination, "--", "sh -c " + shlex.quote(command)]
        returncode, out, err = _stream(argv, timeout_s, on_output)
        if returncode is None:
            if not self._connected():  # no connection came up at all: the host does not answer
                raise EdgekitError(f"cannot reach {self.destination} over SSH (no answer within {timeout_s:g} s)",
                                   f"check that `ssh {shlex.quote(self.destination)} true` answers (host up, port "
                                   "open, sshd running)") from None
            return CommandResult(command, 124, "", f"timed out after {timeout_s} s")
        # 255 is ssh's own failure (no connection, refused key, unknown host key) unless the master
        # connection is up, in which case the remote command itself exited 255
        if returncode == 255 and not self._connected():
            key = host_key_problem(err)
            if key:
                raise EdgekitError(f"{self.destination}: {key[0]}", key[1])
            why = " ".join((err.strip().splitlines() or ["ssh failed"])[-1].split())
            raise EdgekitError(f"cannot reach {self.destination} over SSH ({why})",
                               f"check that `ssh {shlex.quote(self.destination)} true` works without a password prompt "
                               "(key in the agent or IdentityFile, host key in known_hosts)")
        return CommandResult(command, returncode, out, err)

    # ------------------------------------------------------------ files

    def put(self, local: Path, remote: str) -> None:
        """Copy the local file `local` to `remote` on the device (see Transport for the contract)."""
        local = Path(local)
        label = f"{self.destination}:{remote}"
        _check_source(local, str(local))
        target = self._remote(_check_remote_path(remote, label))
        tmp = f"{target}{PARTIAL_MARK}{os.getpid()}"
        q = shlex.quote
        self._ensure_master()
        done = False
        try:
            p = self._scp(str(local.absolute()), tmp, download=False)
            if p.returncode != 0:
                parent = target.rsplit("/", 1)[0] if "/" in target else "."
                raise EdgekitError(f"cannot copy {local} to {label} ({_scp_why(p.stderr)})",
                                   f"check that the folder exists on the device and the SSH user may write there "
                                   f"(`ssh {q(self.destination)} ls -ld {q(parent)}`)")
            moved = self.run(f"if [ -d {q(target)} ]; then echo 'is a folder' >&2; exit 3; fi; "
                             f"mv -f -- {q(tmp)} {q(target)}")
            if moved.returncode == 3:
                raise EdgekitError(f"{label} is a folder", f"name the file to write, e.g. {remote}/{local.name}")
            if moved.returncode != 0:
                raise EdgekitError(f"cannot replace {label} ({_scp_why(moved.stderr)})",
                                   "check that the SSH user may write the file and its folder")
            done = True
        finally:
            if not done:
                try:
                    self.run(f"rm -f -- {q(tmp)}", timeout_s=10)
                except Exception:  # the error already on its way says what went wrong
                    pass

    def get(self, remote: str, local: Path) -> None:
        """Copy `remote` on the device to the local file `local` (see Transport for the contract)."""
        local = Path(local)
        label = f"{self.destination}:{remote}"
        source = self._remote(_check_remote_path(remote, label))
        _check_destination(local, str(local), source.rsplit("/", 1)[-1])
        tmp = local.with_name(f"{local.name}{PARTIAL_MARK}{os.getpid()}")
        self._ensure_master()
        try:
            p = self._scp(str(tmp.absolute()), source, download=True)
            if p.returncode != 0:
                raise EdgekitError(f"cannot copy {label} to {local} ({_scp_why(p.stderr)})",
                                   f"check the file on the device (`ssh {shlex.quote(self.destination)} ls -l "
                                   f"{shlex.quote(source)}`)")
            try:
                os.replace(tmp, local)
            except OSError as e:
                raise EdgekitError(f"cannot write {local} ({e.strerror or e})",
                                   "check the path and its folder's permissions") from None
        finally:
            try:
                tmp.unlink()
            except OSError:
                pass

    def put_resumable(self, local: Path, remote: str, method: str = "rsync", bwlimit_kib_s: int | None = None,
                      on_progress: Callable[[int], None] | None = None) -> int:
        """Append `local` to the device file `remote` from where that file ends (a cut upload's
        remainder; the whole file when `remote` does not exist) and return the bytes sent. The
        caller verifies and renames: `remote` is a partial name, never the destination.

        method "rsync": `rsync --partial --append-verify` (both ends need rsync 3.x; the data is
        checked against the whole file, and sent again whole when the kept part does not match);
        "sftp": sftp's `reput` (no check here: the caller's sha256 is the check). Both go through
        the master connection; `bwlimit_kib_s` caps the rate; `on_progress(bytes)` is told how far
        the file is. An unreachable device or a failed copy is one EdgekitError."""
        local = Path(local)
        _check_source(local, str(local))
        target = self._remote(_check_remote_path(remote, f"{self.destination}:{remote}"))
        self._ensure_master()
        host, extra = self._host()
        size = local.stat().st_size
        if method == "rsync":
            ssh = " ".join(shlex.quote(a) for a in [*self.base, *extra])
            argv = ["rsync", "--partial", "--append-verify", "--protect-args", "--stats", "--info=progress2",
                    "-e", ssh, *([f"--bwlimit={bwlimit_kib_s}"] if bwlimit_kib_s else []),
                    str(local.absolute()), f"{host}:{target}"]
            code, out, err = _run_split(argv, on_line=lambda line: _rsync_progress(line, on_progress))
            if code != 0:
                raise EdgekitError(f"cannot upload {local} to {self.destination}:{remote} by rsync "
                                   f"({_scp_why(err or out)})", "deploy again: the upload resumes where it stopped")
            m = re.search(r"Total bytes sent:\s*([\d,.]+)", out)
            sent = int(re.sub(r"[,.]", "", m.group(1))) if m else size
            return min(sent, size) if m else size
        if method != "sftp":
            raise ValueError(method)

        sftp = shutil.which("sftp")
        if sftp is None:
            raise EdgekitError("the OpenSSH sftp client is not installed",
                               "install it (Debian/Ubuntu: apt-get install openssh-client)")
        have = self.run(f"[ -f {shlex.quote(target)} ] && wc -c < {shlex.quote(target)} | tr -d ' '; true")
        start = int(have.stdout.strip()) if have.stdout.strip().isdigit() else 0
        if start >= size:
            return 0
        with tempfile.TemporaryDirectory(dir=self._control_dir) as d:
            # sftp globs the local path and reads quotes in both: a plain link name for the local file
            link = Path(d) / "upload"
            os.symlink(local.absolute(), link)
            spelled = '"' + target.replace("\\", "\\\\").replace('"', '\\"') + '"'
            (Path(d) / "batch").write_text(f"{'reput' if start else 'put'} {link} {spelled}\n")
            argv = [sftp, "-q", "-b", str(Path(d) / "batch"), *(["-l", str(bwlimit_kib_s * 8)] if bwlimit_kib_s else []),
                    *self.base[1:], *extra, host]
            code, out, err = _run_split(argv)
        if code != 0:
            raise EdgekitError(f"cannot upload {local} to {self.destination}:{remote} by sftp ({_scp_why(err or out)})",
                               "deploy again: the upload resumes where it stopped")
        if on_progress:
            on_progress(size)
        return size - start

    @staticmethod
    def _remote(path: str) -> str:
        """A remote path as scp and the shell both read it the same way: `~/x` as `x` (both start in
        the home folder), a leading `-` behind `./` so no tool takes it for an option."""
        if path.startswith("~/"):
            path = path[2:].lstrip("/") or "."
        return f"./{path}" if path.startswith("-") else path

    def _host(self) -> tuple[str, list[str]]:
        """The destination as scp spells a host (`[user@]host`, an IPv6 literal in brackets) and the
        options it needs (the port of an ssh:// destination). User options come first, so a Port
        given there wins, as it does for ssh."""
        dest, extra = self.destination, []
        if dest.startswith("ssh://"):
            m = re.fullmatch(r"ssh://(?:([^@/]*)@)?(\[[^\]/]*\]|[^:/]*)(?::(\d+))?/?", dest)
            if m:
                user, host, port = m.groups()
                dest = (f"{user}@" if user else "") + host
                extra = ["-o", f"Port={port}"] if port else []
        user, at, host = dest.rpartition("@")
        if ":" in host and not host.startswith("["):
            dest = f"{user}{at}[{host}]"
        return dest, extra

    def _mode(self) -> str:
        if self._scp_mode is None:
            version = _openssh_version(self.ssh)
            self._scp_mode = "sftp" if version is not None and version >= (8, 7) else "legacy"
        return self._scp_mode

    def _scp(self, local: str, remote: str, download: bool) -> subprocess.CompletedProcess:
        """scp between the local path `local` (absolute, so scp never reads it as host:path) and
        `remote` on the device, through the master connection. In SFTP mode scp takes a remote
        path literally but globs one it downloads, so the glob characters are escaped; in legacy
        mode the remote shell reads the path, so it is shell-quoted (and -T, since scp cannot match
        what the shell will expand). A refused SFTP subsystem switches this transport to the legacy
        protocol and copies again (a connection that is really lost fails that copy too)."""
        scp = shutil.which("scp")
        if scp is None:
            raise EdgekitError("the OpenSSH scp client is not installed",
                               "install it (Debian/Ubuntu: apt-get install openssh-client)")
        mode = self._mode()
        version = _openssh_version(self.ssh) or (0, 0)
        if mode == "sftp":
            flags, spelled = ["-s"], _glob_escape(remote) if download else remote
        else:  # -O: the legacy protocol where SFTP is the default
            flags = (["-O"] if version >= (9, 0) else []) + (["-T"] if version >= (8, 0) else [])
            spelled = shlex.quote(remote)
        host, extra = self._host()
        ends = [f"{host}:{spelled}", local] if download else [local, f"{host}:{spelled}"]
        argv = [scp, *flags, "-q", *self.base[1:], *extra, *ends]
        p = subprocess.run(argv, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
        # through the master, a refused subsystem reads "Connection closed" (the reason goes to the master)
        refused = "subsystem request failed" in p.stderr or "Connection closed" in p.stderr
        if mode == "sftp" and p.returncode != 0 and refused and self._connected():
            self._scp_mode = "legacy"
            return self._scp(local, remote, download)
        return p

    def _ensure_master(self) -> None:
        """Bring the master connection up (scp never starts one: it passes ControlMaster=no);
        an unreachable host is the same EdgekitError as for run()."""
        if not self._connected():
            self.run("true")

    def _connected(self) -> bool:
        return subprocess.run([*self.base, "-O", "check", self.destination], capture_output=True,
                              timeout=10).returncode == 0

    def close(self) -> None:
        """End the master connection and remove its socket folder; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            subprocess.run([*self.base, "-O", "exit", self.destination], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            shutil.rmtree(self._control_dir, ignore_errors=True)



def host_key_problem(stderr: str) -> tuple[str, str] | None:
    """(problem, fix) when ssh refused the device's host key, from ssh's stderr; None otherwise.
    A changed key is always refused; an unknown one only without StrictHostKeyChecking=accept-new."""
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr or "Host key for" in stderr and "has changed" in stderr:
        return ("its host key has CHANGED since it was last seen (a reinstalled device, or someone in between): "
                "refused",
                "if the device was reinstalled, check its new key and remove the old one with `ssh-keygen -R HOST`")
    if "Host key verification failed" in stderr or "No ED25519 host key is known" in stderr or \
            re.search(r"No \S+ host key is known", stderr):
        return ("its host key is not known here (not in known_hosts): refused",
                "check the key's fingerprint and connect once with ssh, or pass --accept-new-host-key")
    return None


def _run_split(argv: list[str], on_line: Callable[[str], None] | None = None) -> tuple[int, str, str]:
    """Run `argv` (stdin from /dev/null), handing each piece of stdout between a \\r or \\n to
    `on_line` as it comes (rsync's progress rewrites its line with \\r). (returncode, stdout, stderr)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err: list[bytes] = []
    pump = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    pump.start()
    out, piece = [], b""
    try:
        while True:
            chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(4096)
            if not chunk:
                break
            out.append(chunk)
            piece += chunk
            *lines, piece = re.split(rb"[\r\n]", piece)
            for line in lines:
                if on_line and line.strip():
                    on_line(line.decode("utf-8", "replace"))
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pump.join(timeout=5)
    return proc.returncode, b"".join(out).decode("utf-8", "replace"), b"".join(err).decode("utf-8", "replace")


def _rsync_progress(line: str, on_progress: Callable[[int], None] | None) -> None:
    """rsync --info=progress2's `  1,234,567  42%  1.2MB/s  0:00:03` -> on_progress(1234567)."""
    m = re.match(r"\s*([\d,.]+)\s+\d+%", line)
    if m and on_progress:
        on_progress(int(re.sub(r"[,.]", "", m.group(1))))


def _glob_escape(path: str) -> str:
    """`path` with the characters a glob reads (* ? [ ] and the backslash) escaped."""
    return re.sub(r"([][*?\\])", r"\\\1", path)


def _scp_why(stderr: str) -> str:
    """The last line scp or the remote command printed, without scp's `scp: ` prefix."""
    last = (stderr.strip().splitlines() or ["failed"])[-1]
    return " ".join(last.removeprefix("scp: ").split())


_VERSIONS: dict[str, tuple[int, int] | None] = {}


def _openssh_version(ssh: str) -> tuple[int, int] | None:
    """(major, minor) of the OpenSSH client at `ssh` (scp comes with it), None for another client."""
    if ssh not in _VERSIONS:
        try:
            out = subprocess.run([ssh, "-V"], capture_output=True, text=True, timeout=10)
            m = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stderr + out.stdout)
        except (OSError, subprocess.TimeoutExpired):
            m = None
        _VERSIONS[ssh] = (int(m.group(1)), int(m.group(2))) if m else None
    return _VERSIONS[ssh]


# ---------------------------------------------------------------- destinations


def parse_destination(text: str) -> tuple[str, list[str]]:
    """A --host value as (what ssh is given, the ssh options it implies): `user@host:port` and
    `[v6]:port` become the host and Port=port (ssh itself does not read `:port`); `ssh://...`, a
    Host alias, `user@host` and bare IPv6 addresses pass as they are. Pure."""
    if text.startswith("ssh://"):
        return text, []
    m = re.fullmatch(r"(?:([^@\s]+)@)?\[([0-9A-Fa-f:.%\w]+)\]:(\d+)", text)
    if m:
        user, host, port = m.groups()
        return (f"{user}@{host}" if user else host), [f"Port={port}"]
    user, at, hostport = text.rpartition("@")
    if hostport.count(":") == 1:
        host, port = hostport.split(":")
        if port.isdigit() and host:
            return f"{user}{at}{host}", [f"Port={port}"]
    return text, []


def open_transport(host: str, ssh_options=(), ssh_config: Path | None = None, accept_new_host_key: bool = False):
    """An SSHTransport to `host`: the port of a `host:port` destination first, then the user's
    options (ssh keeps the first value of each), then the host-key policy: unknown keys refused
    unless `accept_new_host_key`, changed keys always."""
    if ssh_config is not None and not Path(ssh_config).is_file():
        raise EdgekitError(f"--ssh-config {ssh_config} does not exist", "pass an ssh_config file")
    destination, implied = parse_destination(host)
    policy = "accept-new" if accept_new_host_key else "yes"
    # the port written into the destination is this host's own: it goes before --ssh-option's
    return SSHTransport(destination, [*implied, *ssh_options, f"StrictHostKeyChecking={policy}"],
                        config=str(ssh_config) if ssh_config else None)
