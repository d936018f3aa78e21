"""Helpers shared by the benchmark scripts (run them as scripts: this folder is on sys.path)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path


def llama_cpp_tree(work: Path, given: str | None = None) -> Path:
    """llama.cpp's source tree from the llama-cpp-python sdist matching the installed version (cached)."""
    if given:
        return Path(given)
    version = metadata.version("llama-cpp-python")
    tree = work / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not (tree / "CMakeLists.txt").exists():
        dl = work / "sdist"
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                        f"llama-cpp-python=={version}", "-d", str(dl)], check=True)
        with tarfile.open(next(dl.glob("llama_cpp_python-*.tar.gz"))) as tar:
            tar.extractall(work, filter="data")
    return tree


def edgekit_exe() -> str:
    return shutil.which("edgekit") or str(Path(sys.executable).parent / "edgekit")
