"""The settings table is the single source: docs, clm.yaml checks and env overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from clm import settings
from clm.errors import ConfigError

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_docs_list_every_setting():
    text = DOC.read_text(encoding="utf-8")
    assert text == settings.DOC_HEADER + settings.markdown_table(), (
        "docs/settings.md is stale: run `python -m clm.settings > docs/settings.md`"
    )


def test_bad_values_name_the_setting_and_the_valid_ones():
    with pytest.raises(ConfigError, match=r"timezone.*'Mars/Base'.*IANA"):
        settings.resolve({"timezone": "Mars/Base"})
    with pytest.raises(ConfigError, match=r"language.*'fr'.*en, de"):
        settings.resolve({"language": "fr"})
    with pytest.raises(ConfigError, match=r"unknown setting.*colour.*known: "):
        settings.resolve({"colour": "blue"})


def test_environment_overrides_the_file(monkeypatch):
    monkeypatch.setenv("CLM_TIMEZONE", "Europe/Vienna")
    assert settings.resolve({"timezone": "UTC"})["timezone"] == "Europe/Vienna"
