"""`edgekit bench`: speed, memory and power of one artifact, as one BenchResult."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

from edgekit.errors import EdgekitError
from edgekit.results import (ArtifactInfo, BenchResult, HostInfo, Metrics, PowerInfo, Roofline, RuntimeInfo,
                             Settings, Stat, ToolInfo)

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
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if platform.system() == "Darwin" else rss * 1024


# ---------------------------------------------------------------- inputs


def resolve_artifact(path: Path) -> tuple[Path, str]:
    """A GGUF file, an ONNX file, or an export folder holding one of them -> (path, format).
    For ONNX the folder is returned: the runner needs its genai_config.json and tokenizer."""
    path = Path(path)
    if not path.exists():
        raise EdgekitError(f"{path} does not exist", "pass a .gguf file, an .onnx file or an edgekit export folder")
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        onnxs = sorted(path.glob("*.onnx"))
        if len(ggufs) == 1 and not onnxs:
            return ggufs[0], "gguf"
        if onnxs and not ggufs:
            from edgekit.runners.onnxruntime import find_model

            return find_model(path), "onnx"
        if not ggufs:
            raise EdgekitError(f"{path} holds no .gguf or .onnx file", "pass a model file or an edgekit export folder")
        raise EdgekitError(f"{path} holds {len(ggufs) + len(onnxs)} model files "
                           f"({', '.join(p.name for p in ggufs + onnxs)})", "pass one of them")
    if path.suffix == ".onnx":
        return path, "onnx"
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return path, "gguf"
    raise EdgekitError(f"{path} is not a GGUF file (starts with {magic!r}) and not an .onnx file",
                       "pass a .gguf file, e.g. one written by edgekit export gguf, or an ONNX export folder")


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


def host_info(accelerators: list[str]) -> HostInfo:
    from edgekit.targets.host import host_facts

    return HostInfo(**host_facts(), accelerators=accelerators)


# ---------------------------------------------------------------- the run


def bench_gguf(path: Path, **kwargs) -> BenchResult:
    return bench_artifact(path, "gguf", **kwargs)


def bench_artifact(path: Path, fmt: str = "gguf", *, n_prompt: int = 512, n_gen: int = 128, repetitions: int = 5,
                   threads: int | None = None, gpu_layers: int | None = 0, ctx: int = 0, n_batch: int = 2048,
                   n_ubatch: int = 512, flash_attn: str = "auto", providers: list[str] | None = None,
                   graph_opt: str = "all", power: str = "auto", target: str = "auto", idle_s: float = 2.0,
                   sample_interval_s: float = 0.1, hash_artifact: bool = True,
                   progress: Progress | None = None, transport=None) -> BenchResult:
    """One artifact through its runtime's runner (llama.cpp for GGUF, ONNX Runtime for ONNX), with
    the same tests, the same power and memory accounting and the same result schema. `transport` is
    where the target's facts and state (clocks, throttling) are read: this machine unless given."""
    from edgekit.manifest import sha256_of
    from edgekit.power import Sampler, open_sensor
    from edgekit.targets.specs import SPECS
    from edgekit.targets.state import capture, throttle_warnings
    from edgekit.transport import LocalTransport

    transport = transport or LocalTransport()

    seen: dict = {}
    if target == "auto":
        from edgekit.probe import gather_facts
        from edgekit.targets.specs import detect

        spec, seen = detect(gather_facts(transport))
    elif target in SPECS:
        spec = SPECS[target]
    else:
        raise EdgekitError(f"unknown target '{target}'",
                           "pass --target auto (detect this machine) or a name from `edgekit targets`")
    family = spec.family
    if threads is None:  # the target's big cores (Apple's performance cores), within what we may use
        threads = min(spec.big_cores, default_threads()) if spec.big_cores else default_threads()
    if fmt == "gguf":
        from edgekit.inspect import inspect_gguf
        from edgekit.runners.llamacpp import LlamaCppRunner

        if gpu_layers is None:
            gpu_layers = spec.default_gpu_layers
        ctx = check_settings(n_prompt, n_gen, repetitions, ctx, threads, n_batch, n_ubatch)
        facts = inspect_gguf(path)
        runner = LlamaCppRunner(path, threads=threads, gpu_layers=gpu_layers, ctx=ctx, n_batch=n_batch,
                                n_ubatch=n_ubatch, flash_attn=flash_attn)
        load = runner.load
    elif fmt == "onnx":
        from edgekit.inspect import inspect_onnx
        from edgekit.runners.onnxruntime import GPU_PROVIDERS, OrtRunner, available_providers, choose_providers

        ctx = check_settings(n_prompt, n_gen, repetitions, ctx, threads, n_batch, 1)
        facts = None  # read after the run: parsing the graph in Python holds inline weights in this process
        preferred = spec.onnxruntime_providers
        providers = choose_providers(providers, preferred, available_providers())
        runner = OrtRunner(path.parent, threads=threads, providers=providers, graph_opt=graph_opt,
                           model_file=path.name, n_batch=n_batch)
        load = runner.load
    else:
        raise EdgekitError(f"no runner for format '{fmt}'", "pass a GGUF or ONNX artifact")
    warnings: list[str] = []
    state_before = capture(transport, family)

    on_gpu = bool(gpu_layers) and runner.backend() != "CPU" if fmt == "gguf" else providers[0] in GPU_PROVIDERS
    sensor, why_not = open_sensor(power, on_gpu, spec.power_sensor)
    gpu_mem0 = _gpu_memory(sensor, warnings)
    sampler = Sampler(sensor, interval_s=sample_interval_s) if sensor else None
    if sampler and gpu_mem0 is not None:
        sampler.gauge = sensor.memory_used_bytes  # peak GPU memory, polled with every power sample

    reset_peak_rss()
    pp_s: list[float] = []
    tg_s: list[float] = []
    ttft_s: list[float] = []
    pp_windows: list[tuple[float, float]] = []
    tg_windows: list[tuple[float, float]] = []
    idle_window = None
    gpu_peak = None
    try:
        load_s = load()
        if fmt == "onnx":
            gpu_layers = runner.n_layers if runner.backend() != "CPU" else 0
            n_ubatch = n_batch  # ONNX Runtime runs each chunk whole
            flash_attn = "n/a"
        if sampler:
            try:
                sampler.start()
            except Exception as e:  # the sensor failed its first read: run on without power
                why_not, sampler = f"{sensor.name} failed its first reading: {type(e).__name__}: {e}", None
        if sampler:
            t_idle = time.perf_counter()
            time.sleep(idle_s)
            idle_window = (t_idle, time.perf_counter())
        runner.warmup(n_prompt, n_gen)
        total_steps = repetitions * ((n_prompt > 0) + (n_gen > 0) + (n_prompt > 0))
        step = 0

        def tick():
            nonlocal step
            step += 1
            if progress:
                progress(f"bench {path.name}", step, total_steps)

        for _ in range(repetitions if n_prompt else 0):
            t0 = time.perf_counter()
            pp_s.append(runner.time_prompt(n_prompt))
            pp_windows.append((t0, time.perf_counter()))
            tick()
        for _ in range(repetitions if n_gen else 0):
            t0 = time.perf_counter()
            tg_s.append(runner.time_generate(n_gen))
            tg_windows.append((t0, time.perf_counter()))
            tick()
        for _ in range(repetitions if n_prompt else 0):
            ttft_s.append(runner.time_first_token(n_prompt))
            tick()
        if gpu_mem0 is not None:
            used = _gpu_memory(sensor, warnings)
            readings = [v for v in (used, sampler.gauge_max if sampler else None) if v is not None]
            gpu_peak = max(0, max(readings) - gpu_mem0) if readings else None
        backend, build = runner.backend(), runner.system_info()
        state_after = capture(transport, family)
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
        power_info = summarise_power(sampler, idle_window, pp_windows, tg_windows, n_prompt, n_gen, warnings)

    metrics = Metrics(
        pp_tok_s=Stat.of([n_prompt / s for s in pp_s]) if pp_s else None,
        tg_tok_s=Stat.of([n_gen / s for s in tg_s]) if tg_s else None,
        ttft_s=Stat.of(ttft_s) if ttft_s else None,
        load_s=round(load_s, 4), peak_rss_bytes=rss, peak_gpu_mem_bytes=gpu_peak)

    if facts is None:
        facts = inspect_onnx(path)
    roofline = None
    if n_gen and (backend == "CPU" or spec.bandwidth_gb_s):
        try:
            from edgekit.roofline import (
                above_roofline_warning,
                gguf_bytes_per_token,
                host_bandwidth_gb_s,
                last_level_cache_bytes,
                onnx_bytes_per_token,
            )

            if fmt == "gguf":
                bpt, _parts = gguf_bytes_per_token(path, ctx_tokens=n_gen / 2)
            else:
                bpt, _parts = onnx_bytes_per_token(path, ctx_tokens=n_gen / 2, facts=facts)
            if spec.bandwidth_gb_s:  # a known device: its spec sheet (unified memory for CPU and GPU)
                bw, source = spec.bandwidth_gb_s, f"spec sheet of {spec.name}: {spec.sources[0]}"
            else:
                bw, source = host_bandwidth_gb_s()
            bound = bw * 1e9 / bpt
            roofline = Roofline(bandwidth_gb_s=bw, bandwidth_source=source, bytes_per_token=bpt,
                                tg_bound_tok_s=bound, efficiency=metrics.tg_tok_s.mean / bound)
            above = above_roofline_warning(roofline.efficiency, bpt, last_level_cache_bytes(), source)
            if above:
                warnings.append(above)
        except Exception as e:  # e.g. an architecture without the attention metadata it needs
            warnings.append(f"no roofline: {type(e).__name__}: {e}")
    elif n_gen:
        warnings.append(f"no roofline for the {backend} backend yet: its memory bandwidth is not known to edgekit")

    package = "llama-cpp-python" if fmt == "gguf" else _ort_package()
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        version = "unknown"
    from edgekit import __version__

    return BenchResult(
        tool=ToolInfo(version=__version__),
        host=host_info([backend] if backend != "CPU" else []),
        target=(target if target != "auto" else spec.name if spec.family != "linux" else "local host"),
        artifact=ArtifactInfo(path=str(path), format=fmt, quant=facts["quant"], size_bytes=facts["size_bytes"],
                              sha256=sha256_of(path, 8 << 20, *[path.parent / e for e in facts.get("external_data", [])])
                              if hash_artifact else None, n_params=facts["n_params"],
                              architecture=facts["architecture"]),
        runtime=RuntimeInfo(name="llama.cpp" if fmt == "gguf" else "onnxruntime", version=f"{package} {version}",
                            backend=backend, build_flags=build),
        settings=Settings(n_prompt=n_prompt, n_gen=n_gen, repetitions=repetitions, threads=threads,
                          gpu_layers=gpu_layers, ctx=ctx, n_batch=n_batch, n_ubatch=n_ubatch, flash_attn=flash_attn,
                          providers=runner.providers if fmt == "onnx" else None,
                          graph_optimization=graph_opt if fmt == "onnx" else None),
        metrics=metrics, power=power_info, roofline=roofline,
        target_state={"family": family, "detected": seen, "before": state_before, "after": state_after}, warnings=warnings)


