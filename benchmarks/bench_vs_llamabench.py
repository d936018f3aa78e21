#!/usr/bin/env python3
"""`edgekit bench` vs llama.cpp's own llama-bench on the same GGUF, same settings, same job.

Builds llama-bench from the llama-cpp-python sdist of the pinned version with the same CMake
flags as the installed bindings (edgekit.llamacpp_build's portable flags, or LLAMA_CMAKE_ARGS;
cached in the work folder per flags; pass --cmake-args "-DGGML_CUDA=ON" for CUDA), runs
`llama-bench -o json` and `edgekit bench --format llama-bench` with the same
threads, -p, -n, -r and GPU layers, alternating them --rounds times so that
drift in the machine hits both, and prints the pp and tg ratios
(edgekit / llama-bench, median over rounds). Goal: >= 0.97.

--compare-native measures what portability costs instead: llama-bench built with the portable
flags against llama-bench built with -DGGML_NATIVE=ON (-march=native), alternating, same GGUF,
and prints portable / native for pp and tg. It refuses to build native on a CPU with AMX, where
native llama.cpp segfaults (llama.cpp #20824).

    python benchmarks/bench_vs_llamabench.py                      # r1-distill-qwen-1.5b Q4_K_M, CPU
    python benchmarks/bench_vs_llamabench.py --compare-native     # portable vs -march=native
    python benchmarks/bench_vs_llamabench.py --gguf m.gguf --gpu-layers 99 --cmake-args "-DGGML_CUDA=ON"
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
from pathlib import Path

from common import add_run_args, cached_export, edgekit_exe, llama_cpp_tree, ratio_verdict

from edgekit.llamacpp_build import portable_cmake_args, wheel_key

NATIVE_ARGS = "-DGGML_NATIVE=ON"


def build_llama_bench(src: Path, build: Path, cmake_args: str) -> Path:
    exe = build / "bin" / "llama-bench"
    if exe.exists():
        return exe
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), *gen, "-DCMAKE_BUILD_TYPE=Release",
                    "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", *cmake_args.split()], check=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-bench", "-j", str(os.cpu_count())],
                   check=True)
    return exe


def by_test(entries: list[dict]) -> dict[str, float]:
    out = {}
    for e in entries:
        key = "pp" if e["n_prompt"] and not e["n_gen"] else "tg" if e["n_gen"] and not e["n_prompt"] else None
        if key:
            out[key] = float(e["avg_ts"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", help="GGUF to measure (default: the preset exported to --quant, cached)")
    add_run_args(ap, p=512, n=128, r=5)
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--flash-attn", choices=["on", "off"], default=None,
                    help="pass the same flash-attention setting to both (default: each tool's auto)")
    ap.add_argument("--llama-cpp-src", help="an extracted llama.cpp tree (default: from the matching sdist)")
    ap.add_argument("--llama-bench", help="a built llama-bench binary (skips the build)")
    ap.add_argument("--cmake-args", default=None,
                    help="CMake flags of llama-bench (default: the installed bindings' portable flags)")
    ap.add_argument("--compare-native", action="store_true",
                    help="portable llama-bench vs a -DGGML_NATIVE=ON one instead of edgekit vs llama-bench")
    args = ap.parse_args()

    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    cmake_args = portable_cmake_args() if args.cmake_args is None else args.cmake_args

    def bench_exe(flags: str) -> Path:
        return build_llama_bench(llama_cpp_tree(work, args.llama_cpp_src), work / f"llama-bench-{wheel_key(flags)}",
                                 flags)

    exe = Path(args.llama_bench) if args.llama_bench else bench_exe(cmake_args)
    gguf = Path(args.gguf) if args.gguf else cached_export(work, args.preset, "gguf", args.quant)
    if args.compare_native:
        return compare_native(args, exe, bench_exe, gguf, cmake_args)
    edgekit = edgekit_exe()

    common = ["-p", str(args.p), "-n", str(args.n), "-r", str(args.r)]
    lb_cmd = [str(exe), "-m", str(gguf), "-t", str(args.threads), "-ngl", str(args.gpu_layers), *common, "-o", "json"]
    ek_cmd = [edgekit, "bench", str(gguf), "--threads", str(args.threads), "--gpu-layers", str(args.gpu_layers),
              *common, "--format", "llama-bench", "--json", "--power", "none"]
    if args.flash_attn:
        lb_cmd += ["-fa", "1" if args.flash_attn == "on" else "0"]
        ek_cmd += ["--flash-attn", args.flash_attn]

    rounds = []
    for i in range(args.rounds):
        lb = by_test(json.loads(subprocess.run(lb_cmd, check=True, capture_output=True, text=True).stdout))
        ek = by_test(json.loads(subprocess.run(ek_cmd, check=True, capture_output=True, text=True).stdout))
        rounds.append({"round": i + 1, "llama_bench": lb, "edgekit": ek,
                       "pp_ratio": ek["pp"] / lb["pp"] if "pp" in lb else None,
                       "tg_ratio": ek["tg"] / lb["tg"] if "tg" in lb else None})
        print(json.dumps(rounds[-1]), flush=True)

    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    summary = {"gguf": str(gguf), "threads": args.threads, "gpu_layers": args.gpu_layers, "p": args.p,
               "n": args.n, "r": args.r, "rounds": args.rounds}
    for test in ("pp", "tg"):
        summary[f"llama_bench_{test}_tok_s"] = median(r["llama_bench"].get(test) for r in rounds)
        summary[f"edgekit_{test}_tok_s"] = median(r["edgekit"].get(test) for r in rounds)
        summary[f"{test}_ratio_median"] = median(r[f"{test}_ratio"] for r in rounds)
    print()
    for test in ("pp", "tg"):
        if summary[f"{test}_ratio_median"] is None:
            continue
        ratios = [r[f"{test}_ratio"] for r in rounds if r[f"{test}_ratio"] is not None]
        print(f"{test}{args.p if test == 'pp' else args.n}: llama-bench {summary[f'llama_bench_{test}_tok_s']:.2f} tok/s, "
              f"edgekit {summary[f'edgekit_{test}_tok_s']:.2f} tok/s, {ratio_verdict(ratios, 0.97)}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=2) + "\n")


def compare_native(args, portable: Path, bench_exe, gguf: Path, cmake_args: str) -> None:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " amx_tile" in cpuinfo or " amx_int8" in cpuinfo:
        raise SystemExit("this CPU has AMX: a -march=native llama.cpp segfaults here (llama.cpp #20824); "
                         "run --compare-native on an AMD host or an Intel one without AMX")
    native = bench_exe(NATIVE_ARGS)
    cmd = lambda exe: [str(exe), "-m", str(gguf), "-t", str(args.threads), "-ngl", str(args.gpu_layers),  # noqa: E731
                       "-p", str(args.p), "-n", str(args.n), "-r", str(args.r), "-o", "json"]
    rounds = []
    for i in range(args.rounds):
        order = [("portable", portable), ("native", native)]
        if i % 2:
            order.reverse()  # alternate who goes first: drift hits both alike
        got = {name: by_test(json.loads(subprocess.run(cmd(exe), check=True, capture_output=True,
                                                       text=True).stdout)) for name, exe in order}
        rounds.append({"round": i + 1, **got, **{f"{t}_ratio": got["portable"][t] / got["native"][t]
                                                 for t in ("pp", "tg") if t in got["native"]}})
        print(json.dumps(rounds[-1]), flush=True)
    print(f"\nportable ({cmake_args}) vs native ({NATIVE_ARGS}), {gguf.name}, {args.threads} threads")
    for test in ("pp", "tg"):
        ratios = [r[f"{test}_ratio"] for r in rounds if f"{test}_ratio" in r]
        if ratios:
            size = args.p if test == "pp" else args.n
            print(f"{test}{size}: portable {statistics.median(r['portable'][test] for r in rounds):.2f} tok/s, "
                  f"native {statistics.median(r['native'][test] for r in rounds):.2f} tok/s, "
                  f"{ratio_verdict(ratios, 0.97)}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"portable_cmake_args": cmake_args, "native_cmake_args": NATIVE_ARGS,
                                                   "gguf": str(gguf), "rounds": rounds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
