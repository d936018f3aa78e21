"""`edgekit deploy`: edgekit, a runtime and a model on a device, over one SSH connection, each
step skipped when it is already done.

Contract of `deploy()`:
1. Read the device in one command (`device_script`, parsed by the pure `parse_device_report`)
   and detect its target; refuse before anything is written there when its Python is older than
   3.10 or lacks venv, when the free disk at the remote folder cannot hold what is missing (model
   files not in the store, the venv, a runtime build), or when the device's RAM cannot hold the
   weights plus the KV cache at `ctx` (`preflight`, pure). Every refusal names the numbers.
2. A venv on the device (`<remote>/venv`) with edgekit installed from a wheel of this machine's
   own copy (built once per source state, cached locally), so versions always match, and only
   the device dependency set (pyproject's `dependencies`: no torch, transformers, optimum,
   safetensors, matplotlib).
3. The runtime, with the target's recipe (edgekit.targets.specs.runtime_install): a llama.cpp
   build streams its log to a local file and is bounded by `build_timeout_s`; the wheel it built
   comes back to a local cache keyed by family, runtime version, machine and flags, and the
   next device of that kind installs it in seconds.
4. Model files go to a content-addressed store, `<remote>/store/sha256/<hex>`: uploaded to
   `<remote>/store/incoming/<hex>.partial` (resumed where a cut left it: rsync
   --partial --append-verify where both ends have an rsync that knows it, else sftp `reput`),
   checked with sha256 on the device against the export manifest's (or this machine's) hash,
   then renamed into the store. `<remote>/models/<key>/` holds the artifact's files by their
   export names as links into the store, so a second deploy, or another artifact sharing a
   file, sends nothing.
5. `edgekit doctor --json` on the device: the runtime must load, and with the backend the target
   needs (a Jetson llama.cpp without CUDA is a failed deploy, with the doctor's reason).
6. `<remote>/deploy.json` (RemoteManifest) records edgekit's wheel, the runtimes with their
   recipes and build, and the models; it is written through the transport's atomic put.

Everything the device says is parsed, never trusted as shell text; remote paths are quoted with
shlex, the remote folder's `~/` spelled "$HOME"/... so it may hold spaces and quotes.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NamedTuple

from edgekit import __version__
from edgekit.crossbuild import (
    CROSS_TRIPLETS,
    Toolchain,
    cross_cmake_args,
    cross_toolchain,
    cross_wheel,
    cross_wheel_dir,
    libc_problem,
    normalise_machine,
    verify_cross_wheel,
    wheel_symbol_needs,
)
from edgekit.crossbuild import ORIGIN as CROSS_ORIGIN
from edgekit.device.artifact import ArtifactFiles, artifact_files
from edgekit.device.checks import runtime_backends, runtime_problems
from edgekit.device.facts import (
    PYTHON_CANDIDATES,
    REMOTE_DIR,
    Device,
    PythonFound,
    check_remote_dir,
    choose_python,
    device_script,
    local_rsync_version,
    parse_device_report,
    resolve_remote_dir,
    rsync_can_resume,
)
from edgekit.device.manifest import MANIFEST, ArtifactRecord, ModelRecord, RemoteManifest, RuntimeRecord, now_utc
from edgekit.device.preflight import VENV_BYTES, Need, build_tools_problem, preflight
from edgekit.device.probe import gather_facts
from edgekit.device.untrusted import inside, machine_name, wheel_name
from edgekit.device.wheels import BuiltWheel, built_wheels, device_wheel_dir, edgekit_wheel, keep_built_wheel
from edgekit.errors import EdgekitError
from edgekit.formats import get_format
from edgekit.llamacpp_build import cache_root
from edgekit.manifest import sha256_of
from edgekit.runtimes import Runtime, get_runtime, runtime_of_format
from edgekit.targets.specs import all_specs, detect, runtime_install
from edgekit.terminal import printable

Stage = Callable[[str, str], None]  # (stage, detail): "connecting", "installing", "uploading 42%", ...


# ---------------------------------------------------------------- deploy


class Step(NamedTuple):
    """One deploy step's outcome: what it was, what happened, and whether it changed the device."""

    name: str
    detail: str
    changed: bool


