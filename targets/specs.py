"""The target registry: what a target spec holds, the fact commands detection reads, and
detection across the device families.

Each family module (rpi5, jetson, apple_m, linux) provides edgekit.targets.family.Family: its
own specs (every figure with its source), `detect(facts)`, runtime install recipes, the state
commands (clocks, power mode, throttling) and its power sensors in the order `--power auto`
tries them. The families are a registry (edgekit.registry): the plain dict FAMILIES of
edgekit's own modules plus the "edgekit.target_families" entry points of installed plugins,
imported on first use, so `edgekit --help` imports none of them. Detection is a pure function
of recorded facts, so it is tested on fixture files; `edgekit probe` gathers the facts through
a Transport.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from edgekit.errors import EdgekitError
from edgekit.llamacpp_build import LLAMA_CPP_PYTHON_VERSION, arch_cmake_args
from edgekit.registry import TARGET_FAMILIES_GROUP, Registry
from edgekit.runtimes import deployable, get_runtime
from edgekit.targets.family import missing_members
from edgekit.targets.host import parse_meminfo_total_bytes

if TYPE_CHECKING:
    from edgekit.targets.family import Family


@dataclass(frozen=True)
class TargetSpec:
    name: str
    family: str                    # a family's name: a key of FAMILIES or a plugin's
    ram_gb: float | None
    bandwidth_gb_s: float | None   # peak DRAM bandwidth
    cpu: str
    big_cores: int | None          # runner default threads
    accelerator: str
    power_modes: tuple[str, ...] = ()
    llama_cpp_cmake_args: str = ""  # CMAKE_ARGS for pip install llama-cpp-python on the device
    onnxruntime_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    power_sensor: str | None = None  # a power sensor's key (edgekit.power.SENSORS or a plugin's)
    default_gpu_layers: int = 0
    sources: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        return {**asdict(self), "install": install_recipes(self)}


LLAMA_CPP_PYTHON = f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"

# family -> module: edgekit's own, in detection order; plugins add "edgekit.target_families" entry points
FAMILIES: dict[str, str] = {
    "rpi5": "edgekit.targets.rpi5",
    "jetson": "edgekit.targets.jetson",
    "apple-m": "edgekit.targets.apple_m",
    "linux": "edgekit.targets.linux",
}
CATCH_ALL_FAMILY = "linux"  # it matches any facts: asked last, after the plugins' families
FAMILY_REGISTRY = Registry(TARGET_FAMILIES_GROUP, FAMILIES, what="target family")

# name -> command; `edgekit probe --record` stores each output as <name>.txt
FACT_COMMANDS: dict[str, str] = {
    "uname_m": "uname -m",
    "uname_s": "uname -s",
    "device_tree_model": "cat /proc/device-tree/model",
    "device_tree_compatible": "cat /proc/device-tree/compatible",
    "nv_tegra_release": "cat /etc/nv_tegra_release",
    "cpuinfo": "cat /proc/cpuinfo",
    "meminfo": "cat /proc/meminfo",
    "nvidia_smi": "nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader,nounits",
    "sysctl": "sysctl -n machdep.cpu.brand_string hw.memsize hw.model",
    "sysctl_perflevels": "sysctl -n hw.perflevel0.physicalcpu hw.perflevel1.physicalcpu",
}


def family_module(family: str) -> Family:
    """The module of `family` (imported on first use). An unknown family raises KeyError naming the
    known ones; a module that fails to import or lacks a Family member raises EdgekitError."""
    module = FAMILY_REGISTRY.load(family)
    missing = missing_members(module)
    if missing:
        raise EdgekitError(f"the target family '{family}' from {FAMILY_REGISTRY.describe(family)} lacks "
                           f"{', '.join(missing)}", "define every member of edgekit.targets.family.Family")
    return module


def family_names() -> list[str]:
    """Every family in detection order: edgekit's own, then the plugins', the catch-all last."""
    names = FAMILY_REGISTRY.names()
    return [f for f in names if f != CATCH_ALL_FAMILY] + [f for f in names if f == CATCH_ALL_FAMILY]


def all_specs() -> dict[str, TargetSpec]:
    """Every known target spec by name, across the families."""
    return {s.name: s for family in family_names() for s in family_module(family).SPECS}


def __getattr__(name: str):  # `SPECS` stays a plain dict for callers, built on use
    if name == "SPECS":
        return all_specs()
    raise AttributeError(name)


def detect(facts: dict[str, str]) -> tuple[TargetSpec, dict]:
    """The target a set of facts describes, and what was read off them. Families are asked in
    family_names() order; `linux` answers for anything the others do not claim."""
    for family in family_names():
        found = family_module(family).detect(facts)
        if found is not None:
            return found
    raise AssertionError("the linux family matches any facts")


def install_recipes(spec: TargetSpec) -> dict[str, str]:
    """Shell commands that install each runtime on the device (what `edgekit targets` shows and
    `edgekit deploy` runs, through runtime_install)."""
    return {runtime: runtime_install(spec, runtime).command() for runtime in deployable()
            if get_runtime(runtime).recipe}  # a runtime linked from the OS (TensorRT on JetPack) has no pip line


@dataclass(frozen=True)
class PipInstall:
    """One runtime's install on a device: `env` for the build, then `pip install` of `args`
    (requirements and pip options), and a note for people. `command()` is the shell line."""

    env: tuple[tuple[str, str], ...]
    args: tuple[str, ...]
    note: str = ""

    def command(self, pip: str = "pip") -> str:
        env = "".join(f"{k}={shlex.quote(v) if k != 'CMAKE_ARGS' else chr(34) + v + chr(34)} " for k, v in self.env)
        line = f"{env}{pip} install {' '.join(shlex.quote(a) for a in self.args)}"
        return f"{line}  # {self.note}" if self.note else line

    @property
    def requirements(self) -> tuple[str, ...]:
        """The packages asked for (the arguments that are not pip options or their values)."""
        out, skip = [], False
        for a in self.args:
            if skip:
                skip = False
            elif a.startswith("-"):
                skip = "=" not in a and a in ("--index-url", "-i", "--extra-index-url", "-f", "--find-links")
            else:
                out.append(a)
        return tuple(out)


def parse_pip_command(line: str) -> PipInstall:
    """A family's recipe line, `[K=V ...] pip install ARGS...  # note`, as a PipInstall. The line is
    read as POSIX sh words; anything else (a pipe, `&&`, another program) is refused with ValueError:
    deploy runs recipes with the device venv's own pip, never through a shell."""
    code, _, note = line.partition("#")
    words = shlex.split(code)
    env = []
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env.append((key, value))
    if words[:2] != ["pip", "install"] or len(words) < 3 or any(w in ("|", "&&", ";", "||") for w in words):
        raise ValueError(f"not a `pip install` recipe: {line!r}")
    return PipInstall(tuple(env), tuple(words[2:]), note.strip())


