"""Checkpoint -> TensorRT Edge-LLM's ONNX, on the workstation (CPU only), in an environment of its
own: `tensorrt-edgellm[export]` pins transformers 5, which optimum-onnx 0.1 refuses in edgekit's
venv, so edgekit makes that venv once and keeps it in its cache (like the device wheels).

Contract:
- `exporter_venv(report)`: the venv holding `tensorrt-edgellm-export`: EDGEKIT_EDGELLM_VENV where
  set (a venv the user made), else <cache>/venvs/edgellm-<version>-py<X.Y>, made on first use
  (`python -m venv`, `pip install tensorrt-edgellm[export]==<version>`: a 200 MB cp311 x86-64
  wheel, plus torch and transformers 5) under a temporary name and renamed when the exporter is
  there. The wheel is for CPython 3.11 only: another Python is refused with the fix.
- `export_edgellm_onnx(checkpoint, folder, precision)`: fills `folder` (the caller's temporary
  one) with Edge-LLM's ONNX of the checkpoint and an edgekit manifest.json (format
  "edgellm-onnx", every file with its sha256). fp16: the exporter as it is. int4: an AWQ/GPTQ or
  ModelOpt INT4 checkpoint exports as it is; a dense FP16/BF16 one is quantized first with
  `tensorrt-edgellm-quantize llm --quantization int4_awq --device cpu` (ModelOpt's AWQ search,
  group 128), calibrated offline on edgekit's own text (EDGELLM_QUANT_DATASET_CNN_DAILYMAIL set
  to a JSONL of it: no hub download). Each tool runs as a child that dies with edgekit, its
  output in the folder's export.log.
The quantizer needs ModelOpt and datasets beyond the [export] extra (QUANTIZER_PACKAGES): edgekit
installs them into its venv on the first int4 export.
Measured (docs/tensorrt.md): export of R1-Distill-Qwen-1.5B's shapes 65 s and 5.5 GB peak on 2
cores; the INT4 quantize 4 min 55 s and 8.6 GB with 2 samples; through this module, the venv 69 s
(1.8 GB), the tiny Qwen2 fp16 export 10.8 s and int4 (quantize + export) 37.6 s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Callable

from edgekit.checkpoint import open_checkpoint
from edgekit.child import run_logged
from edgekit.edgellm import EDGELLM_VERSION, export_command
from edgekit.errors import EdgekitError
from edgekit.llamacpp_build import cache_root
from edgekit.manifest import ArtifactFile, ExportManifest, SourceInfo, sha256_of, tool_versions
from edgekit.targets.host import host_facts

Progress = Callable[[str, float, float], None]
VENV_ENV = "EDGEKIT_EDGELLM_VENV"
WHEEL_PYTHON = (3, 11)  # tensorrt-edgellm 0.11.0 ships cp311 wheels only
CALIBRATION_ENV = "EDGELLM_QUANT_DATASET_CNN_DAILYMAIL"
# what tensorrt-edgellm-quantize imports beyond the [export] extra: its [tools] extra's quantization part
# (the whole extra also pins torchvision 0.28, which does not import beside a CPU torch from another index)
QUANTIZER_PACKAGES = ("nvidia-modelopt==0.45.0", "datasets==5.0.0", "einops==0.8.2")
QUANTIZER_MODULES = ("modelopt", "datasets", "einops")
MAIN = "model.onnx"
LOG = "export.log"


def _has_exporter(venv: Path) -> bool:
    return os.access(Path(venv) / "bin" / "tensorrt-edgellm-export", os.X_OK)


def _wheel_python() -> str:
    if sys.version_info[:2] == WHEEL_PYTHON:
        return sys.executable
    name = "python%d.%d" % WHEEL_PYTHON
    found = shutil.which(name)
    if found:
        return found
    raise EdgekitError(f"TensorRT Edge-LLM {EDGELLM_VERSION}'s exporter is built for Python 3.11 only, and this "
                       f"machine has no {name}", f"install Python 3.11, or make a venv with tensorrt-edgellm[export]=="
                       f"{EDGELLM_VERSION} yourself and point {VENV_ENV} at it")


def exporter_venv(report: Progress | None = None) -> Path:
    given = os.environ.get(VENV_ENV)
    if given:
        if not _has_exporter(Path(given)):
            raise EdgekitError(f"{VENV_ENV}={given} has no bin/tensorrt-edgellm-export",
                               f"pip install 'tensorrt-edgellm[export]=={EDGELLM_VERSION}' into it, or unset {VENV_ENV}")
        return Path(given)
    final = cache_root() / "venvs" / ("edgellm-%s-py%d.%d" % (EDGELLM_VERSION, *WHEEL_PYTHON))
    if _has_exporter(final):
        return final
    python = _wheel_python()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.making-"))
    log = final.parent / f"{final.name}-install.log"
    try:
        if report:
            report(f"edgellm: making its exporter's venv ({final})", 0, 1)
        steps = ([python, "-m", "venv", str(tmp)],
                 [str(tmp / "bin" / "python"), "-m", "pip", "install", f"tensorrt-edgellm[export]=={EDGELLM_VERSION}"])
        for argv in steps:
            rc, _ = run_logged(argv, log, 3600)
            if rc != 0:
                raise EdgekitError(f"could not install TensorRT Edge-LLM's exporter ({' '.join(argv[-2:])}: exit {rc}; "
                                   f"log: {log})", "read the log; it needs PyPI (or a local index) and ~3 GB of disk")
        # its scripts' #! lines name the temporary path: edgekit runs them through the venv's python instead
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not _has_exporter(final):
        raise EdgekitError(f"the exporter's venv {final} has no tensorrt-edgellm-export", f"remove it and retry (log: {log})")
    if report:
        report(f"edgellm: making its exporter's venv ({final})", 1, 1)
    return final


def quantizer_ready(venv: Path, report: Progress | None = None) -> None:
    """The quantizer's own packages in the exporter's venv: installed there on first use when the venv
    is edgekit's; a venv the user gave is never changed (an EdgekitError names what to install)."""
    python = str(Path(venv) / "bin" / "python")
    probe = subprocess.run([python, "-c", "import " + ", ".join(QUANTIZER_MODULES)], capture_output=True, text=True,
                           timeout=300, check=False)
    if probe.returncode == 0:
        return
    if os.environ.get(VENV_ENV):
        raise EdgekitError(f"{VENV_ENV}={venv} lacks what tensorrt-edgellm-quantize imports "
                           f"({', '.join(QUANTIZER_MODULES)})", f"{python} -m pip install {' '.join(QUANTIZER_PACKAGES)}")
    log = Path(venv).parent / f"{Path(venv).name}-quantizer-install.log"
    if report:
        report("edgellm: installing its quantizer's packages (ModelOpt)", 0, 1)
    rc, _ = run_logged([python, "-m", "pip", "install", *QUANTIZER_PACKAGES], log, 3600)
    if rc != 0:
        raise EdgekitError(f"could not install the INT4 quantizer's packages (exit {rc}; log: {log})",
                           "read the log; it needs PyPI (or a local index)")