@dataclass
class DeployResult:
    host: str
    remote_dir: str
    target: str
    family: str
    artifact_key: str
    model_path: str                  # the file a remote run loads
    format: str
    python: str
    sent_bytes: int = 0              # model bytes sent this time
    resumed_bytes: int = 0           # bytes an earlier, cut upload had left there
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    runtime: dict | None = None
    log: Path | None = None

    @property
    def changed(self) -> bool:
        """Did any step change the device?"""
        return any(s.changed for s in self.steps)

    def done(self, name: str, detail: str) -> None:
        """A step that changed the device."""
        self.steps.append(Step(name, detail, changed=True))

    def kept(self, name: str, detail: str) -> None:
        """A step that found its work already done and changed nothing."""
        self.steps.append(Step(name, detail, changed=False))

    def to_dict(self) -> dict:
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
        out["steps"] = [(s.name, s.detail) for s in self.steps]  # --json: [step, what happened] pairs
        return out


@dataclass
class DeployOptions:
    remote_dir: str = REMOTE_DIR
    target: str = "auto"
    runtime: str | None = None          # default: the artifact's
    python: str | None = None
    wheels: Path | None = None          # offline device: pip --no-index --find-links these
    ctx: int = 4096
    bwlimit_kib_s: int | None = None
    build_timeout_s: float = 3 * 3600
    install_timeout_s: float = 1800
    share_device_builds: bool = False   # a wheel another device built may serve this one too
    cross_build: bool | None = None     # build the runtime here for the device: None whenever it can
    install_runtime: bool = True        # False: venv, edgekit and the artifact only (a TensorRT build there)




