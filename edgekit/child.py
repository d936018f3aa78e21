"""External tools (trtexec, Edge-LLM's llm_build and llm_bench) run as children that never
outlive edgekit: PR_SET_PDEATHSIG makes the kernel kill a child when the process that started it
dies, however it dies (`kill -9`, the OOM killer), and a watchdog ends one silent past its time.

Contract: `run_logged(argv, log_path, timeout_s=None, on_line=None, cwd=None)` runs argv with
stdout and stderr together into log_path (each line also to `on_line`), stdin closed; returns
(exit code, timed out). A program that cannot start is an EdgekitError naming it.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import threading
from pathlib import Path
from typing import Callable

from edgekit.errors import EdgekitError


def die_with_parent() -> None:
    """In the child before it starts (Linux): SIGKILL when its parent dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the SSH session's end still ends it
        pass


def run_logged(argv: list[str], log_path: Path, timeout_s: float | None = None,
               on_line: Callable[[str], None] | None = None, cwd: str | None = None) -> tuple[int, bool]:
    timed_out = threading.Event()
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace", stdin=subprocess.DEVNULL, preexec_fn=die_with_parent, cwd=cwd)
        except OSError as e:
            raise EdgekitError(f"could not run {argv[0]} ({e})", "check the device's TensorRT install") from None

        def expire() -> None:  # a tool silent for hours is ended too, not only one that prints
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
    return rc, timed_out.is_set()