def _tool(venv: Path, name: str) -> list[str]:
    """A venv console script, run by the venv's python (so a moved venv's #! line never matters)."""
    return [str(Path(venv) / "bin" / "python"), str(Path(venv) / "bin" / name)]


def is_int4_checkpoint(config: dict, folder: Path) -> bool:
    """An AWQ/GPTQ checkpoint (config.json's quantization_config) or a ModelOpt one (hf_quant_config.json)."""
    q = config.get("quantization_config") or {}
    method = str(q.get("quant_method") or q.get("quant_algo") or "").lower()
    return method in ("awq", "gptq") or (Path(folder) / "hf_quant_config.json").is_file()


def calibration_jsonl(path: Path, n: int = 64, chars: int = 2000) -> Path:
    """edgekit's own calibration text (the corpus eval reads) as the JSONL of {"article": ...} that
    Edge-LLM's calibration loader takes in place of CNN/DailyMail."""
    raw = resources.files("edgekit").joinpath("data/pride_and_prejudice.txt").read_text(encoding="utf-8")
    text = "\n".join(ln for ln in raw.splitlines() if not ln.startswith("#"))
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            piece = text[(i * chars) % max(1, len(text) - chars):][:chars]
            f.write(json.dumps({"article": piece}) + "\n")
    return path


