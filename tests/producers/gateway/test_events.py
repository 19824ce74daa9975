"""GET /jobs/{id}/events: status changes and token progress as server-sent events, then final."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.producers.gateway.conftest import TOKEN, Stack, jpeg, live_stack


def events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a text/event-stream, as a browser's EventSource parses them."""
    name: str | None = None
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif line == "" and name is not None:
            yield name, json.loads("\n".join(data))
            name, data = None, []


@pytest.fixture(scope="module")
def long_critiques(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: tuple[Path, Path]
) -> Iterator[Stack]:
    """A base worker writing real-length critiques (text limit 240, ~1,000 tokens): seconds
    of generation on any host, so a 0.25 s poll sees its progress. The package stack's short
    ones (text limit 16) took a quarter of a second here, and the stream could miss them."""
    with live_stack(tmp_path_factory.mktemp("long-critiques"), tiny_checkpoint, ["base"],
                    ADVISOR_TEXT_LIMIT="240") as stack:  # fmt: skip
        yield stack


def test_a_client_sees_progress_events_then_the_final_event(long_critiques: Stack) -> None:
    stack = long_critiques
    with stack.client() as client:
        submitted = client.post(
            "/analyze",
            files={"file": ("p.jpg", jpeg(40), "image/jpeg")},
            data={"advisor": "ansel", "variant": "base"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert submitted.status_code == 202, submitted.text
        url = submitted.json()["events_url"]
        with client.stream("GET", url, timeout=120) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            received = list(events(response))
    names = [name for name, _ in received]
    assert names[0] == "status" and names[-1] == "final", names
    assert names.count("final") == 1
    statuses = [data["status"] for name, data in received if name == "status"]
    assert statuses[-1] == "running" and set(statuses) <= {"queued", "running"}
    progress = [data["progress"] for name, data in received if name == "progress"]
    assert progress, f"no progress event before the final one: {names}"
    assert progress == sorted(set(progress)) and progress[0] > 0
    final = received[-1][1]
    assert final["status"] == "succeeded", final["error"]
    assert final["output_tokens"] >= progress[-1]
    assert len(final["analysis"]["dimensions"]) == 7
    assert all(data["max_output_tokens"] == 2400 for name, data in received[:-1])


def test_the_events_of_a_finished_job_are_one_final_event(stack: Stack) -> None:
    with stack.client() as client:
        done = client.post(
            "/analyze", params={"wait": 120}, json={"image": "test.jpg", "advisor": "watkins"}
        )
        assert done.status_code == 200, done.text
        with client.stream("GET", done.json()["events_url"], timeout=30) as response:
            received = list(events(response))
    assert [name for name, _ in received] == ["final"]
    assert received[0][1] == done.json()
