"""The report's words and formats: both languages complete, Babel formats right."""

from __future__ import annotations

import math
import re
import string
from datetime import UTC, date, datetime

import pytest

from clm.errors import ConfigError, NotFoundError
from clm.report import i18n

NBSP = "\xa0"


def plain(text: str) -> str:
    """CLDR puts no-break spaces in German formats; compare with plain spaces."""
    return text.replace(NBSP, " ").replace("\u202f", " ")


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_key_exists_in_both_languages() -> None:
    en, de = set(i18n.CATALOGUE["en"]), set(i18n.CATALOGUE["de"])
    assert en - de == set(), f"missing in German: {sorted(en - de)}"
    assert de - en == set(), f"missing in English: {sorted(de - en)}"


def test_both_languages_fill_the_same_placeholders() -> None:
    for key, text in i18n.CATALOGUE["en"].items():
        german = i18n.CATALOGUE["de"][key]
        assert text.strip() and german.strip(), key
        assert placeholders(text) == placeholders(german), key


# The metric and stage names the task lists; each must have a label of its own.
METRICS = [
    "population",
    "entered",
    "exited",
    "conversion_rate_to",
    "median_days_in_stage",
    "revenue",
    "orders",
    "average_order_value",
    "repeat_purchase_rate",
    "churn_rate",
    "revenue_share",
]
STAGES = [
    "reach",
    "acquisition",
    "conversion",
    "retention",
    "loyalty",
    "at_risk",
    "lapsed",
    "won_back",
    "subscriber",
    "lead",
    "mql",
    "sql",
    "opportunity",
    "customer",
    "evangelist",
    "new",
    "returning",
    "resurrecting",
    "dormant",
]


@pytest.mark.parametrize("name", METRICS)
def test_metric_names_are_catalogued(name: str) -> None:
    assert i18n.has_key(f"metric.{name}")


@pytest.mark.parametrize("name", STAGES)
def test_template_stage_names_are_catalogued(name: str) -> None:
    assert i18n.has_key(f"stage.{name}")
    # A catalogued stage is not just its key made readable.
    assert i18n.stage_label(name, "de") != name


def test_labels_read_naturally_in_german() -> None:
    assert i18n.metric_label("population", "en") == "Customers"
    assert i18n.metric_label("population", "de") == "Kunden"
    assert i18n.metric_label("churn_rate", "de") == "Abwanderungsrate"
    assert i18n.metric_label("repeat_purchase_rate", "de") == "Wiederkaufrate"
    assert "Warenkorbwert" in i18n.metric_label("average_order_value", "de")
    assert i18n.stage_label("retention", "de") == "Wiederkäufer"
    assert i18n.stage_label("loyalty", "de") == "Stammkunden"
    assert i18n.metric_label("entered", "de") == "Zugänge"


def test_conversion_rate_names_its_target_stage() -> None:
    key = "conversion_rate_to(retention)"
    assert i18n.metric_label(key, "en") == "Conversion rate → Retention"
    assert i18n.metric_label(key, "de") == "Konversionsrate → Wiederkäufer"
    # A model's own label wins over the template fallback.
    labels = {"retention": {"en": "Repeat buyers", "de": "Mehrfachkäufer"}}
    assert i18n.metric_label(key, "de", labels) == "Konversionsrate → Mehrfachkäufer"
    assert i18n.metric_label(key, "en", labels) == "Conversion rate → Repeat buyers"


@pytest.mark.parametrize("template", ["ecommerce", "b2b", "activity"])
def test_template_labels_read_naturally_in_german(template: str) -> None:
    from clm.lifecycle.model import load_model

    model = load_model(template)
    labels = {s.name: s.labels for s in model.stages}
    # Every stage has a German label of its own, a group of people (a noun, capital).
    for stage in model.stages:
        de = i18n.stage_label(stage.name, "de", labels)
        assert de[0].isupper() and de != stage.labels.get("en"), (stage.name, de)
    # No metric label says a word twice ("Konversion zu Konversion").
    for calls in model.metrics.values():
        for call in calls:
            label = i18n.metric_label(call.key, "de", labels)
            words = re.findall(r"\w+", label.lower())
            assert len(words) == len(set(words)), (call.key, label)


def test_unknown_stage_and_metric_fall_back_to_readable_names() -> None:
    assert i18n.stage_label("vip_club", "de") == "Vip club"
    assert i18n.stage_label("vip_club", "de", {"vip_club": {"en": "VIP"}}) == "VIP"
    assert i18n.metric_label("nps_by_store(berlin)", "en") == "Nps by store (berlin)"
    assert i18n.stage_label(None, "de") == "Noch kein Kunde"


