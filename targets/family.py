"""What a target family module provides: the `Family` protocol, declared once.

A family is a module (edgekit's rpi5, jetson, apple_m, linux, or a plugin's module named by an
"edgekit.target_families" entry point) that defines every member below at module level; nothing
is optional, so callers read `module.X`, never `getattr(module, X, default)`. edgekit.targets.specs
checks a family module against this list when it first loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:
    from edgekit.targets.specs import TargetSpec


@runtime_checkable
class Family(Protocol):
    # every target of the family, each with its figures' sources
    SPECS: list[TargetSpec]
    # state name -> shell command read before and after a run (clocks, power mode, throttling, thermals)
    STATE_COMMANDS: dict[str, str]
    # state name -> pure parser of that command's stdout; a name without one is kept as text
    STATE_PARSERS: dict[str, Callable[[str], object]]
    # environment prefix of `pip install llama-cpp-python` on the device, e.g. "CUDACXX=... "; "" for none
    LLAMA_CPP_ENV: str
    # keys of the power sensors `--power auto` tries on this family's targets, in order, whatever does
    # the work (the device's own sensor sees the SoC); () means none of its own: NVML when the work
    # runs on an NVIDIA GPU, else RAPL
    SENSORS_IN_ORDER: tuple[str, ...]

    def detect(self, facts: dict[str, str]) -> tuple[TargetSpec, dict] | None:
        """The family's target these facts (edgekit.targets.specs.FACT_COMMANDS outputs) describe and
        what was read off them, or None when the facts are not this family's."""

    def onnxruntime_install(self, spec: TargetSpec) -> str:
        """The line that installs ONNX Runtime on `spec`'s device: `pip install ARGS...`, optionally
        with `KEY=VALUE` words before it and a `# note` after it, and nothing else (deploy reads it
        with edgekit.targets.specs.parse_pip_command and runs it with the device venv's pip)."""


# the members above, read off the class: its annotations and its methods
FAMILY_MEMBERS: tuple[str, ...] = (*Family.__annotations__,
                                   *(name for name, value in vars(Family).items()
                                     if callable(value) and not name.startswith("_")))


def missing_members(module: object) -> list[str]:
    """The Family members `module` lacks (empty when it provides them all)."""
    return [name for name in FAMILY_MEMBERS if not hasattr(module, name)]
