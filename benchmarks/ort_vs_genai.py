#!/usr/bin/env python3
"""edgekit's ONNX Runtime runner vs onnxruntime-genai's Generator on the same INT4 model, same job.

Both get the same random prompt of -p tokens and then pick -n tokens greedily (n picks,
n-1 decode steps each), with the same intra-op threads, each after one untimed warm-up,
each in a fresh process of its own (in one process genai's ONNX Runtime environment keeps
threads that slow the other side down: measured), over --rounds rounds in alternating
order so that drift in the machine hits both. Printed: pp and tg tok/s of each and the ratios
edgekit / genai (median over rounds; goal >= 1.0). Then `edgekit bench` of the ONNX INT4
folder against `edgekit bench` of a GGUF Q4_K_M of the same checkpoint: which runtime
wins on this machine.

    python benchmarks/ort_vs_genai.py                         # r1-distill-qwen-1.5b, INT4 and Q4_K_M
    python benchmarks/ort_vs_genai.py --onnx DIR --gguf FILE  # your own exports
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import add_run_args, cached_export, edgekit_exe


def run_genai(folder: Path, prompt: list[int], n: int, threads: int) -> tuple[float, float, list[int]]:
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    params = og.GeneratorParams(model)
    # max_length sizes genai's buffers: without it they are sized for the whole context
    params.set_search_options(max_length=len(prompt) + n, do_sample=False)
    timings = []
    for _warm in range(2):
        gen = og.Generator(model, params)
        t0 = time.perf_counter()
        gen.append_tokens(np.asarray(prompt, dtype=np.int32))
        t1 = time.perf_counter()
        out = []
        for _ in range(n):
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
        t2 = time.perf_counter()
        timings.append((t1 - t0, t2 - t1))
        del gen
    pp_s, tg_s = timings[-1]
    return pp_s, tg_s, out


def run_edgekit(folder: Path, prompt: list[int], n: int, threads: int) -> tuple[float, float, list[int]]:
    from edgekit.runners.onnxruntime import OrtRunner

    with OrtRunner(folder, threads=threads) as runner:
        timings = []
        for _warm in range(2):
            t0 = time.perf_counter()
            logits, cache, pos = runner.run(np.asarray(prompt, dtype=np.int64))
            t1 = time.perf_counter()
            out = runner.continue_greedy(logits, cache, pos, n)
            t2 = time.perf_counter()
            timings.append((t1 - t0, t2 - t1))
    pp_s, tg_s = timings[-1]
    return pp_s, tg_s, out


def run_side(side: str, folder: Path, prompt: list[int], n: int, threads: int) -> dict:
    """One side in a fresh interpreter (this script with --side), so neither shares a process with the other.
    Returns pp_s, tg_s, the greedy tokens and the process's peak RSS (VmHWM: load, prompt and decode)."""
    cmd = [sys.executable, __file__, "--side", side, "--onnx", str(folder), "-n", str(n), "--threads", str(threads),
           "--prompt", ",".join(map(str, prompt))]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def main() -> None:
    if "--side" in sys.argv:  # the child: one side, one line of JSON
        ap = argparse.ArgumentParser()
        ap.add_argument("--side", choices=["genai", "edgekit"])
        ap.add_argument("--onnx")
        ap.add_argument("-n", type=int)
        ap.add_argument("--threads", type=int)
        ap.add_argument("--prompt")
        a = ap.parse_args()
        from edgekit.bench import peak_rss_bytes

        fn = run_genai if a.side == "genai" else run_edgekit
        pp_s, tg_s, tokens = fn(Path(a.onnx), [int(t) for t in a.prompt.split(",")], a.n, a.threads)
        print(json.dumps({"pp_s": pp_s, "tg_s": tg_s, "tokens": tokens, "peak_rss_bytes": peak_rss_bytes()}))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", help="ONNX INT4 export folder (default: the preset exported, cached)")
    ap.add_argument("--gguf", help="GGUF Q4_K_M of the same checkpoint (default: the preset exported, cached)")
    add_run_args(ap, p=128, n=64, r=3)
    ap.add_argument("--skip-gguf", action="store_true", help="only edgekit vs genai")
    args = ap.parse_args()

    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    folder = Path(args.onnx) if args.onnx else cached_export(work, args.preset, "onnx", "INT4")
    vocab = json.loads((folder / "genai_config.json").read_text())["model"]["vocab_size"]
    prompt = [int(t) for t in np.random.default_rng(0).integers(0, min(vocab, 2000), size=args.p)]

    rounds = []
    for i in range(args.rounds):
        # who goes first alternates, so drift and page-cache warmth favour neither
        order = ("genai", "edgekit") if i % 2 == 0 else ("edgekit", "genai")
        got = {side: run_side(side, folder, prompt, args.n, args.threads) for side in order}
        r = {"round": i + 1, "same_tokens": got["genai"]["tokens"] == got["edgekit"]["tokens"]}
        for side, v in got.items():
            r[side] = {"pp": args.p / v["pp_s"], "tg": args.n / v["tg_s"], "peak_rss_gb": v["peak_rss_bytes"] / 1e9}
        r["pp_ratio"] = r["edgekit"]["pp"] / r["genai"]["pp"]
        r["tg_ratio"] = r["edgekit"]["tg"] / r["genai"]["tg"]
        rounds.append(r)
        print(json.dumps(r), flush=True)

    med = lambda xs: statistics.median(list(xs))  # noqa: E731
    summary = {"onnx": str(folder), "threads": args.threads, "p": args.p, "n": args.n, "rounds": args.rounds,
               "same_tokens_every_round": all(r["same_tokens"] for r in rounds)}
    for side in ("genai", "edgekit"):
        summary[f"{side}_peak_rss_gb"] = med(r[side]["peak_rss_gb"] for r in rounds)
    for test in ("pp", "tg"):
        summary[f"genai_{test}_tok_s"] = med(r["genai"][test] for r in rounds)
        summary[f"edgekit_{test}_tok_s"] = med(r["edgekit"][test] for r in rounds)
        summary[f"{test}_ratio_median"] = med(r[f"{test}_ratio"] for r in rounds)
    print()
    for test in ("pp", "tg"):
        print(f"{test}{args.p if test == 'pp' else args.n}: onnxruntime-genai {summary[f'genai_{test}_tok_s']:.2f} "
              f"tok/s, edgekit {summary[f'edgekit_{test}_tok_s']:.2f} tok/s, ratio "
              f"{summary[f'{test}_ratio_median']:.3f} (median of {args.rounds}; goal >= 1.0)")
    print(f"peak RSS (load + prompt + decode, median): onnxruntime-genai {summary['genai_peak_rss_gb']:.2f} GB, "
          f"edgekit {summary['edgekit_peak_rss_gb']:.2f} GB")
    print(f"same greedy tokens from both: {summary['same_tokens_every_round']}")

    if not args.skip_gguf:
        gguf = Path(args.gguf) if args.gguf else cached_export(work, args.preset, "gguf", "Q4_K_M")
        edgekit = edgekit_exe()
        common = ["-p", str(args.p), "-n", str(args.n), "-r", str(args.r), "--threads", str(args.threads),
                  "--json", "--power", "none"]
        res = {}
        for name, artifact in (("onnx_int4", folder), ("gguf_q4_k_m", gguf)):
            out = json.loads(subprocess.run([edgekit, "bench", str(artifact), *common], check=True,
                                            capture_output=True, text=True).stdout)
            m = out["metrics"]
            res[name] = {"pp": m["pp_tok_s"]["mean"], "tg": m["tg_tok_s"]["mean"], "ttft_s": m["ttft_s"]["mean"],
                         "peak_rss_bytes": m["peak_rss_bytes"], "size_bytes": out["artifact"]["size_bytes"]}
        summary["runtimes"] = res
        o, g = res["onnx_int4"], res["gguf_q4_k_m"]
        print(f"\nedgekit bench, same checkpoint, {args.threads} threads:")
        print(f"  {'':14}{'pp tok/s':>10}{'tg tok/s':>10}{'TTFT s':>9}{'peak RSS':>11}{'size':>10}")
        for name, v in res.items():
            print(f"  {name:14}{v['pp']:10.2f}{v['tg']:10.2f}{v['ttft_s']:9.3f}{v['peak_rss_bytes'] / 2**30:9.2f}GB"
                  f"{v['size_bytes'] / 2**30:8.2f}GB")
        print(f"  ONNX INT4 / GGUF Q4_K_M: pp {o['pp'] / g['pp']:.3f}, tg {o['tg'] / g['tg']:.3f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
