"""Shared assertions for CLI tests."""

from __future__ import annotations


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def streaming_gate(folder):
    """(gate file, lines seen, on_output): on_output creates the gate on seeing the line "first",
    so a command that waits for the gate proves the lines reached on_output while it still ran."""
    gate = folder / "seen first"
    seen: list[str] = []

    def on_output(line: str) -> None:
        seen.append(line)
        if line == "first":
            gate.touch()

    return gate, seen, on_output
