"""edgekit plan: the arithmetic against hand-computed values and published figures, llama.cpp's
own tensor types against a real exported file, fit decisions at their edges, calibration from a
results folder, and --json output that scripts can rely on."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

from edgekit.cli import cli
from edgekit.plan import (
    Calibration,
    fits,
    kv_bytes_per_position,
    moe_counts,
    n_params,
    plan,
    r1_family,
    resolve_models,
    resolve_targets,
    usable_memory,
    weights_for,
)


def test_parameter_counts_match_the_published_ones():
    family = r1_family()
    for name, entry in family.items():
        got = n_params(entry["config"])
        assert abs(got / entry["published_params"] - 1) < 0.005, (name, got)
    counts = moe_counts(family["r1-671b"]["config"])
    assert abs(counts["active"] / 37e9 - 1) < 0.02  # 37B activated per token (the model card)


def test_kv_cache_by_hand():
    family = r1_family()
    # 2 (K and V) x layers x kv heads x head dim x 2 bytes (F16)
    assert kv_bytes_per_position(family["r1-distill-qwen-1.5b"]["config"]) == 2 * 28 * 2 * 128 * 2 == 28672
    assert kv_bytes_per_position(family["r1-distill-qwen-1.5b"]["config"]) * 4096 == 117_440_512  # 112 MiB
    assert kv_bytes_per_position(family["r1-distill-llama-8b"]["config"]) == 2 * 32 * 8 * 128 * 2
    assert kv_bytes_per_position(family["r1-distill-llama-70b"]["config"]) == 2 * 80 * 8 * 128 * 2
    # MLA caches the compressed latent (512) and the rope key (64) per layer
    assert kv_bytes_per_position(family["r1-671b"]["config"]) == 61 * (512 + 64) * 2


@pytest.mark.parametrize("quant", ["Q4_K_M", "Q4_0", "F16"])
def test_llama_cpp_types_and_bytes_equal_a_real_export(exported, tiny_qwen2, quant):
    """The dry run on the config's shapes gives the very tensor types and bytes the real
    quantization wrote (Q4_K_M's Q6_K output and last-layer attn_v/ffn_down included)."""
    import gguf

    folder, _ = exported(tiny_qwen2)
    reader = gguf.GGUFReader(folder / f"{tiny_qwen2.name}-{quant}.gguf")
    config = json.loads((tiny_qwen2 / "config.json").read_text())
    w = weights_for(config, quant)
    assert w.total_bytes == sum(int(t.n_bytes) for t in reader.tensors)
    assert w.types == dict(Counter(t.tensor_type.name for t in reader.tensors))
    if quant == "Q4_K_M":
        assert w.types.get("Q6_K") and w.types.get("Q4_K")  # mixed, as llama.cpp assigns it


def test_onnx_int4_bytes_against_a_real_export(onnx_export, tiny_qwen2):
    """The weights of a real INT4 export (its initializers) as predicted; the file adds only the
    graph itself (a fixed ~70 KB here, nothing at 1.5B scale)."""
    import numpy as np
    import onnx

    folder, _ = onnx_export(tiny_qwen2, "int4")
    model = onnx.load(str(folder / "model.onnx"))
    weights = sum(int(np.prod(t.dims)) * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
                  for t in model.graph.initializer)
    predicted = weights_for(json.loads((tiny_qwen2 / "config.json").read_text()), "ONNX-INT4").total_bytes
    assert abs(predicted / weights - 1) < 0.001, (predicted, weights)
    on_disk = sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("model.onnx"))
    assert 0 < on_disk - weights < 200_000


