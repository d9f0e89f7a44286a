"""The stage-model loader: what a valid file becomes, every check with its file, line
and stage, inline-call hoisting, and the built-in templates."""

from __future__ import annotations

import textwrap
from pathlib import Path

import ibis
import pytest

from clm.errors import ModelError, RuleSyntaxError
from clm.lifecycle.model import list_templates, load_model, load_model_text
from clm.lifecycle.rules import analysis, parse, to_text
from clm.lifecycle.rules.compile import as_condition, to_ibis
from clm.lifecycle.spec import FEATURE_KINDS, FeatureSpec, MetricCall, StageModel
from clm.warehouse.schema import EVENTS

BASE = """\
name: shop
version: 2
features:
  orders_total: count(event = 'order_completed')
  orders_365d: count(event = 'order_completed', within = 365d)
  days_since_order: days_since(event = 'order_completed')
stages:
  - name: loyal
    when: "orders_365d >= 3 and days_since_order <= 90"
  - name: buyer
    when: "orders_total >= 1"
  - name: visitor
    when: "true"
"""


def load(text: str) -> StageModel:
    return load_model_text(textwrap.dedent(text), source="m.yaml")


def error(text: str) -> ModelError:
    with pytest.raises(ModelError) as info:
        load(text)
    return info.value


def test_minimal_model() -> None:
    model = load(BASE)
    assert (model.name, model.version) == ("shop", 2)
    assert (model.grain, model.progression) == ("week", "dynamic")  # the defaults
    assert model.stage_names == ["loyal", "buyer", "visitor"]
    assert model.source == "m.yaml" and model.text == BASE
    assert model.features["orders_365d"] == FeatureSpec(
        name="orders_365d",
        kind="count",
        filter=parse("event = 'order_completed'"),
        within_days=365,
        text="count(event = 'order_completed', within = 365d)",
        line=5,
    )
    loyal = model.stage("loyal")
    assert loyal.when == parse("orders_365d >= 3 and days_since_order <= 90")
    assert loyal.line == 9 and loyal.labels == {} and loyal.label("de") == "loyal"
    assert model.metrics == {}


def test_full_feature_forms() -> None:
    model = load(
        """\
        name: m
        grain: month
        progression: forward_only
        description: all the parts
        features:
          revenue_90d: sum(revenue, event = 'paid', currency = 'EUR', within = 90d)
          plans: count_distinct(properties.plan, within = 2 periods)
          first_channel: first(channel)
          last_seen_days: days_since()
        stages:
          - name: a
            when: "revenue_90d > 100 and plans >= 2"
            churned: yes
            label: Alpha
            description: ignored by the engine
          - name: b
            when: "first_channel in ('seo', 'sea') or last_seen_days is null"
            label: {en: Beta, de: Beta DE}
        metrics:
          a: [population, conversion_rate_to(b), "retention_rate(4)"]
        """
    )
    assert (model.grain, model.progression) == ("month", "forward_only")
    assert model.description == "all the parts"
    rev = model.features["revenue_90d"]
    assert (rev.kind, rev.column, rev.within_days) == ("sum", "revenue", 90)
    assert rev.filter == parse("event = 'paid' and currency = 'EUR'")
    plans = model.features["plans"]
    assert (plans.column, plans.within_periods, plans.within_days) == (
        "properties.plan",
        2,
        None,
    )
    assert model.features["first_channel"].filter is None
    assert model.features["last_seen_days"].kind == "days_since"
    assert model.stage("a").churned and not model.stage("b").churned
    assert model.stage("a").labels == {"en": "Alpha"}
    assert model.stage("b").label("de") == "Beta DE"
    assert model.metrics["a"] == (
        MetricCall("population", line=20),
        MetricCall("conversion_rate_to", ("b",), line=20),
        MetricCall("retention_rate", ("4",), line=20),
    )
    assert [m.key for m in model.metrics["a"]] == [
        "population",
        "conversion_rate_to(b)",
        "retention_rate(4)",
    ]


