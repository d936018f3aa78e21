"""Sensors fed by a long-running command (tegrastats, powermetrics): a reader thread keeps the latest watts."""

from __future__ import annotations

import subprocess
import threading
from typing import Callable

from edgekit.power import SensorUnavailable


class StreamSensor:
    """Starts `command`, splits its stdout into records, parses each to watts; read() is the latest."""

    kind = "power"

    def __init__(self, name: str, excludes: str, command: list[str], parse: Callable[[bytes], float | None],
                 separator: bytes = b"\n", first_reading_s: float = 5.0, raw_log: list[bytes] | None = None):
        self.name, self.excludes, self.parse, self.separator = name, excludes, parse, separator
        self.raw_log = raw_log if raw_log is not None else []
        self._latest: float | None = None
        self._cond = threading.Condition()
        try:
            self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            raise SensorUnavailable(f"cannot start {command[0]}: {e.strerror or e}") from None
        threading.Thread(target=self._pump, daemon=True).start()
        with self._cond:
            self._cond.wait_for(lambda: self._latest is not None or self.proc.poll() is not None,
                                timeout=first_reading_s)
        if self._latest is None:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
            self.close()
            raise SensorUnavailable(f"{command[0]} gave no reading within {first_reading_s:.0f} s"
                                    + (f": {err.strip()}" if err.strip() else ""))

    def _pump(self) -> None:
        buf = b""
        while True:
            chunk = self.proc.stdout.read1(65536) if hasattr(self.proc.stdout, "read1") else self.proc.stdout.read(4096)
            if not chunk:
                break
            buf += chunk
            *records, buf = buf.split(self.separator)
            for record in records:
                if not record.strip():
                    continue
                self.raw_log.append(record)
                watts = self.parse(record)
                if watts is not None:
                    with self._cond:
                        self._latest = watts
                        self._cond.notify_all()
        self.proc.wait()
        with self._cond:  # the command ended: wake a constructor still waiting for its first reading
            self._cond.notify_all()

    def read(self) -> float:
        if self._latest is None or self.proc.poll() is not None:
            raise OSError(f"{self.name} stopped producing readings")
        return self._latest

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()

