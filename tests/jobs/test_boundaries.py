"""The producer side, the contract, the store, photo intake and notices load no MLX."""

from __future__ import annotations

import subprocess
import sys


def test_importing_producers_jobs_store_photos_and_notices_loads_no_mlx() -> None:
    code = (
        "import sys, jobs.broker, jobs.clock, jobs.variants, jobs.advisors\n"
        "import store.repository, store.deliveries, store.migrate, photos.intake\n"
        "import notices.courier, notices.webhooks\n"
        "import producers, producers.client, producers.router, producers.cli\n"
        "banned = {'mlx', 'mlx_vlm', 'advisor_worker'}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in banned)\n"
        "print(','.join(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
