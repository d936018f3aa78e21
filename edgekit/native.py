"""Run a function in a fresh, isolated interpreter, so a crash inside a native library
(llama.cpp, ONNX Runtime) ends as one error line instead of killing the command.

Contract of `call(function, *args, library=..., what=..., **kwargs)`:
- `function` is "module:function"; the child imports it and returns its value (pickled).
- The child is `python -I`: neither the current folder nor PYTHON* variables reach its
  `sys.path`, so a stray `llama_cpp.py` where the user stands is never imported.
- An `EdgekitError` raised in the child is raised again here, unchanged; any other
  exception becomes an EdgekitError naming the library, the step and the exception.
- A child killed by a signal (SIGSEGV, SIGILL, SIGABRT, SIGBUS, SIGFPE, the OOM killer's
  SIGKILL) becomes `EdgekitError("<library> crashed (<SIGNAL>) in <what>", <fix>)`,
  with the fix for that signal (`fixes` overrides it per signal name). Its stderr (llama.cpp's log, faulthandler's dump) is
  kept in a temporary file and only its last line is quoted.
- Progress: the child's `report(label, done, total)` (passed to the target as the
  keyword `progress` when `progress=` is given here) arrives at the parent's callback.
- Ctrl-C or any exception here kills the child; nothing of it outlives the call.
- The child dies with this process, however this one ends (SIGKILL and the OOM killer too): it
  runs in a process group of its own and watches a pipe whose other end only this process
  holds; at its end of file it kills its whole group (itself and anything it started, a power
  sensor's process say). Its temporary folder is named after this process, and a later call
  removes the folders of processes that are gone.
"""

from __future__ import annotations

import importlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from edgekit.atomic import is_disk_full, pid_alive
from edgekit.errors import EdgekitError
from edgekit.runtimes import RUNTIMES

_PROGRESS = "\x1eedgekit-progress\t"  # record-separator prefix: no native log line starts with it

CRASH_FIXES = {
    "SIGKILL": "it was killed from outside, usually by the kernel's OOM killer: free memory or use a smaller model",
}


def _fix_for(library: str, sig: str, fixes: dict[str, str] | None = None) -> str:
    """The fix a crash by `sig` in `library` names: the caller's, the runtime table's for that
    library, else a general one."""
    if fixes and sig in fixes:
        return fixes[sig]
    runtime = next((r for r in RUNTIMES.values() if r.label == library), None)
    if runtime and sig in runtime.crash_fixes:
        return runtime.crash_fixes[sig]
    if sig in ("SIGILL", "SIGSEGV"):
        return f"reinstall {library} for this CPU; `edgekit doctor` shows what is installed; please report this"
    return CRASH_FIXES.get(sig, "please report this with the file and `edgekit doctor --json`")


def child_command(*args: str) -> list[str]:
    """argv for a Python child of this interpreter that cannot import from the current folder."""
    return [sys.executable, "-I", *args]


CHILD_DIR_PREFIX = "edgekit-child-"


