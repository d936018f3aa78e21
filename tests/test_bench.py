from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

from edgekit.bench import bench_artifact, parse_vm_hwm_bytes
from edgekit.cli import cli
from edgekit.results import BenchResult, Stat
from edgekit.settings import BenchSettings


@pytest.fixture(scope="session")
def tiny_gguf(exported, tiny_qwen2):
    out, manifest = exported(tiny_qwen2)
    return out / next(f.file for f in manifest.files if f.quant == "Q4_K_M")


def bench_gguf(path, transport=None, **settings) -> BenchResult:
    return bench_artifact(path, BenchSettings(**settings), transport=transport)


@pytest.fixture(scope="session")
def tiny_result(tiny_gguf) -> BenchResult:
    return bench_gguf(tiny_gguf, n_prompt=32, n_gen=8, repetitions=3, threads=2, idle_s=0.2)


def test_bench_metrics_are_positive_finite_and_consistent(tiny_result, tiny_gguf):
    r, m = tiny_result, tiny_result.metrics
    for stat in (m.pp_tok_s, m.tg_tok_s, m.ttft_s):
        assert len(stat.samples) == 3
        assert all(math.isfinite(x) and x > 0 for x in stat.samples)
        assert stat.mean == pytest.approx(sum(stat.samples) / 3)
    # what TTFT times (the prompt, then the pick) is checked with a FakeRunner: test_bench_orchestration.py
    assert m.load_s > 0 and m.peak_rss_bytes > tiny_gguf.stat().st_size
    assert r.artifact.quant == "Q4_K_M" and r.artifact.format == "gguf" and len(r.artifact.sha256) == 64
    assert r.runtime.backend == "CPU" and r.settings.ctx >= 33 and r.settings.random_tokens
    assert r.roofline.bytes_per_token > 0 and r.roofline.tg_bound_tok_s > 0
    assert r.roofline.efficiency == pytest.approx(m.tg_tok_s.mean / r.roofline.tg_bound_tok_s)
    # a tiny model mostly sits in the CPU's caches: above the roofline, and then the result says why
    above = [w for w in r.warnings if "of the memory-bandwidth roofline" in w]
    assert len(above) == (1 if r.roofline.efficiency > 1 else 0)
    if r.power.source is None:  # no readable sensor here: say why, make nothing up
        assert r.power.unavailable and r.power.tg_j_per_tok is None and r.power.samples == []
    else:
        assert r.power.tg_j_per_tok > 0


def test_schema_round_trip(tiny_result, tmp_path):
    path = tmp_path / "r.json"
    path.write_text(tiny_result.to_json())
    again = BenchResult.load(path)
    assert again == tiny_result
    assert json.loads(path.read_text())["schema_version"] == 2


def test_schema_1_results_are_read_into_the_runtime_parts(tiny_result, tmp_path):
    """Version 1 kept every runtime's fields side by side (flash_attn "n/a" for ONNX Runtime)."""
    data = json.loads(tiny_result.to_json())
    s = data["settings"]
    lc = s.pop("llama_cpp")
    s.pop("onnxruntime")
    data["settings"] = {**s, **lc, "providers": None, "graph_optimization": None}
    data["schema_version"] = 1
    (tmp_path / "v1.json").write_text(json.dumps(data))
    again = BenchResult.load(tmp_path / "v1.json")
    assert again.settings == tiny_result.settings and again.schema_version == 2
    onnx = {**data, "artifact": {**data["artifact"], "format": "onnx"},
            "settings": {**data["settings"], "flash_attn": "n/a", "providers": ["CPUExecutionProvider"],
                         "graph_optimization": "all"}}
    (tmp_path / "v1-onnx.json").write_text(json.dumps(onnx))
    o = BenchResult.load(tmp_path / "v1-onnx.json").settings
    assert o.llama_cpp is None and o.onnxruntime.providers == ["CPUExecutionProvider"] and o.flash_attn is None


def test_llama_bench_export(tiny_result):
    tests = tiny_result.to_llama_bench()
    assert [(t["n_prompt"], t["n_gen"]) for t in tests] == [(32, 0), (0, 8)]
    pp, tg = tests
    assert pp["avg_ts"] == tiny_result.metrics.pp_tok_s.mean
    assert tg["stddev_ts"] == tiny_result.metrics.tg_tok_s.stdev
    for t, n in ((pp, 32), (tg, 8)):
        assert len(t["samples_ns"]) == 3
        for ns, ts in zip(t["samples_ns"], t["samples_ts"]):
            assert ns == pytest.approx(n / ts * 1e9, rel=1e-6)
    assert pp["model_size"] == tiny_result.artifact.tensor_bytes < tiny_result.artifact.size_bytes
    assert pp["n_threads"] == 2
    assert pp["backends"] == "CPU"


