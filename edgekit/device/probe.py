"""`edgekit probe`: read a machine's facts through a transport, detect its target, capture its
clocks/power-mode/thermal state, and optionally record every raw output as fixture files."""

from __future__ import annotations

from pathlib import Path

from edgekit.atomic import atomic_dir
from edgekit.device.recording import write_recording
from edgekit.device.transport import LocalTransport, Transport
from edgekit.targets.host import HOST_COMMANDS, host_facts, host_facts_from
from edgekit.targets.specs import FACT_COMMANDS, detect
from edgekit.targets.state import parse_state, run_commands, state_commands, throttle_warnings


def gather_facts(transport: Transport) -> dict[str, str]:
    return run_commands(transport, FACT_COMMANDS)


def probe(transport: Transport | None = None, record: Path | None = None, force: bool = False) -> dict:
    """Facts, detected target and state of the machine behind `transport`. With `record`, every raw
    output is written to the folder `record` (whole or not at all; `force` replaces a non-empty one)
    in the recording layout of edgekit.device.recording, which RecordedTransport replays and the tests read
    their fixtures from."""
    transport = transport or LocalTransport()
    facts = gather_facts(transport)
    spec, seen = detect(facts)
    commands = state_commands(spec.family)
    raw_state = run_commands(transport, commands)
    if record:
        with atomic_dir(Path(record), force=force) as tmp:
            write_recording(tmp, facts, raw_state, FACT_COMMANDS, commands)
    state = parse_state(spec.family, raw_state)
    return {"transport": transport.name, "target": spec.name, "family": spec.family, "detected": seen,
            "spec": spec.to_dict(), "state": state, "warnings": throttle_warnings({}, state),
            "facts_recorded": sorted(facts), "state_recorded": sorted(raw_state)}


def host_facts_of(transport=None, facts: dict[str, str] | None = None) -> dict:
    """The machine behind `transport`, as host_facts() describes this one: host_facts() itself for
    None or a LocalTransport; otherwise host_facts_from() on `facts` (FACT_COMMANDS outputs already
    gathered, e.g. for detection; gathered here when None) and the HOST_COMMANDS outputs, run here.
    A recording without HOST_COMMANDS outputs gives None for the hostname, the OS release, and so on."""
    if transport is None or isinstance(transport, LocalTransport):
        return host_facts()
    if facts is None:
        facts = run_commands(transport, FACT_COMMANDS)
    missing = {n: c for n, c in HOST_COMMANDS.items() if n not in facts}
    return host_facts_from({**facts, **run_commands(transport, missing)})
