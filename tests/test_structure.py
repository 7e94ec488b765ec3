"""The package's shape, as DESIGN.md states it: one-way imports between layers (a
function-level import counts), no import circle, an engine a reader holds in one sitting,
no function over 80 lines, no C++ or CUDA program text inside Python files, a short README.

Everything is read from the source with `ast`, nothing is imported, so a failure names
the file and line to look at."""
from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "tinygrad_rnn"

# bottom to top; a module may import its own layer and the layers below it
LAYERS = [
    ["errors", "_version"],
    ["backend"],
    ["kernels"],
    ["autograd"],
    ["ops"],
    ["tensor", "tensor_xp", "func", "serialization"],
    ["gradcheck", "testing"],
    ["nn", "optim"],
    ["text", "distributed"],
    ["lm"],
    ["cli", "__main__", "viz"],
]
LAYER_OF = {name: k for k, names in enumerate(LAYERS) for name in names}


def _modules():
    """{dotted module name: path} of every module of the package."""
    mods = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(name, path):
    """(line, imported module) for every import of a package module in `path`, at any depth."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                yield node.lineno, t


EDGES = {name: sorted(set(_imports(name, path))) for name, path in MODULES.items()}


def _layer(name):
    parts = name.split(".")
    return None if len(parts) == 1 else LAYER_OF.get(parts[1])


def test_every_module_has_a_layer():
    unplaced = [n for n in MODULES if n != "tinygrad_rnn" and _layer(n) is None]
    assert not unplaced, f"modules in no layer of tests/test_structure.py's LAYERS (and DESIGN.md): {unplaced}"


def test_imports_point_down_the_layers():
    upward = []
    for name, edges in EDGES.items():
        if name == "tinygrad_rnn":  # the package's face imports what it shows
            continue
        for line, target in edges:
            if _layer(name) is None or (target != "tinygrad_rnn" and _layer(target) is None):
                continue  # reported by test_every_module_has_a_layer
            if target == "tinygrad_rnn" or _layer(target) > _layer(name):
                upward.append(f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}")
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_optim_never_imports_nn():
    bad = [(n, t) for n, es in EDGES.items() if n.startswith("tinygrad_rnn.optim")
           for _, t in es if t.startswith("tinygrad_rnn.nn")]
    assert not bad


def test_no_import_circle():
    graph = {n: {t for _, t in es} for n, es in EDGES.items()}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components; the package is shallow enough to recurse
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_engine_imports_nothing_above_errors():
    above = [t for _, t in EDGES["tinygrad_rnn.autograd.engine"] if t != "tinygrad_rnn.errors"]
    assert not above, f"autograd/engine.py imports {above}"


def _functions():
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node, node.end_lineno - node.lineno + 1


def test_no_function_over_80_lines():
    long = [f"{p.relative_to(ROOT)}:{n.lineno} {n.name} ({k} lines)" for p, n, k in _functions() if k > 80]
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


def test_the_engine_is_read_in_one_sitting():
    engine = PKG / "autograd" / "engine.py"
    assert len(engine.read_text().splitlines()) <= 300
    (walk,) = [k for p, n, k in _functions() if p == engine and n.name == "run_backward"]
    assert walk <= 40


# C++/CUDA program text: an include, a template, a kernel qualifier, a C linkage block. A
# Kernel's one-line elementwise body (CuPy's ElementwiseKernel form) is none of these.
_PROGRAM_TEXT = re.compile(r'#include\b|\btemplate\s*<|__global__|__device__|extern\s+"C"|#pragma\b')


def test_no_cpp_or_cuda_source_inside_python_files():
    found = []
    for path in sorted(PKG.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and _PROGRAM_TEXT.search(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "C++/CUDA source in Python strings (move it to a .h/.cpp/.cu file):\n" + "\n".join(found)


def test_the_readme_is_short():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 300, f"README.md has {n} lines; the rest belongs in docs/"


@pytest.mark.parametrize("name", ["tinygrad_rnn.autograd.engine", "tinygrad_rnn.backend"])
def test_named_modules_exist(name):
    # a guard for the checks above: a rename must update them, not silently pass them
    assert name in MODULES
