"""`edgekit bench --format llama-bench` writes what llama.cpp's llama-bench writes (`-o json`).

The reference is llama.cpp's own source, vendored in the pinned llama-cpp-python sdist: the fields,
their order and their JSON types are parsed from tools/llama-bench/llama-bench.cpp, and
scripts/compare-llama-bench.py (llama.cpp's comparison tool) must read edgekit's files.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import gguf
import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.results import LLAMA_BENCH_FIELDS, BenchResult

N_PROMPT, N_GEN = 8, 4


# ---------------------------------------------------------------- llama.cpp's source

@pytest.fixture(scope="module")
def sdist() -> Path:
    from edgekit.llamacpp_build import sdist_path

    if not sdist_path().exists():
        pytest.skip(f"llama-cpp-python's sdist is not at {sdist_path()} (`make install` keeps it there): "
                    "no llama-bench source to check the format against")
    return sdist_path()


@pytest.fixture(scope="module")
def llama_cpp_src(sdist, tmp_path_factory) -> Path:
    from edgekit.llamacpp_build import extract_llama_cpp

    return extract_llama_cpp(tmp_path_factory.mktemp("llama.cpp"), ("tools", "scripts"))


def _body(src: str, head: str) -> str:
    """The brace-balanced body that follows the first match of regex `head`."""
    m = re.search(head, src)
    assert m, f"llama-bench.cpp has no {head!r}"
    start = src.index("{", m.end() - 1)
    depth = 0
    for i in range(start, len(src)):
        depth += {"{": 1, "}": -1}.get(src[i], 0)
        if depth == 0:
            return src[start + 1:i]
    raise AssertionError(f"unbalanced braces after {head!r}")


PY_TYPES = {"STRING": str, "BOOL": bool, "INT": int, "FLOAT": float}


@pytest.fixture(scope="module")
def llama_bench_schema(llama_cpp_src) -> list[tuple[str, type]]:
    """[(field, Python type of its JSON value)] in llama-bench's order, read from its source."""
    src = (llama_cpp_src / "tools" / "llama-bench" / "llama-bench.cpp").read_text(encoding="utf-8")
    fields = re.findall(r'"(\w+)"', _body(src, r"static const std::vector<std::string>\s*&\s*get_fields\(\)\s*\{"))
    typing = _body(src, r"static field_type get_field_type\(const std::string & field\)\s*\{")
    kinds: dict[str, str] = {}
    for cond, kind in re.findall(r"if\s*\((.*?)\)\s*\{\s*return (\w+);\s*\}", typing, re.S):
        for name in re.findall(r'field == "(\w+)"', cond):
            kinds.setdefault(name, kind)  # the first `if` that names a field decides, as in C++
    default = re.findall(r"return (\w+);\s*$", typing.strip())[-1]
    # how the JSON printer writes each kind: strings quoted, bools as true/false, numbers bare
    fmt = _body(src, r"static std::string format_json_value\(")
    assert re.search(r'case test::STRING:\s*return "\\""', fmt) and 'case test::BOOL:' in fmt
    assert '"false" : "true"' in fmt and re.search(r"default:\s*return value;", fmt)
    printer = _body(src, r"struct json_printer : public printer\s*\{")
    assert "print_fields(test::get_fields(), t.get_values());" in printer
    samples = re.findall(r'\\"(samples_\w+)\\": \[', printer)
    assert samples == ["samples_ns", "samples_ts"]
    assert len(fields) > 30 and len(set(fields)) == len(fields)
    return ([(f, PY_TYPES[kinds.get(f, default)]) for f in fields]
            + [("samples_ns", list), ("samples_ts", list)])


def vendored_commit(sdist: Path) -> str:
    """The full commit of the sdist's vendor/llama.cpp: its submodule HEAD (the sdist ships .git),
    else the CHANGELOG's "update llama.cpp to ggml-org/llama.cpp@<sha>" of this version."""
    from edgekit.llamacpp_build import LLAMA_CPP_PYTHON_VERSION as V

    root = f"llama_cpp_python-{V}"
    with tarfile.open(sdist) as tar:
        try:
            return tar.extractfile(f"{root}/.git/modules/vendor/llama.cpp/HEAD").read().decode().strip()
        except KeyError:
            log = tar.extractfile(f"{root}/CHANGELOG.md").read().decode()
    section = log.split(f"## [{V}]", 1)[1].split("\n## [", 1)[0]
    return re.search(r"llama\.cpp@([0-9a-f]{7,40})", section).group(1)


# ---------------------------------------------------------------- runs

@pytest.fixture(scope="module")
def ggufs(exported, tiny_qwen2) -> dict[str, Path]:
    out, manifest = exported(tiny_qwen2)
    return {f.quant: out / f.file for f in manifest.files}


