"""The four runtimes on one Jetson (an AGX Orin), one model, the same lengths: llama.cpp CUDA (GGUF
Q4_K_M), ONNX Runtime CUDA (ONNX INT4), TensorRT generic (edgekit's engine of its INT4 QDQ ONNX,
built there by trtexec, run by edgekit's TensorRT runner) and TensorRT Edge-LLM (its INT4 AWQ
engine, built there by llm_build, benched by llm_bench). Prints pp, tg and TTFT of each and its
ratio to llama.cpp CUDA (the reference run, in the same job), in alternating rounds.

    python benchmarks/orin_runtimes.py --host orin [--checkpoint DIR|HUB_ID] [-p 512 -n 128 -r 3]
        [--rounds 3] [--ssh-config FILE] [--skip edgellm] [--dry-run]

Without --checkpoint it synthesizes R1-Distill-Qwen-1.5B's exact shapes (random weights: speed
only). Every artifact is made and deployed by edgekit itself (export ... [--on HOST], bench --host),
so this measures what a user gets. --dry-run prints the commands and runs nothing.

Never ran: no Jetson here (docs/tensorrt.md says what did run). The device needs JetPack 7.2 for
Edge-LLM 0.11 (edgekit refuses older ones), JetPack's TensorRT bindings for the generic runner,
onnxruntime-gpu for ORT CUDA (deploy's jetson recipe) and llama.cpp built with CUDA (deploy builds it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import edgekit_exe, median_ci  # noqa: E402

RUNTIMES = ("llama.cpp-cuda", "ort-cuda", "tensorrt-generic", "tensorrt-edgellm")
REFERENCE = "llama.cpp-cuda"


def artifact_commands(edgekit: str, ckpt: str, work: Path, host_args: list[str], max_prompt: int,
                      max_context: int) -> dict[str, tuple[list[list[str]], Path]]:
    """runtime -> (the commands that make its artifact, the artifact)."""
    w = Path(work)
    return {
        "llama.cpp-cuda": ([[edgekit, "export", "gguf", ckpt, "-o", str(w / "gguf"), "--quant", "Q4_K_M", "--force"]],
                           w / "gguf"),
        "ort-cuda": ([[edgekit, "export", "onnx", ckpt, "-o", str(w / "onnx-int4"), "--precision", "int4",
                       "--force"]], w / "onnx-int4"),
        "tensorrt-generic": ([[edgekit, "export", "onnx", ckpt, "-o", str(w / "onnx-fp16"), "--precision", "fp16",
                               "--force"],
                              [edgekit, "export", "tensorrt", str(w / "onnx-fp16"), "-o", str(w / "trt-generic"),
                               "--precision", "int4", "--max-prompt", str(max_prompt), "--max-context",
                               str(max_context), "--force", "--on", *host_args]], w / "trt-generic"),
        "tensorrt-edgellm": ([[edgekit, "export", "tensorrt", ckpt, "-o", str(w / "trt-edgellm"), "--engine", "edgellm",
                               "--precision", "int4", "--max-prompt", str(max_prompt), "--max-context",
                               str(max_context), "--force", "--on", *host_args]], w / "trt-edgellm"),
    }


def bench_command(edgekit: str, runtime: str, artifact: Path, host_args: list[str], p: int, n: int, r: int,
                  out: Path) -> list[str]:
    """One edgekit bench --host of `runtime`'s artifact: the same -p/-n/-r for all four."""
    extra = {"llama.cpp-cuda": ["--gpu-layers", "99"], "ort-cuda": ["--providers", "cuda,cpu"]}.get(runtime, [])
    return [edgekit, "bench", str(artifact), "--host", *host_args, "-p", str(p), "-n", str(n), "-r", str(r),
            *extra, "-o", str(out)]