def test_stat_of_one_sample_has_zero_stdev():
    assert Stat.of([3.0]).stdev == 0.0
    assert Stat.of([1.0, 3.0]).stdev == pytest.approx(math.sqrt(2))


def test_vm_hwm_parser():
    text = "Name:\tpython\nVmPeak:\t 2000 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 1000 kB\n"
    assert parse_vm_hwm_bytes(text) == 123456 * 1024
    assert parse_vm_hwm_bytes("Name: x\n") is None


def test_report_html_and_markdown(tiny_result, tmp_path):
    from edgekit.report import write_report

    a = tmp_path / "a.json"
    a.write_text(tiny_result.to_json())
    b_data = json.loads(tiny_result.to_json())
    b_data["artifact"]["path"] = "/models/other-Q8_0.gguf"
    b_data["artifact"]["quant"] = "Q8_0"
    b_data["power"].update(source="rapl:package-0", excludes="GPU", tg_avg_w=12.5, tg_j_per_tok=0.25)
    b = tmp_path / "b.json"
    b.write_text(json.dumps(b_data))
    html = write_report([a, b], tmp_path / "report.html").read_text()
    assert html.count("<tr>") == 3 and "other-Q8_0.gguf" in html and "0.250" in html
    pngs = [base64.b64decode(chunk.split('"')[0]) for chunk in html.split("data:image/png;base64,")[1:]]
    assert len(pngs) == 3 and all(p.startswith(b"\x89PNG") for p in pngs)
    md = write_report([a, b], tmp_path / "report.md").read_text()
    assert md.count("\n| ") == 3 and "tiny-qwen2-Q4_K_M.gguf" in md


