"""Puts Debian's OpenBLAS under MLX on Linux CPUs; describes the MLX runtime for the startup log."""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["describe_runtime", "load_openblas"]

# The mlx[cpu] wheel bundles reference BLAS (~60x slower fp32 GEMM here). libmlx.so imports
# cblas_sgemm unversioned, so an OpenBLAS loaded RTLD_GLOBAL before mlx.core wins the lookup.
_OPENBLAS_SONAME = "libopenblas.so.0"
_LIBBLAS_SONAME = "libblas.so.3"

# Set by the first successful load_openblas(); later calls return it without reloading.
_loaded_path: str | None = None


def load_openblas() -> str | None:
    """Load OpenBLAS process-wide before mlx.core is imported; its path, or None if absent.

    Returns None, loading nothing, on macOS (MLX uses Accelerate and Metal there), when
    mlx.core is already imported (too late to take effect), and wherever no OpenBLAS is
    installed (`apt-get install libopenblas0-pthread`); the caller logs a warning then.
    """
    global _loaded_path
    if _loaded_path is not None:
        return _loaded_path
    if sys.platform != "linux":
        return None
    preloaded = _global_cblas_library()
    if preloaded is not None and hasattr(ctypes.CDLL(preloaded), "openblas_get_config"):
        # Already in the global scope, e.g. by LD_PRELOAD.
        _loaded_path = preloaded
        return _loaded_path
    if "mlx.core" in sys.modules:
        # Measured: once libmlx is loaded its cblas_* calls stay bound to the bundled BLAS.
        logger.warning("load_openblas() called after mlx.core was imported; it cannot apply")
        return None
    for candidate in _candidates():
        try:
            lib = ctypes.CDLL(candidate, mode=os.RTLD_GLOBAL | os.RTLD_NOW)
        except OSError:
            continue
        # libblas.so.3 may be the reference BLAS alternative; only OpenBLAS is worth loading.
        if not hasattr(lib, "openblas_get_config"):
            continue
        _loaded_path = _global_cblas_library() or os.path.realpath(candidate)
        logger.debug("Loaded OpenBLAS from %s", _loaded_path)
        return _loaded_path
    return None


def describe_runtime() -> dict[str, Any]:
    """Device, default dtype, BLAS and versions of the MLX runtime in this process."""
    # Imported here, not at module level: load_openblas() must be able to run before mlx.core.
    import mlx.core as mx

    return {
        "mlx_version": metadata.version("mlx"),
        "device": str(mx.default_device()),
        "metal": bool(mx.metal.is_available()),
        "default_dtype": str(mx.array(0.0).dtype).removeprefix("mlx.core."),
        "blas": _blas_description(),
        "platform": f"{sys.platform}-{platform.machine()}",
    }


def _candidates() -> list[str]:
    """Debian's multiarch paths first (pthread flavour), then the dynamic loader's search."""
    triplet = f"{platform.machine()}-linux-gnu"
    paths = [
        f"/usr/lib/{triplet}/openblas-pthread/{_OPENBLAS_SONAME}",
        f"/usr/lib/{triplet}/{_OPENBLAS_SONAME}",
        f"/usr/lib/{triplet}/openblas-pthread/{_LIBBLAS_SONAME}",
        f"/usr/lib/{triplet}/{_LIBBLAS_SONAME}",
    ]
    return [p for p in paths if Path(p).exists()] + [_OPENBLAS_SONAME]


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _global_cblas_library() -> str | None:
    """The library that the global symbol scope, searched before libmlx's own, gives cblas_sgemm."""
    process = ctypes.CDLL(None)
    try:
        symbol = process.cblas_sgemm
    except AttributeError:
        return None
    info = _DlInfo()
    if not process.dladdr(ctypes.cast(symbol, ctypes.c_void_p), ctypes.byref(info)):
        return None
    return os.path.realpath(info.dli_fname.decode())


def _blas_description() -> str:
    if sys.platform == "darwin":
        return "Accelerate"
    # Also sees an OpenBLAS put there by LD_PRELOAD rather than by load_openblas().
    path = _global_cblas_library()
    if path is None:
        return "bundled reference BLAS (slow: install libopenblas0-pthread)"
    lib = ctypes.CDLL(path)
    if not hasattr(lib, "openblas_get_config"):
        return path
    lib.openblas_get_config.restype = ctypes.c_char_p
    config = lib.openblas_get_config().decode(errors="replace").strip()
    return f"{config} ({lib.openblas_get_num_threads()} threads, {path})"