def test_inline_calls_are_hoisted_and_shared() -> None:
    model = load(
        BASE
        + """\
  - name: engaged
    when: "count(event = 'signed_up') >= 1 or count(event == 'signed_up') > 5"
  - name: browsing
    when: "count(type = 'page', within = 7d) >= 3 and count(event = 'signed_up') = 0"
"""
    )
    engaged, browsing = model.stage("engaged"), model.stage("browsing")
    # The same call written twice, even differently, is one feature across stages.
    assert to_text(engaged.when) == "_inline_1 >= 1 or _inline_1 > 5"
    assert to_text(browsing.when) == "_inline_2 >= 3 and _inline_1 = 0"
    assert not analysis.calls(engaged.when) and not analysis.calls(browsing.when)
    first = model.features["_inline_1"]
    assert (first.kind, first.filter, first.line) == (
        "count",
        parse("event = 'signed_up'"),
        15,
    )
    assert model.features["_inline_2"].within_days == 7
    assert set(model.features) == {
        "orders_total",
        "orders_365d",
        "days_since_order",
        "_inline_1",
        "_inline_2",
    }
    assert engaged.text.startswith("count(event = 'signed_up') >= 1 or count(")


def test_load_model_from_file(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(BASE, encoding="utf-8")
    assert load_model(path).stage_names == ["loyal", "buyer", "visitor"]
    assert load_model(str(path)).source == str(path)
    broken = tmp_path / "broken.yaml"
    broken.write_text(BASE.replace("orders_total >= 1", "orders_totl >= 1"))
    with pytest.raises(ModelError) as info:
        load_model(broken)
    assert (info.value.file, info.value.line) == (str(broken), 11)


def test_unknown_source() -> None:
    with pytest.raises(ModelError) as info:
        load_model("ecomerce")
    assert "activity, b2b, ecommerce" in str(info.value)


# Errors: file, line, stage, valid values ------


@pytest.mark.parametrize(
    ("text", "line", "stage", "fragments"),
    [
        (
            BASE + "colour: red\n",
            14,
            None,
            ["unknown key `colour`", "name, version, description, grain"],
        ),
        ("version: 1\nstages: []\n", 1, None, ["has no `name`"]),
        ("name: x\n", 1, None, ["has no `stages`"]),
        ("name: x\nstages: []\n", 2, None, ["non-empty list"]),
        (
            BASE.replace("version: 2", "version: 0"),
            2,
            None,
            ["version `0` must be a whole number of 1 or more"],
        ),
        (BASE.replace("version: 2", "version: two"), 2, None, ["version `two`"]),
        (BASE.replace("version: 2", "version: 1.5"), 2, None, ["version `1.5`"]),
        (
            BASE + "grain: fortnight\n",
            14,
            None,
            ["grain `fortnight`", "day, week, month, quarter"],
        ),
        (
            BASE + "progression: backwards\n",
            14,
            None,
            ["progression `backwards`", "dynamic, forward_only"],
        ),
        (
            BASE.replace("name: buyer", "name: loyal"),
            10,
            "loyal",
            ["stage `loyal` is listed twice (first on line 8)"],
        ),
        (
            BASE.replace("name: buyer", "name: Buyer"),
            10,
            None,
            ["stage name `Buyer` must be a lowercase identifier"],
        ),
        (
            BASE.replace('"orders_total >= 1"', '"days_since_ordr > 1"'),
            11,
            "buyer",
            [
                "unknown feature `days_since_ordr` (did you mean `days_since_order`?)",
                "known: days_since_order, orders_365d, orders_total",
            ],
        ),
        (
            BASE.replace("count(event = 'order_completed')", "cnt(event = 'x')"),
            4,
            None,
            ["feature `orders_total`: unknown kind `cnt`", ", ".join(FEATURE_KINDS)],
        ),
        (
            BASE.replace("count(event = 'order_completed')", "count(evnt = 'x')"),
            4,
            None,
            ["unknown event column `evnt` (did you mean `event`?)", "order_id"],
        ),
        (
            BASE.replace("count(event = 'order_completed')", "sum(event = 'x')"),
            4,
            None,
            ["first argument must be an event column"],
        ),
        (
            BASE.replace("count(event = 'order_completed')", "count(revenue)"),
            4,
            None,
            ["filter `revenue` is not a condition", "count_distinct(revenue)"],
        ),
        (
            BASE.replace(
                "count(event = 'order_completed')", "first(channel, within = 3d)"
            ),
            4,
            None,
            ["`first` looks at the first matching event ever", "no `within`"],
        ),
        (
            BASE.replace("count(event = 'order_completed')", "count(within = 5)"),
            4,
            None,
            ["`within` must be a positive duration"],
        ),
        (
            BASE.replace("count(event = 'order_completed')", "orders_total + 1"),
            4,
            None,
            ["must be one call"],
        ),
        (
            BASE.replace('"orders_total >= 1"', '"orders_total"'),
            11,
            "buyer",
            ["the rule `orders_total` is not a condition"],
        ),
        (
            BASE.replace('"orders_total >= 1"', '"days_since_order < 30d"'),
            11,
            "buyer",
            ["a duration such as `30d` may only be a `within` option"],
        ),
        (
            BASE.replace('"orders_total >= 1"', "\"count(evnt = 'x') >= 1\""),
            11,
            "buyer",
            ["unknown event column `evnt`"],
        ),
        (
            BASE + "metrics:\n  buyr: [population]\n",
            15,
            None,
            [
                "metrics for unknown stage `buyr` (did you mean `buyer`?)",
                "loyal, buyer",
            ],
        ),
        (
            BASE + "metrics:\n  buyer: [population,\n    conversion_rate_to(loyl)]\n",
            16,
            "buyer",
            ["`conversion_rate_to` takes one stage of this model, found `loyl`"],
        ),
        (
            BASE.replace(
                '    when: "true"\n', '    when: "true"\n    churned: maybe\n'
            ),
            14,
            "visitor",
            ["`churned` must be true or false, found `maybe`"],
        ),
        (
            BASE.replace('    when: "true"\n', '    when: "true"\n    colour: red\n'),
            14,
            None,
            [
                "a stage: unknown key `colour`",
                "name, when, churned, label, description",
            ],
        ),
        (
            BASE.replace(
                '  - name: visitor\n    when: "true"\n', "  - name: visitor\n"
            ),
            12,
            "visitor",
            ["no `when` rule"],
        ),
        (
            BASE.replace("  orders_365d:", "  orders_total:"),
            5,
            None,
            ["key `orders_total` appears twice (first on line 4)"],
        ),
        (
            BASE.replace("  orders_365d:", "  and:"),
            5,
            None,
            ["feature name `and`", "keyword"],
        ),
    ],
)
def test_model_errors(
    text: str, line: int, stage: str | None, fragments: list[str]
) -> None:
    err = error(text)
    assert (err.file, err.line, err.stage) == ("m.yaml", line, stage)
    message = str(err)
    assert message.startswith(f"m.yaml:{line}")
    for fragment in fragments:
        assert fragment in message


def test_yaml_syntax_error_has_file_and_line() -> None:
    err = error(BASE.replace("  - name: buyer\n", "  - name: buyer\n   bad: [\n"))
    assert err.file == "m.yaml" and err.line is not None and err.line >= 11
    assert "YAML syntax error" in str(err)


def test_rule_syntax_error_keeps_column_and_gains_line() -> None:
    with pytest.raises(RuleSyntaxError) as info:
        load(BASE.replace('"orders_total >= 1"', '"(orders_total >= 1"'))
    err = info.value
    assert (err.file, err.line, err.stage, err.column) == ("m.yaml", 11, "buyer", 18)
    assert str(err).startswith("m.yaml:11, stage `buyer`: `when`: expected `)`")

    with pytest.raises(RuleSyntaxError) as info:
        load(BASE.replace("within = 365d", "within = 365x"))
    assert (info.value.line, info.value.column) == (5, 45)  # the `x`
    assert "feature `orders_365d`" in str(info.value)


# Templates ------


def test_list_templates() -> None:
    assert list_templates() == ["activity", "b2b", "ecommerce"]


ALLOWED_ECOMMERCE_METRICS = {
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
}


@pytest.mark.parametrize("name", ["ecommerce", "b2b", "activity"])
def test_templates_load_with_both_languages(name: str) -> None:
    model = load_model(name)
    assert model.name == name and model.source == name and model.version >= 1
    for stage in model.stages:
        assert set(stage.labels) == {"en", "de"}, stage.name
        assert stage.label("de") and stage.label("en")
    for stage_name, metrics in model.metrics.items():
        assert stage_name in model.stage_names
        assert {m.name for m in metrics} <= ALLOWED_ECOMMERCE_METRICS
    # Every rule reads only features the model defines, and no call is left in it.
    for stage in model.stages:
        assert analysis.names(stage.when) <= set(model.features)
        assert not analysis.calls(stage.when)
    # Every filter column is a real event column.
    for feature in model.features.values():
        if feature.filter is not None:
            for column in analysis.names(feature.filter):
                assert column in EVENTS.names


def test_ecommerce_template() -> None:
    model = load_model("ecommerce")
    assert (model.grain, model.progression) == ("week", "dynamic")
    assert model.stage_names == [
        "won_back",
        "loyalty",
        "lapsed",
        "at_risk",
        "retention",
        "conversion",
        "acquisition",
        "reach",
    ]
    assert [s.name for s in model.stages if s.churned] == ["lapsed"]
    assert model.stage("acquisition").label("de") == "Interessenten"
    signed_up = [f for name, f in model.features.items() if name.startswith("_inline_")]
    assert [(f.kind, f.filter) for f in signed_up] == [
        ("count", parse("event = 'signed_up'"))
    ]
    thresholds = analysis.time_thresholds(
        model.stage("at_risk").when, {"days_since_order"}
    )
    assert thresholds == {90.0}


def test_b2b_template() -> None:
    model = load_model("b2b")
    assert (model.grain, model.progression) == ("week", "forward_only")
    assert model.stage_names == [
        "evangelist",
        "customer",
        "opportunity",
        "sql",
        "mql",
        "lead",
        "subscriber",
    ]


def test_activity_template() -> None:
    model = load_model("activity")
    assert model.stage_names == ["new", "returning", "resurrecting", "dormant"]
    assert [s.name for s in model.stages if s.churned] == ["dormant"]
    windows = {f.within_periods for f in model.features.values()}
    assert windows == {None, 1, 2}


def _first_match(model: StageModel, values: dict[str, int]) -> str:
    """The stage of one customer with the given feature values, first match wins,
    each rule compiled and run on DuckDB."""
    con = ibis.duckdb.connect()
    row = ibis.memtable({name: [value] for name, value in values.items()})
    for stage in model.stages:
        condition = as_condition(to_ibis(stage.when, lambda n: row[n.name]))
        if con.execute(row.select(v=condition))["v"][0]:
            return stage.name
    return "(none)"


@pytest.mark.parametrize(
    ("total", "this", "two", "expected"),
    [
        (3, 3, 3, "new"),  # every event so far is in this period
        (5, 2, 4, "returning"),  # 2 events in the period before
        (9, 1, 1, "resurrecting"),  # none last period, some long ago
        (9, 0, 3, "dormant"),
        (9, 0, 0, "dormant"),
    ],
)
def test_activity_rules_classify(
    total: int, this: int, two: int, expected: str
) -> None:
    values = {
        "events_total": total,
        "events_this_period": this,
        "events_two_periods": two,
    }
    assert _first_match(load_model("activity"), values) == expected
