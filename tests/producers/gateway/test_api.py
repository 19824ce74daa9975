"""The gateway over HTTP against real workers: submit every way, follow jobs, read operations."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import uuid
from typing import Any

import pytest

from producers.rollouts import RolloutStore
from tests.conftest import IN_CI
from tests.producers.gateway.conftest import IDLE_VARIANT, TOKEN, Stack, follow, jpeg

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def assert_analysis(job: dict[str, Any]) -> None:
    assert job["status"] == "succeeded", (job["error_kind"], job["error"])
    analysis = job["analysis"]
    scores = [d["score"] for d in analysis["dimensions"]]
    assert len(scores) == 7
    assert analysis["overall_score"] == pytest.approx(sum(scores) / 7, abs=0.006)
    assert job["output_tokens"] == job["progress"] > 0


def test_the_seeds_json_request_queues_a_job_that_a_worker_finishes(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post("/analyze", json={"image": "test.jpg", "advisor": "ansel"})
        assert response.status_code == 202, response.text
        accepted = response.json()
        job_id = accepted["job_id"]
        assert accepted["status"] == "queued" and accepted["created"] is True
        assert accepted["variant"] in ("base", "fine_tuned")
        assert accepted["status_url"] == response.headers["location"] == f"/jobs/{job_id}"
        assert accepted["events_url"] == f"/jobs/{job_id}/events"
        job = follow(client, job_id)
    assert_analysis(job)
    assert job["variant"] == accepted["variant"]
    assert stack.repo.get(job_id).image_ref.startswith("sha256:")  # read once, at submit


def test_the_seeds_curl_command_and_a_curl_upload_work_as_written(stack: Stack) -> None:
    if shutil.which("curl") is None:
        if IN_CI:
            pytest.fail("curl is not installed (CI=true)")
        pytest.skip("curl is not installed")
    out = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{stack.url}/analyze",
         "-H", "Content-Type: application/json",
         "-d", '{"image": "test.jpg", "advisor": "ansel"}',
         "-w", "\n%{http_code}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    body, _, code = out.stdout.rpartition("\n")
    assert code == "202", out.stdout
    job_id = json.loads(body)["job_id"]
    with stack.client() as client:
        assert_analysis(follow(client, job_id))
    upload = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{stack.url}/analyze?wait=120",
         "-F", f"file=@{stack.root / 'images' / 'test.jpg'}", "-F", "advisor=ansel",
         "-w", "\n%{http_code}"],
        capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    body, _, code = upload.stdout.rpartition("\n")
    assert code == "200", upload.stdout + upload.stderr
    assert_analysis(json.loads(body))


def test_wait_answers_200_with_the_finished_analysis(stack: Stack) -> None:
    image = base64.b64encode(jpeg(1)).decode()
    with stack.client() as client:
        response = client.post(
            "/analyze", params={"wait": 120},
            json={"image_base64": image, "advisor": "weston", "subject": "user-17"},
        )  # fmt: skip
    assert response.status_code == 200, response.text
    job = response.json()
    assert_analysis(job)
    assert (job["advisor"], job["subject"], job["variant"]) == ("weston", "user-17", "base")


def test_wait_that_runs_out_answers_202_with_the_status_urls(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post(
            "/analyze", params={"wait": 1.0},
            json={"image": "test.jpg", "advisor": "ansel", "variant": IDLE_VARIANT}, headers=AUTH,
        )  # fmt: skip
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert (accepted["variant"], accepted["assignment"]) == (IDLE_VARIANT, "forced")
        assert accepted["status"] == "queued"
        assert client.get(accepted["status_url"]).json()["status"] == "queued"


def test_a_multipart_upload_is_analyzed(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post(
            "/analyze",
            files={"file": ("holiday.jpg", jpeg(2), "image/jpeg")},
            data={"advisor": "ansel", "variant": "fine_tuned"},
            headers=AUTH,
        )
        assert response.status_code == 202, response.text
        job = follow(client, response.json()["job_id"])
    assert_analysis(job)
    assert (job["variant"], job["assignment"]) == ("fine_tuned", "forced")
    assert job["adapter_fingerprint"] and len(job["adapter_fingerprint"]) == 64


def test_an_idempotency_key_returns_the_first_job(stack: Stack) -> None:
    body = {"image": "test.jpg", "advisor": "okeefe", "idempotency_key": uuid.uuid4().hex}
    with stack.client() as client:
        first = client.post("/analyze", json=body)
        again = client.post("/analyze", json=body)
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["job_id"] == again.json()["job_id"]
    assert (first.json()["created"], again.json()["created"]) == (True, False)
    with stack.client() as client:
        done = follow(client, first.json()["job_id"])
        late = client.post("/analyze", json=body)
        waited = client.post("/analyze", params={"wait": 5}, json=body)
    assert late.status_code == 202 and late.json()["status"] == done["status"] == "succeeded"
    assert waited.status_code == 200 and waited.json() == done


BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("bad base64", {"json": {"image_base64": "not base64!", "advisor": "ansel"}},
     400, "invalid_base64"),
    ("corrupt image", {"json": {"image_base64": base64.b64encode(b"\xff\xd8\xffjunk").decode(),
                                "advisor": "ansel"}}, 400, "invalid_image"),
    ("corrupt upload", {"files": {"file": ("a.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")},
                        "data": {"advisor": "ansel"}}, 400, "invalid_image"),
    ("path outside the roots", {"json": {"image": "/etc/hostname", "advisor": "ansel"}},
     400, "invalid_image"),
    ("missing file", {"json": {"image": "nope.jpg", "advisor": "ansel"}}, 400, "invalid_image"),
    ("broken JSON", {"content": b'{"image": ', "headers": {"Content-Type": "application/json"}},
     400, "invalid_body"),
    ("text body", {"content": b"image=test.jpg", "headers": {"Content-Type": "text/plain"}},
     415, "unsupported_media_type"),
    ("non-image upload", {"files": {"file": ("notes.txt", b"hello", "text/plain")},
                          "data": {"advisor": "ansel"}}, 415, "unsupported_media_type"),
    ("missing advisor", {"json": {"image": "test.jpg"}}, 422, "validation_error"),
    ("two images", {"json": {"image": "test.jpg", "image_base64": "AAAA", "advisor": "ansel"}},
     422, "validation_error"),
    ("unknown advisor", {"json": {"image": "test.jpg", "advisor": "banksy"}},
     422, "unknown_advisor"),
    ("unknown variant", {"json": {"image": "test.jpg", "advisor": "ansel", "variant": "xl"},
                         "headers": AUTH}, 422, "unknown_variant"),
    ("variant not serving the advisor",
     {"json": {"image": "test.jpg", "advisor": "weston", "variant": "fine_tuned"},
      "headers": AUTH}, 422, "unknown_variant"),
    ("variant without the operator token",
     {"json": {"image": "test.jpg", "advisor": "ansel", "variant": "fine_tuned"}},
     403, "variant_forbidden"),
    ("upload without advisor", {"files": {"file": ("a.jpg", jpeg(3), "image/jpeg")}},
     422, "validation_error"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"),
    [pytest.param(kw, st, code, id=name) for name, kw, st, code in BAD_REQUESTS],
)
def test_a_bad_analyze_request_gets_its_status_and_a_stable_error_code(
    stack: Stack, request_kwargs: dict[str, Any], status: int, code: str
) -> None:
    before = len(stack.repo.find())
    with stack.client() as client:
        response = client.post("/analyze", **request_kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and len(body["message"]) > 10
    assert len(stack.repo.find()) == before  # refused before any row was written


def test_a_body_over_the_limit_is_refused_with_413_declared_or_streamed(stack: Stack) -> None:
    big = b'{"image_base64": "' + b"A" * 2_100_000 + b'", "advisor": "ansel"}'
    chunks = [big[i : i + 65536] for i in range(0, len(big), 65536)]
    with stack.client() as client:
        declared = client.post(
            "/analyze", content=big, headers={"Content-Type": "application/json"}
        )
        streamed = client.post(
            "/analyze", content=iter(chunks), headers={"Content-Type": "application/json"}
        )
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "body_too_large"
        assert response.json()["limit"] == 2_000_000
    assert "content-length" not in {k.lower() for k in streamed.request.headers}


def test_unknown_jobs_and_routes_are_404_json(stack: Stack) -> None:
    with stack.client() as client:
        job = client.get(f"/jobs/{uuid.uuid4()}")
        events = client.get(f"/jobs/{uuid.uuid4()}/events")
        odd = client.get("/jobs/not%20an%20id")
        route = client.get("/nowhere")
    for response, code in ((job, "job_not_found"), (events, "job_not_found"),
                           (odd, "job_not_found"), (route, "not_found")):  # fmt: skip
        assert response.status_code == 404, response.text
        assert response.json()["error"] == code


def test_health_reports_the_database_the_broker_and_live_workers_per_queue(stack: Stack) -> None:
    with stack.client() as client:
        response = client.get("/health")
    assert response.status_code == 200, response.text
    health = response.json()
    assert health["status"] == "ok"
    assert health["database"] == {"ok": True, "detail": "sqlite"}
    assert health["broker"]["ok"] is True
    queues = {q["queue"]: q for q in health["queues"]}
    assert set(queues) == {"advisor.base", "advisor.fine_tuned", f"advisor.{IDLE_VARIANT}"}
    assert queues["advisor.base"]["live_workers"] == 1
    assert queues["advisor.fine_tuned"]["live_workers"] == 1
    assert queues[f"advisor.{IDLE_VARIANT}"]["live_workers"] == 0
    idle = [j for j in stack.repo.find() if j.variant == IDLE_VARIANT]
    assert queues[f"advisor.{IDLE_VARIANT}"]["depth"] == len(idle)


def test_rollout_endpoints_require_the_bearer_token(stack: Stack) -> None:
    with stack.client() as client:
        missing = client.get("/rollouts")
        wrong = client.put(
            "/rollouts/ansel", json={"weights": {"base": 1}, "reason": "x"},
            headers={"Authorization": "Bearer nope"},
        )  # fmt: skip
        basic = client.get("/rollouts", headers={"Authorization": f"Basic {TOKEN}"})
    for response in (missing, wrong, basic):
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


def test_rollouts_are_shown_set_and_rolled_back_with_the_token(stack: Stack) -> None:
    with stack.client() as client:
        shown = client.get("/rollouts", headers=AUTH)
        assert shown.status_code == 200, shown.text
        ansel = next(r for r in shown.json() if r["advisor"] == "ansel")
        assert set(ansel["variants"]) == {"base", "fine_tuned", IDLE_VARIANT}
        assert set(ansel["live"]) == {"base", "fine_tuned"}
        before = ansel["version"]
        put = client.put(
            "/rollouts/ansel", headers=AUTH,
            json={"weights": {"base": 3, "fine_tuned": 1}, "reason": "canary 25%", "actor": "ci",
                  "shadow": 0.2},
        )  # fmt: skip
        assert put.status_code == 200, put.text
        assert put.json()["weights"] == {"base": 0.75, "fine_tuned": 0.25}
        assert (put.json()["version"], put.json()["shadow"]) == (before + 1, 0.2)
        too_much = client.put(
            "/rollouts/ansel", headers=AUTH,
            json={"weights": {"base": 1}, "reason": "x", "shadow": 1.5},
        )  # fmt: skip
        assert (too_much.status_code, too_much.json()["error"]) == (422, "validation_error")
        bad = client.put(
            "/rollouts/ansel", headers=AUTH, json={"weights": {"xl": 1}, "reason": "typo"}
        )
        unknown = client.put(
            "/rollouts/banksy", headers=AUTH, json={"weights": {"base": 1}, "reason": "x"}
        )
        back = client.post("/rollouts/ansel/rollback", headers=AUTH, json={"reason": "bad scores"})
        stale = client.put(
            "/rollouts/ansel", headers=AUTH,
            json={"weights": {"base": 1}, "reason": "late", "expected_version": before + 1},
        )  # fmt: skip
    assert (stale.status_code, stale.json()["error"]) == (409, "stale_version")
    assert stale.json()["current_version"] == before + 2
    assert (bad.status_code, bad.json()["error"]) == (422, "invalid_weights")
    assert (unknown.status_code, unknown.json()["error"]) == (422, "unknown_advisor")
    assert back.status_code == 200, back.text
    assert back.json()["weights"]["base"] == 1.0
    assert back.json()["weights"]["fine_tuned"] == 0.0
    assert back.json()["version"] == before + 2
    [last, previous] = RolloutStore(stack.repo.engine).history("ansel", limit=2)
    assert (last.kind, previous.actor, previous.reason) == ("rollback", "ci", "canary 25%")
    assert last.actor.startswith("gateway/")
    assert (previous.shadow, last.shadow) == (0.2, 0.0)  # a rollback stops shadow runs


def test_report_and_metrics_describe_the_finished_jobs(stack: Stack) -> None:
    with stack.client() as client:
        job = client.post("/analyze", params={"wait": 120},
                          json={"image": "test.jpg", "advisor": "cunningham"})  # fmt: skip
        assert job.status_code == 200, job.text
        report = client.get("/report", params={"days": 1, "advisor": "cunningham"})
        metrics = client.get("/metrics")
        bad_days = client.get("/report", params={"days": 0})
    assert report.status_code == 200, report.text
    data = report.json()
    assert data["advisor"] == "cunningham" and data["total_jobs"] >= 1
    [base] = data["variants"]
    assert base["variant"] == "base" and base["finished"] >= 1 and base["score"]["n"] >= 1
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'advisor_live_workers{variant="fine_tuned"} 1.0' in metrics.text
    assert 'advisor_queue_depth{queue="advisor.base"}' in metrics.text
    succeeded = [
        line for line in metrics.text.splitlines()
        if line.startswith('advisor_jobs{status="succeeded",variant="base"}')
    ]  # fmt: skip
    assert succeeded and float(succeeded[0].split()[-1]) >= 1
    assert (bad_days.status_code, bad_days.json()["error"]) == (422, "validation_error")


def test_the_openapi_spec_and_docs_are_served(stack: Stack) -> None:
    with stack.client() as client:
        spec = client.get("/openapi.json").json()
        docs = client.get("/docs")
        assets = [client.get(f"/static/swagger-ui{name}") for name in ("-bundle.js", ".css")]
    assert {"/analyze", "/jobs/{job_id}", "/jobs/{job_id}/events", "/health", "/rollouts",
            "/rollouts/{advisor}", "/rollouts/{advisor}/rollback", "/report", "/metrics",
            "/dashboard/data"} <= set(spec["paths"])  # fmt: skip
    body = spec["paths"]["/analyze"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} == set(body)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    # Served by the gateway itself: a closed network has no CDN.
    assert not re.findall(r"(?:src|href)=[\"']https?://", docs.text), docs.text
    assert [a.status_code for a in assets] == [200, 200]
    assert "SwaggerUIBundle" in assets[0].text


def test_the_gateway_loads_neither_mlx_nor_the_worker_package() -> None:
    code = (
        "import sys, producers.gateway.app; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_vlm', "
        "'advisor_worker')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
