#!/usr/bin/env python3
"""edgekit's GGUF export vs llama.cpp's own convert_hf_to_gguf.py + quantize, same job.

For each preset: synthesize the checkpoint (cached), then
  edgekit:   `edgekit export gguf CKPT --quant Q4_K_M --no-verify`   (convert + quantize)
  llama.cpp: `convert_hf_to_gguf.py CKPT --outtype f16`, then the same
             llama_model_quantize call (llama.cpp's quantizer, through llama-cpp-python)
and print wall time, peak RSS (of each child process, from wait4), their ratios,
and whether both Q4_K_M files hold byte-identical tensors and give the same logits.

llama.cpp's converter comes from the llama-cpp-python sdist of the pinned version
(edgekit.llamacpp_build: the one `make install` keeps), extracted into the work folder. Its
tokenizer check hashes the encoding of a fixed string against a list of known models; a
synthetic tokenizer is on no list, so the reference run is told the pre-tokenizer name
edgekit identified (that is the only change; it costs no time).

Goals from the issue: time ratio (edgekit / llama.cpp) <= 1.0, 7B peak RSS <= 4 GB.

    python benchmarks/convert_vs_llamacpp.py --presets r1-distill-qwen-1.5b,r1-distill-qwen-7b
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from common import edgekit_exe, llama_cpp_tree, run_measured

from edgekit.llamacpp_build import reference_convert_command

QUANT_RUNNER = """
import ctypes, sys, llama_cpp, gguf
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = int(gguf.LlamaFileType["MOSTLY_" + sys.argv[3]])
p.nthread = int(sys.argv[4])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))
"""


TENSOR_DIGESTS = """
import hashlib, json, sys
from gguf import GGUFReader
print(json.dumps({t.name: [int(t.tensor_type), hashlib.sha256(t.data.data).hexdigest()]
                  for t in GGUFReader(sys.argv[1]).tensors}))
"""


def tensors_identical(a: Path, b: Path) -> tuple[int, int]:
    """Tensors with the same type and bytes in both files, counted in child processes.

    Reading two multi-GB files here would raise this process's RSS, and Linux carries a
    parent's peak RSS into the ru_maxrss of every child it starts afterwards.
    """
    def digests(path):
        out = subprocess.run([sys.executable, "-c", TENSOR_DIGESTS, str(path)], check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out)

    da, db = digests(a), digests(b)
    same = sum(1 for name, d in da.items() if db.get(name) == d)
    return same, max(len(da), len(db))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="r1-distill-qwen-1.5b,r1-distill-qwen-7b")
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", default="bench-work", help="cache folder for checkpoints and llama.cpp's source")
    ap.add_argument("--llama-cpp-src", help="an extracted llama.cpp tree (default: from the matching sdist)")
    ap.add_argument("--keep", action="store_true", help="keep the GGUF outputs")
    ap.add_argument("--json", dest="json_out", help="also write the results here")
    args = ap.parse_args()

    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    src = llama_cpp_tree(work, args.llama_cpp_src)
    edgekit = edgekit_exe()
    results = []
    for preset in args.presets.split(","):
        ckpt = work / preset
        if not (ckpt / "config.json").exists():
            print(f"synthesizing {preset} ...", flush=True)
            subprocess.run([edgekit, "synth", preset, str(ckpt)], check=True)
        log = work / f"{preset}.log"
        log.unlink(missing_ok=True)
        from edgekit.converters.gguf_vocab import identify_pre
        from edgekit.hf_schema import read_tokenizer_json

        pre = identify_pre(read_tokenizer_json(ckpt))

        ek_out = work / f"{preset}-edgekit"
        ek_s, ek_rss = run_measured([edgekit, "export", "gguf", str(ckpt), "-o", str(ek_out), "--quant", args.quant,
                                     "--no-verify", "--threads", str(args.threads), "--force"], log)
        ek_file = next(ek_out.glob(f"*-{args.quant}.gguf"))

        ref_dir = work / f"{preset}-llamacpp"
        shutil.rmtree(ref_dir, ignore_errors=True)
        ref_dir.mkdir()
        ref_f16, ref_q = ref_dir / "F16.gguf", ref_dir / f"{args.quant}.gguf"
        conv_s, conv_rss = run_measured(reference_convert_command(src, ckpt, ref_f16, pre), log)
        q_s, q_rss = run_measured([sys.executable, "-c", QUANT_RUNNER, str(ref_f16), str(ref_q), args.quant,
                                   str(args.threads)], log)
        same, total = tensors_identical(ek_file, ref_q)
        row = {
            "preset": preset, "quant": args.quant, "threads": args.threads,
            "edgekit_s": round(ek_s, 1), "llamacpp_s": round(conv_s + q_s, 1),
            "llamacpp_convert_s": round(conv_s, 1), "llamacpp_quantize_s": round(q_s, 1),
            "time_ratio": round(ek_s / (conv_s + q_s), 3),
            "edgekit_peak_rss_gb": round(ek_rss / 1e9, 2), "llamacpp_peak_rss_gb": round(max(conv_rss, q_rss) / 1e9, 2),
            "llamacpp_convert_peak_rss_gb": round(conv_rss / 1e9, 2),
            "rss_ratio": round(ek_rss / max(conv_rss, q_rss), 3),
            "identical_tensors": f"{same}/{total}",
        }
        if same != total:  # only then are logits worth comparing: identical tensors give identical logits
            from edgekit import parity

            ids = parity.probe_ids(ckpt)
            a = parity.llamacpp_logits(ek_file, ids, args.threads)
            b = parity.llamacpp_logits(ref_q, ids, args.threads)
            row["max_abs_logit_diff"] = float(abs(a - b).max())
        results.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(ek_out, ignore_errors=True)
            shutil.rmtree(ref_dir, ignore_errors=True)

    print()
    print(f"{'preset':24s} {'edgekit s':>10s} {'llama.cpp s':>12s} {'ratio':>6s} "
          f"{'edgekit RSS':>12s} {'llama.cpp RSS':>14s} {'tensors equal':>14s}")
    for r in results:
        print(f"{r['preset']:24s} {r['edgekit_s']:10.1f} {r['llamacpp_s']:12.1f} {r['time_ratio']:6.2f} "
              f"{r['edgekit_peak_rss_gb']:10.2f}GB {r['llamacpp_peak_rss_gb']:12.2f}GB {r['identical_tensors']:>14s}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
