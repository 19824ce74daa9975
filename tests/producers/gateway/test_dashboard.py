"""The dashboard in a real headless Chromium: tables filled, charts drawn, no script errors,
the verdict first, nothing clipped at 1400 px, one poll at a time."""

from __future__ import annotations

import hashlib
import http.server
import itertools
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from jobs.contracts import Assignment, Status
from producers.gateway.dashboard import STATIC_DIR as STATIC
from producers.router import bucket_of, choose
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
    message = "Chromium is not installed (apt-get install chromium; scripts/system-deps.sh test)"
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


AUTH = {"Authorization": f"Bearer {TOKEN}"}
WIDE = "--window-size=1400,1000"


def routed_to(stack: Stack, weights: dict[str, float], variant: str, n: int) -> list[str]:
    """`n` subjects the router sends to `variant` under `weights` (it still routes them)."""
    found: list[str] = []
    for i in itertools.count():
        subject = f"dashboard-user-{i}"
        if choose(weights, bucket_of(stack.settings.router_salt, subject)) == variant:
            found.append(subject)
            if len(found) == n:
                return found
    raise AssertionError("unreachable")


def test_at_1400_px_the_verdict_comes_first_with_its_plan_and_timeline_and_nothing_is_clipped(
    stack: Stack, tmp_path: Path
) -> None:
    browser = chromium()
    with stack.client() as client:
        plan = {"variant": "fine_tuned", "steps": [5, 25, 50, 100], "reason": "dashboard canary"}
        created = client.post("/rollouts/ansel/plan", headers=AUTH, json=plan)
        assert created.status_code == 201, created.text
        try:
            weights = {"base": 0.95, "fine_tuned": 0.05}
            subjects = routed_to(stack, weights, "fine_tuned", 2)
            subjects += routed_to(stack, weights, "base", 2)
            for seed, subject in enumerate(subjects, start=60):
                done = client.post(
                    "/analyze", params={"wait": 120}, headers=AUTH,
                    files={"file": ("p.jpg", jpeg(seed), "image/jpeg")},
                    data={"advisor": "ansel", "subject": subject},
                )  # fmt: skip
                assert done.status_code == 200, done.text
            dom = headless(browser, tmp_path / "profile", WIDE, "--dump-dom",
                           f"{stack.url}/dashboard").stdout  # fmt: skip
            SCREENSHOT.parent.mkdir(exist_ok=True)
            wide_shot = SCREENSHOT.with_name("dashboard-1400.png")
            headless(browser, tmp_path / "profile", WIDE, f"--screenshot={wide_shot}",
                     f"{stack.url}/dashboard")  # fmt: skip
        finally:
            client.post("/rollouts/ansel/plan/abort", headers=AUTH, json={"reason": "test done"})
    assert attribute(dom, "console-errors", "data-count") == "0", dom[-3000:]
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None
    # Every table fits its card at 1400 px, and the page is not wider than the window.
    assert 'data-clipped=""' in body.group(0), body.group(0)
    assert 'data-max-in-flight="1"' in body.group(0), body.group(0)
    # The verdict is the first card, and its row names the plan's step.
    assert re.search(r'<main>\s*<section class="card wide" id="verdict-card">', dom)
    row = re.search(r"<tr><td>ansel</td><td>fine_tuned</td>.*?</tr>", dom)
    assert row is not None, dom[-3000:]
    assert "active [5%] → 25% → 50% → 100%" in row.group(0), row.group(0)
    # Two jobs an arm: an estimate, its interval not yet defined ("-") until enough data.
    number = r"(?:[+-]\d+\.\d\d|-)"
    assert re.search(rf"<td>{number} \[{number}, {number}\]</td>", row.group(0)), row.group(0)
    assert re.search(r'<div class="timeline-advisor" data-advisor="ansel">', dom)
    assert '<span class="kind plan-step">plan-step</span>' in dom
    assert "plan started: dashboard canary" in dom


class SlowData(http.server.BaseHTTPRequestHandler):
    """The dashboard's files as the gateway serves them, and a /dashboard/data that answers
    after ANSWER_S; an image held HOLD_S keeps the page loading (chromium dumps at load)."""

    ANSWER_S, HOLD_S = 6.0, 14.0
    data = b"{}"
    lock = threading.Lock()
    in_flight = 0
    max_in_flight = 0
    polls = 0

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        cls = type(self)
        if self.path.startswith("/dashboard/data"):
            with cls.lock:
                cls.in_flight += 1
                cls.polls += 1
                cls.max_in_flight = max(cls.max_in_flight, cls.in_flight)
            time.sleep(cls.ANSWER_S)
            with cls.lock:
                cls.in_flight -= 1
            self._send(cls.data, "application/json")
        elif self.path == "/hold":
            time.sleep(cls.HOLD_S)
            self._send(b"", "image/gif")
        elif self.path.startswith("/static/"):
            self._send((STATIC / self.path.removeprefix("/static/")).read_bytes(),
                       "text/css" if self.path.endswith(".css") else "text/javascript")  # fmt: skip
        else:
            page = (STATIC / "dashboard.html").read_text()
            self._send(page.replace("</body>", '<img src="/hold" alt=""></body>').encode(),
                       "text/html")  # fmt: skip

    def _send(self, body: bytes, kind: str) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser dumped the page and went away while this was held


def test_a_slow_answer_is_never_asked_for_again_before_it_arrived(
    stack: Stack, tmp_path: Path
) -> None:
    browser = chromium()
    with stack.client() as client:
        SlowData.data = client.get("/dashboard/data", headers=AUTH).content
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowData)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/dashboard"
        # Real time here (no virtual time): an answer takes 6 s, polls are 5 s apart.
        command = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                   f"--user-data-dir={tmp_path / 'profile'}", WIDE, "--dump-dom", url]  # fmt: skip
        dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)
    assert SlowData.polls >= 2, (SlowData.polls, dom[-2000:])
    assert SlowData.max_in_flight == 1
    assert attribute(dom, "console-errors", "data-count") == "0", dom[-3000:]
