"""Schemathesis drives every operation of the OpenAPI spec: no input makes the gateway fail."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error

from jobs.settings import Settings
from producers.gateway import create_app
from store import migrate
from tests.producers.gateway.conftest import TOKEN, jpeg, write_registry

AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 40  # per operation and mode: ~10 s in all
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


@pytest.fixture
def gateway_schema(tmp_path: Path) -> schemathesis.Schema:
    """The app in-process over a migrated SQLite database and the embedded broker."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "test.jpg").write_bytes(jpeg(0))
    (tmp_path / "adapter").mkdir()
    write_registry(tmp_path, tmp_path / "adapter")
    database = f"sqlite:///{tmp_path / 'advisor.db'}"
    migrate.upgrade(database)
    app = create_app(
        Settings(
            data_dir=tmp_path / "data", database_url=database,
            registry=tmp_path / "adapters" / "registry.json", image_roots=[tmp_path / "images"],
            gateway_token=TOKEN, gateway_max_body_bytes=1_000_000,
        )  # type: ignore[arg-type]
    )  # fmt: skip
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_generated_request_makes_the_gateway_fail_with_500(
    gateway_schema: schemathesis.Schema,
) -> None:
    # Schemathesis's pytest plugin does not run under this pytest; its strategies do.
    operations = [result.ok() for result in gateway_schema.get_all_operations()]
    assert len(operations) >= 10
    checked: list[str] = []
    for operation, mode in itertools.product(operations, MODES):
        has_inputs = any(
            len(p) for p in (operation.path_parameters, operation.query, operation.body)
        )
        if mode is schemathesis.GenerationMode.NEGATIVE and not has_inputs:
            continue  # nothing to get wrong (e.g. GET /health)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )  # fmt: skip
        def call(case: schemathesis.Case) -> None:
            response = case.call(headers=AUTH)
            case.validate_response(response, checks=[not_a_server_error])
            if response.status_code >= 400:
                body = response.json()
                assert isinstance(body["error"], str) and isinstance(body["message"], str)

        try:
            call()
        except Unsatisfiable:
            # Every input is valid (no parameters, or free-form strings): no negative case exists.
            assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
            continue
        checked.append(f"{mode.value} {operation.label}")
    assert {f"positive {op.label}" for op in operations} <= set(checked)
    assert "negative POST /analyze" in checked
