"""Clocks, power mode, temperatures and throttling, captured before and after a run.

Each reading is a command string and a pure parser, both held by the family module
(Family.STATE_COMMANDS, Family.STATE_PARSERS); `capture` runs a family's commands through a transport.
"""

from __future__ import annotations

from edgekit.targets.specs import family_module


def run_commands(transport, commands: dict[str, str], timeout_s: float = 10.0) -> dict[str, str]:
    """name -> stdout of each command that succeeded and printed something (facts, state, sensors)."""
    out = {}
    for name, command in commands.items():
        result = transport.run(command, timeout_s=timeout_s)
        if result.returncode == 0 and result.stdout.strip():
            out[name] = result.stdout
    return out


def state_commands(family: str) -> dict[str, str]:
    return dict(family_module(family).STATE_COMMANDS)


def parse_state(family: str, raw: dict[str, str]) -> dict:
    """Parsed values of raw state outputs; an output its parser rejects is kept as text."""
    parsers = family_module(family).STATE_PARSERS
    state: dict = {}
    for name, text in raw.items():
        parser = parsers.get(name)
        try:
            state[name] = parser(text) if parser else text.strip()
        except (ValueError, IndexError, KeyError, TypeError):  # output a parser does not know: kept as text
            state[name] = text.strip()
    return state


def capture(transport, family: str) -> dict:
    return parse_state(family, run_commands(transport, state_commands(family)))


def describe(name: str, value) -> str:
    """One line for a state value (the probe's text output)."""
    if name == "jetson_clocks" and isinstance(value, dict):
        cpus = [c for c in value["cpus"].values() if c["online"]]
        parts = [f"{len(cpus)} CPUs online ({', '.join(sorted({str(c['governor']) for c in cpus}))})"]
        parts += [f"{k.upper()} {value[k]['cur'] / 1e6:.0f}/{value[k]['max'] / 1e6:.0f} MHz"
                  for k in ("gpu", "emc") if k in value]
        return ", ".join(parts) + f", locked: {value['locked']}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def throttle_warnings(before: dict, after: dict) -> list[str]:
    """What the before/after states say about throttling and unsteady clocks during the run."""
    out = []
    thr, thr0 = after.get("throttled"), before.get("throttled")  # Raspberry Pi firmware bits
    if isinstance(thr, dict) and not isinstance(thr0, dict):  # one snapshot (probe), or no reading before
        if thr["flags"]:
            out.append("the device reports throttling (now or since boot): " + ", ".join(thr["flags"]))
    elif isinstance(thr, dict):
        new = set(thr["flags"]) - set(thr0["flags"])
        if thr["throttled_now"] or new:
            out.append("the device throttled during the run: " + ", ".join(sorted(new or thr["flags"])))
    therm = after.get("therm")  # macOS
    if isinstance(therm, dict):
        limit = therm.get("cpu_speed_limit")
        if limit is not None and limit < 100:
            out.append(f"macOS limited the CPU to {limit} % of its speed (pmset -g therm): the run was throttled")
        for kind in ("thermal", "performance"):
            if therm.get(f"{kind}_warning"):
                out.append(f"macOS recorded a {kind} warning level: {therm[f'{kind}_warning']}")
    settings = after.get("power_settings")  # macOS
    if isinstance(settings, dict) and (settings.get("lowpowermode") == "1" or settings.get("powermode") == "1"):
        out.append("macOS Low Power Mode was on: CPU and GPU clocks are reduced (turn it off in Settings > Battery)")
    clocks = [s.get("jetson_clocks") for s in (before, after)]  # Jetson: clocks not pinned to their maximum
    if any(isinstance(c, dict) and c.get("locked") is False for c in clocks):
        out.append("Jetson clocks were not locked at their maximum (run `sudo jetson_clocks`): results vary "
                   "with DVFS")
    modes = [s["nvpmodel"].get("mode") if isinstance(s.get("nvpmodel"), dict) else None for s in (before, after)]
    if all(modes) and modes[0] != modes[1]:
        out.append(f"the Jetson power mode changed during the run: {modes[0]} -> {modes[1]}")
    if after.get("governor") not in (None, "performance"):
        out.append(f"CPU frequency governor is '{after['governor']}', not 'performance': clocks may vary")
    thermal = after.get("thermal") if isinstance(after.get("thermal"), dict) else {}
    hot = {z: t for z, t in thermal.items() if t >= 85}
    if hot:
        out.append("hot after the run: " + ", ".join(f"{z} {t:.0f} C" for z, t in hot.items()))
    return out
