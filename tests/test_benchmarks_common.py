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