def cli_bench(model: Path, out: Path, *extra: str) -> Path:
    r = CliRunner().invoke(cli, ["bench", str(model), "-p", str(N_PROMPT), "-n", str(N_GEN), "--threads", "2",
                                 "--power", "none", "-o", str(out), *extra])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def llama_bench_files(ggufs, tmp_path_factory) -> dict[str, Path]:
    """Two `edgekit bench --format llama-bench -o` files: Q4_K_M (2 repetitions) and Q4_0 (1)."""
    d = tmp_path_factory.mktemp("llama-bench")
    return {"Q4_K_M": cli_bench(ggufs["Q4_K_M"], d / "q4_k_m.json", "--format", "llama-bench", "-r", "2"),
            "Q4_0": cli_bench(ggufs["Q4_0"], d / "q4_0.json", "--format", "llama-bench", "-r", "1")}


@pytest.fixture(scope="module")
def tests_of(llama_bench_files) -> dict[str, list[dict]]:
    return {q: json.loads(p.read_text(encoding="utf-8")) for q, p in llama_bench_files.items()}


# ---------------------------------------------------------------- (1) the fields

def test_fields_order_and_json_types_are_llama_benchs(tests_of, llama_bench_schema):
    names = [f for f, _ in llama_bench_schema]
    assert list(LLAMA_BENCH_FIELDS) == names
    for quant, tests in tests_of.items():
        assert [(t["n_prompt"], t["n_gen"]) for t in tests] == [(N_PROMPT, 0), (0, N_GEN)]
        for t in tests:
            assert list(t) == names, f"{quant}: fields differ from llama-bench's"
            for field, kind in llama_bench_schema:
                assert type(t[field]) is kind, f"{quant} {field}: {t[field]!r} is not {kind.__name__}"
            assert all(type(x) is int for x in t["samples_ns"]) and all(type(x) is float for x in t["samples_ts"])


def test_values_are_what_the_run_did(tests_of, ggufs, sdist):
    from edgekit.llamacpp_build import LLAMA_CPP_PYTHON_VERSION
    from edgekit.runners.llamacpp import VENDORED_COMMIT

    commit = vendored_commit(sdist)
    assert commit.startswith(VENDORED_COMMIT[LLAMA_CPP_PYTHON_VERSION])
    for quant, suffix, reps in (("Q4_K_M", " Q4_K - Medium", 2), ("Q4_0", " Q4_0", 1)):
        reader = gguf.GGUFReader(ggufs[quant])
        for t in tests_of[quant]:
            # the build: the commit of the vendored llama.cpp, spelled as llama-bench does (short, no -dirty)
            assert re.fullmatch(r"[0-9a-f]{7,12}", t["build_commit"]) and commit.startswith(t["build_commit"])
            assert t["build_number"] == 0  # not in the shared libraries: llama.cpp's own "unknown"
            assert t["backends"] == "CPU" and t["gpu_info"] == "" and t["cpu_info"]
            # the model, in llama.cpp's own words and sizes (llama_model_desc, _size, _n_params)
            assert t["model_type"].startswith("qwen2 ") and t["model_type"].endswith(suffix)
            assert t["model_size"] == sum(int(x.n_bytes) for x in reader.tensors)  # llama_model_size
            assert t["model_n_params"] == sum(int(x.n_elements) for x in reader.tensors)
            assert t["model_filename"] == str(ggufs[quant])
            # what edgekit set, and the llama.cpp defaults it passes unchanged
            assert (t["n_threads"], t["n_gpu_layers"], t["n_batch"], t["n_ubatch"]) == (2, 0, 2048, 512)
            assert t["flash_attn"] == -1  # --flash-attn auto
            assert (t["type_k"], t["type_v"], t["split_mode"], t["main_gpu"]) == ("f16", "f16", "layer", 0)
            assert (t["no_kv_offload"], t["embeddings"], t["no_op_offload"], t["no_host"], t["repack"]) == \
                (False, False, 0, False, True)
            assert (t["load_mode"], t["lazy_mode"], t["devices"], t["tensor_split"], t["tensor_buft_overrides"]) == \
                ("auto", "auto", "auto", "0.00", "none")
            assert (t["cpu_mask"], t["cpu_strict"], t["poll"], t["n_cpu_moe"], t["n_depth"]) == ("0x0", False, 50, 0, 0)
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t["test_time"])  # llama-bench's %FT%TZ
            # timings: ns samples of the whole test, their integer mean, t/s of the same samples
            n = t["n_prompt"] + t["n_gen"]
            assert len(t["samples_ns"]) == len(t["samples_ts"]) == reps
            assert t["avg_ns"] == sum(t["samples_ns"]) // reps and all(ns > 0 for ns in t["samples_ns"])
            for ns, ts in zip(t["samples_ns"], t["samples_ts"]):
                assert ns == pytest.approx(1e9 * n / ts, rel=1e-6)
            assert t["avg_ts"] == pytest.approx(sum(t["samples_ts"]) / reps)
            assert (t["stddev_ns"] == 0 and t["stddev_ts"] == 0) if reps == 1 else t["stddev_ns"] >= 0