def _run(argv: list[str], log: Path, what: str, timeout_s: float, env: dict | None = None) -> None:
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        rc, timed_out = run_logged(argv, log, timeout_s)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if rc != 0 or timed_out:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise EdgekitError(f"{what} failed (exit {rc}{', timed out' if timed_out else ''}): "
                           f"{(lines or ['no output'])[-1][:240]}", f"read its log: {log}")


def export_edgellm_onnx(checkpoint: str, folder: Path, precision: str, *, num_samples: int = 32,
                        timeout_s: float = 6 * 3600, report: Progress | None = None) -> ExportManifest:
    t0 = time.perf_counter()
    if precision not in ("fp16", "int4"):
        raise EdgekitError(f"Edge-LLM engines here are fp16 or int4, not {precision}", "pass --precision fp16|int4")
    ckpt = open_checkpoint(checkpoint)
    venv = exporter_venv(report)
    folder = Path(folder)
    work = folder / ".work"
    work.mkdir(parents=True)
    log = folder / LOG
    source = str(ckpt.path)
    if precision == "int4" and not is_int4_checkpoint(ckpt.config, ckpt.path):
        quantizer_ready(venv, report)
        if report:
            report("edgellm: INT4 AWQ quantization on the CPU (minutes)", 0, 1)
        _run([*_tool(venv, "tensorrt-edgellm-quantize"), "llm", "--model_dir", source, "--output_dir",
              str(work / "int4"), "--quantization", "int4_awq", "--device", "cpu", "--num_samples", str(num_samples)],
             work / "quantize.log", "tensorrt-edgellm-quantize", timeout_s,
             {CALIBRATION_ENV: str(calibration_jsonl(work / "calibration.jsonl"))})
        source = str(work / "int4")
    if report:
        report(f"edgellm: exporting {precision} ONNX", 0, 1)
    argv = export_command(str(venv), source, str(work / "onnx"))
    _run([str(Path(venv) / "bin" / "python"), *argv], log, "tensorrt-edgellm-export", timeout_s)
    llm = work / "onnx" / "llm"
    if not (llm / MAIN).is_file() or not (llm / "config.json").is_file():
        raise EdgekitError(f"tensorrt-edgellm-export wrote no llm/{MAIN} and config.json", f"read its log: {log}")
    for p in sorted(llm.iterdir()):
        if p.is_file():
            shutil.move(str(p), folder / p.name)
    shutil.rmtree(work)
    quant = "INT4" if precision == "int4" else "FP16"
    names = [MAIN, *sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in (MAIN, LOG))]
    files = [ArtifactFile(file=n, format="edgellm-onnx", quant=quant, size_bytes=(folder / n).stat().st_size,
                          sha256=sha256_of(folder / n), seconds=0.0) for n in names]
    cfg = ckpt.config
    version = _exporter_version(venv, folder / "config.json")
    manifest = ExportManifest(
        format="edgellm-onnx",
        source=SourceInfo(spec=checkpoint, path=str(ckpt.path), hub_id=ckpt.hub_id, dtype=ckpt.source_dtype),
        architecture=ckpt.arch.hf_class, n_params=ckpt.n_params, vocab_size=int(cfg["vocab_size"]),
        context_length=int(cfg["max_position_embeddings"]), name=ckpt.path.name, files=files, verified=None,
        verify_skipped="Edge-LLM's ONNX runs only as an engine its llm_build makes on the device",
        tools={**tool_versions(), "tensorrt-edgellm": version}, host=host_facts(),
        total_s=round(time.perf_counter() - t0, 3))
    manifest.write(folder)
    if report:
        report(f"edgellm: exporting {precision} ONNX", 1, 1)
    return manifest


def _exporter_version(venv: Path, config: Path) -> str:
    """The release that exported: its own config.json's edgellm_version, else the venv's package."""
    try:
        said = json.loads(config.read_text(encoding="utf-8")).get("edgellm_version")
        if isinstance(said, str) and re.fullmatch(r"\d+(\.\d+){1,3}", said):
            return said
    except (OSError, ValueError, AttributeError):
        pass
    r = subprocess.run([str(Path(venv) / "bin" / "python"), "-c",
                        "import importlib.metadata as m; print(m.version('tensorrt-edgellm'))"],
                       capture_output=True, text=True, timeout=120, check=False)
    version = r.stdout.strip()
    return version if r.returncode == 0 and version and len(version) < 40 else EDGELLM_VERSION
