"""The statistics the benchmark scripts print their verdicts with (benchmarks/common.py)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("bench_common", Path(__file__).parents[1] / "benchmarks" / "common.py")
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


@pytest.mark.parametrize("n, cut, confidence", [(5, 0, 1 - 2 / 32), (8, 0, 1 - 2 / 256), (10, 1, 1 - 2 * 11 / 1024),
                                                (20, 5, 1 - 2 * sum(math.comb(20, i) for i in range(6)) / 2 ** 20)])
def test_median_ci_takes_the_binomial_ranks(n, cut, confidence):
    med, low, high, achieved = common.median_ci([float(v) for v in range(n, 0, -1)])  # unsorted on purpose
    assert med == (n + 1) / 2
    assert (low, high) == (1 + cut, n - cut)
    assert achieved == pytest.approx(confidence)
    assert achieved >= 0.95 or cut == 0  # 5 rounds: even the full range is only 93.75 %


def test_median_ci_covers_as_often_as_it_claims():
    rng = np.random.default_rng(7)
    trials = 3000
    hits = sum(lo <= 1.0 <= hi for lo, hi in (common.median_ci(list(rng.lognormal(0, 0.1, 10)))[1:3]
                                              for _ in range(trials)))
    assert abs(hits / trials - common.median_ci(list(range(10)))[3]) < 0.015  # 0.9785 claimed


def test_ratio_verdict_says_met_missed_or_undecided():
    assert "goal >= 1.0 met" in common.ratio_verdict([1.02, 1.03, 1.04, 1.05, 1.06, 1.01, 1.08, 1.03], 1.0)
    assert "goal >= 1.0 missed" in common.ratio_verdict([0.90, 0.92, 0.95, 0.91, 0.93, 0.94, 0.96, 0.9], 1.0)
    undecided = common.ratio_verdict([0.98, 1.04, 0.97, 1.0, 0.99, 0.99, 1.15, 0.94], 1.0)
    assert "neither" in undecided and undecided.startswith("ratio 0.990 (99% CI 0.940-1.150 over 8 rounds)")


def _orin():
    spec = importlib.util.spec_from_file_location("orin_runtimes", Path(__file__).parents[1] / "benchmarks" /
                                                  "orin_runtimes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_orin_comparison_runs_every_runtime_at_the_same_lengths(capsys):
    orin = _orin()
    assert orin.main(["--host", "orin", "-p", "256", "-n", "64", "-r", "2", "--dry-run", "--work", "/w"]) == 0
    lines = capsys.readouterr().out.splitlines()
    benches = [ln for ln in lines if " bench " in ln]
    assert len(benches) == 4 and all(" -p 256 -n 64 -r 2 " in ln and "--host orin" in ln for ln in benches)
    assert any("--engine edgellm" in ln and "--on orin" in ln for ln in lines)
    assert any("export tensorrt /w/onnx-fp16" in ln and "--precision int4" in ln for ln in lines)
    assert any("--providers cuda,cpu" in ln for ln in benches) and lines[0].endswith("synth r1-distill-qwen-1.5b "
                                                                                      "/w/r1-distill-qwen-1.5b")


def test_the_orin_comparison_takes_ratios_within_each_round():
    orin = _orin()
    rounds = [{"llama.cpp-cuda": {"pp_tok_s": 1000.0, "tg_tok_s": 20.0, "ttft_s": 0.5},
               "tensorrt-edgellm": {"pp_tok_s": 3000.0, "tg_tok_s": 36.0, "ttft_s": 0.2}},
              {"llama.cpp-cuda": {"pp_tok_s": 800.0, "tg_tok_s": 16.0, "ttft_s": 0.6},   # a hot round: both slower
               "tensorrt-edgellm": {"pp_tok_s": 2400.0, "tg_tok_s": 28.8, "ttft_s": 0.25}}]
    s = orin.summarise(rounds)
    assert s["tensorrt-edgellm"]["tg_tok_s_ratio"] == pytest.approx(1.8)  # the same in both rounds
    assert s["tensorrt-edgellm"]["pp_tok_s_ratio"] == pytest.approx(3.0)
    assert s["tensorrt-edgellm"]["ttft_speedup"] == pytest.approx((0.5 / 0.2 + 0.6 / 0.25) / 2)
    assert "tg_tok_s_ratio" not in s["llama.cpp-cuda"]


def test_memory_peaks_count_every_process_of_the_tree_at_once(tmp_path):
    """A parent and its child each holding 150 MB at the same time: the summed peak sees both; one
    process alone, only itself. (The kernel's ru_maxrss starts a forked child at its parent's RSS, so
    of the largest process only a lower bound holds here, inside pytest.) A killed command still says
    how far it got."""
    import sys

    touch = "b = bytearray(150 << 20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(1.5)"
    both = (f"import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', {touch!r}]); {touch}; c.wait()")
    _, largest, total = common.run_measured_tree([sys.executable, "-c", both], tmp_path / "log", sample_s=0.05)
    assert largest > 150e6 and total > 300e6
    _, _, alone = common.run_measured_tree([sys.executable, "-c", touch], tmp_path / "log", sample_s=0.05)
    assert 150e6 < alone < 250e6
    with pytest.raises(common.CommandFailed) as died:
        common.run_measured_tree([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                                 tmp_path / "log")
    assert "command failed (-9)" in str(died.value) and died.value.measured[0] > 0
