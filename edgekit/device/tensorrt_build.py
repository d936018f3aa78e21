"""Building a TensorRT engine on the device it will run on, with that device's TensorRT, and
keeping it there: its Python bindings where the device's Python has them (JetPack installs them
for the system Python; deploy links them into the venv), else its trtexec.

An engine is bound to the GPU and the TensorRT that built it, so it is built where it runs
(JetPack puts trtexec at /usr/src/tensorrt/bin/trtexec, off PATH) and cached there, in a folder
per key: the source ONNX's sha256, the profiles, the precision, the workspace limit and the
builder itself (trtexec's real path, size and modification time: a JetPack upgrade that replaces
TensorRT is a new key). A second build of the same key is skipped when the cached engine still
has the sha256 its facts.json recorded.

Contract:
- `find_trtexec()`: trtexec on PATH, else JetPack's, else None.
- `engine_key(...)`: the cache key (pure).
- `build_with_trtexec(trtexec, onnx, cache, profiles, ...)`: the cached build's facts, or a new
  build: trtexec's output to build.log (each line also to `on_line`), its facts read by
  converters.tensorrt.parse_trtexec_log, the engine checked to exist, all in a temporary folder
  renamed to cache/<key>/ only when trtexec passed. Returns facts.json's dict with "cached".
  A failed build is one EdgekitError naming trtexec's first error line and the kept log.
- `build_with_python_api(onnx, cache, profiles, ...)`: the same through the `tensorrt` bindings
  (converters.tensorrt.build_engine in an edgekit.native child: a crash in TensorRT is one line),
  the GPU named by `gpu_facts()` (nvidia-smi where it answers, else the board's device-tree model).
- `python -m edgekit.device.tensorrt_build ONNX CACHE REQUEST_JSON` (how `export tensorrt --on`
  runs it on the device): REQUEST_JSON holds onnx_sha256, precision, profiles, workspace_mib,
  timeout_s and optionally tool ("python" or "trtexec"; default: the bindings where Python finds
  them, else trtexec). The builder's lines go to stdout prefixed `build: `; the last line is
  `result <facts.json>`. Exit 1 with `error: <problem>; <fix>` on stderr when it cannot build,
  exit 2 when the device has neither.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from edgekit import native
from edgekit.child import run_logged
from edgekit.converters.tensorrt import parse_trtexec_log, trtexec_command
from edgekit.errors import EdgekitError
from edgekit.manifest import sha256_of
from edgekit.tensorrt_profiles import Profile
from edgekit.tensorrt_tools import JETPACK_TRTEXEC, find_trtexec

DEVICE_TREE_MODEL = "/proc/device-tree/model"

ENGINE_FILE = "model.engine"
FACTS_FILE = "facts.json"
LOG_FILE = "build.log"


def parse_gpu_query(text: str) -> tuple[str | None, str | None]:
    """`nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader`'s first line -> (name, "8.7")."""
    first = (text.strip().splitlines() or [""])[0]
    name, _, cap = (p.strip() for p in first.partition(","))
    ok = bool(cap) and all(x.isdigit() for x in cap.split(".")) and cap.count(".") == 1
    return (name or None), (cap if ok else None)


def gpu_facts() -> tuple[str | None, str | None]:
    """(GPU name, compute capability) of this device, where it can tell."""
    if shutil.which("nvidia-smi"):
        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30, check=False)
            if r.returncode == 0:
                name, cap = parse_gpu_query(r.stdout)
                if name:
                    return name, cap
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        return Path(DEVICE_TREE_MODEL).read_text(errors="replace").strip("\0 \n") or None, None
    except OSError:
        return None, None


