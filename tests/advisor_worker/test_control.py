"""Remote control through the broker is restricted to inspection."""

from __future__ import annotations

from celery.worker.control import Panel

from advisor_worker.control import INSPECTION, restrict_remote_control


def test_only_inspection_commands_survive_and_the_rest_answer_a_refusal() -> None:
    commands = dict(Panel.data)
    refused = restrict_remote_control(commands)
    assert {"shutdown", "pool_restart", "rate_limit", "time_limit", "revoke", "autoscale",
            "add_consumer", "cancel_consumer", "memdump"} <= set(refused)  # fmt: skip
    assert not set(refused) & INSPECTION
    assert commands["ping"] is Panel.data["ping"]
    answer = commands["shutdown"](None, msg="bye")
    assert "refused" in answer["error"] and "ADVISOR_WORKER_REMOTE_CONTROL" in answer["error"]
    assert Panel.data["shutdown"] is not commands["shutdown"]  # the global registry untouched
