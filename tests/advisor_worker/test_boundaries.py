"""The serving modules stand alone: none of them loads the development tools."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import advisor_worker

# The CLI is the one wiring module: it offers the tools as subcommands.
NOT_SERVING = {"cli", "devtools"}


def serving_modules() -> list[str]:
    names = {info.name for info in pkgutil.iter_modules(advisor_worker.__path__)}
    return sorted(f"advisor_worker.{name}" for name in names - NOT_SERVING)


def test_importing_the_serving_modules_loads_no_devtools() -> None:
    modules = serving_modules()
    assert {
        "advisor_worker.runtime",
        "advisor_worker.provider",
        "advisor_worker.generation",
    } <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules\n"
        "    if m.startswith('advisor_worker.devtools') or m in ('dashscope', 'tiktoken'))\n"
        "print(','.join(loaded))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""


# Development and test dependencies (the test extra): Qwen's vocabulary for built models.
DEV_ONLY = {"dashscope", "tiktoken"}
SHIPPED = ("advisor_worker", "jobs", "store", "photos", "notices", "producers")


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_shipped_module_but_the_devtools_imports_a_test_only_package() -> None:
    root = Path(advisor_worker.__file__).parent.parent
    devtools = root / "advisor_worker" / "devtools"
    offenders = {
        str(path.relative_to(root)): sorted(imported_roots(path) & DEV_ONLY)
        for package in SHIPPED
        for path in (root / package).rglob("*.py")
        if devtools not in path.parents and imported_roots(path) & DEV_ONLY
    }

    assert offenders == {}
    assert "advisor_worker/devtools/qwen_vocab.py" in {
        str(p.relative_to(root)) for p in devtools.rglob("*.py")
    }
