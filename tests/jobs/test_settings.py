"""Settings defaults run embedded; bad values are refused with the setting's name."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from jobs.settings import Settings, mask_url


def test_defaults_need_no_server(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'advisor.db'}"
    assert settings.resolved_broker_url.startswith("sqla+sqlite:///")
    assert settings.is_embedded


def test_visibility_timeout_outlasts_the_hard_time_limit() -> None:
    settings = Settings(task_time_limit=120)
    assert settings.soft_time_limit < settings.task_time_limit < settings.visibility_timeout


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("database_url", "mysql://x", "ADVISOR_DATABASE_URL"),
        ("broker_url", "kafka://x", "ADVISOR_BROKER_URL"),
        ("log_level", "LOUD", "ADVISOR_LOG_LEVEL"),
        ("worker_live_window", 1.0, "ADVISOR_WORKER_LIVE_WINDOW"),
    ],
)
def test_bad_values_are_refused_with_the_setting_named(
    field: str, value: object, named: str
) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(**{field: value})


def test_numeric_bounds_are_enforced() -> None:
    with pytest.raises(ValidationError, match="task_time_limit"):
        Settings(task_time_limit=0)


def test_environment_is_read_with_the_advisor_prefix(tmp_path) -> None:
    code = "from jobs.settings import get_settings; print(get_settings().max_attempts)"
    env = {"ADVISOR_MAX_ATTEMPTS": "7", "PATH": "/usr/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "7", out.stderr


def test_a_bad_environment_value_names_the_variable() -> None:
    code = "from jobs.settings import get_settings; get_settings()"
    env = {"ADVISOR_TASK_TIME_LIMIT": "soon", "PATH": "/usr/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "ADVISOR_TASK_TIME_LIMIT: Input should be a valid integer" in out.stderr


def test_image_roots_accept_a_path_list() -> None:
    assert Settings(image_roots="/a:/b").image_roots == [
        __import__("pathlib").Path("/a"),
        __import__("pathlib").Path("/b"),
    ]


@pytest.mark.parametrize("value", ["/a:/b", '["/a", "/b"]', "/a:/b:"])
def test_image_roots_from_the_environment_accept_a_path_list_or_json(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADVISOR_IMAGE_ROOTS", value)
    assert [str(p) for p in Settings().image_roots] == ["/a", "/b"]


def test_urls_are_masked_for_logs() -> None:
    assert mask_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert (
        mask_url("postgresql+psycopg://app:pw@db/advisor")
        == "postgresql+psycopg://app:***@db/advisor"
    )
    assert "s3cret" not in mask_url("amqp://guest:s3cret@rabbit//")


def test_the_removed_image_side_setting_stops_the_boot_naming_its_successor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADVISOR_MAX_IMAGE_SIDE", "1024")
    with pytest.raises(ValidationError, match="ADVISOR_MAX_IMAGE_SIDE is gone.*MODEL_IMAGE_PIXELS"):
        Settings()


def test_the_model_image_budget_and_capture_prompt_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (Settings().model_image_pixels, Settings().prompt_capture) == (448 * 448, True)
    monkeypatch.setenv("ADVISOR_MODEL_IMAGE_PIXELS", "401408")
    monkeypatch.setenv("ADVISOR_PROMPT_CAPTURE", "false")
    assert (Settings().model_image_pixels, Settings().prompt_capture) == (401_408, False)
    with pytest.raises(ValidationError, match="model_image_pixels"):
        Settings(model_image_pixels=100)


def test_a_bad_setting_is_named_without_its_value_or_a_help_link() -> None:
    script = (
        "from jobs.settings import get_settings\n"
        "try:\n    get_settings()\nexcept Exception as exc:\n    print(exc)\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ADVISOR_")},
        "ADVISOR_DATABASE_URL": "mysql://advisor:hunter2@db.internal/advisor",
        "ADVISOR_BROKER_URL": "redis://:s3cret-pass@broker.internal:6379/0",
        "ADVISOR_MAX_ATTEMPTS": "many-s3cret",
    }
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    text = out.stdout
    assert "ADVISOR_DATABASE_URL 'mysql'" in text and "ADVISOR_MAX_ATTEMPTS" in text, text
    for secret in ("hunter2", "s3cret", "db.internal", "errors.pydantic.dev", "input_value"):
        assert secret not in text, text
