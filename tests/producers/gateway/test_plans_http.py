"""Rollout plans over HTTP: behind the operator token, the same rules as the command line."""

from __future__ import annotations

from pathlib import Path

import httpx

from producers.gateway.schemas import RolloutPublic
from store import migrate
from tests.producers.conftest import make_settings
from tests.producers.gateway.conftest import TOKEN, ThreadGateway

AUTH = {"Authorization": f"Bearer {TOKEN}"}
PLAN = {"variant": "fine_tuned", "steps": [5, 25, 50, 100], "min_jobs": 10, "reason": "canary"}


def test_a_plan_is_started_shown_paused_resumed_and_aborted_with_the_token(
    tmp_path: Path, sqlite_url: str, registry_file: Path
) -> None:
    migrate.upgrade(sqlite_url)
    settings = make_settings(tmp_path, sqlite_url, registry_file, gateway_token=TOKEN)
    with ThreadGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=60) as c:
        assert c.post("/rollouts/ansel/plan", json=PLAN).status_code == 401
        assert c.get("/rollouts/ansel/plan", headers=AUTH).status_code == 404

        created = c.post("/rollouts/ansel/plan", headers=AUTH, json=PLAN)
        assert created.status_code == 201, created.text
        plan = created.json()
        assert (plan["status"], plan["percent"], plan["next_percent"]) == ("active", 5.0, 25.0)
        assert plan["details"]["workers"]["fine_tuned"] >= 1
        [ansel] = [r for r in c.get("/rollouts", headers=AUTH).json() if r["advisor"] == "ansel"]
        assert RolloutPublic(**ansel).weights == {"base": 0.95, "fine_tuned": 0.05}

        again = c.post("/rollouts/ansel/plan", headers=AUTH, json=PLAN)
        assert again.status_code == 409 and "already has an open" in again.text
        bad = c.post("/rollouts/ansel/plan", headers=AUTH, json={**PLAN, "steps": [50, 20]})
        assert bad.status_code == 422 and "Steps must increase" in bad.text
        nope = c.post("/rollouts/ansel/plan", headers=AUTH, json={**PLAN, "variant": "xl"})
        assert nope.status_code == 422 and "Unknown candidate 'xl'" in nope.text

        paused = c.post("/rollouts/ansel/plan/pause", headers=AUTH, json={"reason": "look"})
        assert paused.json()["status"] == "paused" and "look" in paused.json()["state"]
        resumed = c.post("/rollouts/ansel/plan/resume", headers=AUTH, json={})
        assert resumed.json()["status"] == "active"
        # An operator's split pauses the active plan, and the plan says why.
        c.put("/rollouts/ansel", headers=AUTH,
              json={"weights": {"base": 0.5, "fine_tuned": 0.5}, "reason": "by hand"})  # fmt: skip
        shown = c.get("/rollouts/ansel/plan", headers=AUTH).json()
        assert shown["status"] == "paused" and "(by hand)" in shown["state"]

        assert c.post("/rollouts/ansel/plan/abort", headers=AUTH, json={}).status_code == 422
        aborted = c.post("/rollouts/ansel/plan/abort", headers=AUTH, json={"reason": "stop"})
        assert aborted.json()["status"] == "aborted"
        [ansel] = [r for r in c.get("/rollouts", headers=AUTH).json() if r["advisor"] == "ansel"]
        assert ansel["weights"] == {"base": 1.0, "fine_tuned": 0.0}
        gone = c.post("/rollouts/ansel/plan/pause", headers=AUTH, json={})
        assert gone.status_code == 404
