"""The server's look-up tables for the customer pages (`clm.server.lookups`), the
prefix search and the model preview's estimate (`clm.server.preview`).

Expected answers are worked out here with pandas from the warehouse's own tables:
the search terms and their ranking from `customers` and `profiles`, the timeline by
attributing every event with the user-id-else-anonymous-id rule, and the preview's
sample counts from the stored stage history of the same model (a customer's stage
depends only on the customer's own events, so replaying a sample gives each sampled
customer the stage the full run gave them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import date
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import clm
from clm.demo.simulate import write_parquet
from clm.errors import ModelError
from clm.lifecycle.model import load_model_text
from clm.lifecycle.spec import StageModel
from clm.server import lookups, preview, views
from clm.workspace import Workspace


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("lookups")
    events = root / "events.parquet"
    write_parquet(events, 300, seed=5)
    ws = clm.init(root / "ws", timezone="Europe/Berlin")
    ws._save_receipt(ws.import_events(events))
    ws.run()
    yield ws
    ws.close()


def readers(ws: Workspace) -> tuple[views.Reader, views.Reader]:
    """A reader that scans (no look-ups) and one with the look-ups built."""
    slow = views.Reader(ws, ws.warehouse, stored=False)
    fast = views.Reader(ws, ws.warehouse)
    assert fast.lookups is not None
    fast.lookups.build_now(fast.stamp())
    assert fast.look() is not None and slow.look() is None
    return slow, fast


def expected_hits(ws: Workspace, q: str) -> list[str]:
    """Customers with a term starting with q, ranked by their smallest such term."""
    con = ws.warehouse.con.con
    ids = con.execute("SELECT identifier, kind, customer_id FROM customers").df()
    prof = con.execute("SELECT customer_id, traits FROM profiles").df()
    terms: list[tuple[str, str]] = []
    for ident, kind, cid in zip(ids.identifier, ids.kind, ids.customer_id, strict=True):
        if kind not in ("user", "anon", "custom"):
            continue
        value = ident.split(":", 2)[2] if kind == "custom" else ident.split(":", 1)[1]
        terms += [(ident.lower(), cid), (value.lower(), cid)]
    for cid, traits in zip(prof.customer_id, prof.traits, strict=True):
        for v in json.loads(traits or "{}").values():
            if isinstance(v, dict | list) or v is None:
                continue
            text = (v if isinstance(v, str) else json.dumps(v)).lower()
            terms += [(w, cid) for w in {text, *text.split()} if w]
    best: dict[str, str] = {}
    for term, cid in terms:
        if term.startswith(q.lower()):
            best[cid] = min(best.get(cid, term), term)
    return sorted(best, key=lambda c: (best[c], c))


def test_search_is_a_prefix_search_ranked_by_term(shop: Workspace) -> None:
    slow, fast = readers(shop)
    cid = str(
        shop.warehouse.con.con.execute(
            "SELECT min(customer_id) FROM customers WHERE customer_id LIKE 'user-%'"
        ).fetchone()[0]
    )
    for q in (cid[:-2], cid[:-2].upper(), "anon:", "zz-nobody"):
        want = expected_hits(shop, q)
        for r in (slow, fast):
            got, page = [], 1
            while True:
                body = views.search_customers(r, q, page, 7)
                assert body["total"] == len(want) and not body["capped"]
                got += [row["customer_id"] for row in body["rows"]]
                if body["next"] is None:
                    break
                page = body["next"]
            assert got == want, q
    # A whole id is the exact hit and comes first, once.
    body = views.search_customers(fast, cid, 1, 50)
    assert body["rows"][0]["customer_id"] == cid
    ids = [row["customer_id"] for row in body["rows"]]
    assert ids.count(cid) == 1


def test_search_is_capped(shop: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    # Marks every 3 terms: a search reads a short window of the sorted terms.
    monkeypatch.setattr(lookups, "SPARSE", 3)
    monkeypatch.setattr(lookups, "SEARCH_CAP", 5)
    slow, fast = readers(shop)
    for q in ("anon:", "a", "user-"):
        want = expected_hits(shop, q)
        assert len(want) > 20
        for r in (slow, fast):
            body = views.search_customers(r, q, 1, 50)
            assert body["capped"] and body["total"] == 5
            assert [row["customer_id"] for row in body["rows"]] == want[:5]
    # Fewer hits than the cap: all of them, through the window too.
    cid = expected_hits(shop, "user-")[0]
    want = expected_hits(shop, cid[:-1])
    assert 0 < len(want) < 5
    body = views.search_customers(fast, cid[:-1], 1, 50)
    assert not body["capped"]
    assert [row["customer_id"] for row in body["rows"]] == want


def test_timeline_through_the_look_up_equals_the_scan(shop: Workspace) -> None:
    slow, fast = readers(shop)
    con = shop.warehouse.con.con
    ids = con.execute("SELECT identifier, customer_id FROM customers").df()
    ev = con.execute("SELECT event_id, user_id, anonymous_id, context FROM events").df()
    user = ev.user_id.fillna("").str.strip()
    key = ("user:" + user).where(user != "", "anon:" + ev.anonymous_id.str.strip())
    bot = ev.context.fillna("").str.contains('"bot":true', regex=False)
    ev["customer_id"] = key.map(dict(zip(ids.identifier, ids.customer_id, strict=True)))
    counts = ev[~bot].customer_id.value_counts()
    # The customers with the most events and with the most identifiers.
    many = ids.customer_id.value_counts().index[0]
    for cid in {counts.index[0], many}:
        a = views.customer(slow, cid, 1, 5)
        b = views.customer(fast, cid, 1, 5)
        assert a == b
        assert b["timeline"]["total"] == counts[cid]
        mine = set(ev[ev.customer_id == cid].event_id)
        pages = [views.customer(fast, cid, p, 5) for p in range(1, 100)]
        got = [e["event_id"] for p in pages for e in p["timeline"]["rows"]]
        assert len(got) == len(set(got)) and set(got) == mine
    with pytest.raises(clm.errors.NotFoundError):
        views.customer(fast, "nobody-at-all", 1, 5)


def test_events_appended_after_the_build_are_found(shop: Workspace) -> None:
    _, fast = readers(shop)
    con = shop.warehouse.con.con
    cid = str(
        con.execute(
            "SELECT customer_id FROM customers WHERE kind = 'user' LIMIT 1"
        ).fetchone()[0]
    )
    before = views.customer(fast, cid, 1, 5)["timeline"]["total"]
    con.execute(
        "INSERT INTO events (event_id, type, event, user_id, timestamp) "
        "VALUES ('tail-1', 'track', 'tail_test', ?, now()::TIMESTAMP)",
        [cid],
    )
    try:
        after = views.customer(fast, cid, 1, 5)["timeline"]
        assert after["total"] == before + 1
        assert after["rows"][0]["event_id"] == "tail-1"
    finally:
        con.execute("DELETE FROM events WHERE event_id = 'tail-1'")


def test_preview_of_the_saved_model_is_the_stored_run(shop: Workspace) -> None:
    _, fast = readers(shop)
    m = shop.models()[0]
    body = views.preview_model(fast, m.text)
    assert body["method"] == "stored" and body["estimate"] is False
    pops = views.populations(fast, m.name, None)
    assert {p["stage"]: p["customers"] for p in body["populations"]} == {
        p["stage"]: p["customers"] for p in pops["stages"]
    }


def stored_stages(ws: Workspace, as_of: str) -> pd.DataFrame:
    """Each customer's stored stage as of the start of `as_of` (Europe/Berlin)."""
    con = ws.warehouse.con.con
    hist = con.execute(
        "SELECT customer_id, stage, valid_from, valid_to FROM stage_history"
    ).df()
    at = (
        pd.Timestamp(as_of)
        .tz_localize("Europe/Berlin")
        .tz_convert("UTC")
        .tz_localize(None)
    )
    live = hist[(hist.valid_from <= at) & (hist.valid_to.isna() | (at < hist.valid_to))]
    return live[["customer_id", "stage"]]