def remove_stale_child_dirs(root: Path | None = None, min_age_s: float = 60.0) -> list[Path]:
    """Remove the temporary folders of native calls whose parent process is gone (a parent killed
    with SIGKILL never removes its own), older than `min_age_s` (a recycled pid aside). Returns
    what was removed; a folder it cannot read or remove is left alone."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for d in root.glob(f"{CHILD_DIR_PREFIX}*"):
        pid = d.name[len(CHILD_DIR_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or pid_alive(int(pid)) or time.time() - d.stat().st_mtime < min_age_s:
                continue
            shutil.rmtree(d)
            removed.append(d)
        except OSError:
            continue
    return removed


def call(function: str, *args: Any, library: str, what: str, progress: Callable[[str, float, float], None] | None = None,
         timeout_s: float | None = None, fixes: dict[str, str] | None = None, **kwargs: Any) -> Any:
    remove_stale_child_dirs()
    with tempfile.TemporaryDirectory(prefix=f"{CHILD_DIR_PREFIX}{os.getpid()}-") as tmp:
        request, response, errlog = Path(tmp, "in.pickle"), Path(tmp, "out.pickle"), Path(tmp, "stderr.txt")
        request.write_bytes(pickle.dumps((function, args, kwargs, progress is not None)))
        with open(errlog, "w+b") as err:
            # stdin: the pipe the child watches (nothing is written; its end of file is this process's end)
            proc = subprocess.Popen(child_command("-m", "edgekit.native", str(request), str(response)),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                    start_new_session=True)

            def relay() -> None:  # progress lines, read apart so that the timeout below holds
                for raw in proc.stdout:
                    line = raw.decode("utf-8", "replace")
                    if line.startswith(_PROGRESS) and progress:
                        label, done, total = line[len(_PROGRESS):].rstrip("\n").split("\t")
                        progress(label, float(done), float(total))

            reader = threading.Thread(target=relay, name="edgekit-child-output", daemon=True)
            reader.start()
            try:
                rc = proc.wait(timeout=timeout_s)
                reader.join()
            except subprocess.TimeoutExpired:
                raise EdgekitError(f"{library} did not finish {what} within {timeout_s:.0f} s",
                                   "check the machine's load, or report this") from None
            finally:
                if proc.poll() is None:
                    _kill_group(proc.pid)
                    proc.wait()
                proc.stdin.close()
            err.seek(0)
            lines = [ln.strip() for ln in err.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        if rc < 0 or not response.exists():
            sig = _signal_name(rc)
            last = f"; its last words: {lines[-1][:200]}" if lines else ""
            if sig:
                raise EdgekitError(f"{library} crashed ({sig}) in {what}{last}", _fix_for(library, sig, fixes))
            raise EdgekitError(f"{library} exited (code {rc}) in {what} without a result{last}",
                               "please report this with `edgekit doctor --json`")
        kind, *payload = pickle.loads(response.read_bytes())
    if kind == "ok":
        return payload[0]
    if kind == "edgekit":
        raise EdgekitError(*payload)
    exc_type, message = payload
    raise EdgekitError(f"{what} failed ({library}: {exc_type}: {' '.join(message.split())[:300]})",
                       "please report this with `edgekit doctor --json`")


def _signal_name(rc: int) -> str | None:
    if rc >= 0:
        return None
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _report(label: str, done: float, total: float) -> None:
    sys.stdout.write(f"{_PROGRESS}{label}\t{done}\t{total}\n")
    sys.stdout.flush()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _watch_parent() -> None:
    """End this child's process group when the parent's end of stdin closes (the parent ended)."""
    def watch() -> None:
        try:  # the raw descriptor: a buffered stdin's lock would abort the interpreter's exit
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        _kill_group(os.getpgrp())
        os._exit(1)

    threading.Thread(target=watch, name="edgekit-parent-watch", daemon=True).start()


def _child(request: str, response: str) -> int:
    _watch_parent()
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the child at once, even inside a C call
    target, args, kwargs, wants_progress = pickle.loads(Path(request).read_bytes())
    if wants_progress:
        kwargs["progress"] = _report
    module, _, attr = target.partition(":")
    try:
        result = ("ok", getattr(importlib.import_module(module), attr)(*args, **kwargs))
    except EdgekitError as e:
        result = ("edgekit", e.problem, e.fix)
    except Exception as e:  # crosses the process boundary as text; the parent raises an EdgekitError
        if is_disk_full(e):
            result = ("edgekit", f"disk full while writing ({getattr(e, 'filename', None) or 'output'}); nothing was "
                      "left at the output path", "free space or choose an output folder on another disk")
        else:
            traceback.print_exc()
            result = ("exception", type(e).__name__, str(e))
    tmp = f"{response}.tmp"
    with open(tmp, "wb") as f:
        pickle.dump(result, f)
    os.replace(tmp, response)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2]))