def runtime_install(spec: TargetSpec, runtime: str, machine: str | None = None) -> PipInstall:
    """How `runtime` installs on `spec`'s device (`machine`: its `uname -m`, when known): the
    runtime table's recipe (edgekit.runtimes), one of the functions below."""
    return get_runtime(runtime).hook("recipe")(spec, machine)


def llama_cpp_install(spec: TargetSpec, machine: str | None = None) -> PipInstall:
    """llama.cpp builds from source with the spec's CMAKE_ARGS (the family's LLAMA_CPP_ENV added);
    on the generic linux family, whose specs name no CPU, the portable flags of
    edgekit.llamacpp_build for that machine come first (llama.cpp's default -march=native crashes
    on Intel CPUs with AMX)."""
    module = family_module(spec.family)
    args = spec.llama_cpp_cmake_args
    if spec.family == CATCH_ALL_FAMILY and machine:
        args = f"{arch_cmake_args(machine)} {args}".strip()
    env = ((("CMAKE_ARGS", args),) if args else ()) + parse_pip_command(f"{module.LLAMA_CPP_ENV}pip install x").env
    return PipInstall(env, (LLAMA_CPP_PYTHON,), "builds llama.cpp from source: minutes on a Pi, longer on a Jetson")


def family_onnxruntime_install(spec: TargetSpec, machine: str | None = None) -> PipInstall:
    """onnxruntime: the family's recipe line (`pip install ...`), read by parse_pip_command."""
    return parse_pip_command(family_module(spec.family).onnxruntime_install(spec))


# ---------------------------------------------------------------- parsers several families share


def clean(text: str | None) -> str:
    """A fact's text without device-tree NUL bytes and outer whitespace."""
    return (text or "").replace("\x00", "").strip()


def ram_gb(facts: dict[str, str]) -> float | None:
    """MemTotal in GiB, one decimal (what the kernel sees: a little below the installed RAM)."""
    total = parse_meminfo_total_bytes(facts.get("meminfo") or "")
    return round(total / 2**30, 1) if total else None


def parse_compatible(text: str | None) -> list[str]:
    """/proc/device-tree/compatible: NUL-separated strings, most specific first."""
    return [s for s in (text or "").split("\x00") if s.strip()]


def cpu_count(cpuinfo: str | None) -> int | None:
    n = len(re.findall(r"^processor\s*:", cpuinfo or "", flags=re.M))
    return n or None
