"""The suite's fork server (tests/forkserver.py) behaves as a cold `python -m` start would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests import forkserver
from tests.support import eventually, run_command, start_command

PROBE = "tests.forkserver_probe"


def test_a_forked_module_gets_its_env_cwd_argv_and_exit_code_with_the_libraries_loaded(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "ADVISOR_PROBE": "seen"}
    assert forkserver.can_fork(env) and forkserver.can_fork({**env, "HOME": str(tmp_path)})
    out = forkserver.run_module(PROBE, ["3", "x y"], env, timeout=60, cwd=tmp_path)
    assert out.returncode == 3
    shown = json.loads(out.stdout)
    assert shown == {"argv": ["3", "x y"], "cwd": str(tmp_path), "probe": "seen",
                     "mlx_preloaded": True}  # fmt: skip
    assert out.stderr == "to stderr\n"
    assert "ADVISOR_PROBE" not in os.environ  # the test process's own environment is untouched


def test_a_signal_ends_a_forked_process_with_popens_negative_code(tmp_path: Path) -> None:
    log = tmp_path / "probe.log"
    proc = start_command(PROBE, ["0", "sleep"], dict(os.environ), log)
    assert isinstance(proc, forkserver.ForkedProcess)

    def printed() -> bool:
        if "to stderr" in (log.read_text() if log.exists() else ""):
            return True
        assert proc.poll() is None
        return False

    eventually("the probe's line on stderr", printed, 60, poll=0.05)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM == proc.returncode
    proc.kill()  # a finished process is never signalled again


def test_an_environment_beyond_advisor_settings_starts_cold(tmp_path: Path) -> None:
    other = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "PROBE": "cold"}
    assert not forkserver.can_fork(other)
    out = run_command(PROBE, ["0"], other)
    assert out.returncode == 0 and json.loads(out.stdout)["mlx_preloaded"] is False
