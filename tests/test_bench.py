"""The benchmark runner: never run as a test, but its entry point and verdicts must hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.report import splice
from bench.stats import Figure, Goal, Section

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_runner_parses_its_options_without_loading_mlx() -> None:
    code = (
        "import sys\n"
        "from bench import run\n"
        "args = run.parse(['--quick', '--only', 'submit', '--out', 'x.md'])\n"
        "assert args.quick and args.only == ['submit'], args\n"
        "assert not any(m.startswith('mlx') for m in sys.modules), 'mlx imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    shown = subprocess.run(
        [sys.executable, "-m", "bench.run", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert shown.returncode == 0 and "--quick" in shown.stdout


def test_a_goal_is_judged_on_its_median_and_a_miss_says_by_how_much() -> None:
    met = Goal("fused / base", Figure.of([0.97, 0.99, 1.01]), 0.98, at_least=True)
    missed = Goal("overhead", Figure.of([0.08, 0.10, 0.12]), 0.05, at_least=False)
    noisy = Goal("ratio", Figure.of([0.85, 0.95, 1.0]), 0.98, at_least=True)
    assert (met.is_met, missed.is_met) == (True, False)
    assert missed.shortfall == "missed by 100.0%"
    assert noisy.shortfall == "missed by 3.1% (the runs' range spans the target)"
    assert Figure.of([3.0, 1.0, 2.0], "ms").show(1) == "2.0 (1.0-3.0) ms"


def test_a_partial_run_replaces_its_own_section_and_keeps_the_others() -> None:
    page = "# Benchmarks\n\n## Submit\n\nold submit\n\n## Sequential A/B verdicts\n\nold\n"
    new = Section("Sequential A/B verdicts", intro="fresh numbers", tables=["| a |"])
    spliced = splice(page, [new], stamp="_Measured now._")
    assert "old submit" in spliced and "fresh numbers" in spliced and "\nold\n" not in spliced
    assert spliced.index("## Submit") < spliced.index("_Measured now._")
    added = splice("# Benchmarks\n\n## Submit\n\nold submit\n", [new], stamp="")
    assert added.rstrip().endswith("_Section time: 0 s._") and "old submit" in added


def test_the_suite_cpu_summary_groups_processes_by_kind_and_workers_by_test_file(
    tmp_path: Path,
) -> None:
    from bench.suite_cpu import summarize

    log = tmp_path / "processes.tsv"
    lines = [
        (12.5, "/x/advisor_worker/cli.py run --variant base", "tests/a/test_one.py::t (call)"),
        (7.5, "advisor-worker run --variant fine_tuned", "tests/a/test_one.py::u (setup)"),
        (3.0, "advisor-worker run --variant base", "tests/b/test_two.py::t (call)"),
        (1.25, "/x/producers/cli.py rollout show", "tests/c.py::t (call)"),
        (0.75, "producers.cli rollout set", "tests/c.py::t (call)"),  # forked: its module
        (40.0, "-u -c", ""),
    ]
    log.write_text("".join(f"1\t{c}\t9.0\t{a!r}\t{t!r}\n" for c, a, t in lines))

    text = summarize(log, total_cpu=100.0, wall=50.0)

    assert "100 s of CPU in 50 s of wall time (2.00 cores busy" in text
    assert "account for 65 s" in text
    assert "| worker (`advisor-worker run`) | 3 | 23 | 23% |" in text
    assert "| `advisor rollout` | 2 | 2 | 2% |" in text
    assert "| tests/a/test_one.py | 2 | 20 |" in text
    assert "| tests/b/test_two.py | 1 | 3 |" in text
