"""Helpers shared by the benchmark scripts (run them as scripts: this folder is on sys.path)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def llama_cpp_tree(work: Path, given: str | None = None) -> Path:
    """llama.cpp's source tree from the llama-cpp-python sdist of the pinned version (extracted once)."""
    from edgekit.llamacpp_build import LLAMA_CPP_PYTHON_VERSION, extract_llama_cpp

    if given:
        return Path(given)
    tree = work / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}" / "vendor" / "llama.cpp"
    if not (tree / "CMakeLists.txt").exists():
        extract_llama_cpp(work)
    return tree


def edgekit_exe() -> str:
    return shutil.which("edgekit") or str(Path(sys.executable).parent / "edgekit")


def add_run_args(ap: argparse.ArgumentParser, p: int, n: int, r: int, rounds: int = 3) -> None:
    """The options every comparison shares: test sizes, threads, rounds, work folder, JSON out."""
    ap.add_argument("--preset", default="r1-distill-qwen-1.5b", help="synthesized checkpoint to export (cached)")
    ap.add_argument("-p", type=int, default=p, help="prompt tokens")
    ap.add_argument("-n", type=int, default=n, help="generated tokens")
    ap.add_argument("-r", type=int, default=r, help="repetitions per run")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=rounds,
                    help="alternate the two tools this many times (8 give a 99 %% interval for the median ratio)")
    ap.add_argument("--work", default="bench-work", help="cache folder for checkpoints, exports and builds")
    ap.add_argument("--json", dest="json_out", help="write rounds and summary here")


def cached_export(work: Path, preset: str, fmt: str, quant: str) -> Path:
    """The preset synthesized and exported once into the work folder (no verify: speed only).
    Returns the GGUF file, or the ONNX folder."""
    edgekit = edgekit_exe()
    ckpt = work / preset
    if not (ckpt / "config.json").exists():
        subprocess.run([edgekit, "synth", preset, str(ckpt)], check=True)
    out = work / f"{preset}-{fmt}-{quant}"
    if not (out / "manifest.json").exists():
        option = ["--quant", quant] if fmt == "gguf" else ["--precision", quant.lower()]
        subprocess.run([edgekit, "export", fmt, str(ckpt), "-o", str(out), *option, "--no-verify", "--force"],
                       check=True)
    return next(out.glob(f"*-{quant}.gguf")) if fmt == "gguf" else out


def run_measured(cmd: list[str], log: Path) -> tuple[float, int]:
    """Run a command; return (wall seconds, peak RSS bytes of that child)."""
    wall, rss, _ = run_measured_tree(cmd, log, sample_s=None)
    return wall, rss


def tree_rss_bytes(root: int) -> int:
    """RSS of `root` and all its descendants now (Linux /proc), summed."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * page
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def run_measured_tree(cmd: list[str], log: Path, sample_s: float | None = 0.1,
                      env: dict | None = None) -> tuple[float, int, int]:
    """Run a command; return (wall seconds, peak RSS bytes of its largest process (the kernel's
    ru_maxrss over the tree), peak of the RSS summed over all its processes at once, sampled every
    `sample_s` (0 when not sampled)). Exits naming the log when the command fails."""
    import threading

    t0 = time.perf_counter()
    peak_sum = 0
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_sum
            while not done.wait(sample_s):
                peak_sum = max(peak_sum, tree_rss_bytes(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True) if sample_s else None
        if sampler:
            sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        if sampler:
            sampler.join()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    measured = (wall, usage.ru_maxrss * 1024, peak_sum)  # Linux: ru_maxrss in KiB
    if proc.returncode != 0:
        raise CommandFailed(f"command failed ({proc.returncode}), see {log}: {' '.join(cmd)}", measured)
    return measured


class CommandFailed(SystemExit):
    """A measured command that failed (a SystemExit: a script that does not catch it exits with its
    message); `measured` holds what was measured until then (wall, largest process, summed peak)."""

    def __init__(self, message: str, measured: tuple[float, int, int]):
        super().__init__(message)
        self.measured = measured


def median_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """Median and a distribution-free confidence interval for it (order statistics: the rank bounds
    come from Binomial(n, 1/2), no assumption on how the rounds scatter). Returns (median, low, high,
    achieved confidence); with too few rounds for `confidence` the interval is the full range and the
    achieved confidence says what that is worth."""
    import math
    import statistics

    xs = sorted(values)
    n = len(xs)

    def coverage(k: int) -> float:  # of [xs[k], xs[n-1-k]]: 1 - 2 P(Binomial(n, 1/2) <= k)
        return 1 - 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n

    k = 0
    while k + 1 < n - 1 - k and coverage(k + 1) >= confidence:
        k += 1
    achieved = coverage(k)
    return statistics.median(xs), xs[k], xs[n - 1 - k], achieved


def ratio_verdict(values: list[float], goal: float) -> str:
    """'ratio 0.990 (99% CI 0.940-1.150 over 8 rounds): goal >= 1.0 neither shown met nor missed: ...',
    or '... goal >= 1.0 met' when the whole interval clears the goal, '... missed' when none of it does."""
    med, low, high, conf = median_ci(values)
    if low >= goal:
        verdict = f"goal >= {goal} met"
    elif high < goal:
        verdict = f"goal >= {goal} missed"
    else:
        verdict = f"goal >= {goal} neither shown met nor missed: the interval holds it"
    return f"ratio {med:.3f} ({conf:.0%} CI {low:.3f}-{high:.3f} over {len(values)} rounds): {verdict}"
