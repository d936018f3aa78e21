"""`edgekit bench`: speed, memory and power of one artifact, as one BenchResult."""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit import __version__
from edgekit.device.probe import gather_facts, host_facts_of
from edgekit.device.transport import LocalTransport
from edgekit.errors import EdgekitError
from edgekit.formats import get_format
from edgekit.formats import resolve_artifact as resolve
from edgekit.manifest import sha256_of
from edgekit.power import Sampler, open_sensor, summarise_power
from edgekit.results import (
    ArtifactInfo,
    BenchResult,
    HostInfo,
    Metrics,
    PowerInfo,
    Roofline,
    RuntimeInfo,
    Settings,
    Stat,
    ToolInfo,
)
from edgekit.roofline import above_roofline_warning, host_bandwidth_gb_s, last_level_cache_bytes
from edgekit.runtimes import get_runtime
from edgekit.settings import BenchSettings
from edgekit.targets.specs import all_specs, detect
from edgekit.targets.state import capture, throttle_warnings

Progress = Callable[[str, float, float], None]


# ---------------------------------------------------------------- process memory


def parse_vm_hwm_bytes(status_text: str) -> int | None:
    """Peak resident set (VmHWM) from /proc/<pid>/status."""
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            parts = line.split()
            return int(parts[1]) * 1024
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    try:
        value = parse_vm_hwm_bytes(Path("/proc/self/status").read_text())
        if value:
            return value
    except OSError:
        pass

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if platform.system() == "Darwin" else rss * 1024


# ---------------------------------------------------------------- inputs


def resolve_artifact(path: Path) -> tuple[Path, str]:
    """A model file, or an export folder holding one -> (the file, its format's name)."""
    model, fmt = resolve(path)
    return model, fmt.name


