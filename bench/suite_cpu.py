"""Where the test suite's CPU goes: every Python process it starts, by kind and by test file.

`python -m bench.suite_cpu [-- PYTEST ARGS]` runs the suite (`-n 4 --dist loadgroup` by
default) with a `sitecustomize` hook on PYTHONPATH that appends, at each Python process's
exit, its own CPU seconds (user + system), its command line and the test that was running
(`PYTEST_CURRENT_TEST`, inherited by what a test starts). It then prints a markdown summary:
the run's total CPU (the machine's busy time from /proc/stat, which counts the processes
forked by the suite's fork servers; elsewhere the kernel's children-included total) against
the wall time, and the
processes grouped by kind and, for workers, by test file.

Processes killed with SIGKILL, and those a test starts with a scrubbed environment (the
runbook's launchd jobs), write no line: the table's sum is a lower bound, and the run's own
total is the figure to read. The suite is CPU-bound on two cores when that total divided by
the wall time is close to 2.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HOOK = """
import atexit, os, resource, sys, time
_started = time.time()
def _account():
    try:
        use = resource.getrusage(resource.RUSAGE_SELF)
        with open({log!r}, "a") as out:
            out.write("\\t".join([str(os.getpid()), f"{{use.ru_utime + use.ru_stime:.2f}}",
                                  f"{{time.time() - _started:.1f}}", repr(" ".join(sys.argv)[:300]),
                                  repr(os.environ.get("PYTEST_CURRENT_TEST", "")[:200])]) + "\\n")
    except Exception:
        pass
atexit.register(_account)
"""


def kind(argv: str) -> str:
    """A process's kind from its command line."""
    if " run --variant" in f" {argv}":
        return "worker (`advisor-worker run`)"
    if "pytest" in argv:
        return "pytest (controller)"
    if argv in ("-c", "-u -c"):
        return "test process (xdist) or `python -c`"
    found = re.search(r"(producers[/.]cli(?:\.py)?|advisor_worker[/.]cli(?:\.py)?|advisor-worker"
                      r"|advisor-gateway|advisor) (\S+)", argv)  # fmt: skip
    if found:
        program = {"producers/cli.py": "advisor", "advisor_worker/cli.py": "advisor-worker",
                   "producers.cli": "advisor", "advisor_worker.cli": "advisor-worker"}  # fmt: skip
        return f"`{program.get(found.group(1), found.group(1))} {found.group(2)}`"
    return argv[:40] or "(no argv)"


def machine_busy_seconds() -> float | None:
    """CPU seconds this machine has been busy since boot (Linux /proc/stat), else None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    del steal  # another guest's time, not this run's
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def summarize(log: Path, total_cpu: float, wall: float) -> str:
    rows: list[tuple[float, str, str]] = []
    for line in log.read_text().splitlines():
        _pid, seconds, _alive, argv, test = line.split("\t")
        rows.append((float(seconds), ast.literal_eval(argv), ast.literal_eval(test)))
    by_kind: dict[str, list[float]] = defaultdict(list)
    by_file: dict[str, list[float]] = defaultdict(list)
    for cpu, argv, test in rows:
        by_kind[kind(argv)].append(cpu)
        if kind(argv).startswith("worker"):
            by_file[test.split("::")[0] or "(outside a test)"].append(cpu)
    out = [
        f"Run: {total_cpu:,.0f} s of CPU in {wall:,.0f} s of wall time "
        f"({total_cpu / wall:.2f} cores busy on average); the processes below account for "
        f"{sum(r[0] for r in rows):,.0f} s.",
        "",
        "| kind | processes | CPU s | share of the run |",
        "|---|---|---|---|",
    ]
    for name, cpus in sorted(by_kind.items(), key=lambda kv: -sum(kv[1]))[:15]:
        out.append(f"| {name} | {len(cpus)} | {sum(cpus):,.0f} | {sum(cpus) / total_cpu:.0%} |")
    out += ["", "| test file (workers) | workers | CPU s |", "|---|---|---|"]
    for name, cpus in sorted(by_file.items(), key=lambda kv: -sum(kv[1]))[:15]:
        out.append(f"| {name} | {len(cpus)} | {sum(cpus):,.0f} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pytest_args", nargs="*", help="after --; default: the full suite")
    parser.add_argument("--keep", type=Path, help="also copy the per-process log here (TSV)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="suite-cpu-") as tmp:
        log = Path(tmp) / "processes.tsv"
        log.touch()
        (Path(tmp) / "sitecustomize.py").write_text(HOOK.format(log=str(log)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tmp, os.environ.get(
            "PYTHONPATH")]))}  # fmt: skip
        pytest_args = args.pytest_args or ["-n", "4", "--dist", "loadgroup",
                                           "--no-loadscope-reorder"]  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy_before = machine_busy_seconds()
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                *pytest_args], env=env)  # fmt: skip
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        busy_after = machine_busy_seconds()
        if busy_before is not None and busy_after is not None:
            # Forked workers and commands (tests/forkserver.py) are children of fork servers
            # nobody waits for: the machine's busy time counts them, RUSAGE_CHILDREN does not.
            print(f"\nmachine busy {busy_after - busy_before:,.0f} s of CPU; waited-for "
                  f"children {total:,.0f} s")  # fmt: skip
            total = busy_after - busy_before
        if args.keep is not None:
            args.keep.write_text(log.read_text())
        print(f"\npytest exited {code}\n")
        print(summarize(log, total, wall))
    return code


if __name__ == "__main__":
    sys.exit(main())
