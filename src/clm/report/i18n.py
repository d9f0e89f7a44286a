"""Words and number formats in English and German, for the report and the dashboard.

Every label a front end shows comes from `CATALOGUE`, one dictionary per language with
the same keys (a test fails when a key exists in one language only). Keys are
namespaced: `ui.*` for interface words, `metric.*` for metric names, `stage.*` for the
stage names of the built-in templates (used only when a model gives no label of its
own), `grain.*`, `caveat.*` for the caveats results carry (STYLE.md point 10), and
`unit.*`.

Numbers, currencies, dates and periods are formatted with Babel (CLDR data), so German
output reads 1.234,56 €, 04.12.2026 and KW 49/2026. Texts follow the base language
(`de_AT` reads German); formats follow the full locale when Babel knows it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from babel import Locale, UnknownLocaleError
from babel import dates as babel_dates
from babel import numbers as babel_numbers

from clm.errors import ConfigError, NotFoundError, known

LANGUAGES = ("en", "de")
GRAINS = ("day", "week", "month", "quarter")

# Shown for a value that does not exist (NaN, None): an en dash reads as "nothing here"
# in both languages and does not look like a zero.
MISSING = "–"

_EN: dict[str, str] = {
    # interface words
    "ui.report": "Customer lifecycle report",
    "ui.model": "Stage model",
    "ui.version": "version {version}",
    "ui.data_period": "Data period",
    "ui.data_period_value": "{first} to {last}",
    "ui.grain": "Reporting period",
    "ui.timezone": "Time zone",
    "ui.generated": "Generated",
    "ui.report_title": "{model} — customer lifecycle",
    "ui.contents": "Contents",
    "ui.stage": "Stage",
    "ui.stages": "Stages",
    "ui.period": "Period",
    "ui.customers": "Customers",
    "ui.metric": "Metric",
    "ui.value": "Value",
    "ui.previous": "Previous",
    "ui.change": "Change",
    "ui.trend": "Trend",
    "ui.total": "Total",
    "ui.rising": "rising",
    "ui.falling": "falling",
    "ui.unchanged": "unchanged",
    "ui.stage_populations": "Customers per stage",
    "ui.stage_populations_desc": (
        "Number of customers in each stage at the end of {grain_noun}."
    ),
    "ui.populations_chart_title": "Customers per stage over time",
    "ui.kpis": "Key figures per stage",
    "ui.kpis_latest": "{period}, compared with {previous}",
    "ui.kpis_latest_only": "{period}",
    "ui.incomplete": "incomplete",
    "ui.period_incomplete": "{period} (incomplete)",
    "ui.no_events": "No events yet",
    "ui.transitions": "Movement between stages",
    "ui.transitions_desc": (
        "Customers by their stage on {from_date} (rows) and on {to_date} (columns). "
        "The percentage is the share of the row; darker cells hold a larger share."
    ),
    "ui.transitions_corner": "from \u2193 / to \u2192",
    "ui.transitions_cell": "{from_stage} → {to_stage}: {customers} customers ({share})",
    "ui.caveats": "Read with care",
    "ui.no_caveats": "No caveats apply to these figures.",
    "ui.no_data": "No data for this section yet.",
    "ui.no_populations": (
        "No stage populations yet: run the stage model over imported events first."
    ),
    "ui.no_kpis": "No key figures for this stage yet.",
    "ui.no_transitions": "No movements between stages in this time span.",
    "ui.sparkline_title": "{metric}: {first_period} {first_value} to {last_period} "
    "{last_value}",
    "ui.more_sections": "Further analyses",
    "ui.footer": "Created with clm from the events in the warehouse.",
    # reporting periods
    "grain.day": "daily",
    "grain.week": "weekly (ISO weeks)",
    "grain.month": "monthly",
    "grain.quarter": "quarterly",
    "grain_noun.day": "every day",
    "grain_noun.week": "every week",
    "grain_noun.month": "every month",
    "grain_noun.quarter": "every quarter",
    # units
    "unit.days": "{value} days",
    "unit.day": "{value} day",
    "unit.times": "{value}×",
    # metrics (PRODUCT.md §5)
    "metric.population": "Customers",
    "metric.entered": "Entered",
    "metric.exited": "Left",
    # An arrow, not a preposition: with the stage labels of the templates the words
    # "Conversion to Conversion" or a German dative (zu Wiederkäufern) read badly.
    "metric.conversion_rate_to": "Conversion rate → {stage}",
    "metric.median_days_in_stage": "Median time in stage",
    "metric.mean_days_in_stage": "Mean time in stage",
    "metric.time_to_convert": "Time to convert",
    "metric.revenue": "Revenue",
    "metric.orders": "Orders",
    "metric.average_order_value": "Average order value",
    "metric.repeat_purchase_rate": "Repeat purchase rate",
    "metric.retention_rate": "Retention rate",
    "metric.churn_rate": "Churn rate",
    "metric.revenue_share": "Share of revenue",
    "metric.clv": "Customer lifetime value",
    "metric.historic_clv": "Historic customer lifetime value",
    "metric.predicted_clv": "Predicted customer lifetime value",
    "metric.p_alive": "Probability still active (P(alive))",
    "metric.cost_per_acquisition": "Cost per acquisition",
    "metric.roas": "Return on ad spend",
    "metric.nps": "Net Promoter Score",
    "metric.sessions": "Sessions",
    "metric.bounce_rate": "Bounce rate",
    "metric.pages_per_session": "Pages per session",
    "metric.engagement_time": "Engagement time",
    "metric.new_visitors_by_channel": "New visitors by channel",
    # stages of the built-in templates: ecommerce, b2b, activity (PRODUCT.md §4)
    "stage.none": "Not yet a customer",
    "stage.none_to": "No longer in the model",
    "stage.reach": "Reach",
    "stage.acquisition": "Acquisition",
    "stage.conversion": "Conversion",
    "stage.retention": "Retention",
    "stage.loyalty": "Loyalty",
    "stage.at_risk": "At risk",
    "stage.lapsed": "Lapsed",
    "stage.won_back": "Won back",
    "stage.subscriber": "Subscriber",
    "stage.lead": "Lead",
    "stage.mql": "Marketing qualified lead",
    "stage.sql": "Sales qualified lead",
    "stage.opportunity": "Opportunity",
    "stage.customer": "Customer",
    "stage.evangelist": "Evangelist",
    "stage.new": "New",
    "stage.returning": "Returning",
    "stage.resurrecting": "Resurrecting",
    "stage.dormant": "Dormant",
    # caveats (STYLE.md point 10)
    "caveat.last_period_incomplete": (
        "The last period is incomplete: the data end on {period_end}. Its figures "
        "will still change and are not yet comparable with complete periods."
    ),
    "caveat.no_churn_stage": (
        "No stage of this model is marked as churned, so churn rates cannot be "
        "computed."
    ),
    "caveat.few_customers": (
        "Only {count} customers are in the data. Rates and their changes swing "
        "widely with so few customers; read them as rough indications."
    ),
    "caveat.history_truncated": (
        "The data begin on {first_date}. Customers active before then are missing "
        "their earlier history and may appear in an earlier stage than they are."
    ),
    "caveat.no_customer_value": (
        "Predicted CLV has no values yet: run `clm clv predict`."
    ),
    "ui.rfm_grid": "RFM grid",
    "ui.rfm_grid_desc": (
        "Customers by recency score R (rows) and the mean of frequency and "
        "monetary scores FM (columns), as of {date}."
    ),
    "ui.holdout_chart": "CLV model check: holdout purchases",
    "rfm.champions": "Champions",
    "rfm.loyal": "Loyal",
    "rfm.potential_loyalist": "Potential loyalist",
    "rfm.new": "New",
    "rfm.promising": "Promising",
    "rfm.need_attention": "Need attention",
    "rfm.about_to_sleep": "About to sleep",
    "rfm.at_risk": "At risk",
    "rfm.can_t_lose": "Can't lose",
    "rfm.hibernating": "Hibernating",
    "rfm.lost": "Lost",
    "caveat.unknown": "Note ({code}): {details}",
    # dashboard of `clm serve` (clm.server.dashboard)
    "dash.overview": "Overview",
    "dash.transitions": "Transitions",
    "dash.cohorts": "Cohorts",
    "dash.customers": "Customers",
    "dash.models": "Stage models",
    "dash.report": "Download report",
    "dash.error": "Error",
    "dash.login": "Sign in",
    "dash.token": "Read token",
    "dash.wrong_token": "That token is not one of the read tokens; ask your admin.",
    "dash.as_of": "As of {day}",
    "dash.data_until": "The data end on {date}; later days are not covered yet.",
    "dash.entered_from": "Entered from",
    "dash.exited_to": "Left for",
    "dash.time_in_stage": "Time in stage",
    "dash.median_mean": "median {median}, mean {mean} (finished stays)",
    "dash.channels": "Channels that feed this stage (first touch)",
    "dash.customers_in_stage": "Customers in this stage now: {count}",
    "dash.next_page": "Next page",
    "dash.from_day": "From",
    "dash.to_day": "To",
    "dash.show": "Show",
    "dash.cohorts_desc": (
        "Share of each first-order month's customers who ordered again k months later"
    ),
    "dash.search_hint": "Customer id, user id, email, phone or any trait",
    "dash.search": "Search",
    "dash.found": "{count} customers found",
    "dash.orders": "Orders",
    "dash.revenue": "Revenue",
    "dash.first_seen": "First seen",
    "dash.last_seen": "Last seen",
    "dash.first_channel": "First channel",
    "dash.customer": "Customer",
    "dash.profile": "Profile",
    "dash.identifiers": "Identifiers",
    "dash.stage_history": "Stage history",
    "dash.events": "Events ({count})",
    "dash.time": "Time",
    "dash.type": "Type",
    "dash.event": "Event",
    "dash.channel": "Channel",
    "dash.editor_hint": (
        "Edit the YAML: it is checked as you type; Preview shows the populations "
        "under the draft before anything is saved."
    ),
    "dash.valid": "The draft is valid.",
    "dash.preview": "Preview",
    "dash.line": "line {line}",
    "dash.sample": "Replayed on every {every}. customer, scaled up; as of {as_of}.",
}

_DE: dict[str, str] = {
    "ui.report": "Customer-Lifecycle-Bericht",
    "ui.model": "Phasenmodell",
    "ui.version": "Version {version}",
    "ui.data_period": "Datenzeitraum",
    "ui.data_period_value": "{first} bis {last}",
    "ui.grain": "Berichtszeitraum",
    "ui.timezone": "Zeitzone",
    "ui.generated": "Erstellt",
    "ui.report_title": "{model} — Kundenlebenszyklus",
    "ui.contents": "Inhalt",
    "ui.stage": "Phase",
    "ui.stages": "Phasen",
    "ui.period": "Zeitraum",
    "ui.customers": "Kunden",
    "ui.metric": "Kennzahl",
    "ui.value": "Wert",
    "ui.previous": "Vorperiode",
    "ui.change": "Veränderung",
    "ui.trend": "Verlauf",
    "ui.total": "Gesamt",
    "ui.rising": "steigend",
    "ui.falling": "fallend",
    "ui.unchanged": "unverändert",
    "ui.stage_populations": "Kunden je Phase",
    "ui.stage_populations_desc": (
        "Anzahl der Kunden in jeder Phase am Ende {grain_noun}."
    ),
    "ui.populations_chart_title": "Kunden je Phase im Zeitverlauf",
    "ui.kpis": "Kennzahlen je Phase",
    "ui.kpis_latest": "{period}, verglichen mit {previous}",
    "ui.kpis_latest_only": "{period}",
    "ui.incomplete": "unvollständig",
    "ui.period_incomplete": "{period} (unvollständig)",
    "ui.no_events": "Noch keine Ereignisse",
    "ui.transitions": "Wechsel zwischen den Phasen",
    "ui.transitions_desc": (
        "Kunden nach ihrer Phase am {from_date} (Zeilen) und am {to_date} (Spalten). "
        "Der Prozentwert ist der Anteil an der Zeile; je dunkler die Zelle, desto "
        "größer der Anteil."
    ),
    "ui.transitions_corner": "von \u2193 / nach \u2192",
    "ui.transitions_cell": "{from_stage} → {to_stage}: {customers} Kunden ({share})",
    "ui.caveats": "Bitte beachten",
    "ui.no_caveats": "Für diese Zahlen gelten keine Einschränkungen.",
    "ui.no_data": "Für diesen Abschnitt liegen noch keine Daten vor.",
    "ui.no_populations": (
        "Noch keine Phasenbelegung: Bitte zuerst das Phasenmodell über die "
        "importierten Ereignisse laufen lassen."
    ),
    "ui.no_kpis": "Für diese Phase liegen noch keine Kennzahlen vor.",
    "ui.no_transitions": "In diesem Zeitraum gab es keine Wechsel zwischen Phasen.",
    "ui.sparkline_title": "{metric}: {first_period} {first_value} bis {last_period} "
    "{last_value}",
    "ui.more_sections": "Weitere Auswertungen",
    "ui.footer": "Erstellt mit clm aus den Ereignissen im Data Warehouse.",
    "grain.day": "täglich",
    "grain.week": "wöchentlich (ISO-Kalenderwochen)",
    "grain.month": "monatlich",
    "grain.quarter": "quartalsweise",
    # genitive with its article, as in "am Ende jeder Kalenderwoche"
    "grain_noun.day": "jedes Tages",
    "grain_noun.week": "jeder Kalenderwoche",
    "grain_noun.month": "jedes Monats",
    "grain_noun.quarter": "jedes Quartals",
    "unit.days": "{value} Tage",
    "unit.day": "{value} Tag",
    "unit.times": "{value}×",
    "metric.population": "Kunden",
    "metric.entered": "Zugänge",
    "metric.exited": "Abgänge",
    "metric.conversion_rate_to": "Konversionsrate → {stage}",
    "metric.median_days_in_stage": "Verweildauer in der Phase (Median)",
    "metric.mean_days_in_stage": "Verweildauer in der Phase (Mittelwert)",
    "metric.time_to_convert": "Zeit bis zur Konversion",
    "metric.revenue": "Umsatz",
    "metric.orders": "Bestellungen",
    "metric.average_order_value": "Durchschnittlicher Warenkorbwert",
    "metric.repeat_purchase_rate": "Wiederkaufrate",
    "metric.retention_rate": "Kundenbindungsrate",
    "metric.churn_rate": "Abwanderungsrate",
    "metric.revenue_share": "Umsatzanteil",
    "metric.clv": "Kundenwert (CLV)",
    "metric.historic_clv": "Bisheriger Kundenwert (CLV)",
    "metric.predicted_clv": "Prognostizierter Kundenwert (CLV)",
    "metric.p_alive": "Aktivitätswahrscheinlichkeit (P(alive))",
    "metric.cost_per_acquisition": "Kosten pro Neukunde",
    "metric.roas": "Werbeertrag (ROAS)",
    "metric.nps": "Net Promoter Score",
    "metric.sessions": "Besuche",
    "metric.bounce_rate": "Absprungrate",
    "metric.pages_per_session": "Seiten pro Besuch",
    "metric.engagement_time": "Verweildauer auf der Website",
    "metric.new_visitors_by_channel": "Neue Besucher nach Kanal",
    "stage.none": "Noch kein Kunde",
    "stage.none_to": "Nicht mehr im Modell",
    # The same words as the templates' own German labels.
    "stage.reach": "Besucher",
    "stage.acquisition": "Interessenten",
    "stage.conversion": "Neukunden",
    "stage.retention": "Wiederkäufer",
    "stage.loyalty": "Stammkunden",
    "stage.at_risk": "Abwanderungsgefährdet",
    "stage.lapsed": "Abgewandert",
    "stage.won_back": "Zurückgewonnen",
    "stage.subscriber": "Abonnenten",
    "stage.lead": "Leads",
    "stage.mql": "Marketingqualifizierte Leads (MQL)",
    "stage.sql": "Vertriebsqualifizierte Leads (SQL)",
    "stage.opportunity": "Verkaufschancen",
    "stage.customer": "Kunden",
    "stage.evangelist": "Fürsprecher",
    "stage.new": "Neue Nutzer",
    "stage.returning": "Wiederkehrende Nutzer",
    "stage.resurrecting": "Reaktivierte Nutzer",
    "stage.dormant": "Inaktive Nutzer",
    "caveat.last_period_incomplete": (
        "Der letzte Zeitraum ist unvollständig: Die Daten reichen bis "
        "{period_end}. Seine Werte ändern sich noch und sind mit vollständigen "
        "Zeiträumen noch nicht vergleichbar."
    ),
    "caveat.no_churn_stage": (
        "Keine Phase dieses Modells ist als abgewandert gekennzeichnet, daher "
        "lässt sich keine Abwanderungsrate berechnen."
    ),
    "caveat.few_customers": (
        "Es sind nur {count} Kunden in den Daten. Bei so wenigen Kunden schwanken "
        "Quoten und ihre Veränderungen stark; lesen Sie sie als grobe Anhaltspunkte."
    ),
    "caveat.history_truncated": (
        "Die Daten beginnen am {first_date}. Bei Kunden, die schon vorher aktiv "
        "waren, fehlt die frühere Historie; sie können in einer früheren Phase "
        "erscheinen, als es ihrem tatsächlichen Stand entspricht."
    ),
    "caveat.no_customer_value": (
        "Für den vorhergesagten CLV fehlen Werte: führen Sie `clm clv predict` aus."
    ),
    "ui.rfm_grid": "RFM-Raster",
    "ui.rfm_grid_desc": (
        "Kunden nach Aktualitätswert R (Zeilen) und dem Mittel aus Häufigkeits- "
        "und Umsatzwert FM (Spalten), Stand {date}."
    ),
    "ui.holdout_chart": "Prüfung des CLV-Modells: Käufe im Prüfzeitraum",
    "rfm.champions": "Champions",
    "rfm.loyal": "Treue Kunden",
    "rfm.potential_loyalist": "Potenziell treu",
    "rfm.new": "Neu",
    "rfm.promising": "Vielversprechend",
    "rfm.need_attention": "Brauchen Aufmerksamkeit",
    "rfm.about_to_sleep": "Drohen einzuschlafen",
    "rfm.at_risk": "Abwanderungsgefährdet",
    "rfm.can_t_lose": "Auf keinen Fall verlieren",
    "rfm.hibernating": "Im Winterschlaf",
    "rfm.lost": "Verloren",
    "caveat.unknown": "Hinweis ({code}): {details}",
    # Dashboard von `clm serve` (clm.server.dashboard)
    "dash.overview": "Überblick",
    "dash.transitions": "Phasenwechsel",
    "dash.cohorts": "Kohorten",
    "dash.customers": "Kunden",
    "dash.models": "Phasenmodelle",
    "dash.report": "Bericht herunterladen",
    "dash.error": "Fehler",
    "dash.login": "Anmelden",
    "dash.token": "Lese-Token",
    "dash.wrong_token": (
        "Dieses Token ist kein Lese-Token; fragen Sie Ihre Administration."
    ),
    "dash.as_of": "Stand {day}",
    "dash.data_until": "Die Daten reichen bis {date}; spätere Tage fehlen noch.",
    "dash.entered_from": "Zugänge aus",
    "dash.exited_to": "Abgänge nach",
    "dash.time_in_stage": "Verweildauer",
    "dash.median_mean": (
        "Median {median}, Mittelwert {mean} (abgeschlossene Verweildauern)"
    ),
    "dash.channels": "Herkunftskanäle dieser Phase (Erstkontakt)",
    "dash.customers_in_stage": "Kunden derzeit in dieser Phase: {count}",
    "dash.next_page": "Nächste Seite",
    "dash.from_day": "Von",
    "dash.to_day": "Bis",
    "dash.show": "Anzeigen",
    "dash.cohorts_desc": (
        "Anteil der Kunden eines Erstkaufmonats, die k Monate später erneut kauften"
    ),
    "dash.search_hint": "Kunden-ID, User-ID, E-Mail, Telefon oder ein Merkmal",
    "dash.search": "Suchen",
    "dash.found": "{count} Kunden gefunden",
    "dash.orders": "Bestellungen",
    "dash.revenue": "Umsatz",
    "dash.first_seen": "Zuerst gesehen",
    "dash.last_seen": "Zuletzt gesehen",
    "dash.first_channel": "Erster Kanal",
    "dash.customer": "Kunde",
    "dash.profile": "Profil",
    "dash.identifiers": "Kennungen",
    "dash.stage_history": "Phasenverlauf",
    "dash.events": "Ereignisse ({count})",
    "dash.time": "Zeit",
    "dash.type": "Typ",
    "dash.event": "Ereignis",
    "dash.channel": "Kanal",
    "dash.editor_hint": (
        "YAML bearbeiten: Es wird beim Tippen geprüft; Vorschau zeigt die Phasen "
        "unter dem Entwurf, bevor etwas gespeichert wird."
    ),
    "dash.valid": "Der Entwurf ist gültig.",
    "dash.preview": "Vorschau",
    "dash.line": "Zeile {line}",
    "dash.sample": ("Stichprobe: jeder {every}. Kunde, hochgerechnet; Stand {as_of}."),
}

CATALOGUE: dict[str, dict[str, str]] = {"en": _EN, "de": _DE}

# How a metric's value is written. Anything not listed is a plain number.
# Sources: the metric definitions of PRODUCT.md §5.
METRIC_KINDS: dict[str, str] = {
    "population": "count",
    "entered": "count",
    "exited": "count",
    "orders": "count",
    "sessions": "count",
    "new_visitors_by_channel": "count",
    "conversion_rate_to": "percent",
    "repeat_purchase_rate": "percent",
    "retention_rate": "percent",
    "churn_rate": "percent",
    "revenue_share": "percent",
    "bounce_rate": "percent",
    "p_alive": "percent",
    "revenue": "currency",
    "average_order_value": "currency",
    "clv": "currency",
    "historic_clv": "currency",
    "predicted_clv": "currency",
    "cost_per_acquisition": "currency",
    "median_days_in_stage": "days",
    "mean_days_in_stage": "days",
    "time_to_convert": "days",
    "roas": "times",
}

# Metrics where a fall is the good news (for the colour of ▲/▼ only).
LOWER_IS_BETTER = frozenset(
    {"exited", "churn_rate", "bounce_rate", "cost_per_acquisition", "time_to_convert"}
)


def resolve_lang(lang: str) -> str:
    """The catalogue language for `lang`: 'de', 'de_AT' and 'de-CH' all read German."""
    base = str(lang).replace("-", "_").split("_")[0].lower()
    if base not in CATALOGUE:
        raise ConfigError(
            f"language {lang!r} is not supported; valid: {known(LANGUAGES)}. "
            "Pass --lang en or --lang de."
        )
    return base


def _locale(lang: str) -> Locale:
    """The Babel locale that formats numbers and dates for `lang`."""
    base = resolve_lang(lang)
    try:
        return Locale.parse(str(lang).replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse(base)


def has_key(key: str) -> bool:
    return key in _EN


def translate(key: str, lang: str, **params: Any) -> str:
    """The text for `key` in `lang`, with `params` filled in and formatted per language.

    Dates, datetimes and numbers among `params` are formatted for the language, so
    callers pass values, not strings: `translate("caveat.history_truncated", "de",
    first_date=date(2026, 1, 5))` gives "… am 05.01.2026 …".
    """
    texts = CATALOGUE[resolve_lang(lang)]
    if key not in texts:
        namespace = key.split(".")[0] + "."
        raise NotFoundError(
            f"no text for {key!r}; known keys in {namespace!r}: "
            f"{known(k for k in texts if k.startswith(namespace))}. "
            "Add it to both languages in clm/report/i18n.py."
        )
    values = {name: format_param(value, lang) for name, value in params.items()}
    try:
        return texts[key].format_map(values)
    except (KeyError, IndexError) as exc:
        raise ConfigError(
            f"text {key!r} needs the parameter {exc}; given: "
            f"{known(params) if params else '(none)'}"
        ) from None


def format_param(value: Any, lang: str) -> str:
    """A value for a sentence: dates, datetimes and numbers written for `lang`."""
    if isinstance(value, datetime):
        return format_datetime(value, lang)
    if isinstance(value, date):
        return format_date(value, lang)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return format_number(value, lang, decimals=0)
    if isinstance(value, float):
        return format_number(value, lang)
    return str(value)


def _is_missing(x: Any) -> bool:
    if x is None:
        return True
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def format_number(x: float | int | None, lang: str, decimals: int | None = None) -> str:
    """`1234.5` → "1,234.5" (en) / "1.234,5" (de). None or NaN → "–".

    With `decimals` the value is rounded to exactly that many places; without, up to
    three places are shown and trailing zeros dropped (CLDR's default decimal pattern).
    """
    if x is None or _is_missing(x):
        return MISSING
    locale = _locale(lang)
    if decimals is None:
        return babel_numbers.format_decimal(x, locale=locale)
    pattern = "#,##0" + ("." + "0" * decimals if decimals > 0 else "")
    return babel_numbers.format_decimal(x, format=pattern, locale=locale)


def _with_decimals(pattern: str, decimals: int) -> str:
    """Give a CLDR pattern like '#,##0 %' a fixed number of decimal places."""
    if decimals <= 0:
        return pattern
    return re.sub(r"0(?![0-9.])", "0." + "0" * decimals, pattern, count=1)


def format_percent(
    x: float | None, lang: str, decimals: int = 1, signed: bool = False
) -> str:
    """A fraction as a percentage: 0.1234 → "12.3%" (en) / "12,3 %" (de).

    `signed` puts a "+" before rises, as a change column needs.
    """
    if _is_missing(x):
        return MISSING
    assert x is not None
    locale = _locale(lang)
    pattern = _with_decimals(locale.percent_formats[None].pattern, decimals)
    if signed:
        pattern = f"+{pattern};-{pattern}"
    text = babel_numbers.format_percent(x, format=pattern, locale=locale)
    # "-0.0%" after rounding reads as a fall that did not happen.
    if signed and round(x * 100, decimals) == 0:
        text = text.lstrip("+-")
    return text


def format_currency(x: float | None, currency: str, lang: str) -> str:
    """`1234.56, "EUR"` → "€1,234.56" (en) / "1.234,56 €" (de)."""
    if x is None or _is_missing(x):
        return MISSING
    if not babel_numbers.is_currency(currency):
        raise ConfigError(
            f"currency {currency!r} is not an ISO 4217 code; use one such as EUR, "
            "USD, GBP or CHF."
        )
    return babel_numbers.format_currency(x, currency, locale=_locale(lang))


def format_date(d: date | datetime | None, lang: str) -> str:
    """4 Dec 2026 → "Dec 4, 2026" (en) / "04.12.2026" (de)."""
    if d is None:
        return MISSING
    if isinstance(d, datetime):
        d = d.date()
    return babel_dates.format_date(d, "medium", locale=_locale(lang))


def format_datetime(d: datetime, lang: str) -> str:
    """A moment with minutes and its zone, e.g. "04.12.2026, 13:05 UTC"."""
    locale = _locale(lang)
    text = babel_dates.format_datetime(d, "medium", locale=locale)
    # Drop the seconds: nobody reads a report to the second.
    text = re.sub(r"(\d{1,2}:\d{2}):\d{2}", r"\1", text)
    zone = d.tzname() if d.tzinfo is not None else None
    return f"{text} {zone}" if zone else text


def format_period(d: date | datetime, grain: str, lang: str) -> str:
    """The period that starts on `d`: "W49 2026"/"KW 49/2026", "Dec 2026"/"Dez. 2026",
    "Q4 2026", or the date itself for days.

    Weeks are ISO 8601 weeks, whose year can differ from the calendar year near New
    Year (29 Dec 2025 is in week 1 of 2026), hence `isocalendar()`.
    """
    if isinstance(d, datetime):
        d = d.date()
    if grain not in GRAINS:
        raise ConfigError(
            f"grain {grain!r} is not known; valid: {known(GRAINS)}. "
            "Set the stage model's `grain` to one of them."
        )
    base = resolve_lang(lang)
    locale = _locale(lang)
    if grain == "day":
        return format_date(d, lang)
    if grain == "week":
        year, week, _ = d.isocalendar()
        return f"KW {week}/{year}" if base == "de" else f"W{week} {year}"
    if grain == "month":
        return babel_dates.format_skeleton("yMMM", d, locale=locale)
    return f"Q{(d.month - 1) // 3 + 1} {d.year}"


def split_metric(key: str) -> tuple[str, tuple[str, ...]]:
    """`conversion_rate_to(retention)` → ("conversion_rate_to", ("retention",))."""
    match = re.fullmatch(r"\s*([A-Za-z_][\w]*)\s*(?:\((.*)\))?\s*", key)
    if not match:
        return key, ()
    name, args = match.group(1), match.group(2)
    if not args:
        return name, ()
    return name, tuple(a.strip() for a in args.split(",") if a.strip())


def stage_label(
    stage: str | None,
    lang: str,
    labels: Mapping[str, Mapping[str, str]] | None = None,
    *,
    as_target: bool = False,
) -> str:
    """A stage's name for people: the model's own label, else the template's, else
    the name with underscores as spaces. None is "not yet a customer" (or, as a
    transition target, "no longer in the model")."""
    if stage is None:
        return translate("stage.none_to" if as_target else "stage.none", lang)
    own = (labels or {}).get(stage) or {}
    base = resolve_lang(lang)
    if own.get(base):
        return own[base]
    if has_key(f"stage.{stage}"):
        return translate(f"stage.{stage}", lang)
    if own.get("en"):
        return own["en"]
    return stage.replace("_", " ").capitalize()


def metric_label(
    key: str, lang: str, labels: Mapping[str, Mapping[str, str]] | None = None
) -> str:
    """A metric key's name for people: `conversion_rate_to(retention)` →
    "Conversion rate → Retention" / "Konversionsrate → Wiederkäufer". Stage
    arguments are written with `stage_label`; an unknown metric keeps its key, made
    readable."""
    name, args = split_metric(key)
    if not has_key(f"metric.{name}"):
        readable = name.replace("_", " ").capitalize()
        return f"{readable} ({', '.join(args)})" if args else readable
    if name == "conversion_rate_to" and args:
        return translate(
            "metric.conversion_rate_to", lang, stage=stage_label(args[0], lang, labels)
        )
    if "{" in _EN[f"metric.{name}"]:  # a template called without its argument
        return name.replace("_", " ").capitalize()
    text = translate(f"metric.{name}", lang)
    return f"{text} ({', '.join(args)})" if args else text


def metric_kind(key: str) -> str:
    """count, percent, currency, days, times or number: how the value is written."""
    return METRIC_KINDS.get(split_metric(key)[0], "number")


def format_metric(key: str, value: float | None, lang: str, currency: str) -> str:
    """A metric value written as its kind needs: 1234 customers, 12.3 %, 45.60 €."""
    if _is_missing(value):
        return MISSING
    assert value is not None
    kind = metric_kind(key)
    if kind == "count":
        return format_number(value, lang, decimals=0)
    if kind == "percent":
        return format_percent(value, lang)
    if kind == "currency":
        return format_currency(value, currency, lang)
    if kind == "days":
        # One decimal where it carries information: "13 days", "12.5 days".
        rounded = round(float(value), 1)
        text = format_number(rounded, lang, decimals=0 if rounded.is_integer() else 1)
        unit = "unit.day" if rounded == 1 else "unit.days"
        return translate(unit, lang, value=text)
    if kind == "times":
        return translate("unit.times", lang, value=format_number(value, lang, 2))
    decimals = 0 if float(value).is_integer() else 2
    return format_number(value, lang, decimals=decimals)
