"""Facts about a machine (hostname, OS, CPU, RAM) for a result's `host`: host_facts_from() derives
them from gathered fact outputs, so a machine read through any transport is described the same
way; host_facts() is this machine, read directly."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path


def parse_cpuinfo_model(text: str) -> str | None:
    """CPU model from /proc/cpuinfo: x86 'model name', or Arm 'Model'/'Hardware'."""
    for key in ("model name", "Model", "Hardware"):
        for line in text.splitlines():
            k, sep, v = line.partition(":")
            if sep and k.strip() == key and v.strip():
                return v.strip()
    return None


def parse_meminfo_total_bytes(text: str) -> int | None:
    return parse_meminfo_bytes(text, "MemTotal")


def parse_meminfo_bytes(text: str, key: str) -> int | None:
    """One /proc/meminfo field (MemTotal, MemAvailable, SwapFree, ...) in bytes."""
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                unit = parts[2].lower() if len(parts) > 2 else "kb"
                return int(parts[1]) * (1024 if unit == "kb" else 1)
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


# gathered beside FACT_COMMANDS for a complete description (name -> command; POSIX, Linux and macOS)
HOST_COMMANDS: dict[str, str] = {
    "hostname": "uname -n",
    "uname_r": "uname -r",
    "ncpu": "getconf _NPROCESSORS_ONLN",
}


def _clean(text: str | None) -> str:
    return (text or "").replace("\x00", "").strip()


def _sysctl_lines(facts: dict[str, str]) -> list[str]:
    """`sysctl -n machdep.cpu.brand_string hw.memsize hw.model` (macOS): one value a line."""
    return [line.strip() for line in _clean(facts.get("sysctl")).splitlines()]


def host_facts_from(facts: dict[str, str]) -> dict:
    """The dict host_facts() returns (the fields of edgekit.results.HostInfo but `accelerators`),
    from fact outputs (name -> stdout): FACT_COMMANDS (uname_m, uname_s, cpuinfo, meminfo, sysctl,
    sysctl_perflevels) and HOST_COMMANDS (hostname, uname_r, ncpu), any of them missing. Pure.

    - hostname: `uname -n`; os: `uname -s` and `uname -r` ("Linux 6.8.0"), either alone if that is
      all there is; machine: `uname -m`
    - cpu_model: /proc/cpuinfo (x86 'model name', Arm 'Model' or 'Hardware'), else the macOS brand
      string (sysctl)
    - cpu_cores: online logical CPUs (`getconf _NPROCESSORS_ONLN`), else the processors listed in
      /proc/cpuinfo, else the macOS performance + efficiency cores (no SMT on Apple silicon)
    - ram_bytes: MemTotal of /proc/meminfo, else hw.memsize (sysctl)
    - python: the `python` fact if a caller gathered one (no fact command reads it), else None
    A field the facts do not give is None."""
    sysctl = _sysctl_lines(facts)
    system, release = _clean(facts.get("uname_s")), _clean(facts.get("uname_r"))
    ncpu = _clean(facts.get("ncpu"))
    listed = len(re.findall(r"^processor\s*:", facts.get("cpuinfo") or "", flags=re.M))
    levels = [int(x) for x in _clean(facts.get("sysctl_perflevels")).split() if x.isdigit()]
    ram = parse_meminfo_total_bytes(facts.get("meminfo") or "")
    if ram is None and len(sysctl) > 1 and sysctl[1].isdigit():
        ram = int(sysctl[1])
    return {
        "hostname": _clean(facts.get("hostname")) or None,
        "os": " ".join(x for x in (system, release) if x) or None,
        "machine": _clean(facts.get("uname_m")) or None,
        "cpu_model": parse_cpuinfo_model(facts.get("cpuinfo") or "") or (sysctl[0] if sysctl and sysctl[0] else None),
        "cpu_cores": int(ncpu) if ncpu.isdigit() and int(ncpu) > 0 else (listed or sum(levels) or None),
        "ram_bytes": ram,
        "python": _clean(facts.get("python")) or None,
    }


def local_facts() -> dict[str, str]:
    """This machine's facts in the shape host_facts_from() reads, without running a command."""
    return {"hostname": platform.node(), "uname_s": platform.system(), "uname_r": platform.release(),
            "uname_m": platform.machine(), "cpuinfo": _read("/proc/cpuinfo"), "meminfo": _read("/proc/meminfo"),
            "ncpu": str(os.cpu_count() or ""), "python": platform.python_version()}


def host_facts() -> dict:
    """This machine: host_facts_from(local_facts()), the CPU model falling back on
    platform.processor() where /proc/cpuinfo names none (macOS)."""
    facts = host_facts_from(local_facts())
    facts["cpu_model"] = facts["cpu_model"] or platform.processor() or None
    return facts