def summarise(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per runtime: the median over rounds of pp, tg (tok/s) and TTFT (s), and of each round's ratio to
    the reference's run in the same round (pp and tg: higher is better; TTFT: the reference's over its)."""
    out: dict[str, dict[str, float]] = {}
    for runtime in rounds[0]:
        rows = [rd[runtime] for rd in rounds if runtime in rd]
        s = {k: statistics.median(r[k] for r in rows) for k in ("pp_tok_s", "tg_tok_s", "ttft_s")}
        if runtime != REFERENCE:
            for k in ("pp_tok_s", "tg_tok_s"):
                s[f"{k}_ratio"] = statistics.median(rd[runtime][k] / rd[REFERENCE][k] for rd in rounds
                                                    if runtime in rd and REFERENCE in rd)
            s["ttft_speedup"] = statistics.median(rd[REFERENCE]["ttft_s"] / rd[runtime]["ttft_s"] for rd in rounds
                                                  if runtime in rd and REFERENCE in rd)
            s["tg_ci"] = median_ci([rd[runtime]["tg_tok_s"] / rd[REFERENCE]["tg_tok_s"] for rd in rounds
                                    if runtime in rd and REFERENCE in rd])[1:3]
        out[runtime] = s
    return out


def read_result(path: Path) -> dict[str, float]:
    m = json.loads(Path(path).read_text())["metrics"]
    return {"pp_tok_s": m["pp_tok_s"]["mean"], "tg_tok_s": m["tg_tok_s"]["mean"], "ttft_s": m["ttft_s"]["mean"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", required=True, help="the Jetson (user@host[:port] or a Host alias)")
    ap.add_argument("--checkpoint", help="a checkpoint folder or hub id (default: R1-Distill-Qwen-1.5B's shapes)")
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-context", type=int, default=4096)
    ap.add_argument("--ssh-config")
    ap.add_argument("--skip", action="append", default=[], choices=RUNTIMES[1:])
    ap.add_argument("--work", default="bench-work/orin")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    edgekit, work = edgekit_exe(), Path(a.work)
    host_args = [a.host, *(["--ssh-config", a.ssh_config] if a.ssh_config else [])]
    ckpt = a.checkpoint or str(work / "r1-distill-qwen-1.5b")
    todo = [r for r in RUNTIMES if r not in a.skip]
    made = artifact_commands(edgekit, ckpt, work, host_args, a.p, a.max_context)
    prepare = [] if a.checkpoint else [[edgekit, "synth", "r1-distill-qwen-1.5b", ckpt]]
    prepare += [cmd for r in todo for cmd in made[r][0]]
    if a.dry_run:
        for cmd in prepare:
            print(" ".join(cmd))
        for r in todo:
            print(" ".join(bench_command(edgekit, r, made[r][1], host_args, a.p, a.n, a.r, work / f"{r}-round1.json")))
        return 0
    work.mkdir(parents=True, exist_ok=True)
    for cmd in prepare:
        if "synth" in cmd and (Path(ckpt) / "config.json").exists():
            continue
        subprocess.run(cmd, check=True)
    rounds = []
    for i in range(a.rounds):
        order = todo if i % 2 == 0 else list(reversed(todo))  # alternate: drift and heat hit every runtime alike
        this = {}
        for r in order:
            out = work / f"{r}-round{i + 1}.json"
            out.unlink(missing_ok=True)  # bench never writes over a file
            subprocess.run(bench_command(edgekit, r, made[r][1], host_args, a.p, a.n, a.r, out), check=True)
            this[r] = read_result(out)
        rounds.append(this)
    summary = summarise(rounds)
    print(f"{a.host}: -p {a.p} -n {a.n} -r {a.r}, {a.rounds} alternating rounds; ratios to {REFERENCE} (same round)")
    for r, s in summary.items():
        ratio = "" if r == REFERENCE else (f"  pp {s['pp_tok_s_ratio']:.2f}x  tg {s['tg_tok_s_ratio']:.2f}x "
                                           f"(CI {s['tg_ci'][0]:.2f}-{s['tg_ci'][1]:.2f})  TTFT {s['ttft_speedup']:.2f}x")
        print(f"{r:18s} pp {s['pp_tok_s']:9.1f} tok/s  tg {s['tg_tok_s']:7.2f} tok/s  TTFT {s['ttft_s']:.3f} s{ratio}")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"rounds": rounds, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
