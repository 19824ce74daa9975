"""The serving modules stand alone: none of them loads the development tools."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

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
        "loaded = sorted(m for m in sys.modules if m.startswith('advisor_worker.devtools'))\n"
        "print(','.join(loaded))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""