def test_older_results_still_load_and_convert(ggufs, tmp_path, llama_bench_schema):
    """A result written before the llama-bench facts were kept loads, and converts with every field
    (the llama.cpp defaults that edgekit passed then, the host's CPU, edgekit's own model label)."""
    path = cli_bench(ggufs["Q4_0"], tmp_path / "new.json", "-r", "1")
    data = json.loads(path.read_text())
    assert data["artifact"]["model_type"].endswith(" Q4_0") and data["runtime"]["build_commit"]
    # llama_model_size, kept in the result: the bytes of every tensor, less than the file
    tensors = sum(int(x.n_bytes) for x in gguf.GGUFReader(ggufs["Q4_0"]).tensors)
    assert data["artifact"]["tensor_bytes"] == tensors < data["artifact"]["size_bytes"]
    for part, keys in (("artifact", ("model_type", "tensor_bytes")),
                       ("runtime", ("build_commit", "build_number", "backends", "cpu_info", "gpu_info"))):
        for k in keys:
            del data[part][k]
    lc = data["settings"]["llama_cpp"]
    data["settings"]["llama_cpp"] = {k: lc[k] for k in ("gpu_layers", "n_batch", "n_ubatch", "flash_attn")}
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = BenchResult.load(tmp_path / "old.json")
    assert old.artifact.model_type is None and old.runtime.build_commit is None
    assert old.settings.llama_cpp.type_k is None
    new = BenchResult.load(path).to_llama_bench()
    for t, n in zip(old.to_llama_bench(), new):
        assert list(t) == [f for f, _ in llama_bench_schema]
        assert t["build_commit"] == "unknown" and t["model_type"] == "qwen2 Q4_0"
        assert t["model_size"] == old.artifact.size_bytes and t["backends"] == "CPU"
        same = ("type_k", "type_v", "split_mode", "no_kv_offload", "load_mode", "lazy_mode", "repack", "no_op_offload",
                "avg_ns", "samples_ns", "avg_ts")
        assert {k: t[k] for k in same} == {k: n[k] for k in same}


def test_build_commit_from_ggml_commit():
    from edgekit.runners.llamacpp import VENDORED_COMMIT, build_commit

    assert build_commit("0c1e570-dirty", "9.9.9") == "0c1e570"
    assert build_commit("abcdef1", "0.3.36") == "abcdef1"
    assert build_commit("unknown", "0.3.36") == VENDORED_COMMIT["0.3.36"]
    assert build_commit(None, "9.9.9") == "unknown"


def test_onnxruntime_build_commit():
    pytest.importorskip("onnxruntime")
    from edgekit.runners.onnxruntime import ort_build_commit

    assert re.fullmatch(r"[0-9a-f]{7,40}", ort_build_commit() or "")


# ---------------------------------------------------------------- (2) llama.cpp's compare tool reads it

def test_compare_llama_bench_reads_edgekit_files(llama_bench_files, tests_of, llama_cpp_src, tmp_path):
    script = llama_cpp_src / "scripts" / "compare-llama-bench.py"
    commit = tests_of["Q4_K_M"][0]["build_commit"]
    # one build, so it is both baseline and compare; outside any git repository (nothing to resolve)
    run = subprocess.run([sys.executable, str(script), "-t", "llama-bench", "-b", commit, "-c", commit,
                          *[a for p in llama_bench_files.values() for a in ("-i", str(p))]],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in run.stdout.splitlines() if line.startswith("|")]
    header, body = rows[0], rows[2:]
    assert header[:3] == ["CPU", "Model", "Test"] and header[-3:] == [f"t/s {commit}", f"t/s {commit}", "Speedup"]
    # its table names each model as llama.cpp does (with its " - Medium" -> "_M" shortening), each test once
    models = {q: ts[0]["model_type"].replace(" - Medium", "_M") for q, ts in tests_of.items()}
    assert models["Q4_K_M"].endswith(" Q4_K_M") and models["Q4_0"].endswith(" Q4_0")
    assert sorted((r[1], r[2]) for r in body) == sorted((m, t) for m in models.values()
                                                        for t in (f"pp{N_PROMPT}", f"tg{N_GEN}"))
    for r in body:
        quant = next(q for q, m in models.items() if m == r[1])
        t = next(t for t in tests_of[quant] if r[2] == (f"pp{N_PROMPT}" if t["n_prompt"] else f"tg{N_GEN}"))
        assert r[0] == t["cpu_info"] and float(r[3]) == pytest.approx(t["avg_ts"], abs=0.006)
        assert r[5] == "1.00"