class Deployer:
    """One deploy through one transport (see the module docstring). `stage(stage, detail)` is told
    what is happening, for a progress line or a fleet table."""

    def __init__(self, transport, host: str, options: DeployOptions, stage: Stage | None = None):
        self.t = transport
        self.host = host
        self.o = options
        self.stage = stage or (lambda s, d: None)
        self.q = shlex.quote

    # ------------------------------------------------------------ remote commands

    def sh(self, command: str, what: str, timeout_s: float = 120, on_output=None, check: bool = True):
        r = self.t.run(command, timeout_s=timeout_s, on_output=on_output)
        if check and r.returncode != 0:
            why = "timed out" if r.returncode == 124 else printable(
                (r.stderr.strip().splitlines() or r.stdout.strip().splitlines() or [f"exit {r.returncode}"])[-1], 300)
            raise EdgekitError(f"{what} failed on {self.host} ({why})",
                               f"see what the device says: ssh {self.host} and run it by hand")
        return r

    def read_manifest(self, R: str) -> RemoteManifest:
        r = self.t.run(f"cat -- {self.q(R + '/' + MANIFEST)} 2>/dev/null", timeout_s=30)
        if r.returncode != 0 or not r.stdout.strip():
            return RemoteManifest()
        try:
            return RemoteManifest.model_validate(json.loads(r.stdout))
        except Exception:
            return RemoteManifest()  # unreadable: everything is checked again and it is rewritten

    def write_manifest(self, R: str, manifest: RemoteManifest) -> None:
        manifest.updated_utc = now_utc()
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / MANIFEST
            p.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
            self.t.put(p, f"{R}/{MANIFEST}")

    # ------------------------------------------------------------ the steps

    def run(self, artifact: Path) -> DeployResult:
        o = self.o
        check_remote_dir(o.remote_dir)
        self.stage("connecting", self.host)
        facts = gather_facts(self.t)
        spec, _seen = detect(facts)
        if o.target != "auto":
            if o.target not in all_specs():
                raise EdgekitError(f"unknown target '{o.target}'", "pass --target auto or a name from `edgekit targets`")
            spec = all_specs()[o.target]
        self.stage("reading", "the artifact")
        files = self._files = artifact_files(artifact)
        own = runtime_of_format(files.format).name
        runtime = o.runtime or own
        if runtime != own:
            raise EdgekitError(f"--runtime {runtime} does not run {files.format.upper()} files "
                               f"({files.main} runs on {own})", f"leave --runtime out, or pass --runtime {own}")
        rt = get_runtime(runtime)
        device = parse_device_report(self.sh(device_script(o.remote_dir, (o.python,) if o.python else
                                                           PYTHON_CANDIDATES), "reading the device").stdout)
        if device.machine:  # it names local cache folders: a word, never a path
            machine_name(device.machine, self.host)
        R = device.remote_dir
        python = self._python = choose_python(device, o.python, spec.family)
        manifest = self.read_manifest(R) if device.free_dir == R else RemoteManifest()
        have = self._store_sizes(R, files)
        missing = {h for n, h in files.sha256.items() if have.get(h) != files.sizes[n]}
        need = Need(model_bytes=sum(files.sizes[n] for n, h in files.sha256.items() if h in missing),
                    venv_bytes=0 if manifest.python == python.version_text else VENV_BYTES,
                    runtime_bytes=0 if runtime in manifest.runtimes or not o.install_runtime else rt.install_bytes,
                    weights_bytes=files.facts.size_bytes, kv_bytes=files.facts.kv_bytes_per_position * o.ctx,
                    ctx=o.ctx, n_vocab=files.facts.n_vocab)
        result = DeployResult(self.host, R, spec.name, spec.family, files.key, f"{R}/models/{files.key}/{files.main}",
                              files.format, python.version_text)
        result.warnings += preflight(device, need, self.host, spec.family)
        if o.install_runtime and rt.builds_on_device and runtime not in manifest.runtimes and \
                not self._wheel_at_hand(spec, device, rt):
            problem = build_tools_problem(device, spec.family, self.host)
            if problem:
                raise problem

        self.sh(f"mkdir -p -- {self.q(R)}/store/sha256 {self.q(R)}/store/incoming {self.q(R)}/models "
                f"{self.q(R)}/wheels {self.q(R)}/runs", "creating the remote folder")
        manifest.target = spec.name
        self._venv(R, python, manifest, result)
        self._edgekit(R, manifest, result)
        if o.install_runtime:
            self._runtime(R, spec, device, runtime, manifest, result)
        self._upload(R, device, files, have, result)
        self._link(R, files, manifest, artifact, result)
        if o.install_runtime:
            self._doctor(R, spec, runtime, manifest, result)
        if result.changed:
            self.write_manifest(R, manifest)
        self.stage("deployed", "nothing transferred" if not result.changed else f"{result.sent_bytes} bytes sent")
        return result

    def find_deployed(self, artifact: Path) -> DeployResult:
        """The deploy of `artifact` already on the device (bench --no-deploy), or an EdgekitError
        saying to deploy it."""
        self.stage("connecting", self.host)
        files = artifact_files(artifact)
        R = resolve_remote_dir(self.t, self.o.remote_dir)
        manifest = self.read_manifest(R)
        if files.key not in manifest.artifacts or not manifest.runtimes:
            raise EdgekitError(f"{Path(artifact).name} is not deployed on {self.host} under {self.o.remote_dir}",
                               f"deploy it first (edgekit deploy {artifact} --host {self.host}) or drop --no-deploy")
        target = manifest.target or "?"
        return DeployResult(self.host, R, target, "", files.key, f"{R}/models/{files.key}/{files.main}",
                            files.format, manifest.python or "?", steps=[Step("deploy", "already deployed (--no-deploy)", changed=False)])

    def _venv(self, R: str, python: PythonFound, manifest: RemoteManifest, result: DeployResult) -> None:
        q = self.q
        r = self.t.run(f"{q(R)}/venv/bin/python -c 'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])'",
                       timeout_s=30)
        if r.returncode == 0 and r.stdout.strip() == python.version_text:
            result.kept("venv", f"already there (Python {python.version_text})")
            manifest.python = python.version_text
            return
        self.stage("installing", f"venv with Python {python.version_text}")
        self.sh(f"rm -rf -- {q(R)}/venv && {q(python.path)} -m venv -- {q(R)}/venv", "creating the venv")
        manifest.python = python.version_text
        manifest.edgekit_wheel_sha256 = None
        manifest.runtimes = {}
        result.done("venv", f"created with {python.path} {python.version_text}")

    def _logged(self, cmd: str, stage: str, what: str, log_name: str, timeout_s: float, timeout_fix: str,
                fail_fix: str) -> Path:
        """`cmd` on the device, its output streamed to a local log file (edgekit's cache, logs/) and
        its last line to stage(); a timeout or a failure is one EdgekitError naming the log."""
        logs = cache_root() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        log = logs / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', self.host)}-{stamp}-{log_name}.log"
        last = [""]
        with open(log, "w", encoding="utf-8") as f:
            f.write(f"# {self.host}: {cmd}\n")

            def on_output(line: str) -> None:
                f.write(line + "\n")
                f.flush()
                if line.strip():
                    last[0] = line.strip()
                    self.stage(stage, f"{what}: {line.strip()[:100]}")

            r = self.t.run(cmd, timeout_s=timeout_s, on_output=on_output)
        if r.returncode == 124:
            raise EdgekitError(f"{what} on {self.host} ran past {timeout_s:g} s and was stopped (log: {log})",
                               timeout_fix)
        if r.returncode != 0:
            raise EdgekitError(f"{what} failed on {self.host}: {printable(last[0], 300)} (log: {log})", fail_fix)
        return log

    def _pip_command(self, R: str, verb: str, args: list[str], env: tuple = ()) -> str:
        """`python -m pip VERB ARGS` in the device venv, from R, with `env`; --wheels: offline."""
        q = self.q
        offline = ["--no-index", "--find-links", f"{R}/wheels"] if self.o.wheels else []
        envs = " ".join(f"{k}={q(v)}" for k, v in env)
        return (f"cd -- {q(R)} && {'env ' + envs + ' ' if envs else ''}{q(R)}/venv/bin/python -m pip {verb} "
                f"--disable-pip-version-check --no-input {' '.join(q(a) for a in offline + args)} 2>&1")

    def _pip(self, R: str, args: list[str], what: str, env: tuple = (), log_name: str = "pip") -> Path:
        return self._logged(self._pip_command(R, "install", args, env), "installing", what.removeprefix("installing "),
                            log_name, self.o.install_timeout_s, "look at the log; a slow device or index may need "
                            "another try", "read the log; an offline device needs every wheel in --wheels")

    def _push_wheels(self, R: str) -> None:
        """--wheels: every wheel (and sdist) of the folder on the device, once."""
        if not self.o.wheels:
            return
        folder = Path(self.o.wheels)
        if not folder.is_dir():
            raise EdgekitError(f"--wheels {folder} is not a folder", "pass a folder of wheels (pip download -d DIR ...)")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".whl", ".tar.gz", ".zip")))
        r = self.t.run(f"cd -- {self.q(R)}/wheels && for f in *; do [ -f \"$f\" ] && printf '%s %s\\n' "
                       "\"$(wc -c < \"$f\" | tr -d ' ')\" \"$f\"; done; true", timeout_s=60)
        there = {}
        for line in r.stdout.splitlines():
            size, _, name = line.partition(" ")
            if size.isdigit():
                there[name] = int(size)
        for p in files:
            if there.get(p.name) != p.stat().st_size:
                self.stage("uploading", f"wheel {p.name}")
                self.t.put(p, f"{R}/wheels/{p.name}")

    def _edgekit(self, R: str, manifest: RemoteManifest, result: DeployResult) -> None:
        wheel = edgekit_wheel()
        sha = sha256_of(wheel) if wheel else f"edgekit=={__version__}"
        ok = self.t.run(f"{self.q(R)}/venv/bin/python -c 'import edgekit; print(edgekit.__version__)'", timeout_s=60)
        if manifest.edgekit_wheel_sha256 == sha and ok.returncode == 0 and ok.stdout.strip() == __version__:
            result.kept("edgekit", f"already installed ({__version__})")
            return
        self.stage("installing", f"edgekit {__version__}")
        self._push_wheels(R)
        if wheel:
            self.t.put(wheel, f"{R}/wheels/{wheel.name}")
            target = f"{R}/wheels/{wheel.name}"
            self._pip(R, ["--force-reinstall", "--no-deps", target], "installing edgekit", log_name="edgekit")
            self._pip(R, [target], "installing edgekit's device dependencies", log_name="edgekit-deps")
        else:
            self._pip(R, [f"edgekit=={__version__}"], "installing edgekit", log_name="edgekit")
        manifest.edgekit_version, manifest.edgekit_wheel_sha256 = __version__, sha
        result.done("edgekit", f"installed {__version__}" + (f" from {wheel.name}" if wheel else ""))

    def _installed_version(self, R: str, dists: tuple[str, ...]) -> tuple[str, str] | None:
        code = ("import importlib.metadata as m\nfor d in %r:\n    try:\n        print(d, m.version(d)); break\n"
                "    except m.PackageNotFoundError: pass" % (dists,))
        r = self.t.run(f"{self.q(R)}/venv/bin/python -c {self.q(code)}", timeout_s=60)
        parts = r.stdout.split()
        return (parts[0], parts[1]) if r.returncode == 0 and len(parts) >= 2 else None

    def _runtime(self, R: str, spec, device: Device, runtime: str, manifest: RemoteManifest,
                 result: DeployResult) -> None:
        rt = get_runtime(runtime)
        if rt.system_modules:
            self._system_modules(R, rt, manifest, result)
            return
        recipe = runtime_install(spec, runtime, device.machine)
        # what is installed beside the runtime is part of what a deploy checks (a newer edgekit may need more)
        recipe_text = recipe.command() + "".join(f" + {e}" for e in rt.device_extras)
        installed = self._installed_version(R, rt.distributions)
        record = manifest.runtimes.get(runtime)
        if installed and record and record.recipe == recipe_text and record.version == installed[1]:
            result.kept(runtime, f"already installed ({installed[0]} {installed[1]})")
            return
        self._push_wheels(R)
        if rt.builds_on_device:
            wheel, origin, wheel_sha = self._built_wheel(R, spec, device, rt, recipe, recipe_text, result)
            self._pip(R, [wheel], f"installing {rt.distributions[0]}", log_name=rt.distributions[0])
            installed_wheel = wheel.rsplit("/", 1)[-1]
        else:
            self.stage("installing", runtime)
            self._pip(R, [*recipe.args, *rt.device_extras], f"installing {runtime}", env=recipe.env, log_name=runtime)
            installed_wheel = origin = wheel_sha = None
        installed = self._installed_version(R, rt.distributions)
        if installed is None:
            raise EdgekitError(f"{runtime} is not installed on {self.host} after its recipe ran",
                               f"run it by hand on the device: {recipe_text}")
        manifest.runtimes[runtime] = RuntimeRecord(name=runtime, distribution=installed[0], version=installed[1],
                                                   recipe=recipe_text, wheel=installed_wheel, wheel_origin=origin,
                                                   wheel_sha256=wheel_sha)
        result.done(runtime, f"installed {installed[0]} {installed[1]}")

    def _system_modules(self, R: str, rt: Runtime, manifest: RemoteManifest, result: DeployResult) -> None:
        """Link the modules the device's OS gives its system Python (edgekit.device.system_link) into
        the venv. One that is not there is no failure here: the doctor's check of what the artifact
        needs decides (an Edge-LLM engine needs llm_bench, not the bindings)."""
        python = self._python.path
        recipe_text = f"link {', '.join(rt.system_modules)} from {python} (the OS's own, e.g. JetPack's)"
        record = manifest.runtimes.get(rt.name)
        installed = self._installed_version(R, rt.distributions)
        if record and record.recipe == recipe_text and record.version == (installed[1] if installed else "none"):
            result.kept(rt.name, f"already linked ({record.distribution} {record.version})")
            return
        self.stage("installing", recipe_text)
        r = self.sh(f"{self.q(R)}/venv/bin/python -m edgekit.device.system_link {self.q(python)} "
                    f"{' '.join(self.q(m) for m in rt.system_modules)}", f"linking {rt.label}", timeout_s=600)
        try:
            said = json.loads(r.stdout.strip().splitlines()[-1])
            linked, missing = dict(said["linked"]), dict(said["missing"])
        except (ValueError, IndexError, KeyError, TypeError):
            raise EdgekitError(f"linking {rt.label} on {self.host} printed no result", "deploy again") from None
        installed = self._installed_version(R, rt.distributions)
        version = installed[1] if installed else "none"
        manifest.runtimes[rt.name] = RuntimeRecord(name=rt.name, distribution=installed[0] if installed else
                                                   rt.distributions[0], version=version, recipe=recipe_text)
        if linked:
            result.done(rt.name, "linked " + ", ".join(f"{m} {printable(v, 40)}" for m, v in linked.items()))
        else:
            result.done(rt.name, "no Python bindings: " + printable("; ".join(missing.values()), 200))

    def _trusted_wheels(self, spec, device: Device, rt: Runtime, recipe_text: str) -> list[BuiltWheel]:
        """The cached wheels of `rt` this device may install: its own earlier builds, and with
        --share-device-builds those of other devices of the same kind."""
        kind = device_wheel_dir(spec.family, rt.distributions[0], rt.version, device.machine, recipe_text)
        own = built_wheels(kind, rt.wheel_stem, self.host)
        return own or (built_wheels(kind, rt.wheel_stem) if self.o.share_device_builds else [])

    def _wheel_at_hand(self, spec, device: Device, rt: Runtime) -> bool:
        """Is a wheel of `rt` (a runtime built on devices) for this device in the local cache or in
        --wheels, or cross-built here, so that nothing is built there?"""
        recipe = runtime_install(spec, rt.name, device.machine).command()
        if self._trusted_wheels(spec, device, rt, recipe) or self._cross(spec, device, rt):
            return True
        return bool(self.o.wheels and any(Path(self.o.wheels).glob(f"{rt.wheel_stem}-{rt.version}-*.whl")))

    def _cross(self, spec, device: Device, rt: Runtime) -> tuple[Toolchain, str] | None:
        """(toolchain, CMake arguments) when this workstation cross-builds `rt` for the device: the
        runtime cross-builds, the device runs Linux on a machine edgekit cross-builds for, the
        target needs no GPU backend and the cross compiler is installed here. None otherwise, or
        with --no-cross-build; with --cross-build, an EdgekitError saying which of these fails."""
        if self.o.cross_build is False:
            return None
        try:
            if not rt.cross_builds:
                raise EdgekitError(f"edgekit does not cross-build {rt.label}", "leave --cross-build out")
            if device.system != "Linux":
                raise EdgekitError(f"{self.host} runs {device.system or 'an unknown system'}: edgekit cross-builds "
                                   f"{rt.label} for Linux only", "leave --cross-build out to build on the device")
            toolchain = cross_toolchain(device.machine)
            if toolchain is None:
                triplet = CROSS_TRIPLETS.get(normalise_machine(device.machine))
                if triplet is None:
                    raise EdgekitError(f"edgekit cross-builds {rt.label} for {', '.join(CROSS_TRIPLETS)} only, "
                                       f"not {device.machine}", "leave --cross-build out to build on the device")
                raise EdgekitError(f"this workstation has no {triplet} cross compiler",
                                   f"install it (Debian/Ubuntu: sudo apt-get install g++-{triplet}), or leave "
                                   "--cross-build out to build on the device")
            return toolchain, cross_cmake_args(spec, device.machine, toolchain)
        except EdgekitError:
            if self.o.cross_build:
                raise
            return None

    def _cross_wheel(self, R: str, device: Device, rt: Runtime, toolchain: Toolchain, cmake_args: str,
                     result: DeployResult) -> tuple[str, str, str] | None:
        """(remote path, origin, sha256) of `rt` cross-built here for the device (once per flags and
        toolchain; edgekit.crossbuild's cache), pushed to it; None when the device's glibc or
        libstdc++ is older than the wheel needs (a warning says so; --cross-build makes it an error)."""
        folder = cross_wheel_dir(device.machine, cmake_args, toolchain)
        log = folder.with_name(f"{folder.name}.log")
        cached = verify_cross_wheel(folder)
        if not cached:
            self.stage("building", f"{rt.label} for {device.machine} on this workstation (cross compiler "
                                   f"{toolchain.triplet} {toolchain.version}; log {log})")
        try:
            wheel = cross_wheel(device.machine, cmake_args, log, toolchain=toolchain)
        except EdgekitError as e:
            if self.o.cross_build:
                raise
            result.warnings.append(f"the cross build of {rt.label} for {self.host} failed ({e.problem}): "
                                   "built on the device instead")
            return None
        problem = libc_problem(wheel_symbol_needs(wheel), device.glibc, device.glibcxx)
        if problem:
            if self.o.cross_build:
                raise EdgekitError(f"the {rt.label} wheel cross-built here cannot load on {self.host}: {problem}",
                                   "pass --no-cross-build to build it on the device, or upgrade the device's OS "
                                   "(Debian 12 / Raspberry Pi OS Bookworm or newer)")
            result.warnings.append(f"the {rt.label} wheel cross-built here cannot load on {self.host} ({problem}): "
                                   "built on the device instead")
            return None
        sha = sha256_of(wheel)
        self.stage("uploading", f"cross-built wheel {wheel.name}")
        self.t.put(wheel, f"{R}/wheels/{wheel.name}")
        arch = dict(w[2:].split("=", 1) for w in shlex.split(cmake_args) if w.startswith("-D") and "=" in w)
        result.done(f"{rt.label} wheel", f"{CROSS_ORIGIN}{' earlier' if cached else ''} for {device.machine} "
                                         f"({arch.get('GGML_CPU_ARM_ARCH', '?')}, gcc {toolchain.version}; "
                                         f"sha256 {sha[:12]})")
        return f"{R}/wheels/{wheel.name}", CROSS_ORIGIN, sha

    def _built_wheel(self, R: str, spec, device: Device, rt: Runtime, recipe, recipe_text: str,
                     result: DeployResult) -> tuple[str, str, str | None]:
        """(remote path, origin, sha256) of a wheel of `rt` for this device, the first of: this
        device's own earlier build from the local cache (another device's with
        --share-device-builds), one from --wheels, one cross-built on this workstation (_cross), or
        one built there now (brought back into the cache as this device's build)."""
        version, step = rt.version, f"{rt.label} wheel"
        cached = self._trusted_wheels(spec, device, rt, recipe_text)
        if cached:
            wheel = cached[0]
            self.stage("uploading", f"cached wheel {wheel.path.name} ({wheel.origin})")
            self.t.put(wheel.path, f"{R}/wheels/{wheel.path.name}")
            result.done(step, f"from the local cache ({wheel.origin}, sha256 {wheel.sha256[:12]})")
            if wheel.built_on != self.host:
                result.warnings.append(f"{rt.label} on {self.host} is a wheel {wheel.origin} "
                                       "(--share-device-builds)")
            return f"{R}/wheels/{wheel.path.name}", wheel.origin, wheel.sha256
        if self.o.wheels:
            found = sorted(Path(self.o.wheels).glob(f"{rt.wheel_stem}-{version}-*.whl"))
            if found:  # the device's pip checks that it fits the device (platform tags)
                result.done(step, f"from --wheels ({found[0].name})")
                return f"{R}/wheels/{found[0].name}", f"--wheels {found[0].parent}", sha256_of(found[0])
        cross = self._cross(spec, device, rt)
        crossed = cross and self._cross_wheel(R, device, rt, *cross, result)
        if crossed:
            return crossed
        problem = build_tools_problem(device, spec.family, self.host)  # a cross build that cannot serve it
        if problem:
            if cross and not crossed:  # _cross_wheel declined with a warning: say why in the error too
                raise EdgekitError(f"{problem.problem} ({result.warnings[-1]})", problem.fix)
            raise problem
        self.stage("building", f"{rt.label} on the device ({recipe_text})")
        q = self.q
        self.sh(f"rm -rf -- {q(R)}/wheels/built && mkdir -p -- {q(R)}/wheels/built", "preparing the build")
        cmd = self._pip_command(R, "wheel", ["--no-deps", "-w", f"{R}/wheels/built",
                                             f"{rt.distributions[0]}=={version}"], recipe.env)
        self._logged(cmd, "building", f"the {rt.label} build", rt.build_log_name, self.o.build_timeout_s,
                     "raise --build-timeout for a slow device, or push a wheel built for it with --wheels",
                     "read the log (a compiler, cmake and the Python headers are needed on the device)")
        r = self.sh(f"cd -- {q(R)}/wheels/built && ls", "finding the built wheel")
        found = [n for n in r.stdout.split() if n.endswith(".whl")]
        name = wheel_name(found[0] if len(found) == 1 else " ".join(found), rt.wheel_stem, self.host)
        kind = device_wheel_dir(spec.family, rt.distributions[0], version, device.machine, recipe_text)
        kind.mkdir(parents=True, exist_ok=True)
        self.stage("downloading", f"built wheel {name}")
        with tempfile.TemporaryDirectory(dir=kind, prefix=".download-") as d:
            self.t.get(f"{R}/wheels/built/{name}", inside(Path(d), name))
            kept = keep_built_wheel(kind, self.host, Path(d) / name)
        result.done(step, f"built on the device, kept in {kept.path.parent} (serves this device only)")
        return f"{R}/wheels/built/{name}", kept.origin, kept.sha256

    def _store_sizes(self, R: str, files: ArtifactFiles) -> dict[str, int]:
        """sha256 -> size of the artifact's files already in the store."""
        q = self.q
        hexes = sorted(set(files.sha256.values()))
        cmd = f"cd -- {q(R)}/store/sha256 2>/dev/null || exit 0; for h in {' '.join(hexes)}; do " \
              "[ -f \"$h\" ] && printf '%s %s\\n' \"$h\" \"$(wc -c < \"$h\" | tr -d ' ')\"; done; true"
        out = {}
        for line in self.t.run(cmd, timeout_s=60).stdout.splitlines():
            h, _, size = line.partition(" ")
            if size.strip().isdigit():
                out[h] = int(size)
        return out

    def _upload(self, R: str, device: Device, files: ArtifactFiles, have: dict[str, int],
                result: DeployResult) -> None:

        q = self.q
        todo = {}
        for n, h in files.sha256.items():
            if have.get(h) != files.sizes[n] and h not in todo:
                todo[h] = n
        if not todo:
            result.kept("model", f"already there ({len(files.files)} file(s), {files.total_bytes} bytes)")
            return
        local_rsync = shutil.which("rsync")
        methods = self.t.resumable_methods
        method = methods[-1] if methods else None
        if "rsync" in methods and local_rsync and rsync_can_resume(device.rsync) and \
                rsync_can_resume(local_rsync_version(local_rsync)):
            method = "rsync"
        for h, n in todo.items():
            size = files.sizes[n]
            partial = f"{R}/store/incoming/{h}.partial"
            r = self.t.run(f"[ -f {q(partial)} ] && wc -c < {q(partial)} | tr -d ' '; true", timeout_s=30)
            start = int(r.stdout.strip()) if r.stdout.strip().isdigit() else 0
            if start > size:
                self.sh(f"rm -f -- {q(partial)}", "removing a stale upload")
                start = 0

            def progress(done: int, n=n, size=size) -> None:
                self.stage("uploading", f"{n} {100 * done // max(size, 1)}%")

            self.stage("uploading", f"{n} {100 * start // max(size, 1)}%")
            if method:
                sent = self.t.put_resumable(files.files[n], partial, method=method,
                                            bwlimit_kib_s=self.o.bwlimit_kib_s, on_progress=progress)
            else:  # a transport without resumable copies (local): a whole, atomic copy
                self.t.put(files.files[n], partial)
                sent = size
            self.stage("verifying", f"sha256 of {n}")
            got = self._remote_sha256(partial, device)
            if got != h:
                self.sh(f"rm -f -- {q(partial)}", "removing a corrupt upload")
                raise EdgekitError(f"{n} arrived on {self.host} with sha256 {got[:12]}..., expected {h[:12]}...: "
                                   "the upload was corrupted and was removed", "deploy again")
            self.sh(f"mv -f -- {q(partial)} {q(R)}/store/sha256/{h}", "moving the model into the store")
            result.sent_bytes += sent
            result.resumed_bytes += start
            result.done("model", f"{n}: sent {sent} of {size} bytes by {method or 'copy'}" +
                                 (f", resumed at {start}" if start else "") + ", sha256 verified on the device")

    def _remote_sha256(self, path: str, device: Device) -> str:
        q = self.q
        tool = "shasum -a 256" if device.sha256_tool == "shasum" else "sha256sum"
        if device.sha256_tool is None:
            raise EdgekitError(f"{self.host} has neither sha256sum nor shasum to check the upload",
                               "install coreutils (sha256sum) on the device")
        r = self.sh(f"{tool} < {q(path)}", "checking the upload's sha256", timeout_s=3600)
        return r.stdout.split()[0] if r.stdout.split() else ""

    def _link(self, R: str, files: ArtifactFiles, manifest: RemoteManifest, artifact: Path,
              result: DeployResult) -> None:
        q = self.q
        folder = f"{R}/models/{files.key}"
        checks = " && ".join(f"[ \"$(readlink -- {q(folder + '/' + n)})\" = {q('../../store/sha256/' + h)} ]"
                             for n, h in files.sha256.items())
        if self.t.run(checks, timeout_s=30).returncode == 0 and files.key in manifest.artifacts:
            result.kept("links", f"already there (models/{files.key})")
        else:
            links = " && ".join(f"ln -sfn -- {q('../../store/sha256/' + h)} {q(folder + '/' + n)}"
                                for n, h in files.sha256.items())
            self.sh(f"mkdir -p -- {q(folder)} && {links}", "linking the model files")
            result.done("links", f"models/{files.key}")
        for n, h in files.sha256.items():
            record = manifest.models.setdefault(h, ModelRecord(size_bytes=files.sizes[n]))
            if n not in record.names:
                record.names.append(n)
        manifest.artifacts[files.key] = ArtifactRecord(format=files.format, main=files.main, files=files.sha256,
                                                       source=str(Path(artifact).absolute()), deployed_utc=now_utc())

    def _doctor(self, R: str, spec, runtime: str, manifest: RemoteManifest, result: DeployResult) -> None:
        """The device's own doctor: the runtime loads, with the backend the target needs."""
        record = manifest.runtimes.get(runtime)
        if record and record.backends and not result.changed:
            result.kept("doctor", "already checked")
            result.runtime = record.model_dump()
            return
        self.stage("checking", "edgekit doctor on the device")
        # `python -m edgekit`, not venv/bin/edgekit: pip's script header cannot hold a path with a `"`
        r = self.t.run(f"{self.q(R)}/venv/bin/python -m edgekit doctor --json", timeout_s=180)
        try:
            report = json.loads(r.stdout)
        except json.JSONDecodeError:
            why = printable((r.stderr.strip().splitlines() or ["no output"])[-1], 300)
            raise EdgekitError(f"edgekit doctor did not run on {self.host} ({why})",
                               f"run {R}/venv/bin/python -m edgekit doctor on the device") from None
        problems = runtime_problems(report, runtime, spec)
        have = runtime_backends(report, runtime)[0]
        needs = getattr(get_format(self._files.format), "device_needs", lambda _p: {})(self._files.files[self._files.main])
        problems += [(f"{self.host} lacks {need}, which this artifact needs to run", fix)
                     for need, fix in needs.items() if need not in have]
        if problems:
            problem, fix = problems[0]
            raise EdgekitError(f"deploy to {self.host} failed its check: {problem}", fix)
        if record is not None:
            record.backends, record.build = runtime_backends(report, runtime)
            result.runtime = record.model_dump()
        result.done("doctor", f"{runtime} loads ({', '.join(record.backends) if record else '?'})")
