"""`edgekit probe`: read a machine's facts through a transport, detect its target, optionally record them."""

from __future__ import annotations

from pathlib import Path

from edgekit.transport import LocalTransport, Transport


def gather_facts(transport: Transport) -> dict[str, str]:
    from edgekit.targets.specs import FACT_COMMANDS

    facts = {}
    for name, command in FACT_COMMANDS.items():
        result = transport.run(command)
        if result.returncode == 0:
            facts[name] = result.stdout
    return facts


def probe(transport: Transport | None = None, record: Path | None = None) -> dict:
    from edgekit.targets.specs import detect

    transport = transport or LocalTransport()
    facts = gather_facts(transport)
    if record:
        record = Path(record)
        record.mkdir(parents=True, exist_ok=True)
        for name, text in facts.items():
            (record / f"{name}.txt").write_text(text, encoding="utf-8")
    spec, seen = detect(facts)
    return {"transport": transport.name, "target": spec.name, "family": spec.family, "detected": seen,
            "spec": spec.to_dict(), "facts_recorded": sorted(facts)}
