"""Worker processes forked from an interpreter that has already imported their libraries.

A cold `advisor-worker run` spends about 4 s of CPU importing transformers, mlx-vlm, Celery
and SQLAlchemy before it reads its first setting, and the suite starts dozens. Each test
process therefore keeps one `multiprocessing` fork server that has imported those libraries
(`tests/worker_libraries.py`, OpenBLAS first) and nothing of the project's own: a worker
forked from it sets its own environment, sends its output to its own log and runs
`python -m advisor_worker.cli run ...` as `__main__`, so every project module, the Celery
app with its settings included, is imported under that worker's environment.

What a fork cannot give, a cold start keeps: a worker whose environment differs from the
test process's in anything but ADVISOR_* settings and HOME (another BLAS thread count,
another PATH) starts cold, as do the demo's, the runbook's launchd jobs, the multi-host and the
compose workers, which start the installed console script. `TESTS_COLD_WORKERS=1` starts
every worker cold.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import tempfile
from multiprocessing.context import ForkServerProcess
from pathlib import Path

LIBRARIES = "tests.worker_libraries"
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload([LIBRARIES])
_server_env: dict[str, str] | None = None  # the environment the server was started with


# Read after start-up, never by the preloaded libraries' imports in a way a test relies on:
# pytest's current test, and HOME (the runbook's commands write plists under a HOME of their
# own; the libraries' cache paths derived from it go unused offline, with local models).
_AFTER_START = frozenset({"PYTEST_CURRENT_TEST", "HOME"})


def _relevant(env: dict[str, str]) -> dict[str, str]:
    """What a process's start reads before its settings: all but ADVISOR_* and _AFTER_START."""
    return {k: v for k, v in env.items()
            if not k.startswith("ADVISOR_") and k not in _AFTER_START}  # fmt: skip


def can_fork(env: dict[str, str]) -> bool:
    """Whether a worker with `env` may be forked rather than started cold."""
    if os.environ.get("TESTS_COLD_WORKERS") == "1" or sys.platform != "linux":
        return False
    return _relevant(env) == _relevant(_server_env if _server_env is not None else {**os.environ})


class ForkedProcess:
    """The parts of `subprocess.Popen` the suite uses, for a forked process."""

    def __init__(self, process: ForkServerProcess, args: list[str]) -> None:
        self._process = process
        self.args = args
        self.pid: int = process.pid  # type: ignore[assignment]

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self._process.exitcode is None:  # as Popen: never signal a pid that may be reused
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork_module(
    module: str,
    args: list[str],
    env: dict[str, str],
    log: Path,
    *,
    stderr: Path | None = None,
    cwd: Path | None = None,
) -> ForkedProcess:
    """`python -m module *args` with `env` in `cwd`, its output appended to `log` (stderr to
    `stderr` if given); not waited for."""
    global _server_env
    if _server_env is None:
        _server_env = dict(os.environ)  # the server starts on this first use, with this env
    process = _context.Process(
        target=_run_module,
        args=(module, args, env, str(log), str(stderr or log), str(cwd) if cwd else None),
        daemon=True, name=f"{module} {' '.join(args)}",
    )  # fmt: skip
    process.start()
    return ForkedProcess(process, [sys.executable, "-m", module, *args])


def run_module(
    module: str,
    args: list[str],
    env: dict[str, str],
    *,
    timeout: float,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """As `subprocess.run([python, -m, module, *args], capture_output=True, text=True)`."""
    with tempfile.TemporaryDirectory(prefix="forked-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        proc = fork_module(module, args, env, out, stderr=err, cwd=cwd)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        return subprocess.CompletedProcess(proc.args, code, _read(out), _read(err))


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _run_module(
    module: str, args: list[str], env: dict[str, str], out: str, err: str, cwd: str | None
) -> None:
    """In the forked child: become `python -m module *args` and exit as it would."""
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    for target, path in ((1, out), (2, err)):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, target)
        os.close(fd)
    sys.argv = [module, *args]
    code: object = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    finally:
        atexit._run_exitfuncs()  # what an interpreter's exit runs; multiprocessing skips it
    sys.exit(code)
