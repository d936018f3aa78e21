#!/usr/bin/env python3
"""`edgekit plan` against `edgekit bench` on this machine, for the presets that fit.

For each preset (default: small-qwen2, r1-distill-qwen-1.5b) and quant (Q4_K_M, Q8_0): export
the synthesized checkpoint (cached in --work), bench it here, then plan the same checkpoint for
`--target local` (this host's RAM and its measured copy bandwidth) twice: uncalibrated (the
default efficiency) and calibrated on the measured results (leave-one-out: each artifact's
prediction uses the other artifacts' efficiency). Prints predicted / measured tg per artifact, and
the weights the plan predicts against the file's tensor bytes (exact: llama.cpp's dry run).

    python benchmarks/plan_vs_measured.py
    python benchmarks/plan_vs_measured.py --preset small-qwen2 --quant Q4_K_M
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from common import cached_export, edgekit_exe


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", help="repeatable (default: small-qwen2, r1-distill-qwen-1.5b)")
    ap.add_argument("--quant", action="append", help="repeatable (default: Q4_K_M, Q8_0)")
    ap.add_argument("-p", type=int, default=128)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--work", default="bench-work")
    args = ap.parse_args()
    work = Path(args.work)
    presets = args.preset or ["small-qwen2", "r1-distill-qwen-1.5b"]
    quants = args.quant or ["Q4_K_M", "Q8_0"]
    results = work / "plan-results"
    runs = []
    for preset in presets:
        for quant in quants:
            gguf = cached_export(work, preset, "gguf", quant)
            out = results / f"{preset}-{quant}" / "result.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([edgekit_exe(), "bench", str(gguf), "-p", str(args.p), "-n", str(args.n), "-r", str(args.r),
                            "--power", "none", "-o", str(out)], check=True, stdout=subprocess.DEVNULL)
            runs.append((preset, quant, gguf, out))
    from edgekit.plan import Calibration, plan, resolve_models, resolve_targets
    from edgekit.results import BenchResult

    (target,) = resolve_targets("local")
    loaded = [(p, q, g, BenchResult.load(o)) for p, q, g, o in runs]
    print(f"target: {target.name}, {target.bandwidth_gb_s:.1f} GB/s ({target.bandwidth_source})")
    print(f"{'artifact':40} {'weights pred/file':>18} {'tg measured':>12} {'pred/meas (default)':>20} "
          f"{'pred/meas (calibrated)':>23}")
    import gguf as gg

    for preset, quant, gguf, r in loaded:
        tensors = sum(int(t.n_bytes) for t in gg.GGUFReader(gguf).tensors)
        model = resolve_models(str(work / preset))  # the checkpoint cached_export synthesized
        others = [x for _, _, _, x in loaded if x is not r and x.roofline and x.roofline.efficiency]
        cal = Calibration()
        if others:
            cal.efficiency[(target.name, "llama.cpp")] = statistics.median(x.roofline.efficiency for x in others)
            cal.n[(target.name, "llama.cpp")] = len(others)
        (default_row,) = plan(model, [target], [quant], ctx=args.n)
        (cal_row,) = plan(model, [target], [quant], ctx=args.n, cal=cal)
        measured = r.metrics.tg_tok_s.mean
        print(f"{gguf.name:40} {default_row.weights_bytes / tensors:18.4f} {measured:12.1f} "
              f"{(default_row.tg_tok_s or 0) / measured:20.2f} {(cal_row.tg_tok_s or 0) / measured:23.2f}")
    print(json.dumps({"target": target.name, "bandwidth_gb_s": target.bandwidth_gb_s}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
