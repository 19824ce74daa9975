"""OpenBLAS under MLX: loaded before mlx.core it serves MLX's matmuls; after, it is refused."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

OPENBLAS = Path("/usr/lib") / "x86_64-linux-gnu" / "openblas-pthread" / "libopenblas.so.0"

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or not OPENBLAS.exists(),
    reason="needs Debian's libopenblas0-pthread on x86_64 Linux",
)

# Runs in a fresh interpreter: whether mlx.core is already imported is the point.
_SCRIPT = """
import json, sys
from advisor_worker.blas import describe_runtime, load_openblas
if sys.argv[1] == "late":
    import mlx.core
path = load_openblas()
import mlx.core as mx
a = mx.random.normal((64, 64)); mx.eval(a @ a)
print(json.dumps({"path": path, "runtime": describe_runtime()}))
"""
# The dynamic linker's record of where MLX's first matmul went: no timing involved.
_SGEMM = re.compile(r"binding file \S*libmlx\.so \[0\] to (\S+) \[0\]: normal symbol `cblas_sgemm'")


def run(mode: str) -> tuple[dict[str, Any], str]:
    """The script's report, and the library MLX's `cblas_sgemm` was bound to."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "LD_DEBUG": "bindings"}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    bound = _SGEMM.search(done.stderr)
    assert bound is not None, "MLX's matmul bound no cblas_sgemm"
    result: dict[str, Any] = json.loads(done.stdout)
    return result, bound.group(1)


def test_openblas_loaded_before_mlx_serves_its_matmuls_and_is_described() -> None:
    early, library = run("early")

    assert "openblas" in str(early["path"])
    assert early["runtime"]["blas"].startswith("OpenBLAS")
    assert early["runtime"]["default_dtype"] == "float32"
    assert "libopenblas" in library


def test_openblas_is_refused_once_mlx_is_imported() -> None:
    late, library = run("late")

    assert late["path"] is None
    assert late["runtime"]["blas"].startswith("bundled reference BLAS")
    assert "libopenblas" not in library and "libblas" in library
