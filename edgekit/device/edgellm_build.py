"""Building a TensorRT Edge-LLM engine on the device it will run on, with that device's
`llm_build` (of the release that exported the ONNX), and keeping it there: the same cache as
trtexec builds (edgekit.device.tensorrt_build.build_cached), keyed by the ONNX's sha256, the
precision, the input and KV-cache limits and the llm_build binary itself.

Contract:
- `build_with_llm_build(llm_build, onnx_dir, cache, ...)`: the cached build's facts, or a new
  build: llm_build's output to build.log (each line also to `on_line`), its TensorRT version and
  success read by edgekit.edgellm.parse_llm_build_log, llm.engine checked to exist, the engine
  folder (llm.engine, config.json and what llm_build copies beside it) at cache/<key>/engine/.
  The GPU is named from nvidia-smi where it answers, else the board's device-tree model.
- `python -m edgekit.device.edgellm_build ONNX CACHE REQUEST_JSON` (ONNX: model.onnx or its folder) (how `export tensorrt
  --engine edgellm --on` runs it): REQUEST_JSON holds onnx_sha256, precision, max_input_len,
  max_kv_cache, timeout_s. llm_build's lines go to stdout prefixed `llm_build: `; the last line is
  `result <facts.json>`; errors as tensorrt_build's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from edgekit.child import run_logged
from edgekit.device.tensorrt_build import LOG_FILE, build_cached, builder_identity, gpu_facts, serve
from edgekit.edgellm import llm_build_command, parse_llm_build_log
from edgekit.errors import EdgekitError
from edgekit.tensorrt_tools import find_tool

ENGINE_DIR = "engine"
ENGINE_FILE = "llm.engine"
LINE_PREFIX = "llm_build: "


def build_key(onnx_sha256: str, precision: str, max_input_len: int, max_kv_cache: int, identity: str) -> str:
    text = json.dumps({"engine": "edgellm", "onnx": onnx_sha256, "precision": precision,
                       "max_input_len": max_input_len, "max_kv_cache": max_kv_cache, "builder": identity},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def build_with_llm_build(llm_build: str, onnx_dir: Path, cache: Path, *, onnx_sha256: str, precision: str,
                         max_input_len: int, max_kv_cache: int, timeout_s: float | None = None,
                         on_line: Callable[[str], None] | None = None) -> dict:
    key = build_key(onnx_sha256, precision, max_input_len, max_kv_cache, builder_identity(llm_build))

    def build(tmp: Path, failed_log: Path) -> dict:
        argv = llm_build_command(llm_build, str(onnx_dir), str(tmp / ENGINE_DIR), max_input_len=max_input_len,
                                 max_kv_cache=max_kv_cache)
        t0 = time.monotonic()
        rc, timed_out = run_logged(argv, tmp / LOG_FILE, timeout_s, on_line)
        seconds = time.monotonic() - t0
        facts = parse_llm_build_log((tmp / LOG_FILE).read_text(encoding="utf-8", errors="replace"))
        engine = tmp / ENGINE_DIR / ENGINE_FILE
        if timed_out or rc != 0 or not facts.succeeded or not engine.is_file() or engine.stat().st_size == 0:
            shutil.copyfile(tmp / LOG_FILE, failed_log)
            if timed_out:
                raise EdgekitError(f"llm_build did not build the engine within {timeout_s:.0f} s (log: {failed_log})",
                                   "raise the build timeout, or lower --max-context / --max-prompt")
            lines = (tmp / LOG_FILE).read_text(encoding="utf-8", errors="replace").splitlines()
            why = next((ln for ln in lines if "[ERROR]" in ln), f"exit {rc}" + ("" if engine.is_file() else
                                                                                ", no llm.engine"))
            raise EdgekitError(f"llm_build could not build the engine: {why[:300]} (log: {failed_log})",
                               "read the log; use the llm_build of the Edge-LLM release that exported the ONNX")
        device, capability = gpu_facts()
        return {"engine": f"{ENGINE_DIR}/{ENGINE_FILE}", "builder": "llm_build", "llm_build": llm_build,
                "tensorrt_version": facts.tensorrt_version, "device": device, "compute_capability": capability,
                "precision": precision, "onnx_sha256": onnx_sha256, "max_input_len": max_input_len,
                "max_kv_cache": max_kv_cache, "build_s": round(seconds, 3), "argv": argv}

    return build_cached(cache, key, build)


def main(argv: list[str]) -> int:
    def build(llm_build, onnx, cache, request, on_line):  # the deployed model.onnx: its folder is the ONNX dir
        return build_with_llm_build(llm_build, onnx.parent if onnx.is_file() else onnx, cache, onnx_sha256=request["onnx_sha256"],
                                    precision=request["precision"], max_input_len=int(request["max_input_len"]),
                                    max_kv_cache=int(request["max_kv_cache"]), timeout_s=request.get("timeout_s"),
                                    on_line=on_line)

    return serve(argv, "python -m edgekit.device.edgellm_build ONNX_DIR CACHE REQUEST_JSON",
                 lambda: find_tool("llm_build"),
                 "this device has no llm_build (TensorRT Edge-LLM's builder: on PATH, EDGEKIT_LLM_BUILD or "
                 "~/TensorRT-Edge-LLM/build/examples/llm/); build Edge-LLM's C++ examples there (its install guide)",
                 build, LINE_PREFIX)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
