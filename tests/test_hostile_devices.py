"""Devices are untrusted: what a device answers never becomes a workstation path outside results/ or
edgekit's cache, never deletes what a fetch did not create, never reaches the terminal or a report
as escape codes or rich markup, and never passes as a measurement when it is not a number one.

Each class is a table of cases. The SSH cases run against a real sshd on 127.0.0.1 whose PATH
starts with hostile fakes, and whose "deployed" edgekit is a stand-in `venv/bin/python` answering
what a hostile device would (`python -m edgekit.device.agent list` naming run ids like `..`).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner
from devices import BASE_PYTHON, _device, flags
from helpers import assert_one_line_error

from edgekit.cli import cli
from edgekit.device.untrusted import inside, is_run_id, machine_name, wheel_name
from edgekit.errors import EdgekitError

ESCAPES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x9b]")  # what no output line may hold (tab and newline aside)
GOOD_RUN = "20261203T120000Z-abc123"


def invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    yield from _device(tmp_path_factory.mktemp("hostile-device"))


@pytest.fixture(scope="module")
def gguf_file(exported, tiny_qwen2) -> Path:
    folder, _ = exported(tiny_qwen2)
    return folder / f"{tiny_qwen2.name}-Q4_0.gguf"


@pytest.fixture(scope="module")
def bench_result_file(gguf_file, tmp_path_factory) -> Path:
    """A real result of this machine (a tiny GGUF, one repetition), for the cases to corrupt."""
    out = tmp_path_factory.mktemp("result") / "result.json"
    r = invoke(["bench", gguf_file, "-p", "8", "-n", "4", "-r", "1", "--power", "none", "-o", out])
    assert r.exit_code == 0, r.output
    return out


def _stand_in_agent(device, runs: list[dict], jobs: dict[str, dict]) -> str:
    """A remote folder whose venv/bin/python answers `-m edgekit.device.agent list` with `runs`, and
    runs/<id>/job.json + status.json for the ids in `jobs`. Returns the remote folder."""
    remote = device.home / "hostile"
    (remote / "venv" / "bin").mkdir(parents=True, exist_ok=True)
    (remote / "runs").mkdir(exist_ok=True)
    listing = "".join(json.dumps(r) + "\n" for r in runs)
    python = remote / "venv" / "bin" / "python"
    python.write_text(f"#!/bin/sh\ncat <<'EOF'\n{listing}EOF\n")
    python.chmod(0o755)
    for run_id, job in jobs.items():
        folder = remote / "runs" / run_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "job.json").write_text(json.dumps(job))
        (folder / "status.json").write_text(json.dumps({"ok": True, "error": None}))
    return str(remote)


HOSTILE_RUN_IDS = {  # case -> what the device lists as a run's id
    "parent": "..",
    "up and over": "../victim",
    "absolute": "/tmp",
    "nested": f"{GOOD_RUN}/../..",
    "escapes": "\x1b]0;pwned\x07\x1b[2J",
    "not a string": 7,
}


@pytest.mark.parametrize("case", list(HOSTILE_RUN_IDS))
def test_fetch_refuses_run_ids_that_are_not_edgekits_and_deletes_nothing(device, tmp_path, case):
    """The device lists a run id `..`: fetch used to rmtree results/<host>/<key>/.. (the user's other
    runs and a file of theirs). Now such an id is refused with a warning and nothing is touched."""
    results = tmp_path / "results"
    host_dir = results / device.dest
    (host_dir / "artifact" / "older-run").mkdir(parents=True)
    (host_dir / "artifact" / "older-run" / "result.json").write_text("{}")
    (tmp_path / "victim").write_text("the user's")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    remote = _stand_in_agent(device, [{"id": HOSTILE_RUN_IDS[case], "status": {"ok": True}, "pulled": False,
                                      "running": False}], {})
    r = invoke(["fetch", "--host", device.dest, *flags(device.options), "--remote-dir", remote,
                "--results", results])
    assert r.exit_code == 0, r.output
    assert "not a run id edgekit makes" in r.output and not ESCAPES.search(r.output)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


HOSTILE_KEYS = {"parent": "..", "up": "../../../escaped", "absolute": "/etc", "escapes": "a\x1b[31mb"}


@pytest.mark.parametrize("case", list(HOSTILE_KEYS))
def test_a_fetched_runs_artifact_key_stays_a_folder_name_inside_results(device, tmp_path, case):
    results = tmp_path / "results"
    remote = _stand_in_agent(device, [{"id": GOOD_RUN, "status": {"ok": True}, "pulled": False, "running": False}],
                             {GOOD_RUN: {"kind": "bench", "model": "m.gguf", "artifact_key": HOSTILE_KEYS[case],
                                         "settings": {}}})
    r = invoke(["fetch", "--host", device.dest, *flags(device.options), "--remote-dir", remote,
                "--results", results])
    assert r.exit_code == 0, r.output
    (job,) = tmp_path.rglob("job.json")
    assert results.resolve() in job.resolve().parents and job.parent.name == GOOD_RUN
    assert job.parent.parent.parent == results / device.dest  # <results>/<host>/<one safe name>/<run>
    assert [p.name for p in tmp_path.iterdir()] == ["results"]


def test_a_run_fetched_before_is_kept_not_replaced(device, tmp_path):
    results = tmp_path / "results"
    remote = _stand_in_agent(device, [{"id": GOOD_RUN, "status": {"ok": True}, "pulled": False, "running": False}],
                             {GOOD_RUN: {"kind": "bench", "model": "m.gguf", "artifact_key": "m", "settings": {}}})
    args = ["fetch", "--host", device.dest, *flags(device.options), "--remote-dir", remote, "--results", results]
    assert invoke(args).exit_code == 0
    (job,) = results.rglob("job.json")
    (job.parent / "notes.txt").write_text("the user's own notes beside the run")
    assert invoke(args).exit_code == 0  # the device still says "not pulled": fetched again, kept
    assert (job.parent / "notes.txt").read_text() == "the user's own notes beside the run"


HOSTILE_MACHINES = ["x/../../../planted", "..", "x86_64; rm -rf ~", "\x1b[2Jaarch64"]


@pytest.mark.parametrize("machine", HOSTILE_MACHINES)
def test_a_machine_name_that_is_a_path_is_refused_before_anything_is_written(device, tmp_path, machine, gguf_file):
    """`uname -m` answering `x/../../planted` used to create a folder outside edgekit's cache (the
    device-built wheel folder took the machine as a path part)."""
    device.fake("uname", f'if [ "$1" = -m ]; then printf %s {shlex.quote(machine)}; echo; else exec /bin/uname "$@"; '
                         "fi\n")
    cache = tmp_path / "cache"
    try:
        r = CliRunner().invoke(cli, ["deploy", str(gguf_file), "--host", device.dest, *flags(device.options),
                                     "--remote-dir", device.remote, "--python", BASE_PYTHON],
                               env={"EDGEKIT_CACHE": str(cache)})
    finally:
        device.clear_fakes()
    line = assert_one_line_error(r, "not an architecture name")
    assert not ESCAPES.search(line)
    assert not [p for p in tmp_path.rglob("*") if "planted" in p.name]
    assert not (Path(device.remote) / "venv").exists()  # refused before the venv, the runtime or the upload


@pytest.mark.parametrize("name", ["../../../ws/victim.txt", "/etc/passwd", "llama_cpp_python-0.3.36-x.whl/../../a",
                                  "evil-0.1-py3-none-any.whl", "llama_cpp_python-0.3.36 extra.whl", ""])
def test_a_built_wheels_name_that_is_not_a_wheel_file_name_is_refused(name):
    with pytest.raises(EdgekitError) as e:
        wheel_name(name, "llama_cpp_python", "pi")
    assert "not a llama_cpp_python wheel file name" in e.value.problem


def test_the_names_a_device_may_give():
    assert is_run_id(GOOD_RUN) and not is_run_id("..") and not is_run_id(GOOD_RUN + "/x")
    assert machine_name("aarch64", "pi") == "aarch64" and machine_name("x86_64", "pi") == "x86_64"
    assert wheel_name("llama_cpp_python-0.3.36-cp311-cp311-linux_aarch64.whl", "llama_cpp_python", "pi")
    with pytest.raises(EdgekitError):
        machine_name("", "pi")


def test_a_local_path_from_device_words_never_leaves_its_root(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    assert inside(tmp_path / "root", "a", "b") == (tmp_path / "root" / "a" / "b").resolve()
    for parts in (("..",), ("a", "..", ".."), ("/etc",), ("link", "x")):
        with pytest.raises(EdgekitError):
            inside(tmp_path / "root", *parts)


# ---------------------------------------------------------------- what a result may say


def _result(bench_result_file: Path, tmp_path: Path, edit) -> Path:
    data = json.loads(bench_result_file.read_text())
    edit(data)
    out = tmp_path / "results" / "pi" / "m" / GOOD_RUN / "result.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data))
    return out


OSC = "\x1b]0;title\x07"
CSI = "\x1b[2J\x1b[?1049h"
LINK = "\x1b]8;;http://example.invalid\x1b\\click\x1b]8;;\x1b\\"
MARKUP = "[link=http://example.invalid]x[/link][red]"
HOSTILE_TEXT = {  # where a device's words land in a result -> the hostile text
    "artifact path": (("artifact", "path"), f"/r/{OSC}model{CSI}.gguf"),
    "runtime name": (("runtime", "name"), f"llama.cpp{LINK}"),
    "backend": (("runtime", "backend"), f"CPU{MARKUP}"),
    "target": (("target",), f"rpi5{CSI}"),
    "reached as": (("host", "reached_as"), f"pi{OSC}"),
    "os": (("host", "os"), f"Linux{LINK}"),
    "build": (("runtime", "build_flags"), f"NEON = 1 | {CSI}"),
}


def _set_path(data, path, value):
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@pytest.mark.parametrize("case", list(HOSTILE_TEXT))
def test_device_text_in_a_result_reaches_no_output_raw(bench_result_file, tmp_path, case):
    """Escape codes (title, clear screen, OSC 8 links, the alternate screen) and rich markup in any
    string of a device's result: the terminal table, the Markdown and the HTML report show them as
    harmless text (escapes removed, markup as written); the JSON stays as it was (escaped)."""
    path, text = HOSTILE_TEXT[case]

    def edit(data):
        _set_path(data, path, text)
        data["warnings"] = [f"hot {CSI}{MARKUP}"]
    result = _result(bench_result_file, tmp_path, edit)
    for out in ("r.md", "r.html"):
        r = invoke(["report", tmp_path / "results", "-o", tmp_path / out])
        assert r.exit_code == 0, r.output
        written = (tmp_path / out).read_text()
        assert "\x1b" not in written and "\x07" not in written, out
        assert "\x1b" not in r.output and "\x07" not in r.output
    if "[" in text:  # rich markup printed as written, not interpreted (a link, a colour)
        assert "[red]" in r.output.replace("\n", "") or "[red]" in (tmp_path / "r.md").read_text()
    assert json.loads(result.read_text())["warnings"] == [f"hot {CSI}{MARKUP}"]  # the file itself is untouched


HOSTILE_NUMBERS = {  # case -> (where, value, the field the one line names)
    "tg NaN": (("metrics", "tg_tok_s", "mean"), float("nan"), "metrics.tg_tok_s.mean"),
    "tg inf stdev": (("metrics", "tg_tok_s", "stdev"), float("inf"), "metrics.tg_tok_s.stdev"),
    "negative peak memory": (("metrics", "peak_rss_bytes"), -5, "metrics.peak_rss_bytes"),
    "roofline inf": (("roofline", "bandwidth_gb_s"), float("inf"), "roofline.bandwidth_gb_s"),
    "tg beyond any machine": (("metrics", "tg_tok_s", "samples"), [1e12], "tg_tok_s"),
    "negative load time": (("metrics", "load_s"), -1.0, "metrics.load_s"),
    "a watt reading of a power station": (("power", "tg_avg_w"), 5e6, "power.tg_avg_w"),
}


@pytest.mark.parametrize("case", list(HOSTILE_NUMBERS))
def test_a_result_with_impossible_numbers_is_one_line_naming_the_field(bench_result_file, tmp_path, case):
    where, value, field = HOSTILE_NUMBERS[case]
    result = _result(bench_result_file, tmp_path, lambda data: _set_path(data, where, value))
    assert_one_line_error(invoke(["report", result, "-o", tmp_path / "r.md"]), field, str(result))
    assert not (tmp_path / "r.md").exists()


# ---------------------------------------------------------------- asking for more than the model holds


def test_tokens_beyond_the_models_context_are_refused_before_the_run(gguf_file, tmp_path):
    from edgekit.formats import get_format

    context = get_format("gguf").context_length(gguf_file)
    assert context
    for args in (["-n", str(context + 1)], ["-p", str(context)], ["-n", "1000000"]):
        r = invoke(["bench", gguf_file, *args, "-r", "1", "--power", "none"])
        assert_one_line_error(r, f"context of {context} tokens", "ask for at most")
        # refused on the workstation, before any device is reached (port 1 answers nothing)
        r = invoke(["bench", gguf_file, *args, "--host", "nobody@127.0.0.1:1"])
        assert_one_line_error(r, f"context of {context} tokens")
    r = invoke(["bench", gguf_file, "-p", str(context - 1), "-n", "1", "-r", "1", "--power", "none"])
    assert r.exit_code == 0, r.output


# ---------------------------------------------------------------- recordings


@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "state/../../x", "a/b/c", ".."])
def test_a_recording_names_only_files_inside_it(tmp_path, name):
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "uname_m.txt").write_text("x86_64\n")
    (tmp_path / "outside.txt").write_text("secret\n")
    (rec / "commands.txt").write_text(f"uname_m\tuname -m\n{name}\tcat /proc/cpuinfo\n")
    assert_one_line_error(invoke(["probe", "--replay", rec]), "a file outside the recording", "commands.txt")


# ---------------------------------------------------------------- smaller promises (part 2 of the issue)


def test_a_reference_of_another_model_with_the_same_vocabulary_size_is_refused(exported, tiny_qwen2, tiny_llama,
                                                                                 tmp_path):
    """tiny Qwen2 and tiny Llama both have 1024-token vocabularies: sizes agree, tokens do not."""
    qwen, _ = exported(tiny_qwen2)
    llama, _ = exported(tiny_llama)
    r = invoke(["eval", qwen / f"{tiny_qwen2.name}-Q4_0.gguf", "--reference", llama / f"{tiny_llama.name}-F16.gguf",
                "--chunks", "1", "--ctx", "128"])
    assert_one_line_error(r, "tokenizes the text differently", "tokens differ")


@pytest.mark.parametrize("spec", ["./models/missing.gguf", "models/missing.gguf", "/nowhere/m.gguf", "a/b/c"])
def test_a_missing_local_reference_is_not_taken_for_a_hub_id(gguf_file, spec):
    r = invoke(["eval", gguf_file, "--reference", spec, "--chunks", "1"])
    assert_one_line_error(r, f"--reference {spec} does not exist")


def test_a_binary_text_for_eval_on_a_device_is_refused_before_the_device(gguf_file, tmp_path):
    binary = tmp_path / "t.bin"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 100)
    r = invoke(["eval", gguf_file, "--text", binary, "--host", "nobody@127.0.0.1:1"])  # port 1: nobody answers
    assert_one_line_error(r, "is not UTF-8 text")


def test_report_refuses_a_pipe_named_like_a_result_instead_of_hanging(tmp_path):
    import os

    folder = tmp_path / "results" / "pi" / "m" / GOOD_RUN
    folder.mkdir(parents=True)
    os.mkfifo(folder / "eval.json")
    assert_one_line_error(invoke(["report", tmp_path / "results", "-o", tmp_path / "r.md"]), "not a regular file")


def test_fetch_from_a_remote_folder_that_does_not_exist_says_so(device, tmp_path):
    r = invoke(["fetch", "--host", device.dest, *flags(device.options), "--remote-dir", device.home / "never-used",
                "--results", tmp_path / "results"])
    assert_one_line_error(r, "has no edgekit runs folder", "--remote-dir")


@pytest.mark.parametrize("remote", ["~/a ; b", "/tmp/x#y", "~/line\nbreak"])
def test_a_remote_folder_pip_cannot_take_is_refused_before_anything_is_written(device, gguf_file, remote):
    r = invoke(["deploy", gguf_file, "--host", device.dest, *flags(device.options), "--remote-dir", remote])
    assert_one_line_error(r, "which pip cannot take", "--remote-dir")
    assert not [p for p in device.home.iterdir() if p.name.startswith(("a ", "line"))]


def test_plan_warns_of_a_context_beyond_the_models():
    r = invoke(["plan", "r1-distill-qwen-1.5b", "--target", "rpi5-8gb", "--ctx", "1000000000"])
    assert r.exit_code == 0 and "beyond r1-distill-qwen-1.5b's trained context of 131072 tokens" in r.output
    assert "-0." not in r.output  # no negative usable memory