def test_cli_bench_writes_json_and_llama_bench_format(tiny_gguf, tmp_path):
    r = CliRunner().invoke(cli, ["bench", str(tiny_gguf), "-p", "16", "-n", "4", "-r", "1", "--threads", "2",
                                 "-o", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert "tok/s" in r.output and BenchResult.load(tmp_path / "r.json").settings.n_gen == 4
    assert "llama_model_loader" not in r.output  # llama.cpp's own log stays quiet
    r = CliRunner().invoke(cli, ["bench", str(tiny_gguf), "-p", "0", "-n", "4", "-r", "2", "--threads", "2",
                                 "--format", "llama-bench", "--json", "--power", "none"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [(t["n_prompt"], t["n_gen"]) for t in data] == [(0, 4)]
    r = CliRunner().invoke(cli, ["report", str(tmp_path / "r.json"), "-o", str(tmp_path / "rep.md")])
    assert r.exit_code == 0 and (tmp_path / "rep.md").exists()


def test_cli_bench_bad_inputs(tiny_gguf, tmp_path):
    run = lambda *a: CliRunner().invoke(cli, ["bench", *map(str, a)])  # noqa: E731
    assert_one_line_error(run(tmp_path / "nope.gguf"), "does not exist")
    (tmp_path / "x.gguf").write_text("not a model")
    assert_one_line_error(run(tmp_path / "x.gguf"), "not a GGUF file")
    (tmp_path / "cut.gguf").write_bytes(tiny_gguf.read_bytes()[:-4096])
    assert_one_line_error(run(tmp_path / "cut.gguf"), "truncated")
    assert_one_line_error(run(tiny_gguf, "-p", "0", "-n", "0"), "nothing to measure")
    assert_one_line_error(run(tiny_gguf, "-r", "0"), "repetitions")
    assert_one_line_error(run(tiny_gguf, "-p", "64", "-n", "8", "--ctx", "16"), "--ctx 16", "65 tokens")
    assert_one_line_error(run(tiny_gguf, "--power", "tegra"), "unknown power sensor")
    assert_one_line_error(run(tiny_gguf, "--target", "jetson-orin-agx"), "unknown target", "edgekit targets")
    (tmp_path / "junk.json").write_text("{}")
    assert_one_line_error(CliRunner().invoke(cli, ["report", str(tmp_path / "junk.json"), "-o",
                                                   str(tmp_path / "r.html")]), "not an edgekit bench result")
    assert not (tmp_path / "r.html").exists()


def test_demo_runs_end_to_end(tmp_path):
    from edgekit.demo import run_demo

    said = []
    outcome = run_demo(tmp_path / "demo", n_prompt=16, n_gen=4, repetitions=1, threads=2, say=said.append)
    assert len(said) >= 4 and outcome.report.exists()
    names = {p.name for p in outcome.result_files}
    assert {"small-qwen2-Q4_K_M.json", "small-qwen2-Q8_0.json"} <= names
    assert "<table" in outcome.report.read_text()


def test_runner_decodes_prompts_as_long_as_the_batch(tiny_gguf):
    """The token buffer handed to llama_decode must hold the tokens asked for, at any length."""
    from edgekit.runners.llamacpp import LlamaCppRunner

    with LlamaCppRunner(tiny_gguf, threads=2, ctx=1024, n_batch=512) as runner:
        for n in (1, 300, 512, 700):  # 700: two batches
            runner.start(n)
            runner.prompt(runner.random_tokens(n))
            import llama_cpp

            assert llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(runner.context), 0) == n - 1


def test_known_target_sets_the_roofline_bandwidth(tiny_gguf):
    r = bench_gguf(tiny_gguf, n_prompt=0, n_gen=4, repetitions=1, threads=2, power="none",
                   target="jetson-agx-orin-64gb")
    assert r.target == "jetson-agx-orin-64gb"
    assert r.roofline.bandwidth_gb_s == 204.8 and "spec sheet" in r.roofline.bandwidth_source
    assert r.roofline.tg_bound_tok_s == pytest.approx(204.8e9 / r.roofline.bytes_per_token)


def test_results_carry_the_targets_facts_state_and_throttle_warnings(tiny_gguf):
    """A Pi 5 recording as the facts source: detection, runner defaults, state before/after, warnings."""
    from pathlib import Path

    from edgekit.device.transport import RecordedTransport

    class ThrottlesDuringTheRun(RecordedTransport):
        calls = 0

        def run(self, command, timeout_s=30.0):
            result = super().run(command, timeout_s)
            if command == "vcgencmd get_throttled":
                self.calls += 1
                if self.calls > 1:  # the capture after the run
                    result.stdout = "throttled=0x40004\n"
            return result

    pi = ThrottlesDuringTheRun(Path(__file__).parent / "fixtures" / "targets" / "rpi5-8gb")
    r = bench_gguf(tiny_gguf, n_prompt=8, n_gen=4, repetitions=1, threads=2, power="none", transport=pi)
    assert r.target == "rpi5-8gb" and r.target_state["family"] == "rpi5"
    assert r.target_state["detected"]["revision"] == "d04170"
    assert r.target_state["before"]["arm_hz"] == 2400020480 and r.target_state["before"]["throttled"]["raw"] == 0
    assert r.target_state["after"]["throttled"]["flags"] == ["currently throttled", "throttling has occurred"]
    assert any("throttled during the run: currently throttled" in w for w in r.warnings)
    assert any("governor is 'ondemand'" in w for w in r.warnings)


FIXTURES = Path(__file__).parent / "fixtures" / "samples"


def test_last_level_cache_from_recorded_sysfs(tmp_path):
    """cpu0's cache tree recorded on the 2-vCPU AMD EPYC development VM: L1d, L1i, L2, L3 32 MiB."""
    from edgekit.roofline import last_level_cache_bytes

    assert last_level_cache_bytes(FIXTURES / "cpu0-cache-amd-epyc") == 32 * 2**20
    # the instruction cache never counts, whatever its level; an unreadable index is skipped
    (tmp_path / "index0").mkdir()
    for name, text in (("type", "Instruction"), ("level", "4"), ("size", "64M")):
        (tmp_path / "index0" / name).write_text(text + "\n")
    (tmp_path / "index1").mkdir()
    for name, text in (("type", "Unified"), ("level", "2"), ("size", "2048K")):
        (tmp_path / "index1" / name).write_text(text + "\n")
    (tmp_path / "index2").mkdir()
    (tmp_path / "index2" / "type").write_text("Unified\n")
    assert last_level_cache_bytes(tmp_path) == 2 * 2**20
    assert last_level_cache_bytes(tmp_path / "absent") is None


def test_a_run_above_the_roofline_says_why():
    from edgekit.roofline import above_roofline_warning

    measured = "measured after this run's repetitions: 2-thread numpy copy of 256 MiB, best of 5"
    assert above_roofline_warning(0.97, 46_000_000, 32 * 2**20, measured) is None
    said = above_roofline_warning(1.24, 46_000_000, 32 * 2**20, measured)
    assert said.startswith("tg is 124% of the memory-bandwidth roofline: part of the 46 MB read per token")
    assert "32 MiB last-level cache" in said and "than the copy test's read-and-write (measured after" in said
    # far above the cache only the bandwidth figure can be off; a spec sheet is named as such
    said = above_roofline_warning(1.1, 4_000_000_000, 32 * 2**20, "spec sheet of Raspberry Pi 5: x")
    assert "last-level cache" not in said and "reaches more than the bandwidth used (spec sheet" in said
    assert "last-level cache" not in above_roofline_warning(1.1, 46_000_000, None, measured)
