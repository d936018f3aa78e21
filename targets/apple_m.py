"""Apple M-series Macs (M1..M5, base/Pro/Max/Ultra): specs, detection from sysctl, runtime
recipes, thermal state (`pmset -g therm`), and power through `powermetrics -f plist`
(needs passwordless sudo).

powermetrics writes a stream of XML plists separated by NUL bytes, one per sampling
interval. Each frame has `elapsed_ns`, `timestamp`, `thermal_pressure`, `hw_model`
and a `processor` dict: newer macOS reports `cpu_power`, `gpu_power`, `ane_power`,
`combined_power` in mW; older releases report `*_energy` (mJ) per interval, which
is divided by the interval.
"""

from __future__ import annotations

import dataclasses
import math
import plistlib
import re

from edgekit.power import SensorUnavailable
from edgekit.power.stream import StreamSensor
from edgekit.targets.specs import TargetSpec, clean

FAMILY = "apple-m"
ORT_PROVIDERS = ("CoreMLExecutionProvider", "CPUExecutionProvider")

# chip -> (unified memory bandwidth GB/s, CPU cores, performance cores) of the full configuration;
# sources: Apple newsroom launch posts and the Mac tech-specs pages for each chip
CHIPS = {
    "M1": (68.25, "4P+4E", 4), "M1 Pro": (200, "8P+2E", 8), "M1 Max": (400, "8P+2E", 8),
    "M1 Ultra": (800, "16P+4E", 16), "M2": (100, "4P+4E", 4), "M2 Pro": (200, "8P+4E", 8),
    "M2 Max": (400, "8P+4E", 8), "M2 Ultra": (800, "16P+8E", 16), "M3": (100, "4P+4E", 4),
    "M3 Pro": (150, "6P+6E", 6), "M3 Max": (400, "12P+4E", 12), "M3 Ultra": (819, "24P+8E", 24),
    "M4": (120, "4P+6E", 4), "M4 Pro": (273, "10P+4E", 10), "M4 Max": (546, "12P+4E", 12),
    "M5": (153, "4P+6E", 4),
}
# binned chips with a narrower memory bus, told apart by their performance-core count
BINNED_BANDWIDTH = {("M3 Max", 10): 300, ("M4 Max", 10): 410}

SPECS = [TargetSpec(f"apple-{chip.lower().replace(' ', '-')}", FAMILY, None, bw, cpu, big, "Apple GPU (Metal)",
                    (), "-DGGML_METAL=on", ORT_PROVIDERS, "powermetrics", 99,
                    (f"Apple {chip} (newsroom / Mac tech specs): {bw} GB/s unified memory, {cpu} CPU",))
         for chip, (bw, cpu, big) in CHIPS.items()]
# a chip newer than this table: Metal, CoreML and powermetrics as for every M-series, no bandwidth assumed
OTHER = TargetSpec("apple-m-other", FAMILY, None, None, "Apple silicon", None, "Apple GPU (Metal)", (),
                   "-DGGML_METAL=on", ORT_PROVIDERS, "powermetrics", 99,
                   ("an Apple M-series chip not in edgekit's table: no spec-sheet bandwidth",))
SPECS.append(OTHER)


def detect(facts: dict[str, str]) -> tuple[TargetSpec, dict] | None:
    if clean(facts.get("uname_s")) != "Darwin":
        return None
    lines = [x.strip() for x in clean(facts.get("sysctl")).splitlines()]
    brand = lines[0] if lines else ""
    seen: dict = {"model": None, "cpu": brand or None,
                  "ram_gb": round(int(lines[1]) / 2**30) if len(lines) > 1 and lines[1].isdigit() else None,
                  "hw_model": lines[2] if len(lines) > 2 else None}
    levels = [int(x) for x in clean(facts.get("sysctl_perflevels")).split() if x.isdigit()]
    if levels:
        seen["performance_cores"] = levels[0]
    m = re.search(r"Apple (M\d+)\b(?: (Pro|Max|Ultra)\b)?", brand)
    if not m:
        return None  # an Intel Mac: not a target of its own, the caller falls through to linux-style facts
    chip = m.group(1) + (f" {m.group(2)}" if m.group(2) else "")
    spec = next((s for s in SPECS if s.name == f"apple-{chip.lower().replace(' ', '-')}"), None)
    if spec is None:
        seen["unknown_chip"] = chip
        spec = OTHER
    # this machine's figures where the facts have them: RAM, performance cores, a binned chip's bandwidth
    big = seen.get("performance_cores") or spec.big_cores
    return dataclasses.replace(spec, ram_gb=seen["ram_gb"], big_cores=big,
                               bandwidth_gb_s=BINNED_BANDWIDTH.get((chip, big), spec.bandwidth_gb_s)), seen


LLAMA_CPP_ENV = ""  # CMAKE_ARGS (the spec's) is all pip needs here


def onnxruntime_install(spec: TargetSpec) -> str:
    return "pip install onnxruntime  # the macOS arm64 wheel includes CoreMLExecutionProvider"


# ---------------------------------------------------------------- thermal state

STATE_COMMANDS = {"therm": "pmset -g therm", "power_settings": "pmset -g"}


