"""Every client string field refuses NUL and control characters: the OpenAPI schema says so."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jobs.settings import Settings
from producers.gateway import create_app
from store import migrate
from tests.producers.gateway.conftest import TOKEN, write_registry

CONTROLS = {"NUL": "\x00", "ESC": "\x1b", "BEL": "\x07", "DEL": "\x7f", "C1 NEL": "\x85",
            "C1 CSI": "\x9b"}  # fmt: skip
# Not free text, each refused another way: job ids match a UUID-like pattern (404), and
# image_base64 must decode as base64 (400).
OTHERWISE_CHECKED = {"path:job_id", "image_base64", "file"}


@pytest.fixture
def app(tmp_path: Path) -> Any:
    (tmp_path / "adapter").mkdir()
    write_registry(tmp_path, tmp_path / "adapter")
    database = f"sqlite:///{tmp_path / 'advisor.db'}"
    migrate.upgrade(database)
    return create_app(
        Settings(
            data_dir=tmp_path / "data", database_url=database,
            registry=tmp_path / "adapters" / "registry.json", gateway_token=TOKEN,
        )  # type: ignore[arg-type]
    )  # fmt: skip


def string_fields(schema: dict[str, Any], where: str, spec: dict[str, Any]) -> Iterator[Any]:
    """(where, pattern) for every string a client may send in this schema."""
    if "$ref" in schema:
        yield from string_fields(spec["components"]["schemas"][schema["$ref"].split("/")[-1]],
                                 where, spec)  # fmt: skip
        return
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            yield from string_fields(sub, where, spec)
    if schema.get("type") == "string":
        yield where, schema.get("pattern")
    for name, sub in schema.get("properties", {}).items():
        yield from string_fields(sub, name, spec)
    if isinstance(schema.get("items"), dict):
        yield from string_fields(schema["items"], f"{where}[]", spec)
    if isinstance(schema.get("additionalProperties"), dict):
        yield from string_fields(schema["additionalProperties"], f"{where}{{}}", spec)
        # A free-form dict's keys are client text too (e.g. rollout weights' variant names).
        yield f"{where} keys", schema.get("propertyNames", {}).get("pattern")


def client_strings(spec: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    found = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for param in op.get("parameters", []):
                for _where, pattern in string_fields(param["schema"], "", spec):
                    found.append((f"{method} {path}", f"{param['in']}:{param['name']}", pattern))
            for content in op.get("requestBody", {}).get("content", {}).values():
                for where, pattern in string_fields(content["schema"], "body", spec):
                    found.append((f"{method} {path}", where, pattern))
    return found


def test_every_client_string_field_refuses_every_control_character(app: Any) -> None:
    fields = client_strings(app.openapi())
    assert len(fields) >= 40  # the walk reaches into bodies, refs, params and dict keys
    uncovered = []
    for operation, where, pattern in fields:
        if where in OTHERWISE_CHECKED:
            continue
        if pattern is None:
            uncovered.append((operation, where, "no pattern"))
            continue
        for label, char in CONTROLS.items():
            if re.search(pattern, f"a{char}b"):
                uncovered.append((operation, where, label))
        if not re.search(pattern, "Ansel Adams, Yosemite — é ✓"):
            uncovered.append((operation, where, "refuses ordinary text"))
    assert uncovered == []


@pytest.mark.parametrize("label", list(CONTROLS))
def test_a_control_character_in_a_feedback_comment_is_422_on_sqlite(app: Any, label: str) -> None:
    with TestClient(app) as client:
        response = client.post(
            "/jobs/00000000-0000-0000-0000-000000000000/feedback",
            json={"rating": 4, "comment": f"nice{CONTROLS[label]}shot"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"


def test_a_comment_may_break_lines_and_indent(app: Any) -> None:
    with TestClient(app) as client:
        response = client.post(
            "/jobs/00000000-0000-0000-0000-000000000000/feedback",
            json={"rating": 4, "comment": "line one\r\n\tline two"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    # Past validation: the job does not exist.
    assert response.status_code == 404, response.text
