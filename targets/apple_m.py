"""Apple M-series power through `powermetrics -f plist` (needs passwordless sudo).

powermetrics writes a stream of XML plists separated by NUL bytes, one per sampling
interval. Each frame has `elapsed_ns`, `timestamp`, `thermal_pressure`, `hw_model`
and a `processor` dict: newer macOS reports `cpu_power`, `gpu_power`, `ane_power`,
`combined_power` in mW; older releases report `*_energy` (mJ) per interval, which
is divided by the interval.
"""

from __future__ import annotations

import plistlib

POWERMETRICS_COMMAND = "sudo -n powermetrics --samplers cpu_power,gpu_power,ane_power -i {interval_ms} -f plist"
EXCLUDES = "SoC CPU, GPU and ANE only: not DRAM, SSD, display, USB devices or power-supply losses"
SUDOERS_HINT = ("add a sudoers rule such as `%admin ALL=(root) NOPASSWD: /usr/bin/powermetrics` "
                "(sudo visudo -f /etc/sudoers.d/powermetrics)")


def split_frames(stream: bytes) -> tuple[list[dict], int]:
    """Complete plist frames from a stream, and the number of bytes left over (a partial frame)."""
    frames = []
    chunks = stream.split(b"\0")
    tail = chunks.pop()  # after the last NUL: empty, or a frame still being written
    for chunk in chunks:
        chunk = chunk.strip()
        if not chunk:
            continue
        try:
            frames.append(plistlib.loads(chunk))
        except Exception:  # a corrupt frame is skipped, not fatal
            continue
    if tail.strip():
        try:  # the stream may end without a trailing NUL after a complete frame
            frames.append(plistlib.loads(tail.strip()))
            tail = b""
        except Exception:
            pass
    return frames, len(tail)


def frame_power_w(frame: dict) -> dict[str, float]:
    """Watts per domain (cpu, gpu, ane, combined) from one frame, by what it carries."""
    proc = frame.get("processor", {})
    seconds = frame.get("elapsed_ns", 0) / 1e9
    out = {}
    for domain in ("cpu", "gpu", "ane", "combined"):
        if f"{domain}_power" in proc:
            out[domain] = float(proc[f"{domain}_power"]) / 1e3
        elif f"{domain}_energy" in proc and seconds > 0:
            out[domain] = float(proc[f"{domain}_energy"]) / 1e3 / seconds
    if "combined" not in out and out:
        out["combined"] = sum(v for k, v in out.items() if k in ("cpu", "gpu", "ane"))
    return out


def sudo_failure_message(stderr: str) -> str:
    return f"powermetrics needs passwordless sudo ({stderr.strip() or 'sudo -n refused'}); {SUDOERS_HINT}"


def frame_watts(record: bytes) -> float | None:
    try:
        frame = plistlib.loads(record.strip())
    except Exception:
        return None
    return frame_power_w(frame).get("combined")


def open_sensor(interval_ms: int = 100, command: list[str] | None = None):
    from edgekit.power import SensorUnavailable
    from edgekit.power.stream import StreamSensor

    try:
        return StreamSensor("powermetrics:combined CPU+GPU+ANE", EXCLUDES,
                            command or POWERMETRICS_COMMAND.format(interval_ms=interval_ms).split(),
                            frame_watts, separator=b"\0")
    except SensorUnavailable as e:
        if "password" in str(e) or "sudo" in str(e):
            raise SensorUnavailable(sudo_failure_message(str(e))) from None
        raise