def test_numbers() -> None:
    assert i18n.format_number(1234.5, "en") == "1,234.5"
    assert i18n.format_number(1234.5, "de") == "1.234,5"
    assert i18n.format_number(1234.5, "de", decimals=2) == "1.234,50"
    assert i18n.format_number(1234567, "en", decimals=0) == "1,234,567"
    assert i18n.format_number(math.nan, "en") == i18n.MISSING
    assert i18n.format_number(None, "de") == i18n.MISSING


def test_percent_and_currency() -> None:
    assert i18n.format_percent(0.1234, "en") == "12.3%"
    assert plain(i18n.format_percent(0.1234, "de")) == "12,3 %"
    assert i18n.format_percent(0.5, "en", signed=True) == "+50.0%"
    assert i18n.format_percent(-0.25, "en", signed=True) == "-25.0%"
    # A change that rounds to nothing carries no sign.
    assert i18n.format_percent(-0.00001, "en", signed=True) == "0.0%"
    assert i18n.format_currency(1234.56, "EUR", "en") == "€1,234.56"
    assert plain(i18n.format_currency(1234.56, "EUR", "de")) == "1.234,56 €"
    with pytest.raises(ConfigError, match="EURO"):
        i18n.format_currency(1.0, "EURO", "en")


def test_dates_and_periods() -> None:
    day = date(2026, 12, 4)
    assert i18n.format_date(day, "en") == "Dec 4, 2026"
    assert i18n.format_date(day, "de") == "04.12.2026"
    # 4 Dec 2026 is a Friday in ISO week 49; its week starts on Monday 30 Nov.
    assert i18n.format_period(date(2026, 11, 30), "week", "en") == "W49 2026"
    assert i18n.format_period(date(2026, 11, 30), "week", "de") == "KW 49/2026"
    # 1 Jan 2026 is a Thursday, so the week from Mon 29 Dec 2025 is week 1 of 2026.
    assert i18n.format_period(date(2025, 12, 29), "week", "de") == "KW 1/2026"
    assert i18n.format_period(date(2026, 12, 1), "month", "en") == "Dec 2026"
    assert i18n.format_period(date(2026, 12, 1), "month", "de") == "Dez. 2026"
    assert i18n.format_period(date(2026, 10, 1), "quarter", "de") == "Q4 2026"
    assert i18n.format_period(day, "day", "de") == "04.12.2026"
    with pytest.raises(ConfigError, match="fortnight"):
        i18n.format_period(day, "fortnight", "en")


def test_datetime_shows_minutes_and_zone() -> None:
    moment = datetime(2026, 12, 4, 13, 5, 59, tzinfo=UTC)
    assert plain(i18n.format_datetime(moment, "de")) == "04.12.2026, 13:05 UTC"
    assert plain(i18n.format_datetime(moment, "en")) == "Dec 4, 2026, 1:05 PM UTC"


def test_translate_formats_its_parameters_per_language() -> None:
    en = i18n.translate("caveat.history_truncated", "en", first_date=date(2026, 1, 5))
    de = i18n.translate("caveat.history_truncated", "de", first_date=date(2026, 1, 5))
    assert "Jan 5, 2026" in en
    assert "05.01.2026" in de
    few = i18n.translate("caveat.few_customers", "de", count=1234)
    assert "1.234 Kunden" in few


def test_language_variants_and_errors() -> None:
    assert i18n.translate("ui.customers", "de-AT") == "Kunden"
    # Swiss German writes a decimal point and an apostrophe (CLDR's form varies).
    assert i18n.format_number(1234.5, "de_CH") in {"1'234.5", "1’234.5"}
    with pytest.raises(ConfigError) as info:
        i18n.translate("ui.customers", "fr")
    assert "'fr'" in str(info.value) and "de, en" in str(info.value)
    with pytest.raises(NotFoundError, match=r"ui\.nope"):
        i18n.translate("ui.nope", "en")
    with pytest.raises(ConfigError, match="period_end"):
        i18n.translate("caveat.last_period_incomplete", "en")


def test_metric_values_use_the_metric_kind() -> None:
    assert i18n.format_metric("population", 1234.0, "de", "EUR") == "1.234"
    assert plain(i18n.format_metric("churn_rate", 0.05, "de", "EUR")) == "5,0 %"
    revenue = i18n.format_metric("revenue", 1234.5, "de", "EUR")
    assert plain(revenue) == "1.234,50 €"
    assert i18n.format_metric("median_days_in_stage", 12.5, "de", "EUR") == "12,5 Tage"
    assert i18n.format_metric("median_days_in_stage", 13.0, "en", "EUR") == "13 days"
    assert i18n.format_metric("median_days_in_stage", 1.0, "en", "EUR") == "1 day"
    assert i18n.format_metric("conversion_rate_to(x)", None, "en", "EUR") == "–"