@pytest.mark.parametrize("reader", ["scan", "look-up"])
def test_preview_of_a_draft_is_a_scaled_sample(
    shop: Workspace, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    _, fast = readers(shop)
    r = fast if reader == "look-up" else views.Reader(shop, shop.warehouse)
    if reader == "scan":
        r.lookups = None  # a server whose look-ups are not built yet
    monkeypatch.setattr(preview, "PREVIEW_CUSTOMERS", 60)
    m = shop.models()[0]
    # The same rules under a new version and a comment: not the saved model.
    draft = m.text.replace(f"version: {m.version}", "version: 99", 1) + "\n# draft\n"
    body = views.preview_model(r, draft)
    con = shop.warehouse.con.con
    ids = con.execute(
        "SELECT DISTINCT customer_id, hash(customer_id) AS h FROM customers"
    ).df()
    total = len(ids)
    k = math.ceil(total / 60)
    sample = set(ids.customer_id[ids.h.astype("uint64") % k == 0])
    assert body["method"] == "sample" and body["estimate"] is True
    # Dynamic, but its features are all in the NumPy grid: read from that.
    assert body["engine"] == "grid"
    assert body["sample_every"] == k and body["sample_customers"] == len(sample)
    assert body["customers"] == total
    live = stored_stages(shop, body["as_of"])
    counts = live[live.customer_id.isin(sample)].stage.value_counts()
    n = len(sample)
    for row in body["populations"]:
        c = int(counts.get(row["stage"], 0))
        assert row["customers"] == round(c * total / n), row["stage"]
        p = c / n
        margin = 1.96 * total * math.sqrt(p * (1 - p) / n * (1 - n / total))
        assert row["margin"] == round(margin)
    # Asked again: the same answer, from the cache.
    assert views.preview_model(r, draft) == body


def test_exact_preview_replays_every_customer(shop: Workspace) -> None:
    _, fast = readers(shop)
    m = shop.models()[0]
    draft = m.text.replace(f"version: {m.version}", "version: 98", 1)
    body = views.preview_model(fast, draft, exact=True)
    assert body["method"] == "exact" and body["estimate"] is False
    assert body["engine"] == "snapshot"
    live = stored_stages(shop, body["as_of"])
    want = live.stage.value_counts().to_dict()
    got = {p["stage"]: p["customers"] for p in body["populations"] if p["customers"]}
    assert got == want
    assert all(p["margin"] == 0 for p in body["populations"])


def replayed(
    r: views.Reader,
    model: StageModel,
    customers: pa.Table,
    events: pa.Table,
    as_of: str,
    fit: pd.DataFrame | None = None,
) -> tuple[date, pd.DataFrame]:
    """The reference: the stage history engine (what `clm run` does) replaying
    the sample's rows in a warehouse of their own, its populations as of `as_of`.
    `fit`: `value_fits` rows for p_alive()."""
    from clm.lifecycle import queries
    from clm.lifecycle.history import run_model

    mem = preview._load(customers, events)
    try:
        if fit is not None:
            mem.append("value_fits", fit)
        run_model(mem, model, timezone=r.tz, as_of=date.fromisoformat(as_of))
        day = queries.last_day(mem, model, r.tz)
        return day, queries.populations(mem, model, day, r.tz)
    finally:
        mem.close()


def scaled(pops: pd.DataFrame, scale: float) -> dict[str, int]:
    """The reference's populations scaled like the preview's (stages with none
    left out)."""
    return {
        s: round(c * scale)
        for s, c in zip(pops.stage, pops.customers, strict=True)
        if c
    }


def shown(body: dict[str, Any]) -> dict[str, int]:
    """The preview's populations, stages with none left out."""
    return {p["stage"]: p["customers"] for p in body["populations"] if p["customers"]}


def test_preview_of_a_forward_only_draft_equals_the_replay_of_the_sample(
    shop: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A forward-only stage depends on the history: no snapshot; the sample's
    # candidate-period grid gives the answer. It must be what the stage history
    # engine, replaying the same sample and storing its history, says as of the
    # same day; and a second draft that only changes a rule reuses the grid (one
    # grid built) and still equals its own replay.
    _, fast = readers(shop)
    monkeypatch.setattr(preview, "PREVIEW_CUSTOMERS", 60)
    m = shop.models()[0]
    assert "progression: dynamic" in m.text
    a = m.text.replace(f"version: {m.version}", "version: 97", 1).replace(
        "progression: dynamic", "progression: forward_only", 1
    )
    b = a.replace('when: "true"', 'when: "false"', 1)
    assert a != b
    for draft in (a, b):
        body = views.preview_model(fast, draft)
        assert body["method"] == "sample" and body["engine"] == "grid"
        model = load_model_text(draft, "draft.yaml")
        k = body["sample_every"]
        customers, events = preview._sample(fast, k, preview._columns(fast, model))
        day, pops = replayed(fast, model, customers, events, body["as_of"])
        assert day.isoformat() == body["as_of"]
        want = scaled(pops, body["scale"])
        assert shown(body) == want and sum(want.values()) > 0
    held = list(fast.preview_held.values())
    assert len(held) == 1 and len(held[0].grids) == 1


def test_preview_drafts_with_other_rules_get_their_own_answer(
    shop: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two drafts on the same loaded sample: the second only makes the catch-all
    # stage match nobody, so it must be empty there and equal elsewhere (a draft
    # differing only in a comment gets the first answer's numbers).
    _, fast = readers(shop)
    monkeypatch.setattr(preview, "PREVIEW_CUSTOMERS", 60)
    m = shop.models()[0]
    a = m.text.replace(f"version: {m.version}", "version: 96", 1)
    rule = 'when: "true"'
    assert a.count(rule) == 1
    b = a.replace(rule, 'when: "false"')
    body_a = views.preview_model(fast, a)
    body_b = views.preview_model(fast, b)
    body_c = views.preview_model(fast, a + "\n# only a comment\n")
    pa_ = {p["stage"]: p["customers"] for p in body_a["populations"]}
    pb = {p["stage"]: p["customers"] for p in body_b["populations"]}
    last = m.stage_names[-1]
    assert pa_[last] > 0 and pb[last] == 0
    assert {s: c for s, c in pa_.items() if s != last} == {
        s: c for s, c in pb.items() if s != last
    }
    assert body_c["populations"] == body_a["populations"]


def test_a_draft_with_a_type_error_says_so_in_the_models_words(
    shop: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rules run in NumPy, but their types are checked by the rule compiler
    # first: the error names the stage and the feature as the draft writes them.
    from clm.errors import ModelError

    _, fast = readers(shop)
    monkeypatch.setattr(preview, "PREVIEW_CUSTOMERS", 60)
    m = shop.models()[0]
    feature = next(iter(m.features))
    stage = m.stage_names[-1]
    draft = m.text.replace(f"version: {m.version}", "version: 93", 1).replace(
        'when: "true"', f"when: \"{feature} = 'x'\"", 1
    )
    with pytest.raises(ModelError) as err:
        views.preview_model(fast, draft)
    text = str(err.value)
    assert f"stage `{stage}`" in text and f"{feature} = 'x'" in text
    assert f"f_{feature}" not in text


def test_warming_loads_the_sample_and_the_saved_models_grid(
    shop: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the server does once its look-up tables are ready: afterwards an edited
    # forward-only draft of the saved model (same features) builds nothing new.
    _, fast = readers(shop)
    monkeypatch.setattr(preview, "PREVIEW_CUSTOMERS", 60)
    preview.warm(fast)
    held = list(fast.preview_held.values())
    assert len(held) == 1 and len(held[0].grids) == 1
    m = shop.models()[0]
    draft = m.text.replace(f"version: {m.version}", "version: 95", 1).replace(
        "progression: dynamic", "progression: forward_only", 1
    )
    assert views.preview_model(fast, draft)["engine"] == "grid"
    assert len(held[0].grids) == 1 and len(fast.preview_held) == 1
    # A dynamic draft with the saved features reads the grid too, and says what
    # the snapshot (the single-day aggregate, another engine) says on the sample.
    dyn = m.text.replace(f"version: {m.version}", "version: 94", 1)
    body = views.preview_model(fast, dyn)
    assert body["engine"] == "grid"
    model = load_model_text(dyn, "draft.yaml")
    day = date.fromisoformat(body["as_of"])
    _, snap = preview._counted(fast, model, held[0], day, "snapshot")
    want = scaled(snap, body["scale"])
    assert shown(body) == want and sum(want.values()) > 0


def test_preview_of_a_p_alive_draft_equals_the_replay_of_the_sample(
    shop: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # p_alive() reads the workspace's latest fit: the grid gets it from the
    # workspace, the reference replay from the same row in its own warehouse.
    # Without a fit the preview says what to run. (Last in the file: it adds a
    # fit to the module's workspace.)
    from clm.warehouse.engine import now_utc

    _, fast = readers(shop)
    monkeypatch.setattr(preview, "PREVIEW_CUSTOMERS", 60)
    m = shop.models()[0]
    draft = (
        m.text.replace(f"version: {m.version}", "version: 93", 1)
        .replace("features:\n", "features:\n  alive: p_alive()\n", 1)
        .replace(
            "stages:\n",
            'stages:\n  - {name: fading, when: "alive < 0.6 and orders_total >= 2"}\n',
            1,
        )
    )
    with pytest.raises(ModelError, match="run `clm clv fit` first"):
        views.preview_model(fast, draft)
    fit = pd.DataFrame(
        {
            "fit_id": ["t"],
            "computed_at": [now_utc()],
            "observation_period_end": [pd.Timestamp("2024-01-01")],
            "model": ["bgnbd"],
            "time_unit": ["W"],
            "params": [json.dumps({"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.5})],
            "log_likelihood": [-1.0],
            "converged": [True],
        }
    )
    shop.warehouse.append("value_fits", fit)
    body = views.preview_model(fast, draft)
    assert body["engine"] == "grid", body
    model = load_model_text(draft, "draft.yaml")
    customers, events = preview._sample(
        fast, body["sample_every"], preview._columns(fast, model)
    )
    _, pops = replayed(fast, model, customers, events, body["as_of"], fit)
    want = scaled(pops, body["scale"])
    assert shown(body) == want and want.get("fading", 0) > 0
