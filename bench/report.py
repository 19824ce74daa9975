"""docs/benchmarks.md: the machine, the goals with their verdicts, then each section's tables."""

from __future__ import annotations

from collections.abc import Sequence

from bench.stats import Section, table


def render(
    *,
    when: str,
    mode: str,
    command: str,
    machine: Sequence[tuple[str, str]],
    load: Sequence[tuple[str, str]],
    sections: Sequence[Section],
    skipped: Sequence[str],
) -> str:
    goals = [g for s in sections for g in s.goals]
    out = [
        "# Benchmarks",
        "",
        f"Measured {when} by `{command}` ({mode} run); regenerate the page with `make bench` "
        "(`python -m bench.run`, 20-30 minutes here; `--quick` takes under 5). The bench code "
        "lives in `bench/`; nothing here is edited by hand.",
        "",
        "Every figure is `median (min-max)` over repeated runs, and every ratio is taken "
        "against its baseline measured in the same run, paired repeat by repeat, so slow "
        "phases of the machine hit both sides alike.",
        "",
        "## Machine",
        "",
        table(["", ""], [list(row) for row in machine]),
        "",
        "This is a 2-core Linux CPU machine, shared: other test suites ran on it during the "
        "measurement, so single runs are noisy; hence repeats and medians. Load average (1 min) "
        "at the start and end of each section:",
        "",
        table(["section", "load at start / end"], [list(row) for row in load]),
        "",
        "MLX runs on the CPU here (fp32, OpenBLAS); the models are random-weight Qwen3-VL "
        "checkpoints the project builds (`advisor-worker build-tiny-model`, tiny and "
        "`--size medium`), because no weights can be downloaded. They have real shapes and "
        "real per-token costs for their size, not real answers.",
        "",
        "## Goals",
        "",
        table(
            ["goal", "target", "measured (median, min-max)", "verdict"],
            [[g.name, g.target_text, g.ratio.show(3), g.shortfall] for g in goals],
        ),
        "",
    ]
    missed = [g for g in goals if not g.is_met]
    if missed:
        out += ["### Missed", ""]
        for g in missed:
            out.append(
                f"- **{g.name}**: median {g.ratio.median:.3f} against {g.target_text}, "
                f"{g.shortfall}. Why: {g.why}. Proposed fix: {g.fix}."
            )
        out.append("")
    else:
        out += ["Every goal measured in this run is met.", ""]
    if skipped:
        out += [f"Not measured in this run: {', '.join(skipped)}.", ""]
    for section in sections:
        out += section_lines(section)
    return "\n".join(out).rstrip() + "\n"


def section_lines(section: Section, stamp: str = "") -> list[str]:
    out = [f"## {section.title}", ""]
    if stamp:
        out += [stamp, ""]
    out += [section.intro, ""]
    for block in section.tables:
        out += [block, ""]
    out += [note + "\n" for note in section.notes]
    return [*out, f"_Section time: {section.seconds:.0f} s._", ""]


def splice(existing: str, sections: Sequence[Section], stamp: str) -> str:
    """`existing` with each section's block replaced (by title), or appended: a run of some
    sections keeps the others' measurements; `stamp` says when and where these were taken."""
    text = existing.rstrip() + "\n"
    for section in sections:
        block = "\n".join(section_lines(section, stamp)).rstrip() + "\n"
        head = f"\n## {section.title}\n"
        start = text.find(head)
        if start < 0:
            text = text + "\n" + block
            continue
        end = text.find("\n## ", start + len(head))
        text = text[: start + 1] + block + ("\n" + text[end + 1 :] if end >= 0 else "")
    return text.rstrip() + "\n"
