"""The runtimes, in one table: what edgekit knows of each inference runtime, read by deploy,
doctor, bench, report, plan and the target recipes. Nothing else branches on a runtime's name:
a new runtime is one entry here, its format (edgekit.formats) and its runner (edgekit.runners).

Each entry names, for its runtime:
- `name`: as results, deploy.json, `--runtime` and plan spell it ("llama.cpp", "onnxruntime");
  `label`: for people and error lines ("ONNX Runtime"), also the native library a crash comes from.
- `format`: the artifact format it runs (a key of edgekit.formats.FORMATS), or None while edgekit
  plans for it but cannot run it yet.
- `distributions`: the pip distributions that provide it, in the order they are looked for
  (doctor, deploy and a result's runtime version all read this one list).
- `device_extras`: what a deploy installs beside it in the device venv.
- `recipe`: "module:function" building its install on a target (edgekit.targets.specs), called
  as function(spec, machine) -> PipInstall; `builds_on_device`: the recipe compiles there (disk
  for a build tree, a compiler, a wheel brought back), else it installs a wheel.
- `doctor_check` / `backends_check`: the names of `edgekit doctor`'s checks of its install and of
  the backends it has, `backends_field` / `build_field` where the latter keeps them (else its
  detail), `default_backends` when it lists none; the doctor warnings about it start with
  `warning_prefix` or mention one of `warning_mentions`; `spec_backends_field`: the TargetSpec
  field listing the backends a target needs of it (deploy fails without one of them).
- `version`: the version a device build is pinned to; `build_log_name`: its build log's name.
- `settings_field`: its part of BenchSettings and of a result's settings.
- `build_describer`: "module:function" turning a result's build text into its features, or None.
- `crash_fixes`: what a crash line (edgekit.native) names as the fix, per signal.
- `builds_from`: formats it makes its own artifact of on the device (TensorRT: Edge-LLM's ONNX).
- `system_modules`: modules a deploy links from the device's system Python into its venv (JetPack's
  TensorRT bindings) instead of a recipe's pip install.
- `plan_efficiency` / `plan_pp_tg_ratio`: plan's defaults (achieved tg / its bandwidth bound,
  pp/tg) until results calibrate them; `nvidia_only`: plan it on NVIDIA targets only;
  `plan_build_peak`: plan checks the engine build's peak memory too.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.llamacpp_build import LLAMA_CPP_PYTHON_VERSION


@dataclass(frozen=True)
class Runtime:
    name: str
    label: str
    format: str | None
    distributions: tuple[str, ...]
    plan_efficiency: float
    plan_pp_tg_ratio: float
    device_extras: tuple[str, ...] = ()
    recipe: str | None = None
    builds_on_device: bool = False
    cross_builds: bool = False  # its wheel can be cross-built here for CPU-only arm64 devices (edgekit.crossbuild)
    install_bytes: int = 100 * 2**20
    doctor_check: str | None = None
    backends_check: str | None = None
    backends_field: str = "backends"
    build_field: str = "version"
    default_backends: tuple[str, ...] = ()
    warning_prefix: str = ""
    warning_mentions: tuple[str, ...] = ()
    spec_backends_field: str | None = None
    version: str | None = None
    build_log_name: str = "build"
    settings_field: str | None = None
    build_describer: str | None = None
    nvidia_only: bool = False
    plan_build_peak: bool = False
    crash_fixes: dict[str, str] = field(default_factory=dict)  # signal name -> the fix a crash line names
    # modules the device's OS provides for its system Python only, linked into the device venv on deploy
    # (edgekit.device.system_link) instead of a pip install
    system_modules: tuple[str, ...] = ()
    builds_from: tuple[str, ...] = ()  # formats it builds its own artifacts from, on the device (deploy sends them)

    @property
    def wheel_stem(self) -> str:
        """How its wheels' file names begin (the distribution's name, normalised as wheels spell it)."""
        return self.distributions[0].replace("-", "_")

    def installed(self) -> tuple[str, str] | None:
        """(distribution, version) of the first of `distributions` installed here, or None."""
        for name in self.distributions:
            try:
                return name, metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        return None

    def version_text(self) -> str:
        """'<distribution> <version>' of the installed runtime ('<distribution> unknown' without one)."""
        found = self.installed()
        return f"{found[0]} {found[1]}" if found else f"{self.distributions[0]} unknown"

    def hook(self, which: str) -> Any:
        """The function a "module:function" field names, imported on use."""
        spec = getattr(self, which)
        if spec is None:
            raise EdgekitError(f"{self.label} has no {which.replace('_', ' ')}", "pass another runtime")
        module, _, function = spec.partition(":")
        return getattr(importlib.import_module(module), function)


LLAMA_CPP = Runtime(
    name="llama.cpp", label="llama.cpp", format="gguf",
    distributions=("llama-cpp-python", "llama_cpp_python"),
    recipe="edgekit.targets.specs:llama_cpp_install", builds_on_device=True, cross_builds=True,
    # a llama.cpp CPU build's tree is ~600 MB, CUDA ~1.5 GB
    install_bytes=2 * 2**30,
    doctor_check="llama.cpp build", backends_check="llama.cpp build", backends_field="backends",
    build_field="system_info", default_backends=("CPU",), warning_prefix="llama", warning_mentions=("llama.cpp",),
    version=LLAMA_CPP_PYTHON_VERSION, build_log_name="llama-build",
    crash_fixes={
        "SIGILL": "this build uses CPU instructions this machine lacks (a wheel built on another CPU?): reinstall it "
                  "with portable flags (`make -B install`, see edgekit/llamacpp_build.py); `edgekit doctor` shows "
                  "the build's features against this CPU's",
        "SIGSEGV": "rebuild it with portable flags, without AMX (llama.cpp issue #20824): `make -B install`; "
                   "`edgekit doctor` shows the build's features; if it persists, please report this file"},
    settings_field="llama_cpp", build_describer="edgekit.doctor:describe_system_info",
    plan_efficiency=0.6, plan_pp_tg_ratio=10.0)

ONNXRUNTIME = Runtime(
    name="onnxruntime", label="ONNX Runtime", format="onnx",
    distributions=("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                   "onnxruntime-qnn", "onnxruntime-rocm", "onnxruntime-migraphx", "onnxruntime-cann",
                   "onnxruntime-silicon", "onnxruntime-training", "ort-nightly", "ort-nightly-gpu"),
    # onnx: the ONNX format reads its graph on the device; tokenizers: edgekit eval --host
    device_extras=("onnx", "tokenizers"),
    recipe="edgekit.targets.specs:family_onnxruntime_install",
    doctor_check="onnxruntime", backends_check="onnxruntime providers", backends_field="providers",
    build_field="version", warning_prefix="onnxruntime", spec_backends_field="onnxruntime_providers",
    settings_field="onnxruntime",
    plan_efficiency=0.4, plan_pp_tg_ratio=5.0)

# engines built on the device (trtexec or Edge-LLM's llm_build); on a Jetson the bindings are JetPack's own
TENSORRT = Runtime(
    name="tensorrt", label="TensorRT", format="tensorrt",
    distributions=("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-rtx", "tensorrt_rtx"),
    system_modules=("tensorrt",), builds_from=("edgellm-onnx",), doctor_check="tensorrt tools", backends_check="tensorrt tools",
    backends_field="tools", build_field="tensorrt", warning_prefix="tensorrt",
    settings_field="tensorrt", plan_efficiency=0.7, plan_pp_tg_ratio=20.0, nvidia_only=True, plan_build_peak=True)

RUNTIMES: dict[str, Runtime] = {r.name: r for r in (LLAMA_CPP, ONNXRUNTIME, TENSORRT)}


def get_runtime(name: str) -> Runtime:
    if name not in RUNTIMES:
        raise EdgekitError(f"no runtime '{name}'", f"pass one of: {', '.join(deployable())}")
    return RUNTIMES[name]


def deployable() -> list[str]:
    """The runtimes a deploy can install and a bench can run: those with a format and a recipe (or
    modules it links from the device's system Python)."""
    return [r.name for r in RUNTIMES.values() if r.format and (r.recipe or r.system_modules)]


def runtime_of_format(fmt: str) -> Runtime:
    """The runtime that runs artifacts of format `fmt`, or builds its own from them (`builds_from`)."""
    for r in RUNTIMES.values():
        if r.format == fmt or fmt in r.builds_from:
            return r
    raise EdgekitError(f"no runtime runs the format '{fmt}'", f"known formats: "
                       f"{', '.join(r.format for r in RUNTIMES.values() if r.format)}")