def parse_pmset_therm(text: str) -> dict:
    """`pmset -g therm`: the recorded thermal and performance warning levels ('Note: No thermal warning
    level has been recorded' means none) and, where printed, CPU_Speed_Limit (percent of full speed)."""
    out: dict = {"thermal_warning": None, "performance_warning": None, "cpu_speed_limit": None}
    for line in text.splitlines():
        m = re.search(r"(thermal|performance) warning level\s*(?:is|:|=)\s*(.+)$", line, flags=re.I)
        if m and "no " not in line.lower().split("warning")[0]:
            out[f"{m.group(1).lower()}_warning"] = m.group(2).strip()
        m = re.search(r"CPU_Speed_Limit\s*=\s*(\d+)", line)
        if m:
            out["cpu_speed_limit"] = int(m.group(1))
    return out


def parse_pmset_settings(text: str) -> dict[str, str]:
    """`pmset -g`: the settings in use, name -> value (the last word; a trailing `(sleep prevented
    by ...)` is dropped). `lowpowermode 1` (or `powermode 1` on Macs with a High Power mode)
    slows the CPU and GPU: a benchmark should not run in it."""
    out = {}
    for line in text.splitlines():
        if not line.startswith((" ", "\t")):
            continue
        words = re.sub(r"\s*\(.*\)\s*$", "", line).split()  # drop a trailing "(sleep prevented by ...)"
        if len(words) >= 2:
            out[" ".join(words[:-1])] = words[-1]
    return out


STATE_PARSERS = {"therm": parse_pmset_therm, "power_settings": parse_pmset_settings}


# ---------------------------------------------------------------- power

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


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def frame_power_w(frame: dict) -> dict[str, float]:
    """Watts per domain (cpu, gpu, ane, combined) from one frame, by what it carries."""
    proc = frame.get("processor") if isinstance(frame, dict) else None
    if not isinstance(proc, dict):
        return {}
    seconds = (_number(frame.get("elapsed_ns")) or 0) / 1e9
    out = {}
    for domain in ("cpu", "gpu", "ane", "combined"):  # a value that is no number is not a reading
        power, energy = _number(proc.get(f"{domain}_power")), _number(proc.get(f"{domain}_energy"))
        if power is not None:
            out[domain] = power / 1e3
        elif energy is not None and seconds > 0:
            out[domain] = energy / 1e3 / seconds
    if "combined" not in out and out:
        out["combined"] = sum(v for k, v in out.items() if k in ("cpu", "gpu", "ane"))
    return out


_NUM = r"(\d+(?:\.\d+)?)"
_SAMPLE = re.compile(r"^\*\*\* Sampled system activity .*?\(" + _NUM + r"ms elapsed\) \*\*\*$", flags=re.M)
_TEXT_POWER = re.compile(r"^(CPU|GPU|ANE|Package|Combined) Power(?: \([^)]*\))?: " + _NUM + r" mW$", flags=re.M)


def parse_powermetrics_text(text: str) -> list[dict[str, float]]:
    """Watts per domain of each sample of powermetrics' text output (`-f text`, the default): the
    `CPU Power: 211 mW` ... `Combined Power (CPU + GPU + ANE): 359 mW` lines after each
    `*** Sampled system activity (...) (1012.07ms elapsed) ***` header. Older macOS prints
    `Package Power` and no Combined line: `combined` is then CPU + GPU + ANE, as for plist frames."""
    heads = list(_SAMPLE.finditer(text))
    samples = []
    for i, head in enumerate(heads):
        body = text[head.end(): heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        watts = {m.group(1).lower(): float(m.group(2)) / 1e3 for m in _TEXT_POWER.finditer(body)}
        if not watts:
            continue
        if "combined" not in watts:
            watts["combined"] = sum(watts.get(k, 0.0) for k in ("cpu", "gpu", "ane"))
        samples.append({**watts, "elapsed_s": float(head.group(1)) / 1e3})
    return samples


def sudo_failure_message(stderr: str) -> str:
    return f"powermetrics needs passwordless sudo ({stderr.strip() or 'sudo -n refused'}); {SUDOERS_HINT}"


def frame_watts(record: bytes) -> float | None:
    try:
        frame = plistlib.loads(record.strip())
    except Exception:
        return None
    return frame_power_w(frame).get("combined")


def open_sensor(interval_ms: int = 100, command: list[str] | None = None):
    try:
        return StreamSensor("powermetrics:combined CPU+GPU+ANE", EXCLUDES,
                            command or POWERMETRICS_COMMAND.format(interval_ms=interval_ms).split(),
                            frame_watts, separator=b"\0")
    except SensorUnavailable as e:
        if "password" in str(e) or "sudo" in str(e):
            raise SensorUnavailable(sudo_failure_message(str(e))) from None
        raise


SENSORS_IN_ORDER = ("powermetrics",)  # edgekit.power.SENSORS["powermetrics"] is open_sensor above


def parse_powermetrics_log(data: bytes) -> list[float]:
    """plist frames (what edgekit's sensor records), or the text format powermetrics prints by default."""
    if b"<plist" not in data[:4096]:
        return [s["combined"] for s in parse_powermetrics_text(data.decode(errors="replace"))]
    frames, _ = split_frames(data)
    return [w["combined"] for f in frames if "combined" in (w := frame_power_w(f))]