def test_fit_decisions_at_the_edges():
    assert fits(100, 100)[0] is True and fits(101, 100)[0] is False and fits(1, None)[0] is None
    assert "needs" in fits(101, 100)[1]
    assert usable_memory("apple-m", 16 * 10**9) == (int(16e9 * 0.67), "Metal working-set cap, 67% of RAM")
    assert usable_memory("apple-m", 64 * 10**9)[0] == int(64e9 * 0.75)
    assert usable_memory("rpi5", 8 * 10**9)[0] == 8 * 10**9 - 2**30  # 10 % is less than the 1 GiB floor
    assert usable_memory("jetson", 64 * 10**9)[0] == int(64e9 * 0.9)
    # a model that fits a target's usable memory by a byte, and one a byte over it
    model = resolve_models("r1-distill-qwen-1.5b")
    (target,) = resolve_targets("rpi5-4gb")
    (row,) = plan(model, [target], ["Q4_K_M"], ctx=4096)
    target.usable_bytes = row.need_bytes
    assert plan(model, [target], ["Q4_K_M"])[0].fits is True
    target.usable_bytes = row.need_bytes - 1
    over = plan(model, [target], ["Q4_K_M"])[0]
    assert over.fits is False and over.tg_tok_s is None


def _bench_q4(exported, tiny_qwen2, tmp_path) -> Path:
    """A real bench of the tiny model's Q4_K_M (short), the result file the calibration tests edit."""
    folder, _ = exported(tiny_qwen2)
    out = tmp_path / "one.json"
    r = CliRunner().invoke(cli, ["bench", str(folder / f"{tiny_qwen2.name}-Q4_K_M.gguf"), "-p", "8", "-n", "4",
                                 "-r", "1", "--power", "none", "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out


def _result(src: Path, dst: Path, target: str, efficiency: float, tg: float, pp: float, watts: float | None):
    data = json.loads(src.read_text())
    data["target"] = target
    data["roofline"]["efficiency"] = efficiency
    data["metrics"]["tg_tok_s"].update(mean=tg, samples=[tg])
    data["metrics"]["pp_tok_s"].update(mean=pp, samples=[pp])
    data["power"]["tg_avg_w"] = watts
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(data))


def test_calibration_from_a_results_folder(exported, tiny_qwen2, tmp_path):
    """Efficiency, pp/tg and watts are fitted per target x runtime from results; the row then shows
    predicted beside measured and the error, with the sources saying so."""
    out = _bench_q4(exported, tiny_qwen2, tmp_path)
    results = tmp_path / "results"
    for i, (eff, tg, pp, w) in enumerate([(0.5, 10.0, 50.0, 20.0), (0.7, 12.0, 60.0, 30.0), (0.9, 20.0, 100.0, 40.0)]):
        _result(out, results / f"jetson/{i}/result.json", "jetson-agx-orin-64gb", eff, tg, pp, w)
    rows = json.loads(CliRunner().invoke(cli, ["plan", str(tiny_qwen2), "--target", "jetson-agx-orin-64gb",
                                               "--quant", "Q4_K_M", "--results", str(results), "--json"]).output)
    (row,) = rows
    w = weights_for(json.loads((tiny_qwen2 / "config.json").read_text()), "Q4_K_M")
    per_token = w.per_token_bytes + kv_bytes_per_position(json.loads((tiny_qwen2 / "config.json").read_text())) * 2048
    assert row["tg_tok_s"] == pytest.approx(0.7 * 204.8e9 / per_token, rel=1e-3)  # the median efficiency
    assert row["pp_tok_s"] == pytest.approx(row["tg_tok_s"] * 5.0, rel=1e-3)       # the median pp/tg
    assert row["j_per_tok"] == pytest.approx(30.0 / row["tg_tok_s"], rel=1e-3)
    assert row["measured_tg_tok_s"] == 12.0 and row["error"] == pytest.approx(row["tg_tok_s"] / 12.0 - 1, rel=1e-3)
    assert row["sources"]["efficiency"] == "measured: median of 3 result(s)" and row["sources"]["power"] == "measured"
    # without results: the default, and it says so
    (plain,) = plan(resolve_models(str(tiny_qwen2)), resolve_targets("jetson-agx-orin-64gb"), ["Q4_K_M"],
                    cal=Calibration())
    assert plain.sources["efficiency"].startswith("default 0.6") and plain.measured_tg_tok_s is None


def test_json_is_stable_and_complete():
    args = ["plan", "r1-distill-qwen-7b", "--target", "rpi5-8gb", "--quant", "Q4_K_M,Q8_0", "--json"]
    a, b = (CliRunner().invoke(cli, args) for _ in range(2))
    assert a.exit_code == 0, a.output
    assert a.output == b.output
    rows = json.loads(a.output)
    assert [(r["quant"], r["fits"]) for r in rows] == [("Q4_K_M", True), ("Q8_0", False)]  # 8.1 GB of 8
    assert list(rows[0]) == sorted(rows[0]) and rows[0]["n_params"] == n_params(r1_family()["r1-distill-qwen-7b"]
                                                                                ["config"])


def test_bad_input_is_one_line():
    assert_one_line_error(CliRunner().invoke(cli, ["plan", "no-such-model"]), "unknown model", "r1")
    assert_one_line_error(CliRunner().invoke(cli, ["plan", "r1", "--quant", "Q5_X"]), "unknown quantization")
    assert_one_line_error(CliRunner().invoke(cli, ["plan", "r1", "--target", "pi9"]), "unknown target")
    assert_one_line_error(CliRunner().invoke(cli, ["plan", "tiny-qwen2"]), "takes its vocabulary size",
                          "edgekit synth")


def test_an_artifact_is_planned_from_its_own_file(exported, tiny_qwen2):
    import gguf

    folder, _ = exported(tiny_qwen2)
    path = folder / f"{tiny_qwen2.name}-Q4_0.gguf"
    r = CliRunner().invoke(cli, ["plan", str(path), "--target", "rpi5-8gb", "--json"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.output)
    assert row["quant"] == "Q4_0" and row["weights_bytes"] == path.stat().st_size and row["fits"] is True
    assert row["n_params"] == sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors)


def test_tensorrt_rows_by_hand_and_only_on_nvidia_targets():
    """TRT-FP16: 2 bytes a weight; TRT-INT4: 4 bits + an FP16 scale per 128 weights of every linear
    layer, embedding/output/norms FP16; a build on the device holds the FP16 weights and the engine."""
    from edgekit.architectures import tensor_shapes
    from edgekit.plan import tensorrt_build_peak, tensorrt_weights

    config = r1_family()["r1-distill-qwen-1.5b"]["config"]
    shapes = tensor_shapes(config)
    fp16 = tensorrt_weights(config, "TRT-FP16")
    assert fp16.total_bytes == 2 * n_params(config)
    linear = sum(h * w for n, (h, w) in ((n, s) for n, s in shapes.items() if len(s) == 2)
                 if n not in ("model.embed_tokens.weight", "lm_head.weight"))
    other = n_params(config) - linear
    assert tensorrt_weights(config, "TRT-INT4").total_bytes == linear // 2 + -(-linear // 128) * 2 + 2 * other
    # Edge-LLM's builder: 3 bytes a parameter (its docs' lower end), whatever the engine's precision
    assert tensorrt_build_peak(config, 10) == tensorrt_build_peak(config, fp16.total_bytes) == 3 * n_params(config)
    model = resolve_models("r1-distill-qwen-1.5b")
    rows = {r.target: r for r in plan(model, resolve_targets("all"), ["TRT-INT4"])}
    assert rows["jetson-orin-nano-8gb"].fits is True and rows["jetson-orin-nano-8gb"].tg_tok_s > 0
    assert rows["rpi5-8gb"].fits is None and rows["rpi5-8gb"].why == "TensorRT needs an NVIDIA GPU"
    assert rows["rpi5-8gb"].tg_tok_s is None
    # the 7B's engine builds on an 8 GB Orin Nano only if its build fits (~23 GB): it does not
    (nano,) = plan(resolve_models("r1-distill-qwen-7b"), resolve_targets("jetson-orin-nano-8gb"), ["TRT-INT4"])
    assert nano.fits is False and "engine build's peak" in nano.why


def test_report_shows_the_plan_beside_the_measurements(exported, tiny_qwen2, tmp_path):
    """edgekit report --plan: each result's tg as plan predicts it from the other results' efficiency."""
    out = _bench_q4(exported, tiny_qwen2, tmp_path)
    data = json.loads(out.read_text())
    bw, bpt = data["roofline"]["bandwidth_gb_s"], data["roofline"]["bytes_per_token"]
    for name, eff in (("a", 0.5), ("b", 0.8)):
        tg = eff * bw * 1e9 / bpt
        _result(out, tmp_path / "results" / name / "result.json", "jetson-agx-orin-64gb", eff, tg, tg * 5, None)
    r = CliRunner().invoke(cli, ["report", str(tmp_path / "results"), "-o", str(tmp_path / "r.md"), "--plan"])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "r.md").read_text()
    rows = [ln for ln in md.split("## Plan vs measured")[1].splitlines() if ln.startswith("| ") and "tiny" in ln]
    # a's prediction uses b's efficiency (0.8 vs its own 0.5): +60 %; b's uses a's: -38 %
    errors = sorted(float(ln.split(" | ")[5].rstrip("%")) for ln in rows)  # -37.5 % rounds either way
    assert abs(errors[0] + 37.5) <= 0.5 and errors[1] == 60
    assert all("median of 1 other result(s)" in ln for ln in rows)
    assert "Plan vs measured" not in write_plain(tmp_path)


