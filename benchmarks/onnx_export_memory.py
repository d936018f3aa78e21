#!/usr/bin/env python3
"""How much RAM an ONNX export of a big preset needs, measured on slices of it that fit.

The ONNX path traces the whole model in torch (optimum-onnx), so its peak grows with the
weights. A preset too big for this machine (r1-distill-qwen-7b on 24 GB) cannot be
measured whole; its geometry can. For each --layers count this synthesizes the preset
with only that many decoder layers (same hidden size, MLP, heads and 152k vocabulary,
so embeddings and lm_head are full size), runs

    edgekit export onnx CKPT --precision P --no-verify --no-memory-check

and records the peak RSS of the export (the largest process of it: the torch-trace child,
or the INT4 quantizer), fits peak = base + per_layer x layers by least squares, and
prints the prediction for the full layer count next to edgekit's up-front estimate
(`export_memory_bytes`, what `edgekit export onnx` refuses on) and this machine's
available memory. Measure slices whose export passes 2 GB: below that the exporter keeps
the whole model inline in one protobuf and peaks differently (the 1-layer slice of the
1.5B preset: a 2.05 GB inline FP32 model, an 8.5 GB peak, above the 2-layer slice's).

    python benchmarks/onnx_export_memory.py                               # 7B, 1 and 2 layers, fp16 and int4
    python benchmarks/onnx_export_memory.py --layers 1,2,4 --precisions fp16
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

from common import edgekit_exe, run_measured


def synthesize_slice(preset_name: str, layers: int, out: Path) -> None:
    from edgekit import synth

    base = synth.get_preset(preset_name)
    name = out.name
    synth.PRESETS[name] = synth.Preset(name, base.family, {**base.config, "num_hidden_layers": layers},
                                       base.tokenizer_vocab)
    synth.synthesize(name, out, force=True)


def sliced_checkpoint(work: Path, preset_name: str, layers: int) -> Path:
    """The preset with `layers` decoder layers, synthesized once into the work folder, in a child
    process: Linux carries a parent's peak RSS into the ru_maxrss of every child started after it."""
    out = work / f"{preset_name}-{layers}layers"
    if not (out / "config.json").exists():
        subprocess.run([sys.executable, __file__, "--synth-slice", preset_name, str(layers), str(out)], check=True)
    return out


def fit_line(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """Least-squares base + slope * x (exact through two points)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def main() -> None:
    if sys.argv[1:2] == ["--synth-slice"]:
        synthesize_slice(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="r1-distill-qwen-7b")
    ap.add_argument("--layers", default="1,2", help="layer counts to measure (at least two)")
    ap.add_argument("--precisions", default="fp16,int4")
    ap.add_argument("--work", default="bench-work")
    ap.add_argument("--json", dest="json_out", help="write the measurements and predictions here")
    args = ap.parse_args()

    from edgekit.converters.onnx import export_memory_bytes
    from edgekit.synth import get_preset, tensor_shapes
    from edgekit.targets.host import parse_meminfo_bytes

    layers = sorted({int(x) for x in args.layers.split(",")})
    if len(layers) < 2:
        sys.exit("--layers needs at least two counts to fit a line")
    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    config = dict(get_preset(args.preset).config)
    full_layers = int(config["num_hidden_layers"])
    if config.get("vocab_size") is None:
        sys.exit(f"{args.preset} has no fixed vocabulary size; pick one of the R1-Distill presets")
    n_params = sum(math.prod(s) for s in tensor_shapes(config).values())

    edgekit = edgekit_exe()
    peaks: dict[str, dict[int, float]] = {p: {} for p in args.precisions.split(",")}
    for n_layers in layers:
        ckpt = sliced_checkpoint(work, args.preset, n_layers)
        for precision in peaks:
            out = work / f"{ckpt.name}-onnx-{precision}"
            wall, rss = run_measured([edgekit, "export", "onnx", str(ckpt), "-o", str(out), "--precision",
                                      precision, "--no-verify", "--no-memory-check", "--force"],
                                     work / "onnx_export_memory.log")
            peaks[precision][n_layers] = rss / 1e9
            print(f"{ckpt.name} {precision}: peak RSS {rss / 1e9:.2f} GB, {wall:.0f} s", flush=True)
            shutil.rmtree(out, ignore_errors=True)

    try:
        avail = parse_meminfo_bytes(Path("/proc/meminfo").read_text(), "MemAvailable") or 0
    except OSError:
        avail = 0
    summary = {"preset": args.preset, "n_params": n_params, "full_layers": full_layers,
               "available_gb": round(avail / 1e9, 1), "precisions": {}}
    print(f"\n{args.preset}: {n_params / 1e9:.2f}B parameters, {full_layers} layers; "
          f"this machine has {avail / 1e9:.1f} GB available")
    for precision, by_layers in peaks.items():
        base, per_layer = fit_line(list(by_layers), list(by_layers.values()))
        predicted = base + per_layer * full_layers
        estimate = export_memory_bytes(n_params, precision) / 1e9
        fits = predicted * 1e9 < avail
        summary["precisions"][precision] = {
            "measured_gb": {str(k): round(v, 2) for k, v in by_layers.items()}, "base_gb": round(base, 2),
            "per_layer_gb": round(per_layer, 3), "predicted_gb": round(predicted, 1),
            "edgekit_estimate_gb": round(estimate, 1), "fits_here": fits}
        print(f"  {precision}: {base:.2f} GB + {per_layer:.3f} GB/layer -> {predicted:.1f} GB at {full_layers} layers "
              f"(edgekit's up-front estimate {estimate:.1f} GB, ratio {predicted / estimate:.2f}); "
              f"{'fits' if fits else 'does not fit'} here")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
