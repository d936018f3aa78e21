"""Runtimes a device's OS provides for its system Python only (JetPack's TensorRT bindings, from
`python3-libnvinfer`), made importable in edgekit's device venv without its system site
packages: a folder in the venv with a link to each module and its .dist-info, named by a .pth
file. Nothing outside the venv is written.

`python -m edgekit.device.system_link BASE_PYTHON MODULE [MODULE...]` (run with the venv's
python): asks BASE_PYTHON where each module is, links what it finds, then imports each in a
child of the venv's python (a crash there is a line, not a dead deploy). Prints one JSON object
{"linked": {module: version}, "missing": {module: why}}; exit 0 either way (the caller decides
what a missing module means), 2 on bad arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

LINKS = "system-links"
PTH = "edgekit-system-links.pth"
LOCATE = r"""
import importlib.util, json, os, sys, glob
out = {}
for name in sys.argv[1:]:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        continue
    path = os.path.dirname(spec.origin) if spec.submodule_search_locations else spec.origin
    parent = os.path.dirname(path)
    meta = glob.glob(os.path.join(parent, name + "-*.dist-info")) + glob.glob(os.path.join(parent, name + "-*.egg-info"))
    out[name] = {"path": path, "meta": meta}
print(json.dumps(out))
"""


def locate(base_python: str, modules: list[str]) -> dict:
    r = subprocess.run([base_python, "-c", LOCATE, *modules], capture_output=True, text=True, timeout=120,
                       check=False)
    try:
        found = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return found if isinstance(found, dict) else {}


def link(found: dict, venv: Path) -> Path:
    folder = venv / LINKS
    folder.mkdir(exist_ok=True)
    for info in found.values():
        for target in [info["path"], *info.get("meta", [])]:
            dest = folder / os.path.basename(target)
            if dest.is_symlink() or dest.exists():
                dest.unlink()
            dest.symlink_to(target)
    site = Path(sysconfig.get_paths()["purelib"])
    (site / PTH).write_text(str(folder) + "\n", encoding="utf-8")
    return folder


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m edgekit.device.system_link BASE_PYTHON MODULE [MODULE...]", file=sys.stderr)
        return 2
    base, modules = argv[0], argv[1:]
    found = locate(base, modules)
    missing = {m: f"{base} has no `{m}` module" for m in modules if m not in found}
    linked = {}
    if found:
        link(found, Path(sys.prefix))
    for m in found:
        r = subprocess.run([sys.executable, "-c", f"import {m}; print({m}.__version__)"], capture_output=True,
                           text=True, timeout=300, check=False)
        if r.returncode == 0 and r.stdout.strip():
            linked[m] = r.stdout.strip().splitlines()[-1][:40]
        else:
            why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1][:200]
            missing[m] = f"{m} from {base} does not import in the venv ({why}): is the venv's Python the same version?"
    print(json.dumps({"linked": linked, "missing": missing}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
