"""`edgekit export tensorrt --on DEST`: the engine built on the device it will run on, by the
device's trtexec (the generic engine, `build_on_device`) or Edge-LLM's llm_build
(`build_edgellm_on_device`: a checkpoint is exported to Edge-LLM's ONNX here first, in the
exporter's own venv, and the device's JetPack is checked against Edge-LLM's support matrix before
anything is sent). Both go through `remote_build`, described below for trtexec.

The workstation prepares the graph (converters.tensorrt_export.prepare: an FP16 export, or its
INT4 QDQ form, and the profiles from the model's dims), sends it with deploy (venv, edgekit and
the content-addressed store; no runtime is installed), then runs `python -m
edgekit.device.tensorrt_build` there over the same connection: the device's trtexec builds,
its lines stream here, and the engine stays in the device's cache (<remote-dir>/engines/<key>/,
keyed by what it depends on: a second export of the same model and settings is skipped there
and says so). OUT gets manifest.json (the engine's sha256, size, TensorRT version, GPU and
compute capability as trtexec printed them, and `engine.location` on the device), the tokenizer
and genai_config.json, and the build log, fetched back.

The device's answer is untrusted: its result line is validated field by field (hex digests, a
version, a printable GPU name, the engine where the key says) before it is written anywhere.
The build runs in the SSH session: a dropped connection ends it; running the export again
finds whatever the device finished.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from edgekit.atomic import atomic_dir
from edgekit.converters.edgellm_export import export_edgellm_onnx
from edgekit.converters.tensorrt_export import (
    BESIDE,
    BUILD_LOG,
    QUANT_NAME,
    check_request,
    copy_beside,
    engine_manifest,
    prepare,
    runs_only_on,
)
from edgekit.device.deploy import Deployer, DeployOptions
from edgekit.device.edgellm_build import LINE_PREFIX as EDGELLM_LINE_PREFIX
from edgekit.device.probe import gather_facts
from edgekit.device.tensorrt_build import LINE_PREFIX, LOG_FILE, RESULT_PREFIX
from edgekit.edgellm import EDGELLM_VERSION, support_problem
from edgekit.errors import EdgekitError
from edgekit.formats import manifest_format
from edgekit.formats.edgellm_onnx import model_dims
from edgekit.manifest import ArtifactFile, EngineInfo, ExportManifest
from edgekit.targets.host import parse_meminfo_total_bytes
from edgekit.targets.specs import family_module
from edgekit.tensorrt_rules import build_peak_bytes, device_build_problem
from edgekit.terminal import printable

Stage = Callable[[str, str], None]
HEX = re.compile(r"[0-9a-f]+")


def parse_build_result(stdout: str, remote_dir: str) -> dict:
    """The `result {...}` line of tensorrt_build's output, checked: an EdgekitError when it is
    missing or any field is not what an honest build prints."""
    line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith(RESULT_PREFIX)), None)
    if line is None:
        raise EdgekitError("the device's build printed no result line", "run the export again; read the build log")
    try:
        r = json.loads(line[len(RESULT_PREFIX):])
    except ValueError:
        r = None
    if not isinstance(r, dict):
        raise EdgekitError("the device's build result is not a JSON object", "run the export again")

    def want(ok: bool, field: str) -> None:
        if not ok:
            raise EdgekitError(f"the device's build result has a bad {field} ({printable(r.get(field), 80)})",
                               "run the export again; this is not what edgekit's builder prints")

    want(isinstance(r.get("key"), str) and len(r["key"]) == 20 and HEX.fullmatch(r["key"]) is not None, "key")
    want(isinstance(r.get("engine_sha256"), str) and len(r["engine_sha256"]) == 64
         and HEX.fullmatch(r["engine_sha256"]) is not None, "engine_sha256")
    want(isinstance(r.get("engine_bytes"), int) and 0 < r["engine_bytes"] < 2**50, "engine_bytes")
    want(r.get("tensorrt_version") is None or (isinstance(r["tensorrt_version"], str)
                                               and re.fullmatch(r"\d+(\.\d+){0,3}", r["tensorrt_version"])),
         "tensorrt_version")
    want(r.get("compute_capability") is None or (isinstance(r["compute_capability"], str)
                                                 and re.fullmatch(r"\d{1,2}\.\d{1,2}", r["compute_capability"])),
         "compute_capability")
    want(r.get("device") is None or isinstance(r["device"], str), "device")
    want(isinstance(r.get("cached"), bool), "cached")
    want(r.get("builder") in ("trtexec", "llm_build") or (isinstance(r.get("builder"), str) and re.fullmatch(
        r"tensorrt \d+(\.\d+){0,3}", r["builder"]) is not None), "builder")
    want(isinstance(r.get("build_s"), (int, float)) and 0 <= r["build_s"] < 1e7, "build_s")
    want(r.get("folder") == f"{remote_dir}/engines/{r['key']}", "folder")
    r["device"] = printable(r["device"], 100) if r.get("device") else None
    return r


def remote_build(transport, host: str, artifact: Path, request: dict, *, module: str, tool: str, line_prefix: str,
                 deploy_options: DeployOptions, timeout_s: float, stage: Stage) -> tuple[dict, str]:
    """Deploy `artifact` (no runtime installed), put `request` beside the device's engine cache and
    run `python -m <module> MODEL CACHE REQUEST` there, its tool's lines streamed to `stage`;
    returns (the checked result, the remote dir)."""
    deployed = Deployer(transport, host, replace(deploy_options, install_runtime=False), stage).run(artifact)
    R = deployed.remote_dir
    q = shlex.quote
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]
    remote_request = f"{R}/engines/requests/{digest}.json"
    r = transport.run(f"mkdir -p -- {q(R + '/engines/requests')}", timeout_s=60)
    if r.returncode != 0:
        raise EdgekitError(f"could not make {R}/engines on {host}", "check the device's disk and permissions")
    with tempfile.TemporaryDirectory(prefix="edgekit-trt-request-") as work:
        local = Path(work) / "request.json"
        local.write_text(json.dumps(request), encoding="utf-8")
        transport.put(local, remote_request)
    stage("building", f"the engine on {host} with its {tool}")

    def on_output(line: str) -> None:
        if line.startswith(line_prefix):
            stage("building", printable(line[len(line_prefix):], 160))

    r = transport.run(f"{q(R)}/venv/bin/python -m {module} {q(deployed.model_path)} {q(R + '/engines')} "
                      f"{q(remote_request)}", timeout_s=timeout_s + 120, on_output=on_output)
    if r.returncode != 0:
        said = next((ln for ln in reversed(r.stderr.splitlines()) if ln.startswith("error: ")), None)
        problem, _, fix = (said[len("error: "):] if said else f"exit {r.returncode}").partition("; ")
        raise EdgekitError(f"the engine build on {host} failed: {printable(problem, 300)}",
                           printable(fix, 200) or "read the build log on the device")
    return parse_build_result(r.stdout, R), R


def check_build_memory(facts: dict, engine: str, n_params: int, graph_bytes: int, host: str) -> None:
    """Refuse, before anything is sent, a device whose RAM cannot hold the build (edgekit.tensorrt_rules;
    the engine is taken to be about as large as the graph it is built from)."""
    peak = build_peak_bytes(engine, n_params, graph_bytes, graph_bytes)
    problem = device_build_problem(engine, peak, parse_meminfo_total_bytes(facts.get("meminfo") or ""))
    if problem:
        raise EdgekitError(f"{host} cannot build this engine: {problem}",
                           "build a smaller model or on a device with more memory, or pass --no-memory-check to try")


def build_on_device(transport, host: str, src: Path, out_dir: Path, precision: str, *, max_prompt: int,
                    max_context: int, workspace_mib: int | None, block_size: int, deploy_options: DeployOptions,
                    force: bool = False, timeout_s: float = 3 * 3600, stage: Stage | None = None,
                    progress=None, memory_check: bool = True) -> tuple[ExportManifest, bool]:
    """Build the engine of `src` on the device behind `transport`; returns (OUT's manifest, whether
    the device had it already)."""
    t_start = time.monotonic()
    stage = stage or (lambda _s, _d: None)
    out_dir, src = Path(out_dir), Path(src)
    check_request(src, out_dir, precision, max_prompt, max_context, force)
    with tempfile.TemporaryDirectory(prefix="edgekit-trt-") as work_dir:
        work = Path(work_dir)
        p = prepare(src, precision, work, max_prompt=max_prompt, max_context=max_context, block_size=block_size,
                    progress=progress)
        if memory_check:
            graph_bytes = sum(f.stat().st_size for f in p.graph.parent.iterdir() if f.is_file())
            check_build_memory(gather_facts(transport), "generic", p.source.n_params, graph_bytes, host)
        request = {"onnx_sha256": p.source_sha256, "precision": precision,
                   "profiles": [q.to_dict() for q in p.profiles], "workspace_mib": workspace_mib,
                   "timeout_s": timeout_s}
        result, _R = remote_build(transport, host, p.graph.parent, request, module="edgekit.device.tensorrt_build",
                                  tool="TensorRT", line_prefix=LINE_PREFIX, deploy_options=deploy_options,
                                  timeout_s=timeout_s, stage=stage)
        location = f"{result['folder']}/model.engine"
        with atomic_dir(out_dir, force=force, inputs=(src,)) as tmp:
            transport.get(f"{result['folder']}/{LOG_FILE}", tmp / BUILD_LOG)
            copy_beside(p.src_onnx, tmp)
            manifest = engine_manifest(
                p, precision, builder=result["builder"], tensorrt_version=result.get("tensorrt_version"),
                engine_bytes=result["engine_bytes"], engine_sha256=result["engine_sha256"], seconds=result["build_s"],
                options={"builder": result["builder"], "workspace_mib": workspace_mib, "key": result["key"]},
                built_on=host, max_prompt=max_prompt, max_context=max_context, device=result.get("device"),
                compute_capability=result.get("compute_capability"), location=location,
                total_s=time.monotonic() - t_start)
            manifest.write(tmp)
    return manifest, result["cached"]


def build_edgellm_on_device(transport, host: str, src: Path, out_dir: Path, precision: str, *, max_prompt: int,
                            max_context: int, deploy_options: DeployOptions, force: bool = False,
                            timeout_s: float = 3 * 3600, stage: Stage | None = None,
                            progress=None, memory_check: bool = True) -> tuple[ExportManifest, bool]:
    """An Edge-LLM engine of `src` (a checkpoint, exported here first, or an edgellm-onnx folder)
    built on the device by its llm_build, after Edge-LLM's support matrix has been asked about
    the device's JetPack (refused before anything is sent); returns (OUT's manifest, cached)."""
    t_start = time.monotonic()
    stage = stage or (lambda _s, _d: None)
    out_dir, src = Path(out_dir), Path(src)
    check_request(src, out_dir, precision, max_prompt, max_context, force)
    facts = gather_facts(transport)
    l4t = family_module("jetson").parse_l4t(facts.get("nv_tegra_release"))  # the family, loaded on use
    with tempfile.TemporaryDirectory(prefix="edgekit-edgellm-") as work_dir:
        folder = src
        if manifest_format(src) != "edgellm-onnx":
            folder = Path(work_dir) / "onnx"
            folder.mkdir()
            export_edgellm_onnx(str(src), folder, precision, report=progress)
        source = ExportManifest.read(folder)
        version = source.tools.get("tensorrt-edgellm", EDGELLM_VERSION)
        problem = support_problem(l4t, version, precision)
        if problem:
            raise EdgekitError(f"{host} cannot run this engine: {problem}", "see docs/tensorrt.md (Edge-LLM's versions)")
        if memory_check:
            check_build_memory(facts, "edgellm", source.n_params, sum(f.size_bytes for f in source.files), host)
        if source.files[0].quant != precision.upper():
            raise EdgekitError(f"{src} is Edge-LLM's {source.files[0].quant} ONNX, not {precision}",
                               f"pass --precision {source.files[0].quant.lower()}, or export the checkpoint again")
        onnx_sha = hashlib.sha256("".join(f"{f.file}\0{f.sha256}\0" for f in source.files).encode()).hexdigest()
        request = {"onnx_sha256": onnx_sha, "precision": precision, "max_input_len": max_prompt,
                   "max_kv_cache": max_context, "timeout_s": timeout_s}
        result, _R = remote_build(transport, host, folder, request, module="edgekit.device.edgellm_build",
                                  tool="llm_build", line_prefix=EDGELLM_LINE_PREFIX, deploy_options=deploy_options,
                                  timeout_s=timeout_s, stage=stage)
        device, capability = result.get("device"), result.get("compute_capability")
        info = EngineInfo(
            engine="edgellm", builder="llm_build", tensorrt_version=result.get("tensorrt_version"), device=device,
            compute_capability=capability, built_on=host, location=f"{result['folder']}/engine", precision=precision,
            max_prompt=max_prompt, max_context=max_context, profiles=[],
            dims={k: v for k, v in model_dims(folder).items() if k != "hidden"}, source_onnx_sha256=onnx_sha,
            block_size=128 if precision == "int4" else None,
            runs_only_on=runs_only_on("llm_build", result.get("tensorrt_version"), [], device, capability)
            + f" and Edge-LLM {version}")
        with atomic_dir(out_dir, force=force, inputs=(src,)) as tmp:
            transport.get(f"{result['folder']}/{LOG_FILE}", tmp / BUILD_LOG)
            for name in ("config.json", *BESIDE):
                if (folder / name).is_file() and not (tmp / name).exists():
                    shutil.copy2(folder / name, tmp / name)
            manifest = ExportManifest(
                format="tensorrt", source=source.source, architecture=source.architecture, n_params=source.n_params,
                vocab_size=source.vocab_size, context_length=source.context_length, tokenizer=source.tokenizer,
                name=source.name,
                files=[ArtifactFile(file="engine/llm.engine", format="tensorrt", quant=QUANT_NAME[precision],
                                    size_bytes=result["engine_bytes"], sha256=result["engine_sha256"],
                                    seconds=result["build_s"], options={"builder": "llm_build", "key": result["key"]})],
                verified=None, verify_skipped="an engine runs only on its GPU: bench it there",
                tools={**source.tools, "tensorrt": result.get("tensorrt_version") or "unknown"}, host=source.host,
                total_s=round(time.monotonic() - t_start, 3), engine=info)
            manifest.write(tmp)
    return manifest, result["cached"]
