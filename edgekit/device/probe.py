"""`edgekit probe`: read a machine's facts through a transport, detect its target, capture its
clocks/power-mode/thermal state, and optionally record every raw output as fixture files."""

from __future__ import annotations

from pathlib import Path

from edgekit.device.transport import LocalTransport, Transport


def gather_facts(transport: Transport) -> dict[str, str]:
    from edgekit.targets.specs import FACT_COMMANDS
    from edgekit.targets.state import run_commands

    return run_commands(transport, FACT_COMMANDS)


def probe(transport: Transport | None = None, record: Path | None = None, force: bool = False) -> dict:
    """Facts, detected target and state of the machine behind `transport`. With `record`, every raw
    output is written to the folder `record` (whole or not at all; `force` replaces a non-empty one)
    in the recording layout of edgekit.device.recording, which RecordedTransport replays and the tests read
    their fixtures from."""
    from edgekit.atomic import atomic_dir
    from edgekit.device.recording import write_recording
    from edgekit.targets.specs import FACT_COMMANDS, detect
    from edgekit.targets.state import parse_state, run_commands, state_commands, throttle_warnings

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
