"""The dashboard of `clm serve`: one Jinja2 page per view of `clm.server.views`.

A page handler parses the same parameters as its API twin (`api.Params`), calls the
same view function and renders its dict; numbers, dates and labels are written by
`clm.report.i18n` in the reader's language: `?lang=` first, then the `clm_lang` cookie
set by the language switch, then the browser's Accept-Language, then the workspace's
`language`. All assets (CSS, one small script) are served from `static/`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import pandas as pd
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from clm.report import charts as rcharts
from clm.report import i18n
from clm.report.html import caveat_text
from clm.server import views
from clm.server.dashboard import charts, words
from clm.server.views import Reader

LANG_COOKIE = "clm_lang"
STATIC = {"app.css": "text/css", "app.js": "application/javascript"}


def pick_lang(request: Request, default: str) -> str:
    """The language of a page: query, cookie, Accept-Language (by q), default."""
    for value in (request.query_params.get("lang"), request.cookies.get(LANG_COOKIE)):
        if value and value[:2].lower() in i18n.LANGUAGES:
            return value[:2].lower()
    offers = []
    for part in request.headers.get("accept-language", "").split(","):
        tag, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        offers.append((weight, tag[:2].lower()))
    for _, tag in sorted(offers, key=lambda o: -o[0]):
        if tag in i18n.LANGUAGES:
            return tag
    return default if default in i18n.LANGUAGES else "en"


class Page:
    """What every template gets: the language, words, formats and links."""

    def __init__(self, request: Request, r: Reader) -> None:
        self.request = request
        self.r = r
        self.lang = pick_lang(request, str(r.ws.config.get("language", "en")))
        self.currency = r.ws.currency
        self.labels: dict[str, dict[str, str]] = {}

    def t(self, key: str, **params: Any) -> str:
        return words.translate(key, self.lang, **params)

    def num(self, x: Any, decimals: int | None = None) -> str:
        return i18n.format_number(x, self.lang, decimals)

    def pct(self, x: Any, signed: bool = False) -> str:
        return i18n.format_percent(x, self.lang, signed=signed)

    def day(self, x: Any) -> str:
        if not x:
            return i18n.MISSING
        d = datetime.fromisoformat(x) if isinstance(x, str) else x
        return i18n.format_date(d, self.lang)

    def when(self, x: Any) -> str:
        if not x:
            return i18n.MISSING
        d = datetime.fromisoformat(x) if isinstance(x, str) else x
        return i18n.format_datetime(d, self.lang)

    def stage(self, s: Any, target: bool = False) -> str:
        if s in (None, "", "(not yet)"):
            return i18n.stage_label(None, self.lang, as_target=target)
        return i18n.stage_label(str(s), self.lang, self.labels)

    def metric(self, key: str) -> str:
        return i18n.metric_label(key, self.lang, self.labels)

    def value(self, key: str, v: Any) -> str:
        return i18n.format_metric(key, v, self.lang, self.currency)

    def period(self, x: str, grain: str) -> str:
        return i18n.format_period(date.fromisoformat(x[:10]), grain, self.lang)

    def link(self, path: str, **query: Any) -> str:
        q = {k: v for k, v in query.items() if v not in (None, "")}
        return path + ("?" + urlencode(q) if q else "")

    def cid(self, customer_id: str) -> str:
        return "/customers/" + quote(str(customer_id), safe="")

    def caveat(self, c: dict[str, Any]) -> str:
        if c["code"] == "data_until":
            return self.t(
                "dash.data_until", date=date.fromisoformat(c["params"]["date"])
            )
        return caveat_text(c["code"], c["params"], self.lang)

    def use_model(self, name: str | None) -> None:
        m = self.r.model(name)
        self.labels = {s.name: dict(s.labels) for s in m.stages if s.labels}


def _env() -> jinja2.Environment:
    folder = resources.files("clm.server.dashboard").joinpath("templates")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


ENV = _env()


def routes(
    reader: Callable[[], Reader], tokens: Callable[[], list[str]]
) -> list[BaseRoute]:
    """Dashboard routes; `reader` gives the server's Reader, `tokens` the tokens."""
    from clm.server import api

    def page(
        template: str, build: Callable[[Page, api.Params], dict[str, Any]]
    ) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            if not api.token_ok(request, tokens()):
                return RedirectResponse("/login?next=" + quote(request.url.path), 303)
            try:
                r = reader()
                p = Page(request, r)
                p.use_model(request.query_params.get("model"))
                ctx = await run_in_threadpool(build, p, api.Params(request))
                html = ENV.get_template(template).render(p=p, t=p.t, **ctx)
                return HTMLResponse(html)
            except Exception as exc:
                status, body = api.envelope(exc)
                lang = pick_lang(request, "en")
                html = ENV.get_template("error.html").render(
                    error=body["error"],
                    t=lambda k, **kw: i18n.translate(k, lang, **kw),
                    p=None,
                    lang=lang,
                )
                return HTMLResponse(html, status)

        return handler

    def overview(p: Page, q: api.Params) -> dict[str, Any]:
        data = views.overview(p.r, q.text("model"), q.grain())
        m = p.r.model(data["model"])
        labels = {s: p.stage(s) for s in m.stage_names}
        chart = rcharts.population_chart(
            pd.DataFrame(data["series"]).assign(
                period_start=lambda d: pd.to_datetime(d.period_start).dt.date
            )
            if data["series"]
            else pd.DataFrame(columns=["period_start", "stage", "population"]),
            m.stage_names,
            labels,
            data["grain"],
            p.lang,
            element_id="populations",
        )
        cards = []
        for card in data["cards"]:
            kpis = []
            for k in card["kpis"]:
                trend = card["trend"].get(k["metric"], [])
                kpis.append(
                    {
                        **k,
                        "spark": rcharts.sparkline(trend[-12:], p.metric(k["metric"])),
                    }
                )
            cards.append({"stage": card["stage"], "kpis": kpis})
        return {"data": data, "chart": chart, "cards": cards}

    def stage(p: Page, q: api.Params) -> dict[str, Any]:
        page_no, size = q.page()
        data = views.stage_detail(
            p.r, q.text("model"), q.path["stage"], q.grain(), page_no, size
        )
        by: dict[str, list[Any]] = {}
        for v in data["kpis"]:
            by.setdefault(v["metric"], []).append(v)
        rows = []
        for key, vals in by.items():
            last = vals[-1]
            rows.append(
                {
                    "metric": key,
                    "last": last,
                    "spark": rcharts.sparkline(
                        [v["value"] for v in vals][-26:], p.metric(key), width=160
                    ),
                }
            )
        channels = charts.bars(
            [(c["channel"], float(c["customers"])) for c in data["channels"]][:10],
            lambda v: p.num(v, 0),
        )
        return {"data": data, "rows": rows, "channels": channels}

    def transitions(p: Page, q: api.Params) -> dict[str, Any]:
        data = views.transitions(p.r, q.text("model"), q.day("start"), q.day("end"))
        m = p.r.model(data["model"])
        flows = [{**f, "customers": float(f["customers"])} for f in data["flows"]]
        svg = charts.sankey(
            flows,
            m.stage_names,
            lambda s, target: p.stage(s, target),
            lambda v: p.num(v, 0),
        )
        frame = pd.DataFrame(
            data["flows"] or [], columns=["from_stage", "to_stage", "customers"]
        )
        frame["from_stage"] = frame.from_stage.where(frame.from_stage != "(not yet)")
        frame = frame[frame.to_stage != "(not yet)"]
        matrix = rcharts.transition_matrix(
            frame,
            m.stage_names,
            {s: p.stage(s) for s in m.stage_names},
            p.lang,
            none_from=p.stage(None),
            none_to=p.stage(None, True),
        )
        return {"data": data, "sankey": svg, "matrix": matrix}

    def cohorts(p: Page, q: api.Params) -> dict[str, Any]:
        data = views.cohorts(p.r, q.integer("months", 12, 1, 36))
        svg = charts.cohort_heatmap(
            data["cohorts"],
            data["months"],
            lambda c: i18n.format_period(date.fromisoformat(c), "month", p.lang),
            p.pct,
        )
        return {"data": data, "heatmap": svg}

    def customers(p: Page, q: api.Params) -> dict[str, Any]:
        text = q.text("q", "")
        page_no, size = q.page()
        data = views.search_customers(p.r, text, page_no, size) if text else None
        return {"data": data, "q": text}

    def customer(p: Page, q: api.Params) -> dict[str, Any]:
        page_no, size = q.page()
        data = views.customer(p.r, q.path["customer_id"], page_no, size)
        m = p.r.model(q.text("model"))
        spans = [
            s
            for s in data["stage_history"]
            if s["model"] == m.name and s["model_version"] == m.version
        ]
        run = views.show_model(p.r, m.name)["last_run"] or {}
        until = None
        if run.get("observation_end"):
            # Stored instants are UTC; the chart's span times carry +00:00.
            until = datetime.fromisoformat(run["observation_end"])
            until = until if until.tzinfo else until.replace(tzinfo=UTC)
        svg = charts.timeline(spans, m.stage_names, p.stage, p.day, until=until)
        return {"data": data, "timeline": svg, "model": m}

    def models(p: Page, q: api.Params) -> dict[str, Any]:
        data = views.show_model(p.r, q.text("model") or p.r.model(None).name)
        return {"data": data, "models": views.list_models(p.r)["models"]}

    async def report(request: Request) -> Response:
        if not api.token_ok(request, tokens()):
            return RedirectResponse("/login?next=/report", 303)
        try:
            r = reader()
            lang = pick_lang(request, str(r.ws.config.get("language", "en")))
            model = request.query_params.get("model")
            # The report only changes with the data: built once per data stamp
            # (and model, language), like the views' answers; the time it states
            # is when it was built.
            html = await run_in_threadpool(
                r.cached, ("report", model, lang), lambda: report_html(r, model, lang)
            )
        except Exception as exc:
            status, body = api.envelope(exc)
            return api.json_response(body, status)
        name = f"clm-report-{lang}.html"
        return HTMLResponse(
            html, headers={"Content-Disposition": f'attachment; filename="{name}"'}
        )

    async def set_lang(request: Request) -> Response:
        code = request.path_params["code"]
        back = request.query_params.get("next", "/")
        if not back.startswith("/") or back.startswith("//"):
            back = "/"  # only paths on this server: no open redirect
        resp = RedirectResponse(back, 303)
        if code in i18n.LANGUAGES:
            resp.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, samesite="lax")
        return resp

    async def login(request: Request) -> Response:
        back = request.query_params.get("next", "/")
        if not back.startswith("/") or back.startswith("//"):
            back = "/"
        lang = pick_lang(request, "en")
        wrong = False
        if request.method == "POST":
            form = await request.form()
            token = str(form.get("token", ""))
            if api.token_ok(_with_token(request, token), tokens()):
                resp = RedirectResponse(back, 303)
                resp.set_cookie(
                    api.COOKIE,
                    token,
                    httponly=True,
                    samesite="strict",
                    max_age=86400 * 30,
                )
                return resp
            wrong = True
        html = ENV.get_template("login.html").render(
            t=lambda k, **kw: i18n.translate(k, lang, **kw),
            lang=lang,
            wrong=wrong,
            p=None,
            back=back,
        )
        return HTMLResponse(html, 401 if wrong else 200)

    static_files = {
        name: resources.files("clm.server.dashboard")
        .joinpath(f"static/{name}")
        .read_bytes()
        for name in STATIC
    }

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static_files:
            return Response("not found", 404)
        return Response(
            static_files[name],
            media_type=STATIC[name],
            headers={"Cache-Control": "public, max-age=3600"},
        )

    return [
        Route("/", page("overview.html", overview), methods=["GET"]),
        Route("/stages/{stage}", page("stage.html", stage), methods=["GET"]),
        Route("/transitions", page("transitions.html", transitions), methods=["GET"]),
        Route("/cohorts", page("cohorts.html", cohorts), methods=["GET"]),
        Route("/customers", page("customers.html", customers), methods=["GET"]),
        Route(
            "/customers/{customer_id:path}",
            page("customer.html", customer),
            methods=["GET"],
        ),
        Route("/models", page("models.html", models), methods=["GET"]),
        Route("/report", report, methods=["GET"]),
        Route("/lang/{code}", set_lang, methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/static/{name}", static, methods=["GET"]),
    ]


def _with_token(request: Request, token: str) -> Request:
    """A copy of the request carrying `token` as a bearer header, to check it."""
    scope = dict(request.scope)
    headers = [h for h in scope["headers"] if h[0] != b"authorization"]
    headers.append((b"authorization", f"Bearer {token}".encode()))
    scope["headers"] = headers
    return Request(scope)


def report_html(r: Reader, model: str | None, lang: str) -> str:
    """The HTML report of issue 2, filled from the same views as the overview."""
    from clm.report.data import Caveat, ReportData
    from clm.report.html import render_report

    m = r.model(model)
    ov = views.overview(r, m.name, None)
    kpis = pd.DataFrame(views.metrics(r, m.name, None)["values"])
    last = date.fromisoformat(ov["as_of"])
    tr = views.transitions(r, m.name, None, None)
    flows = pd.DataFrame(tr["flows"], columns=["from_stage", "to_stage", "customers"])
    flows["from_stage"] = flows.from_stage.where(flows.from_stage != "(not yet)")
    flows = flows[flows.to_stage != "(not yet)"]
    series = pd.DataFrame(ov["series"])
    first = min((s["period_start"] for s in ov["series"]), default=ov["as_of"])
    caveats = [
        Caveat(c["code"], dict(c["params"]))
        for c in ov["caveats"]
        if c["code"] != "data_until"
    ]
    data = ReportData(
        title=f"{m.name} — customer lifecycle",
        model_name=m.name,
        model_version=m.version,
        stage_order=m.stage_names,
        grain=ov["grain"],
        timezone=r.tz.key,
        currency=r.ws.currency,
        generated_at=datetime.now(),
        data_from=date.fromisoformat(first),
        data_to=last,
        populations=series,
        kpis=kpis[["stage", "metric", "period_start", "value", "previous", "change"]]
        if len(kpis)
        else pd.DataFrame(),
        transitions=flows,
        transitions_from=date.fromisoformat(tr["start"]),
        transitions_to=date.fromisoformat(tr["end"]),
        stage_labels={s.name: dict(s.labels) for s in m.stages if s.labels},
        caveats=caveats,
        churn_stages=[s.name for s in m.stages if s.churned],
    )
    return render_report(data, lang)


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and not math.isnan(x)
