"""The dashboard in a real headless Chromium: tables filled, charts drawn, no script errors."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from jobs.contracts import Assignment, Status
from producers.services import Services
from store.submissions import NewJob
from tests.conftest import IN_CI
from tests.producers.gateway.conftest import TOKEN, Stack, follow, jpeg

ROOT = Path(__file__).resolve().parents[3]
SCREENSHOT = ROOT / ".artifacts" / "dashboard.png"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    """The browser binary; absent: skip locally, fail in CI (scripts/system-deps.sh installs it)."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path is not None:
            return path
    message = "Chromium is not installed (apt-get install chromium; see scripts/system-deps.sh)"
    if IN_CI:
        pytest.fail(message + " (CI=true)")
    pytest.skip(message)


def headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Virtual time runs the page's timers and fetches to completion before the dump.
    command = [
        browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
        "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=8000", *args,
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def attribute(dom: str, element_id: str, name: str) -> str | None:
    tag = re.search(rf"<[^>]*\bid=\"{re.escape(element_id)}\"[^>]*>", dom)
    assert tag is not None, f"#{element_id} is not in the page"
    value = re.search(rf"\b{name}=\"([^\"]*)\"", tag.group(0))
    return value.group(1) if value else None


def test_the_dashboard_draws_every_chart_from_live_data(stack: Stack, tmp_path: Path) -> None:
    browser = chromium()
    with stack.client() as client:
        for variant, seed in (("base", 50), ("fine_tuned", 51)):
            done = client.post(
                "/analyze", params={"wait": 120},
                files={"file": ("p.jpg", jpeg(seed), "image/jpeg")},
                data={"advisor": "ansel", "variant": variant},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )  # fmt: skip
            assert done.status_code == 200, done.text
            rated = client.post(f"/jobs/{done.json()['id']}/feedback", json={"rating": 4})
            assert rated.status_code == 201, rated.text
        # Undecodable bytes reach a worker and fail there: the failure chart gets data.
        bad = b"\xff\xd8\xff not a jpeg"
        sha = hashlib.sha256(bad).hexdigest()
        crafted = NewJob("ansel", sha, f"sha256:{sha}", "crafted", "base", Assignment.FORCED, 0)
        [(failing, _)] = stack.repo.create_jobs([crafted], images={sha: bad})
        with Services(stack.settings) as services:
            assert services.outbox.publish([failing]).sent == [failing.id]
        failed = follow(client, failing.id)
        assert (failed["status"], failed["error_kind"]) == ("failed", "invalid_image")
        report = client.get("/report", params={"days": 1}).json()
    jobs = stack.repo.find()
    succeeded = [j for j in jobs if j.status == Status.SUCCEEDED]
    finished_variants = {j.variant for j in jobs if j.status in (Status.SUCCEEDED, Status.FAILED)}

    dom = headless(browser, tmp_path / "profile", "--dump-dom", f"{stack.url}/dashboard").stdout
    assert attribute(dom, "console-errors", "data-count") == "0", dom[-3000:]
    refreshes = re.search(r'<body[^>]*data-refreshes="(\d+)"', dom)
    assert refreshes is not None and int(refreshes.group(1)) >= 1, "the page never refreshed"
    assert attribute(dom, "chart-scores", "data-rendered") == str(len(succeeded))
    assert attribute(dom, "chart-inference", "data-rendered") == str(len(succeeded))
    assert attribute(dom, "chart-failures", "data-rendered") == str(len(finished_variants))
    assert attribute(dom, "status", "class") == "pill ok"
    for queue in ("advisor.base", "advisor.fine_tuned"):
        row = re.search(
            rf'<tr data-queue="{queue}"><td>{queue}</td><td>(\d+)</td><td>(\d+) / (\d+)</td>', dom
        )
        assert row is not None and row.group(1) == "1", f"{queue} row: {dom[-2000:]}"
        # One live worker of the default batch: 4 slots, none busy once its jobs are done.
        assert (row.group(2), row.group(3)) == ("0", "4"), row.group(0)
    assert re.search(r"<td>ansel</td><td><div class=\"weights\">", dom)
    # The A/B cards: verdicts, feedback per variant (with the two ratings above), pairs.
    for table in ("verdicts", "feedback", "paired"):
        assert attribute(dom, table, "data-rows") == str(len(report[table])), table
    assert sum(f["ratings"] for f in report["feedback"]) >= 2
    assert re.search(r"<td>fine_tuned</td><td>[1-9]\d*</td><td>0</td>", dom), dom[-3000:]

    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    headless(
        browser, tmp_path / "profile", f"--screenshot={SCREENSHOT}", "--window-size=1280,1000",
        f"{stack.url}/dashboard",
    )  # fmt: skip
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"dashboard screenshot: {SCREENSHOT}")