def write_plain(tmp_path):
    from edgekit.report import write_report

    return write_report([tmp_path / "results"], tmp_path / "plain.md").read_text()


def test_the_671b_moe_through_llama_cpps_own_dry_run():
    """DeepSeek-R1 671B on a deepseek2 header (MLA, merged experts): llama.cpp assigns Q6_K to
    expert down-projections in Q4_K_M, and the plan's byte total equals llama.cpp's own sum of the
    quantized size (its `quant size = ... MiB` line); a token reads 8 of 256 routed experts."""
    from edgekit.plan import dry_run_here, gguf_tensors

    config = r1_family()["r1-671b"]["config"]
    found = dry_run_here(config, "Q4_K_M")
    assert found["types"]["blk.60.ffn_down_exps.weight"] == "Q6_K"
    assert found["types"]["blk.60.ffn_gate_exps.weight"] == "Q4_K"
    w = weights_for(config, "Q4_K_M")
    assert w.total_bytes / 2**20 == pytest.approx(found["quant_size_mib"], abs=0.01 * len(gguf_tensors(config)))
    bpw = w.total_bytes * 8 / n_params(config)
    assert 4.7 < bpw < 4.9  # llama.cpp prints 4.82 BPW for this model's Q4_K_M
    assert 0.05 < w.per_token_bytes / w.total_bytes < 0.06  # ~37B of 671B read per token


def test_tensorrt_rows_are_calibrated_by_tensorrt_results(exported, tiny_qwen2, tmp_path):
    """A TensorRT result on a target calibrates that target's TRT rows (and only those)."""
    out = _bench_q4(exported, tiny_qwen2, tmp_path)
    results = tmp_path / "results"
    _result(out, results / "orin" / "result.json", "jetson-agx-orin-64gb", 0.8, 50.0, 900.0, None)
    data = json.loads((results / "orin" / "result.json").read_text())
    data["runtime"]["name"] = "tensorrt"
    (results / "orin" / "result.json").write_text(json.dumps(data))
    rows = json.loads(CliRunner().invoke(cli, ["plan", str(tiny_qwen2), "--target", "jetson-agx-orin-64gb", "--quant",
                                               "TRT-INT4,Q4_K_M", "--results", str(results), "--json"]).output)
    by = {row["quant"]: row for row in rows}
    assert by["TRT-INT4"]["sources"]["efficiency"] == "measured: median of 1 result(s)"
    assert by["Q4_K_M"]["sources"]["efficiency"].startswith("default")
