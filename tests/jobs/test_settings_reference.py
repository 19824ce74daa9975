"""docs/configuration.md is generated from Settings, and fails here when it drifts."""

from __future__ import annotations

from jobs.settings import Settings
from jobs.settings_reference import MEANINGS, PAGE, render


def test_every_setting_has_a_meaning_and_no_meaning_outlives_its_setting() -> None:
    assert set(MEANINGS) == set(Settings.model_fields)


def test_the_committed_configuration_page_is_the_one_settings_generate() -> None:
    assert PAGE.read_text() == render(), (
        "docs/configuration.md drifted from Settings: run "
        "`advisor config --markdown > docs/configuration.md`"
    )


def test_every_variable_appears_once_with_its_default() -> None:
    page = render()
    for name in Settings.model_fields:
        assert page.count(f"| `ADVISOR_{name.upper()}` |") == 1
    assert "| `ADVISOR_WORKER_BATCH` | int >= 1, <= 64 | `4` |" in page
