#!/usr/bin/env python3
"""Peak RAM and time of whole-model ONNX exports: edgekit's streamed export at 1.5B, 7B and 8B,
against references run in the same job.

For every preset (synthesized once into --work: exact R1-Distill shapes, random weights) and
precision this runs

    edgekit export onnx CKPT -o OUT --precision P --no-verify            (--method stream, the default)

(with --checks: without --no-verify, so with its default checks) and records its wall time and its
peak memory: the RSS of all its processes summed, sampled every
0.1 s (the template's trace runs in a child), and the kernel's ru_maxrss of its largest process.
With --generate the export is then loaded by ONNX Runtime and generates (`edgekit bench OUT -p 8
-n 4 -r 1`): the folder must work, not only exist. The goal is printed against --budget-gb (8).

The references, in the same job and on the same machine:
- --trace PRESET: the traced export (`--method trace`, optimum-onnx over the whole model) of that
  preset: the streamed export's time and peak as ratios of it ("no slower" is time ratio <= 1);
- --genai PRESETS: onnxruntime-genai's model builder (`python -m onnxruntime_genai.models.builder
  -i CKPT -o OUT -p P -e cpu`) on the same checkpoints. It loads the whole model; a preset it
  cannot fit in this machine is recorded as what killed it.

    python benchmarks/onnx_export_memory.py                                  # 1.5B, 7B, 8B; int4, fp16
    python benchmarks/onnx_export_memory.py --presets r1-distill-qwen-7b --precisions int4 --generate
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from common import CommandFailed, edgekit_exe, run_measured_tree

DEFAULT_PRESETS = "r1-distill-qwen-1.5b,r1-distill-qwen-7b,r1-distill-llama-8b"


def checkpoint(work: Path, preset: str) -> Path:
    out = work / preset
    if not (out / "config.json").exists():
        subprocess.run([edgekit_exe(), "synth", preset, str(out)], check=True)
    return out


def measure(cmd: list[str], log: Path) -> dict:
    """Run one export; its wall time and peaks, or how it died (the benchmark goes on)."""
    try:
        wall, largest, total = run_measured_tree(cmd, log)
    except CommandFailed as e:  # killed (the OOM killer: -9) or failed: how far it got
        wall, largest, total = e.measured
        return {"failed": str(e).split(",")[0], "after_s": round(wall, 1),
                "peak_rss_gb": round(max(total, largest) / 1e9, 2)}
    return {"wall_s": round(wall, 1), "peak_rss_gb": round(max(total, largest) / 1e9, 2),
            "largest_process_gb": round(largest / 1e9, 2)}


def generates(out: Path, log: Path) -> bool:
    """The export loads in ONNX Runtime (edgekit's runner, CPU) and generates 4 tokens. ONNX Runtime's
    CPU provider computes FP16 MatMuls in FP32 and holds an FP32 copy of their weights: an FP16
    export of more than about a third of this machine's RAM is killed, whatever the export."""
    res = subprocess.run([edgekit_exe(), "bench", str(out), "-p", "8", "-n", "4", "-r", "1", "--json",
                          "--power", "none"], capture_output=True, text=True)
    with open(log, "a") as f:
        f.write(res.stdout + res.stderr)
    if res.returncode != 0:
        return False
    samples = json.loads(res.stdout).get("metrics", {}).get("tg_tok_s", {}).get("samples", [])
    return bool(samples) and all(x > 0 for x in samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default=DEFAULT_PRESETS)
    ap.add_argument("--precisions", default="int4,fp16")
    ap.add_argument("--trace", default="r1-distill-qwen-1.5b", help="preset whose traced export is the reference "
                    "('' for none)")
    ap.add_argument("--genai", default="r1-distill-qwen-1.5b,r1-distill-qwen-7b",
                    help="presets onnxruntime-genai's builder exports too ('' for none)")
    ap.add_argument("--tools", default="stream,trace,genai",
                    help="which exports to run: stream (edgekit's default), trace, genai")
    ap.add_argument("--generate", action="store_true", help="load each streamed export in ONNX Runtime and generate")
    ap.add_argument("--checks", action="store_true",
                    help="run the exports with their default checks (no --no-verify): above 3B, the check on a slice")
    ap.add_argument("--budget-gb", type=float, default=8.0)
    ap.add_argument("--work", default="bench-work")
    ap.add_argument("--keep", action="store_true", help="keep the exports (they are large)")
    ap.add_argument("--json", dest="json_out", help="write the measurements here")
    args = ap.parse_args()

    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "onnx_export_memory.log"
    edgekit = edgekit_exe()
    precisions = [p for p in args.precisions.split(",") if p]
    rows: list[dict] = []

    def run(tool: str, preset: str, precision: str, cmd: list[str], out: Path, check: bool = False) -> dict:
        shutil.rmtree(out, ignore_errors=True)
        row = {"tool": tool, "preset": preset, "precision": precision, **measure(cmd, log)}
        if check and "failed" not in row:
            row["generates"] = generates(out, log)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    for preset in [p for p in args.presets.split(",") if p]:
        ckpt = checkpoint(work, preset)
        for precision in precisions:
            out = work / f"{preset}-onnx-{precision}"
            base = [edgekit, "export", "onnx", str(ckpt), "-o", str(out), "--precision", precision, "--force",
                    *([] if args.checks else ["--no-verify"])]
            tools = args.tools.split(",")
            if "stream" in tools:
                run("edgekit stream", preset, precision, base, out, check=args.generate)
            if preset == args.trace and "trace" in tools:
                run("edgekit trace", preset, precision, base + ["--method", "trace", "--no-memory-check"], out)
            if preset in args.genai.split(",") and "genai" in tools:
                run("genai builder", preset, precision,
                    [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(ckpt), "-o", str(out),
                     "-p", precision, "-e", "cpu", "-c", str(work / "genai-cache")], out)

    print(f"\n{'tool':16} {'preset':22} {'prec':5} {'wall s':>8} {'peak GB':>8}  notes")
    for r in rows:
        notes = r.get("failed", "")
        if r["tool"] == "edgekit stream" and "peak_rss_gb" in r:
            notes = f"{'within' if r['peak_rss_gb'] <= args.budget_gb else 'OVER'} the {args.budget_gb:g} GB budget"
            if "generates" in r:
                notes += "; generates" if r["generates"] else "; DOES NOT GENERATE"
            for tool, label in (("edgekit trace", "vs trace"), ("genai builder", "vs genai's builder")):
                ref = next((x for x in rows if x["tool"] == tool and x["preset"] == r["preset"]
                            and x["precision"] == r["precision"] and "wall_s" in x), None)
                if ref:
                    notes += (f"; {label}: time ratio {r['wall_s'] / ref['wall_s']:.2f}"
                              + (" (goal <= 1)" if tool == "edgekit trace" else "")
                              + f", peak ratio {r['peak_rss_gb'] / ref['peak_rss_gb']:.2f}")
        print(f"{r['tool']:16} {r['preset']:22} {r['precision']:5} {r.get('wall_s', '-'):>8} "
              f"{r.get('peak_rss_gb', '-'):>8}  {notes}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"budget_gb": args.budget_gb, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
