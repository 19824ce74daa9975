"""The producer side and the shared contract load no MLX."""

from __future__ import annotations

import subprocess
import sys


def test_importing_producers_and_jobs_loads_no_mlx() -> None:
    code = (
        "import sys, jobs.repository, jobs.broker, photos.intake, jobs.variants, jobs.advisors\n"
        "import producers, producers.client, producers.router, producers.cli\n"
        "banned = {'mlx', 'mlx_vlm', 'advisor_worker'}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in banned)\n"
        "print(','.join(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
