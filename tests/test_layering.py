"""Imports run downward only (DESIGN.md section 5), and the base install needs neither torch nor onnxruntime.

    base (errors, progress, fileio, datafiles)  <-  ir  <-  formats  <-  runtime  <-  passes
        <-  frontend, backends  <-  targets, compiler, validate, analyze, prune_sensitivity  <-  cli, onnx_backend,
            examples, devices, project, builder, artifacts (mcc build)

A module may import its own layer and the layers below it, never above (passes may use the runtime to evaluate
nodes; the runtime never uses a pass; frontend and backends are siblings that share format knowledge through
formats/, not through each other). Every import counts, including those inside functions.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RANKS = {"errors": 0, "progress": 0, "fileio": 0, "datafiles": 0, "__init__": 0,
         "ir": 1, "formats": 2, "runtime": 3, "passes": 4, "frontend": 5, "backends": 5,
         "targets": 6, "compiler": 6, "validate": 6, "analyze": 6, "prune_sensitivity": 6, "cli": 7, "onnx_backend": 7, "__main__": 7, "examples": 7, "devices": 7,
         "project": 7, "builder": 7, "artifacts": 7}
SIBLINGS = {frozenset({"frontend", "backends"})}


def _layer(module: str) -> str:
    """'frontend' for mcc.frontend.x, 'errors' for mcc.errors."""
    return module.split(".")[1] if module.count(".") else "__init__"


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", "benchmarks", "build") or any(p.startswith(".") for p in rel.parts):
            continue
        yield "mcc." + ".".join(rel.with_suffix("").parts), path


def _imports(module: str, path: Path):
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")
            base = base[:len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            yield from ((n, node.lineno) for n in names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mcc"):
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names if a.name.startswith("mcc"))


def test_imports_run_downward_only():
    upward = []
    for module, path in _modules():
        own = _layer(module)
        for target, line in _imports(module, path):
            other = _layer(target)
            if other == own or other not in RANKS:
                continue
            if RANKS[other] > RANKS[own] or frozenset({own, other}) in SIBLINGS:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {target} ({other})")
    assert upward == []


BLOCKED = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'onnxruntime', 'onnxscript'):
            raise ImportError(f'{name} is blocked: the base install does not have it')
sys.meta_path.insert(0, Block())
"""


@pytest.mark.parametrize("module", ["mcc.runtime", "mcc.formats.tflite.reader", "mcc.formats.onnx.reader",
                                    "mcc.validate", "mcc.cli"])
def test_base_modules_import_without_torch_or_onnxruntime(module):
    code = BLOCKED + f"import {module}\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_validate_runs_without_torch_or_onnxruntime():
    example = ROOT / "examples"
    code = BLOCKED + ("from mcc.cli import main\nsys.exit(main(['validate', "
                      f"{str(example / 'mobilenet_v2_style_int8.tflite')!r}, '--input', "
                      f"{str(example / 'mobilenet_v2_style_samples.npz')!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent)
    assert out.returncode == 0, out.stderr
    assert "0 of" in out.stdout and "OK: every comparison holds its claim" in out.stdout