def bindings_origin(module: str = "tensorrt") -> str | None:
    """Where this Python would import TensorRT's bindings from (found, not imported), or None."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec and spec.origin else None


def builder_identity(tool: str) -> str:
    """What names this build tool (trtexec, llm_build) and so the TensorRT behind it: its real
    path, size and modification time."""
    real = os.path.realpath(tool)
    st = os.stat(real)
    return f"{Path(tool).name} {real} {st.st_size} {st.st_mtime_ns}"


def engine_key(onnx_sha256: str, profiles: list[Profile], precision: str, workspace_mib: int | None,
               identity: str) -> str:
    """The cache key of an engine build (pure): a digest of everything the engine depends on."""
    text = json.dumps({"onnx": onnx_sha256, "profiles": [p.to_dict() for p in profiles], "precision": precision,
                       "workspace_mib": workspace_mib, "builder": identity}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached_build(folder: Path) -> dict | None:
    """facts.json of cache folder `folder` when the engine it names (facts["engine"], a path inside
    the folder) still has the recorded sha256, else None."""
    try:
        facts = json.loads((Path(folder) / FACTS_FILE).read_text(encoding="utf-8"))
        engine = Path(folder) / str(facts.get("engine") or ENGINE_FILE)
        ok = isinstance(facts, dict) and engine.is_file() and sha256_of(engine) == facts.get("engine_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return facts if ok else None


def build_cached(cache: Path, key: str, build: Callable[[Path, Path], dict]) -> dict:
    """The build of `key` in `cache`, made once: the cached folder's facts when its engine is whole,
    else `build(tmp, failed_log)` in a temporary folder beside it (it returns the record, with
    "engine" the engine's path in tmp; it raises an EdgekitError after keeping its log at
    failed_log), renamed to cache/<key>/ whole when it returns. Returns facts.json's dict with
    "cached" and "folder"."""
    final = Path(cache) / key
    found = cached_build(final)
    if found:
        return {**found, "cached": True, "folder": str(final)}
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}.building-"))
    try:
        record = build(tmp, final.parent / f"{key}-failed-{LOG_FILE}")
        engine = tmp / record["engine"]
        record = {"key": key, **record, "engine_sha256": sha256_of(engine), "engine_bytes": engine.stat().st_size}
        (tmp / FACTS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if final.exists():  # a stale folder whose engine no longer matches: replaced whole
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**record, "cached": False, "folder": str(final)}


def build_with_trtexec(trtexec: str, onnx: Path, cache: Path, profiles: list[Profile], *, onnx_sha256: str,
                       precision: str, workspace_mib: int | None = None, timeout_s: float | None = None,
                       on_line: Callable[[str], None] | None = None) -> dict:
    """The engine of this build in `cache` (see the module's doc): its facts, "cached" True when
    it was there already."""
    key = engine_key(onnx_sha256, profiles, precision, workspace_mib, builder_identity(trtexec))

    def build(tmp: Path, failed_log: Path) -> dict:
        argv = trtexec_command(trtexec, str(onnx), str(tmp / ENGINE_FILE), profiles, workspace_mib=workspace_mib)
        t0 = time.monotonic()
        rc, timed_out = run_logged(argv, tmp / LOG_FILE, timeout_s, on_line)
        seconds = time.monotonic() - t0
        facts = parse_trtexec_log((tmp / LOG_FILE).read_text(encoding="utf-8", errors="replace"))
        engine = tmp / ENGINE_FILE
        if timed_out or rc != 0 or not facts.passed or not engine.is_file() or engine.stat().st_size == 0:
            shutil.copyfile(tmp / LOG_FILE, failed_log)
            if timed_out:
                raise EdgekitError(f"trtexec did not build the engine within {timeout_s:.0f} s (log: {failed_log})",
                                   "raise the build timeout, or lower --max-context / --max-prompt")
            why = facts.errors[0] if facts.errors else f"exit {rc}" + ("" if engine.is_file() else ", no engine")
            raise EdgekitError(f"trtexec could not build the engine: {why[:300]} (log: {failed_log})",
                               "read the log; TensorRT's parser needs an edgekit ONNX export without --fuse")
        return {"engine": ENGINE_FILE, "builder": "trtexec", "trtexec": trtexec,
                "tensorrt_version": facts.tensorrt_version, "device": facts.device,
                "compute_capability": facts.compute_capability, "precision": precision,
                "onnx_sha256": onnx_sha256, "profiles": [p.to_dict() for p in profiles],
                "workspace_mib": workspace_mib, "build_s": round(seconds, 3), "argv": argv}

    return build_cached(cache, key, build)


def build_with_python_api(onnx: Path, cache: Path, profiles: list[Profile], *, onnx_sha256: str, precision: str,
                          workspace_mib: int | None = None, timeout_s: float | None = None,
                          on_line: Callable[[str], None] | None = None) -> dict:
    """The engine of this build in `cache`, built with the `tensorrt` bindings (see the module's doc)."""
    origin = bindings_origin()
    if origin is None:
        raise EdgekitError("this Python has no `tensorrt` module", "deploy with --runtime tensorrt, or use trtexec")
    key = engine_key(onnx_sha256, profiles, precision, workspace_mib, "python " + builder_identity(origin))

    def build(tmp: Path, failed_log: Path) -> dict:
        t0 = time.monotonic()
        try:
            built = native.call("edgekit.converters.tensorrt_export:build_in_child", "tensorrt", str(onnx),
                                str(tmp / ENGINE_FILE), [p.to_dict() for p in profiles],
                                workspace_mib * 2**20 if workspace_mib else None, None, str(tmp / LOG_FILE),
                                library="TensorRT", what="the engine build", timeout_s=timeout_s)
        except EdgekitError as e:
            if (tmp / LOG_FILE).is_file():
                shutil.copyfile(tmp / LOG_FILE, failed_log)
            raise EdgekitError(f"{e.problem} (log: {failed_log})", e.fix) from None
        for line in (tmp / LOG_FILE).read_text(encoding="utf-8", errors="replace").splitlines():
            if on_line:
                on_line(line)
        device, capability = gpu_facts()
        version = built["tensorrt_version"]
        return {"engine": ENGINE_FILE, "builder": f"tensorrt {version}", "tensorrt_version": version,
                "device": device, "compute_capability": capability, "precision": precision,
                "onnx_sha256": onnx_sha256, "profiles": [p.to_dict() for p in profiles],
                "workspace_mib": workspace_mib, "build_s": round(time.monotonic() - t0, 3)}

    return build_cached(cache, key, build)


RESULT_PREFIX = "result "
LINE_PREFIX = "build: "


def serve(argv: list[str], usage: str, find: Callable[[], str | None], missing: str,
          build: Callable[[str, Path, Path, dict, Callable[[str], None]], dict], prefix: str) -> int:
    """A device-side build command (this module's and edgellm_build's): find the tool, read the
    request, build, print the tool's lines with `prefix` and the result line; errors on stderr as
    `error: <problem>; <fix>` (exit 1; exit 2 when the tool or the arguments are missing)."""
    if len(argv) != 3:
        print(f"usage: {usage}", file=sys.stderr)
        return 2
    source, cache, request_path = Path(argv[0]), Path(argv[1]), Path(argv[2])
    tool = find()
    if tool is None:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    try:
        request = json.loads(request_path.read_text(encoding="utf-8"))
        facts = build(tool, source, cache, request, lambda line: print(prefix + line, flush=True))
    except EdgekitError as e:
        print(f"error: {e.problem}; {e.fix}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: cannot read the build request {request_path} ({e}); re-run the export", file=sys.stderr)
        return 1
    print(RESULT_PREFIX + json.dumps(facts), flush=True)
    return 0


def choose_tool(wanted: str | None) -> str | None:
    """"python" (the bindings), "trtexec", or None: what builds here, the bindings first."""
    if wanted in (None, "python") and bindings_origin():
        return "python"
    if wanted in (None, "trtexec") and find_trtexec():
        return "trtexec"
    return None


def main(argv: list[str]) -> int:
    wanted: dict = {}

    def find() -> str | None:
        try:
            wanted["tool"] = json.loads(Path(argv[2]).read_text(encoding="utf-8")).get("tool")
        except (OSError, ValueError, IndexError, AttributeError):
            wanted["tool"] = None
        return choose_tool(wanted["tool"])

    def build(tool, onnx, cache, request, on_line):
        kw = dict(onnx_sha256=request["onnx_sha256"], precision=request["precision"],
                  workspace_mib=request.get("workspace_mib"), timeout_s=request.get("timeout_s"), on_line=on_line)
        profiles = [Profile.from_dict(p) for p in request["profiles"]]
        if tool == "python":
            return build_with_python_api(onnx, cache, profiles, **kw)
        return build_with_trtexec(find_trtexec(), onnx, cache, profiles, **kw)

    return serve(argv, "python -m edgekit.device.tensorrt_build ONNX CACHE REQUEST_JSON", find,
                 f"this device has neither TensorRT's Python bindings nor trtexec (on PATH or {JETPACK_TRTEXEC}); "
                 "install TensorRT (JetPack: sudo apt install nvidia-tensorrt python3-libnvinfer)", build, LINE_PREFIX)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
