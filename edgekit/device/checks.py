"""What a device's own `edgekit doctor --json` says of a runtime there: the problems that fail a
deploy and the backends it has. Pure, read through the runtime table, tested on recorded doctor
output."""

from __future__ import annotations

from edgekit.runtimes import Runtime, get_runtime
from edgekit.targets.specs import runtime_install


def runtime_problems(report: dict, runtime: str, spec=None) -> list[tuple[str, str]]:
    """The warnings of a device's `edgekit doctor --json` that make `runtime` unusable there:
    (problem, fix) pairs; with `spec`, a runtime without any of the GPU backends the target lists
    for it (an onnxruntime without a Jetson's CUDA/TensorRT providers) is one too. Pure, tested on
    recorded doctor output."""
    rt = get_runtime(runtime)
    out = []
    for warning in report.get("warnings") or []:
        # doctor --json writes {"problem", "fix"}; a (problem, fix) pair is read too
        problem, fix = (warning.get("problem", ""), warning.get("fix", "")) if isinstance(warning, dict) else warning
        if problem.lower().startswith(rt.warning_prefix) or any(m in problem.lower() for m in rt.warning_mentions):
            out.append((problem, fix))
    names = {c.get("name"): c for c in report.get("checks") or []}
    check = names.get(rt.doctor_check) or next((c for n, c in names.items() if n and
                                                n.startswith(rt.warning_prefix)), None)
    wanted = [p for p in spec_backends(spec, rt) if p != "CPUExecutionProvider"] if spec is not None else []
    if check is None or check.get("status") == "missing":
        out.append((f"{runtime} is not installed in the device venv", "deploy again; see the install log"))
    elif wanted:
        have = runtime_backends(report, runtime)[0]
        if not set(wanted) & set(have):
            out.append((f"{runtime} on {spec.name} has {', '.join(have) or 'no provider'}, none of "
                        f"{', '.join(wanted)}: bench would run on the CPU",
                        f"install the target's build: {runtime_install(spec, runtime).command()}"))
    return out


def spec_backends(spec, rt: Runtime) -> tuple[str, ...]:
    """The backends a target spec lists for a runtime (its providers for onnxruntime; llama.cpp's
    GPU backend is checked by the device's own doctor, which knows its target)."""
    return tuple(getattr(spec, rt.spec_backends_field)) if rt.spec_backends_field else ()


def runtime_backends(report: dict, runtime: str) -> tuple[list[str], str | None]:
    """(backends, build text) of `runtime` as the device's doctor read them."""
    rt = get_runtime(runtime)
    for c in report.get("checks") or []:
        data = c.get("data") or {}
        if c.get("name") == rt.backends_check:
            return list(data.get(rt.backends_field) or rt.default_backends), data.get(rt.build_field) or c.get("detail")
    return [], None
