"""Run by tests/test_forkserver.py as `python -m tests.forkserver_probe CODE [sleep]`."""

import json
import os
import sys
import time

if __name__ == "__main__":
    shown = {"argv": sys.argv[1:], "cwd": os.getcwd(), "probe": os.environ.get("ADVISOR_PROBE"),
             "mlx_preloaded": "mlx.core" in sys.modules}  # fmt: skip
    print(json.dumps(shown), flush=True)
    print("to stderr", file=sys.stderr)
    if sys.argv[2:] == ["sleep"]:
        time.sleep(60)
    sys.exit(int(sys.argv[1]))
