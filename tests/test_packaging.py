"""converters/ and targets/ install as edgekit.converters / edgekit.targets, editable and as a wheel."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_editable_install_maps_subpackages_to_repo_folders():
    conv = importlib.import_module("edgekit.converters")
    targ = importlib.import_module("edgekit.targets")
    assert Path(conv.__file__).resolve() == REPO / "converters" / "__init__.py"
    assert Path(targ.__file__).resolve() == REPO / "targets" / "__init__.py"
    assert importlib.import_module("edgekit.converters.gguf").__name__ == "edgekit.converters.gguf"


@pytest.mark.parametrize("name", ["converters", "targets"])
def test_not_installed_as_top_level_packages(name):
    code = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({name!r}) is None else 1)"
    # run outside the repo so the current directory does not shadow site-packages
    assert subprocess.run([sys.executable, "-c", code], cwd="/").returncode == 0


def test_wheel_contains_and_imports_subpackages(tmp_path, monkeypatch):
    """The wheel deploy builds (edgekit.device.wheels.edgekit_wheel: from a clean copy of the sources, so a
    stale build/ folder cannot hide a package missing from pyproject.toml)."""
    from edgekit.device.wheels import edgekit_wheel

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    wheel = edgekit_wheel()
    assert wheel is not None and wheel.parent.parent == tmp_path / "cache" / "edgekit-wheels"
    assert edgekit_wheel() == wheel  # built once per source state
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgekit/converters/gguf.py" in names
    assert "edgekit/targets/host.py" in names
    assert "edgekit/data/corpus.txt" in names
    # every package of the source tree is in the wheel (deploy installs edgekit on devices from it)
    for folder, package in ((REPO / "edgekit", "edgekit"), (REPO / "converters", "edgekit/converters"),
                            (REPO / "targets", "edgekit/targets")):
        for init in folder.rglob("__init__.py"):
            assert f"{package}/{init.relative_to(folder).as_posix()}" in names, init
    assert not any(n.startswith(("converters/", "targets/")) for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # -S: no site-packages, so the editable install cannot answer instead of the wheel
    code = ("import edgekit.converters, edgekit.targets, edgekit.targets.host as h;"
            "print(edgekit.converters.__file__); print(h.__file__)")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(site)}, check=True).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in out), out


def test_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from edgekit.cli import cli\n"
        "for args in (['--help'], ['export', '--help'], ['export', 'gguf', '--help'], ['synth', '--help'],"
        " ['inspect', '--help'], ['export', 'onnx', '--help'], ['bench', '--help']):\n"
        "    r = CliRunner().invoke(cli, args)\n"
        "    assert r.exit_code == 0, (args, r.output)\n"
        "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'onnx', 'onnxruntime', 'tensorrt', 'gguf',"
        " 'safetensors', 'optimum', 'onnxruntime_genai') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"--help imported {out}"
