"""Building a TensorRT engine on the device it will run on, with that device's trtexec, and
keeping it there.

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
- `python -m edgekit.device.tensorrt_build ONNX CACHE REQUEST_JSON` (how `export tensorrt --on`
  runs it on the device): REQUEST_JSON holds onnx_sha256, precision, profiles, workspace_mib,
  timeout_s. trtexec's lines go to stdout as they come, prefixed `trtexec: `; the last line is
  `result <facts.json>`. Exit 1 with `error: <problem>; <fix>` on stderr when it cannot build,
  exit 2 when the device has no trtexec.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from edgekit.converters.tensorrt import parse_trtexec_log, trtexec_command
from edgekit.errors import EdgekitError
from edgekit.manifest import sha256_of
from edgekit.tensorrt_profiles import Profile

JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
ENGINE_FILE = "model.engine"
FACTS_FILE = "facts.json"
LOG_FILE = "build.log"


def find_trtexec(jetpack: str = JETPACK_TRTEXEC) -> str | None:
    """trtexec on PATH, else JetPack's (not on PATH by default), else None."""
    found = shutil.which("trtexec")
    if found:
        return found
    return jetpack if os.path.isfile(jetpack) and os.access(jetpack, os.X_OK) else None


def _die_with_parent() -> None:
    """In trtexec's process before it starts (Linux): SIGKILL when the process that started it
    dies, however it dies (`kill -9`, the OOM killer), so that no build outlives edgekit."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the SSH session's end still ends it
        pass


def builder_identity(trtexec: str) -> str:
    """What names this trtexec build of TensorRT: its real path, size and modification time."""
    real = os.path.realpath(trtexec)
    st = os.stat(real)
    return f"trtexec {real} {st.st_size} {st.st_mtime_ns}"


def engine_key(onnx_sha256: str, profiles: list[Profile], precision: str, workspace_mib: int | None,
               identity: str) -> str:
    """The cache key of an engine build (pure): a digest of everything the engine depends on."""
    text = json.dumps({"onnx": onnx_sha256, "profiles": [p.to_dict() for p in profiles], "precision": precision,
                       "workspace_mib": workspace_mib, "builder": identity}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached_build(folder: Path) -> dict | None:
    """facts.json of cache folder `folder` when its engine still has the recorded sha256, else None."""
    try:
        facts = json.loads((Path(folder) / FACTS_FILE).read_text(encoding="utf-8"))
        engine = Path(folder) / ENGINE_FILE
        ok = isinstance(facts, dict) and engine.is_file() and sha256_of(engine) == facts.get("engine_sha256")
    except (OSError, ValueError):
        return None
    return facts if ok else None


def build_with_trtexec(trtexec: str, onnx: Path, cache: Path, profiles: list[Profile], *, onnx_sha256: str,
                       precision: str, workspace_mib: int | None = None, timeout_s: float | None = None,
                       on_line: Callable[[str], None] | None = None) -> dict:
    """The engine of this build in `cache` (see the module's doc): its facts, "cached" True when
    it was there already."""
    key = engine_key(onnx_sha256, profiles, precision, workspace_mib, builder_identity(trtexec))
    final = Path(cache) / key
    found = cached_build(final)
    if found:
        return {**found, "cached": True, "folder": str(final)}
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}.building-"))
    try:
        argv = trtexec_command(trtexec, str(onnx), str(tmp / ENGINE_FILE), profiles, workspace_mib=workspace_mib)
        t0 = time.monotonic()
        timed_out = threading.Event()
        with open(tmp / LOG_FILE, "w", encoding="utf-8") as log:
            try:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        errors="replace", stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
            except OSError as e:
                raise EdgekitError(f"could not run {trtexec} ({e})", "check the device's TensorRT install") from None

            def expire() -> None:  # a trtexec silent for hours is ended too, not only one that prints
                timed_out.set()
                proc.kill()

            watchdog = threading.Timer(timeout_s, expire) if timeout_s else None
            if watchdog:
                watchdog.daemon = True
                watchdog.start()
            try:
                for line in proc.stdout:
                    log.write(line)
                    if on_line:
                        on_line(line.rstrip("\n"))
                rc = proc.wait()
            finally:
                if watchdog:
                    watchdog.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        seconds = time.monotonic() - t0
        facts = parse_trtexec_log((tmp / LOG_FILE).read_text(encoding="utf-8", errors="replace"))
        engine = tmp / ENGINE_FILE
        if timed_out.is_set() or rc != 0 or not facts.passed or not engine.is_file() or engine.stat().st_size == 0:
            kept = final.parent / f"{key}-failed-{LOG_FILE}"
            shutil.copyfile(tmp / LOG_FILE, kept)
            if timed_out.is_set():
                raise EdgekitError(f"trtexec did not build the engine within {timeout_s:.0f} s (log: {kept})",
                                   "raise the build timeout, or lower --max-context / --max-prompt")
            why = facts.errors[0] if facts.errors else f"exit {rc}" + ("" if engine.is_file() else ", no engine")
            raise EdgekitError(f"trtexec could not build the engine: {why[:300]} (log: {kept})",
                               "read the log; TensorRT's parser needs an edgekit ONNX export without --fuse")
        record = {"key": key, "engine": ENGINE_FILE, "engine_sha256": sha256_of(engine),
                  "engine_bytes": engine.stat().st_size, "builder": "trtexec", "trtexec": trtexec,
                  "tensorrt_version": facts.tensorrt_version, "device": facts.device,
                  "compute_capability": facts.compute_capability, "precision": precision,
                  "onnx_sha256": onnx_sha256, "profiles": [p.to_dict() for p in profiles],
                  "workspace_mib": workspace_mib, "build_s": round(seconds, 3), "argv": argv}
        (tmp / FACTS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if final.exists():  # a stale folder whose engine no longer matches: replaced whole
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**record, "cached": False, "folder": str(final)}


RESULT_PREFIX = "result "
LINE_PREFIX = "trtexec: "


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m edgekit.device.tensorrt_build ONNX CACHE REQUEST_JSON", file=sys.stderr)
        return 2
    onnx, cache, request_path = Path(argv[0]), Path(argv[1]), Path(argv[2])
    trtexec = find_trtexec()
    if trtexec is None:
        print(f"error: this device has no trtexec (on PATH or {JETPACK_TRTEXEC}); install TensorRT "
              "(JetPack: sudo apt install nvidia-tensorrt)", file=sys.stderr)
        return 2
    try:
        request = json.loads(request_path.read_text(encoding="utf-8"))
        facts = build_with_trtexec(trtexec, onnx, cache, [Profile.from_dict(p) for p in request["profiles"]],
                                   onnx_sha256=request["onnx_sha256"], precision=request["precision"],
                                   workspace_mib=request.get("workspace_mib"), timeout_s=request.get("timeout_s"),
                                   on_line=lambda line: print(LINE_PREFIX + line, flush=True))
    except EdgekitError as e:
        print(f"error: {e.problem}; {e.fix}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: cannot read the build request {request_path} ({e}); re-run the export", file=sys.stderr)
        return 1
    print(RESULT_PREFIX + json.dumps(facts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