def default_threads() -> int:
    """CPUs this process may run on (affinity and cgroup cpusets respected where Linux says)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_settings(n_prompt: int, n_gen: int, repetitions: int, ctx: int, threads: int = 1,
                   n_batch: int = 1, n_ubatch: int = 1) -> int:
    for name, value in (("--threads", threads), ("--batch", n_batch), ("--ubatch", n_ubatch)):
        if value < 1:
            raise EdgekitError(f"{name} must be at least 1 (got {value})", f"pass {name} 1 or more, or leave it out")
    if n_prompt < 0 or n_gen < 0:
        raise EdgekitError("-p/--n-prompt and -n/--n-gen must not be negative", "pass 0 or more tokens")
    if n_prompt == 0 and n_gen == 0:
        raise EdgekitError("nothing to measure: -p/--n-prompt and -n/--n-gen are both 0",
                           "ask for prompt tokens, generated tokens or both (defaults: -p 512 -n 128)")
    if repetitions < 1:
        raise EdgekitError("-r/--repetitions must be at least 1", "pass -r 5 (the default) or more")
    need = max(n_prompt + 1, n_gen)
    if ctx and ctx < need:
        raise EdgekitError(f"--ctx {ctx} is smaller than the {need} tokens the run needs",
                           f"pass --ctx {need} or more, or leave it out")
    return ctx or need


def check_context(path: Path, fmt: str, n_prompt: int, n_gen: int) -> None:
    """Refuse a run that needs more positions than the model was trained for (its GGUF header's or
    its export's genai_config.json context): a prompt of n_prompt tokens and its first generated
    one, or n_gen generated tokens. A model that does not say is not checked."""
    limit = get_format(fmt).context_length(Path(path))
    need = max(n_prompt + 1, n_gen)
    if limit and need > limit:
        raise EdgekitError(f"-p {n_prompt} / -n {n_gen} need {need} positions, more than {Path(path).name}'s context of "
                           f"{limit} tokens", f"ask for at most {limit - 1} prompt and {limit} generated tokens")


def host_info(accelerators: list[str], transport=None, facts: dict[str, str] | None = None) -> HostInfo:
    """The machine the run is on: this one, or the one behind `transport` (from its gathered
    `facts` where the caller has them), so that one result describes one machine."""
    return HostInfo(**host_facts_of(transport, facts), accelerators=accelerators)


# ---------------------------------------------------------------- the run


class Clock:
    """Where bench reads time and waits: the real clock, or a test's."""

    now: Callable[[], float] = staticmethod(time.perf_counter)
    sleep: Callable[[float], None] = staticmethod(time.sleep)


def bench_artifact(path: Path, settings: BenchSettings | None = None, *, fmt: str | None = None,
                   runner_factory: Callable | None = None, sensor_factory: Callable | None = None,
                   clock: Clock | None = None, progress: Progress | None = None, transport=None) -> BenchResult:
    """One artifact through its format's runner, timed as llama-bench times (see edgekit.runners):
    load; a warm-up of each test; `repetitions` x pp (the prompt from an empty cache), tg (n_gen
    single-token steps from an empty cache), TTFT (the prompt, then the greedy pick); power sampled
    from an idle baseline through every phase; roofline; one BenchResult. Orchestration only:
    `runner_factory(path, settings, spec)` makes the runner (default: the format's), and
    `sensor_factory(settings, on_gpu, spec)` opens the sensor (default: edgekit.power.open_sensor),
    so both can be injected. A runner that `times_itself` (a runtime's own benchmark tool, e.g.
    Edge-LLM's llm_bench) is asked `measure(test, n)` for each repetition's seconds instead, and
    warms itself up; its power windows span each whole invocation. `transport` is where the target's facts, state and host facts are
    read: this machine, or a recording in tests. The runner always runs here, so a bench on a
    device runs this function on the device (BenchSettings travel whole), never here through SSH."""
    settings = settings or BenchSettings()
    clock = clock or Clock()
    transport = transport or LocalTransport()
    path, form = (Path(path), get_format(fmt)) if fmt else resolve(path)
    spec, seen, gathered = _target(settings.target, transport)
    threads = settings.threads
    if threads is None:  # the target's big cores (Apple's performance cores), within what we may use
        threads = min(spec.big_cores, default_threads()) if spec.big_cores else default_threads()
    n_prompt, n_gen, reps = settings.n_prompt, settings.n_gen, settings.repetitions
    batches = getattr(settings, get_runtime(form.runtime).settings_field)
    ctx = check_settings(n_prompt, n_gen, reps, settings.ctx, threads, batches.n_batch,
                         getattr(batches, "n_ubatch", 1))
    settings = settings.model_copy(update={"threads": threads, "ctx": ctx})
    check_context(path, form.name, n_prompt, n_gen)
    facts = form.facts(path) if form.reads_header_only else None
    runner = (runner_factory or form.make_runner)(path, settings, spec)
    self_timed = getattr(runner, "times_itself", False)
    warnings: list[str] = []
    state_before = capture(transport, spec.family)
    if sensor_factory is None:
        sensor, why_not = open_sensor(settings.power, runner.uses_gpu, spec.power_sensor, family=spec.family)
    else:
        sensor, why_not = sensor_factory(settings, runner.uses_gpu, spec)
    gpu_mem0 = _gpu_memory(sensor, warnings)
    sampler = Sampler(sensor, interval_s=settings.sample_interval_s, clock=clock.now) if sensor else None
    if sampler and gpu_mem0 is not None:
        sampler.gauge = sensor.memory_used_bytes  # peak GPU memory, polled with every power sample

    reset_peak_rss()
    times: dict[str, list[float]] = {"pp": [], "tg": [], "ttft": []}
    windows: dict[str, list[tuple[float, float]]] = {"pp": [], "tg": []}
    idle_window = gpu_peak = None
    total = reps * ((n_prompt > 0) * 2 + (n_gen > 0))
    done = 0

    def timed(test: str, tokens: np.ndarray, pick: bool = False) -> None:
        nonlocal done
        if self_timed:  # the runtime's own benchmark tool: its seconds; the window is its whole run
            t0 = clock.now()
            seconds = runner.measure(test, len(tokens))
            t1 = clock.now()
        else:
            runner.start(len(tokens))  # the cache, emptied and allocated before the clock starts
            t0 = clock.now()
            if test == "tg":
                for token in tokens:
                    runner.step(int(token))
            else:
                runner.prompt(tokens)
                if pick:
                    runner.pick()
            t1 = clock.now()
            seconds = t1 - t0
        times[test].append(seconds)
        if test in windows:
            windows[test].append((t0, t1))
        done += 1
        if progress:
            progress(f"bench {path.name}", done, total)

    try:
        t0 = clock.now()
        runner.load()
        load_s = clock.now() - t0
        if sampler:
            try:
                sampler.start()
            except Exception as e:  # the sensor failed its first read: run on without power
                why_not, sampler = f"{sensor.name} failed its first reading: {type(e).__name__}: {e}", None
        if sampler:
            t_idle = clock.now()
            clock.sleep(settings.idle_s)
            idle_window = (t_idle, clock.now())
        if n_prompt and not self_timed:  # one untimed run of each test: first-run allocations, kernel selection
            runner.start(n_prompt)
            runner.prompt(runner.random_tokens(n_prompt))
        if n_gen and not self_timed:
            runner.start(n_gen)
            for token in runner.random_tokens(min(n_gen, 4)):
                runner.step(int(token))
        for _ in range(reps if n_prompt else 0):
            timed("pp", runner.random_tokens(n_prompt))
        for _ in range(reps if n_gen else 0):
            timed("tg", runner.random_tokens(n_gen))
        for _ in range(reps if n_prompt else 0):
            timed("ttft", runner.random_tokens(n_prompt), pick=True)
        if gpu_mem0 is not None:
            used = _gpu_memory(sensor, warnings)
            readings = [v for v in (used, sampler.gauge_max if sampler else None) if v is not None]
            gpu_peak = max(0, max(readings) - gpu_mem0) if readings else None
        backend, build, runtime_settings = runner.backend(), runner.system_info(), runner.result_settings()
        state_after = capture(transport, spec.family)
        warnings += throttle_warnings(state_before, state_after)
    finally:
        if sampler and sampler._thread:
            sampler.stop()
        runner.close()
        if sensor is not None:
            sensor.close()
    rss = peak_rss_bytes()

    power_info = PowerInfo(unavailable=why_not)
    if sampler:
        power_info = summarise_power(sampler, idle_window, windows["pp"], windows["tg"], n_prompt, n_gen, warnings)
    metrics = Metrics(
        pp_tok_s=Stat.of([n_prompt / s for s in times["pp"]]) if times["pp"] else None,
        tg_tok_s=Stat.of([n_gen / s for s in times["tg"]]) if times["tg"] else None,
        ttft_s=Stat.of(times["ttft"]) if times["ttft"] else None,
        load_s=round(load_s, 4), peak_rss_bytes=rss, peak_gpu_mem_bytes=gpu_peak)
    facts = facts or form.facts(path)
    roofline = _roofline(facts, metrics, backend, spec, n_gen, warnings)

    return BenchResult(
        tool=ToolInfo(version=__version__),
        host=host_info([backend] if backend != "CPU" else [], transport, gathered),
        target=(settings.target if settings.target != "auto" else spec.name if spec.family != "linux"
                else "local host"),
        artifact=ArtifactInfo(path=str(path), format=form.name, quant=facts.quant, size_bytes=facts.size_bytes,
                              sha256=sha256_of(path, 8 << 20, *[path.parent / e for e in facts.external_data])
                              if settings.hash_artifact else None, n_params=facts.n_params,
                              architecture=facts.architecture,
                              **(runner.runtime_facts()["artifact"] if hasattr(runner, "runtime_facts") else {})),
        runtime=RuntimeInfo(name=form.runtime, version=form.runtime_version(), backend=backend, build_flags=build,
                            **(runner.runtime_facts()["runtime"] if hasattr(runner, "runtime_facts") else {})),
        settings=Settings(n_prompt=n_prompt, n_gen=n_gen, repetitions=reps, threads=threads, ctx=ctx,
                          **runtime_settings),
        metrics=metrics, power=power_info, roofline=roofline,
        target_state={"family": spec.family, "detected": seen, "before": state_before, "after": state_after},
        warnings=warnings)


def _target(name: str, transport):
    """(TargetSpec, what detection read, the gathered facts or None) of the machine a run is on:
    detected through `transport`, or by name."""
    if name == "auto":
        facts = gather_facts(transport)
        return (*detect(facts), facts)
    if name in all_specs():
        return all_specs()[name], {}, None
    raise EdgekitError(f"unknown target '{name}'",
                       "pass --target auto (detect this machine) or a name from `edgekit targets`")


def _roofline(facts, metrics: Metrics, backend: str, spec, n_gen: int, warnings: list[str]) -> Roofline | None:
    """tg <= bandwidth / bytes read per token (the spec sheet's bandwidth on a known device, this
    host's measured right now otherwise); None, with a warning, when it cannot be said."""
    if not n_gen:
        return None
    if backend != "CPU" and not spec.bandwidth_gb_s:
        warnings.append(f"no roofline for the {backend} backend yet: its memory bandwidth is not known to edgekit")
        return None
    try:
        bpt = facts.bytes_per_token(ctx_tokens=n_gen / 2)
        if spec.bandwidth_gb_s:  # a known device: its spec sheet (unified memory for CPU and GPU)
            bw, source = spec.bandwidth_gb_s, f"spec sheet of {spec.name}: {spec.sources[0]}"
        else:
            bw, source = host_bandwidth_gb_s()
        bound = bw * 1e9 / bpt
        roofline = Roofline(bandwidth_gb_s=bw, bandwidth_source=source, bytes_per_token=bpt, tg_bound_tok_s=bound,
                            efficiency=metrics.tg_tok_s.mean / bound)
        above = above_roofline_warning(roofline.efficiency, bpt, last_level_cache_bytes(), source)
        if above:
            warnings.append(above)
        return roofline
    except Exception as e:  # e.g. an architecture without the attention metadata it needs
        warnings.append(f"no roofline: {type(e).__name__}: {e}")
        return None


def _gpu_memory(sensor, warnings: list[str]) -> int | None:
    if sensor is None or not hasattr(sensor, "memory_used_bytes"):
        return None
    try:
        return sensor.memory_used_bytes()
    except Exception as e:
        warnings.append(f"GPU memory not readable: {type(e).__name__}: {e}")
        return None