def _ort_package() -> str:
    """The installed onnxruntime distribution (onnxruntime, onnxruntime-gpu, ...)."""
    for name in ("onnxruntime-gpu", "onnxruntime", "onnxruntime-directml", "onnxruntime-qnn"):
        try:
            metadata.version(name)
            return name
        except metadata.PackageNotFoundError:
            continue
    return "onnxruntime"


def _gpu_memory(sensor, warnings: list[str]) -> int | None:
    if sensor is None or not hasattr(sensor, "memory_used_bytes"):
        return None
    try:
        return sensor.memory_used_bytes()
    except Exception as e:
        warnings.append(f"GPU memory not readable: {type(e).__name__}: {e}")
        return None


def summarise_power(sampler, idle_window, pp_windows, tg_windows, n_prompt, n_gen, warnings) -> PowerInfo:
    """Watts and joules per phase from the samples; none at all when sampling broke off."""
    sensor = sampler.sensor
    if sampler.errors or not sampler.samples:
        reason = sampler.errors[0] if sampler.errors else "no samples were taken"
        return PowerInfo(source=sensor.name, excludes=sensor.excludes, sample_interval_s=sampler.interval_s,
                         unavailable=f"power sampling failed during the run ({reason}); no figures reported")
    idle_w = sampler.mean_w([idle_window]) if idle_window else None
    info = PowerInfo(source=sensor.name, excludes=sensor.excludes, sample_interval_s=sampler.interval_s,
                     idle_w=idle_w,
                     samples=[(round(t - sampler.t0, 4), round(w, 4)) for t, w in sampler.samples])
    for phase, windows, n_tok in (("pp", pp_windows, n_prompt), ("tg", tg_windows, n_gen)):
        if not windows:
            continue
        seconds = sum(b - a for a, b in windows)
        if seconds / len(windows) < 5 * sampler.interval_s:
            warnings.append(f"{phase} phases last {seconds / len(windows):.3f} s each, under 5 power samples: "
                            f"its watts are rough; use more tokens")
        avg_w = sampler.mean_w(windows)
        energy = avg_w * seconds
        tokens = n_tok * len(windows)
        setattr(info, f"{phase}_avg_w", avg_w)
        setattr(info, f"{phase}_j_per_tok", energy / tokens)
        if idle_w is not None:
            setattr(info, f"{phase}_j_per_tok_above_idle", (avg_w - idle_w) * seconds / tokens)
    return info
