"""bench_artifact is orchestration only: with a FakeRunner, a fake clock and an injected sensor,
its warm-up, repetitions, what each test times, power per phase and result assembly are checked
exactly, without llama.cpp and without timing anything real."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.bench import Clock, bench_artifact
from edgekit.settings import BenchSettings

COST_S = {"load": 0.25, "start": 1.0, "prompt_per_token": 0.001, "step": 0.002, "pick": 0.0005}


class FakeClock(Clock):
    def __init__(self):
        self.t = 100.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class FakeRunner:
    """The Runner protocol; every call advances the fake clock by a known cost and is logged."""

    uses_gpu = False

    def __init__(self, clock: FakeClock):
        self.clock, self.calls, self.cache = clock, [], None
        self.rng = np.random.default_rng(0)

    def _spend(self, seconds: float) -> None:
        self.clock.t += seconds

    def load(self):
        self.calls.append(("load",))
        self._spend(COST_S["load"])

    def close(self):
        self.calls.append(("close",))

    def backend(self):
        return "CPU"

    def system_info(self):
        return "fake 1.0"

    def result_settings(self):
        return {"llama_cpp": {"gpu_layers": 0, "n_batch": 64, "n_ubatch": 32, "flash_attn": "off"}}

    def random_tokens(self, n):
        return self.rng.integers(0, 1000, size=n)

    def start(self, capacity):
        self.calls.append(("start", capacity))
        self.cache = 0
        self._spend(COST_S["start"])  # allocation: must never fall inside a timed window

    def prompt(self, tokens):
        assert self.cache == 0, "a prompt runs on an emptied cache"
        self.calls.append(("prompt", len(tokens)))
        self.cache += len(tokens)
        self._spend(COST_S["prompt_per_token"] * len(tokens))

    def step(self, token):
        assert isinstance(token, int)
        self.calls.append(("step",))
        self.cache += 1
        self._spend(COST_S["step"])

    def pick(self):
        self.calls.append(("pick",))
        self._spend(COST_S["pick"])
        return 7

    def logits(self, ids):
        raise AssertionError("bench does not need logits")


class ConstantPower:
    """A sensor reporting joules as `watts` x the fake clock: the energy of any window is exact."""

    name, excludes, kind = "fake:constant", "nothing", "energy"

    def __init__(self, clock: FakeClock, watts: float):
        self.clock, self.watts, self.closed = clock, watts, False

    def read(self) -> float:
        return self.watts * self.clock.t

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def gguf_path(exported, tiny_qwen2):
    out, manifest = exported(tiny_qwen2)
    return out / next(f.file for f in manifest.files if f.quant == "Q4_0")


def _run(gguf_path, sensor_watts=None, **settings):
    clock = FakeClock()
    runners, sensors, progress = [], [], []

    def make_runner(path, s, spec):
        runners.append(FakeRunner(clock))
        return runners[-1]

    def open_sensor(s, on_gpu, spec):
        if sensor_watts is None:
            return None, "no sensor in this test"
        sensors.append(ConstantPower(clock, sensor_watts))
        return sensors[-1], None

    result = bench_artifact(gguf_path, BenchSettings(threads=2, **settings), runner_factory=make_runner,
                            sensor_factory=open_sensor, clock=clock, progress=lambda *a: progress.append(a))
    return result, runners[0], sensors, progress


def test_warm_up_repetitions_and_what_each_test_times(gguf_path):
    r, runner, _, progress = _run(gguf_path, n_prompt=32, n_gen=8, repetitions=3)
    calls = runner.calls
    assert calls[0] == ("load",) and calls[-1] == ("close",)
    # one warm-up of each test first: the prompt, then at most 4 steps
    assert calls[1:4] == [("start", 32), ("prompt", 32), ("start", 8)]
    assert calls[4:8] == [("step",)] * 4
    body = calls[8:-1]
    pp = [("start", 32), ("prompt", 32)]
    tg = [("start", 8)] + [("step",)] * 8
    ttft = [("start", 32), ("prompt", 32), ("pick",)]
    assert body == pp * 3 + tg * 3 + ttft * 3
    m = r.metrics
    # exactly the work inside the clock: never the cache allocation, never the load
    assert m.pp_tok_s.samples == pytest.approx([1 / COST_S["prompt_per_token"]] * 3)
    assert m.tg_tok_s.samples == pytest.approx([1 / COST_S["step"]] * 3)
    assert m.ttft_s.samples == pytest.approx([32 * COST_S["prompt_per_token"] + COST_S["pick"]] * 3)
    assert m.load_s == pytest.approx(COST_S["load"])
    assert [p[1:] for p in progress] == [(i, 9) for i in range(1, 10)]


def test_result_assembly_takes_runtime_fields_from_the_runner_and_facts_from_the_format(gguf_path):
    r, _, _, _ = _run(gguf_path, n_prompt=16, n_gen=4, repetitions=2)
    assert r.settings.n_prompt == 16 and r.settings.n_gen == 4 and r.settings.repetitions == 2
    assert r.settings.threads == 2 and r.settings.ctx == 17  # what the run needs: the prompt and one more
    assert r.settings.llama_cpp.flash_attn == "off" and r.settings.n_batch == 64 and r.settings.n_ubatch == 32
    assert r.settings.onnxruntime is None
    assert r.runtime.name == "llama.cpp" and r.runtime.build_flags == "fake 1.0"
    assert r.artifact.format == "gguf" and r.artifact.quant == "Q4_0" and r.artifact.n_params > 0
    assert len(r.artifact.sha256) == 64
    assert r.power.source is None and r.power.unavailable == "no sensor in this test"
    assert r.roofline.bytes_per_token > 0


def test_only_the_tests_asked_for_run(gguf_path):
    r, runner, _, _ = _run(gguf_path, n_prompt=0, n_gen=5, repetitions=2)
    assert ("prompt", 0) not in runner.calls and not any(c[0] == "pick" for c in runner.calls)
    assert r.metrics.pp_tok_s is None and r.metrics.ttft_s is None and len(r.metrics.tg_tok_s.samples) == 2
    r, runner, _, _ = _run(gguf_path, n_prompt=8, n_gen=0, repetitions=1)
    assert not any(c[0] == "step" for c in runner.calls) and r.metrics.tg_tok_s is None and r.roofline is None


def test_power_per_phase_from_an_injected_sensor(gguf_path):
    r, _, sensors, _ = _run(gguf_path, sensor_watts=5.0, n_prompt=32, n_gen=8, repetitions=2, idle_s=2.0,
                            sample_interval_s=0.01)
    p = r.power
    assert p.source == "fake:constant" and sensors[0].closed
    assert p.idle_w == pytest.approx(5.0) and p.pp_avg_w == pytest.approx(5.0) and p.tg_avg_w == pytest.approx(5.0)
    # joules per token = watts x the phase's time per token, exactly
    assert p.pp_j_per_tok == pytest.approx(5.0 * COST_S["prompt_per_token"])
    assert p.tg_j_per_tok == pytest.approx(5.0 * COST_S["step"])
    assert p.tg_j_per_tok_above_idle == pytest.approx(0.0, abs=1e-12)
