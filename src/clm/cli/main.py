"""The `clm` command line: a thin front end over `clm.Workspace`.

Every command takes `--workspace DIR` (default: the current folder); every command that
prints results takes `--json`. Errors that clm raises on purpose print one clear message
and exit 1; anything unexpected prints a short notice (set CLM_DEBUG=1 for the
traceback) and exits 2; a wrong option or argument exits 2 as click has it. With
`--json`, each of these is one JSON object on stderr instead, `{"error": {"code",
"field", "value", "message", "transient"}}` (see `error_body`). No traceback reaches a
user by default.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import shutil
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

try:  # typer carries its own copy of click since 0.2x; older ones use click's
    from typer._click.exceptions import BadParameter, ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import BadParameter, ClickException  # type: ignore[assignment]

from clm.cli import render
from clm.errors import ClmError, ModelError


def _code(exc: BaseException) -> str:
    """`ConfigError` → `config_error`: the error's class, stable for scripts."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


# Messages name the input at fault first: `--as-of: 'x' …`, `setting `currency`: …`,
# `--lang 'fr'; …`, `file '…' does not exist`; the bad value is the first quoted one.
_FIELD = re.compile(
    r"^(?:(--[a-z][\w-]*)|setting `([\w.]+)`|(file|delimiter|decimal)\b)"
)
_VALUE = re.compile(r"""'((?:[^'\\]|\\.)*)'""")


def error_body(exc: BaseException) -> tuple[str | None, str | None]:
    """The field and the value an error is about, read from its attributes or its
    message (None where it is not about one input)."""
    field = getattr(exc, "field", None)
    value = getattr(exc, "value", None)
    if field is None and isinstance(exc, ModelError):
        field = exc.stage or exc.file
    text = str(exc)
    if field is None and (m := _FIELD.match(text)):
        field = next(g for g in m.groups() if g)
    if field is not None and value is None and (v := _VALUE.search(text)):
        value = v.group(1)
    return field, value


class _Root(TyperGroup):
    """The `clm` group: with `--json` among the arguments, a usage error (unknown
    option, missing argument, bad choice) is a JSON object on stderr as well."""

    def main(self, args: Any = None, *a: Any, **kw: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if "--json" not in argv or kw.get("standalone_mode") is False:
            return super().main(args, *a, **kw)
        kw["standalone_mode"] = False
        try:
            code = super().main(args, *a, **kw)
        except ClickException as exc:
            field = getattr(exc, "option_name", None)  # an unknown option
            if isinstance(exc, BadParameter) and exc.param is not None:
                field = (exc.param.opts or [exc.param.name or ""])[0]
            render.json_error("usage_error", exc.format_message(), field)
            sys.exit(exc.exit_code)
        except typer.Abort:
            render.json_error("aborted", "aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_Root,
    name="clm",
    help="Customer lifecycle management: stages as data, KPIs per stage, reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
import_app = typer.Typer(help="Import customer data from files.", no_args_is_help=True)
app.add_typer(import_app, name="import")

WorkspaceOpt = Annotated[
    Path, typer.Option("--workspace", "-w", help="Workspace folder (with clm.yaml).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="Stage model name.")
]
WidthOpt = Annotated[
    int | None,
    typer.Option(
        "--width",
        help="Table width in columns (default: the terminal's; unlimited into a "
        "file or a pipe).",
    ),
]
VersionOpt = Annotated[
    int | None,
    typer.Option(
        "--version", help="An older model version that ran (default: current)."
    ),
]

DecimalOpt = Annotated[
    str | None,
    typer.Option(
        "--decimal",
        help="Decimal mark of numbers: . (12.50) or , (12,50 and 1.234,50). "
        "Unset: , when a ;-delimited file's amounts are all written that way.",
    ),
]
DayfirstOpt = Annotated[
    bool,
    typer.Option(
        "--dayfirst",
        help="Read ambiguous dates such as 01/02/2024 day first (1 February).",
    ),
]
TimeFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--time-format",
        help="strptime format of the time column, e.g. '%d.%m.%Y %H:%M' "
        "(default: recognised from the column).",
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn clm's errors into one message and an exit code; never show a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            if "width" in kwargs:
                render.set_width(kwargs["width"])
            return fn(*args, **kwargs)
        except ClmError as exc:
            if as_json:
                field, value = error_body(exc)
                render.json_error(_code(exc), str(exc), field, value, exc.transient)
                raise typer.Exit(1) from None
            render.problem("error", str(exc))
            if exc.transient:
                render.errors.print("(this may work if you try again)")
            raise typer.Exit(1) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            # `clm … --json | head`: the reader left; nothing more to say to it.
            sys.stderr.close()
            raise typer.Exit(0) from None
        except Exception as exc:
            if os.environ.get("CLM_DEBUG"):
                raise
            if as_json:
                render.json_error(
                    "internal_error",
                    f"{type(exc).__name__}: {exc} (a bug in clm; CLM_DEBUG=1 shows "
                    "the traceback)",
                )
                raise typer.Exit(2) from None
            render.problem(
                "internal error",
                f"{type(exc).__name__}: {exc}\n"
                "This is a bug in clm. Run again with CLM_DEBUG=1 for the traceback "
                "and report it.",
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _ws(path: Path) -> Any:
    import clm

    return clm.open(path)


def _date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ClmError(
            f"{option}: {value!r} is not a date; expected YYYY-MM-DD"
        ) from None


# -- init -----------------------------------------------------------------------------


@app.command()
@friendly
def init(
    directory: Annotated[
        Path, typer.Argument(help="Folder for the new workspace.")
    ] = Path("."),
    timezone: Annotated[str, typer.Option(help="Reporting time zone (IANA).")] = "UTC",
    currency: Annotated[
        str, typer.Option(help="Currency of revenue: an ISO 4217 code (EUR, CHF…).")
    ] = "EUR",
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Stage models to use.")
    ] = None,
    language: Annotated[str, typer.Option(help="Report language: en or de.")] = "en",
    as_json: JsonOpt = False,
) -> None:
    """Create a workspace: clm.yaml and the DuckDB warehouse."""
    import clm

    ws = clm.init(
        directory,
        timezone=timezone,
        currency=currency,
        models=model or ["ecommerce"],
        language=language,
    )
    if as_json:
        # Not the settings themselves: they hold keys and the identity salt.
        render.print_json(
            {"workspace": str(ws.root), "config_file": str(ws.root / "clm.yaml")}
        )
    else:
        render.console.print(f"workspace ready: {ws.root / 'clm.yaml'}")
    ws.close()


# -- import ---------------------------------------------------------------------------


@import_app.command("transactions")
@friendly
def import_transactions(
    file: Annotated[Path, typer.Argument(help="CSV (.gz), Parquet or JSON lines.")],
    workspace: WorkspaceOpt = Path("."),
    customer: Annotated[str | None, typer.Option(help="Customer id column.")] = None,
    time: Annotated[str | None, typer.Option(help="Order time column.")] = None,
    order: Annotated[str | None, typer.Option(help="Order id column.")] = None,
    amount: Annotated[
        str | None,
        typer.Option(help='Amount column or expression, e.g. "Quantity * UnitPrice".'),
    ] = None,
    quantity: Annotated[str | None, typer.Option(help="Quantity column.")] = None,
    delimiter: Annotated[
        str | None, typer.Option(help="CSV delimiter (sniffed if unset).")
    ] = None,
    decimal: DecimalOpt = None,
    dayfirst: DayfirstOpt = False,
    time_format: TimeFormatOpt = None,
    timezone: Annotated[
        str | None,
        typer.Option(help="Zone of times without one (default: workspace's)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Import orders: one order_completed event per order, refunds linked to orders."""
    ws = _ws(workspace)
    opts: dict[str, Any] = dict(
        customer=customer,
        time=time,
        order=order,
        amount=amount,
        quantity=quantity,
        delimiter=delimiter,
        decimal=decimal,
        dayfirst=dayfirst,
        time_format=time_format,
        progress=render.RichProgress(not as_json),
    )
    if timezone:
        opts["timezone"] = timezone
    r = ws.import_transactions(file, **opts)
    ws._save_receipt(r)
    render.print_json(r.to_dict()) if as_json else render.receipt(r)


@import_app.command("events")
@friendly
def import_events(
    file: Annotated[
        Path, typer.Argument(help="JSON lines (Segment spec), Parquet or CSV.")
    ],
    workspace: WorkspaceOpt = Path("."),
    timezone: Annotated[
        str | None,
        typer.Option(help="Zone of times without one (default: workspace's)."),
    ] = None,
    decimal: DecimalOpt = None,
    dayfirst: DayfirstOpt = False,
    time_format: TimeFormatOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import events (Segment-spec JSON lines, or files with clm's event columns)."""
    ws = _ws(workspace)
    opts: dict[str, Any] = {"progress": render.RichProgress(not as_json)}
    if timezone:
        opts["timezone"] = timezone
    opts.update(_event_parsing(decimal, dayfirst, time_format))
    r = ws.import_events(file, **opts)
    ws._save_receipt(r)
    render.print_json(r.to_dict()) if as_json else render.receipt(r)


def _event_parsing(
    decimal: str | None, dayfirst: bool, time_format: str | None
) -> dict[str, Any]:
    """The number and time options for `clm import events`, checked (they apply to
    CSV files; for Parquet and JSON lines the receipt says they were ignored)."""
    from clm.collect.readers import check_decimal
    from clm.collect.transactions import check_time_format

    given: dict[str, Any] = {}
    if decimal is not None:
        given["decimal"] = check_decimal(decimal)
    if dayfirst:
        given["dayfirst"] = True
    if time_format is not None:
        check_time_format(time_format)
        given["time_format"] = time_format
    return given


# -- run, stages, metrics --------------------------------------------------------------


@app.command()
@friendly
def run(
    workspace: WorkspaceOpt = Path("."),
    model: ModelOpt = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Observe up to this day (YYYY-MM-DD).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compute each customer's stage history and transitions (replays all of it)."""
    ws = _ws(workspace)
    receipts = ws.run(
        model, as_of=_date(as_of, "--as-of"), progress=render.RichProgress(not as_json)
    )
    if as_json:
        render.print_json([r.to_dict() for r in receipts])
    else:
        for r in receipts:
            render.receipt(r)


def _data_days(ws: Any, model: str | None, version: int | None) -> tuple[date, date]:
    """The first and the last local day of the stage data of the model's last run."""
    from datetime import datetime

    from clm.lifecycle import queries
    from clm.lifecycle.calendar import local_date

    m = ws.model(model, version)
    info = queries.run_info(ws.warehouse, m)
    first = local_date(datetime.fromisoformat(info["first_event"]), ws.timezone)
    return first, queries.last_day(ws.warehouse, m, ws.timezone)


def _check_day(
    ws: Any, model: str | None, version: int | None, day: date | None, option: str
) -> str | None:
    """Refuse a day before the stage data starts; for a day after it ends, the note
    to show (stages stay as on the last day observed). None: nothing to say."""
    if day is None:
        return None
    first, last = _data_days(ws, model, version)
    if day < first:
        raise ClmError(
            f"{option}: '{day}' is before the stage data starts on {first}: nobody "
            f"has a stage yet. Choose a day from {first} to {last}"
        )
    if day > last:
        return (
            f"the stage data ends on {last}; {option} {day} shows the stages as of "
            f"{last}, the last day observed (import newer data and `clm run` to go "
            "further)"
        )
    return None


def _warn(note: str | None) -> None:
    if note:
        render.errors.print(f"warning: {note}", soft_wrap=True, highlight=False)


stages_app = typer.Typer(
    help="Stage populations and transitions.", invoke_without_command=True
)
app.add_typer(stages_app, name="stages")


@stages_app.callback()
@friendly
def stages(
    ctx: typer.Context,
    workspace: WorkspaceOpt = Path("."),
    model: ModelOpt = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Day (YYYY-MM-DD).")
    ] = None,
    version: VersionOpt = None,
    width: WidthOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Customers per stage as of a day (default: the last day observed).

    A day after the data ends shows the last day observed, with a warning; a day
    before the data starts is an error."""
    if ctx.invoked_subcommand is not None:
        return
    ws = _ws(workspace)
    day = _date(as_of, "--as-of")
    df = ws.stages(model, day, version)
    note = _check_day(ws, model, version, day, "--as-of")
    _warn(note)
    if as_json:
        render.print_json({**df.attrs, "note": note, "stages": df})
        return
    title = f"{df.attrs['model']} v{df.attrs['version']} as of {df.attrs['as_of']}"
    render.frame(df, title, units={"share": "ratio"})


@stages_app.command("transitions")
@friendly
def transitions(
    start: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option("--to", help="Second day (YYYY-MM-DD).")],
    workspace: WorkspaceOpt = Path("."),
    model: ModelOpt = None,
    version: VersionOpt = None,
    width: WidthOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Transition matrix: customers by stage on --from (rows) and on --to (columns)."""
    ws = _ws(workspace)
    d1, d2 = _date(start, "--from"), _date(end, "--to")
    assert d1 and d2
    if d2 < d1:
        raise ClmError(f"--to: '{d2}' is before --from {d1}; swap them")
    m = ws.transitions(d1, d2, model, version)
    notes = [_check_day(ws, model, version, d, o) for d, o in ((d1, "--from"),)]
    notes.append(_check_day(ws, model, version, d2, "--to"))
    note = "; ".join(n for n in notes if n) or None
    _warn(note)
    if as_json:
        render.print_json(
            {
                "from": d1,
                "to": d2,
                "note": note,
                "matrix": {r: m.loc[r].to_dict() for r in m.index},
            }
        )
        return
    shown = m.reset_index().rename(columns={"from_stage": f"{d1} ↓ / {d2} →"})
    render.frame(shown, f"transitions {d1} → {d2}")


@app.command()
@friendly
def metrics(
    workspace: WorkspaceOpt = Path("."),
    model: ModelOpt = None,
    stage: Annotated[str | None, typer.Option(help="Only this stage.")] = None,
    grain: Annotated[str, typer.Option(help="day, week, month or quarter.")] = "month",
    last: Annotated[int, typer.Option(help="Periods to show (0 = all).")] = 6,
    width: WidthOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """KPIs per stage and period, with the change against the previous period."""
    ws = _ws(workspace)
    result = ws.metrics(model, grain=grain, stage=stage)
    values = result.values
    if as_json:
        render.print_json({"values": values, "caveats": result.caveats})
        return
    periods = sorted(values.period_start.unique())
    shown = periods[-last:] if last else periods
    tables = [
        _metrics_table(str(name), rows, shown, grain)
        for name, rows in values.groupby("stage", sort=False)
    ]
    # On a terminal, drop the oldest periods rather than squeeze every column into
    # "2025-0…": a table whose numbers are cut tells nothing.
    fits = len(shown)
    while fits > 1 and any(render.too_wide(t) for t in tables):
        fits -= 1
        tables = [
            _metrics_table(str(name), rows, shown[-fits:], grain)
            for name, rows in values.groupby("stage", sort=False)
        ]
    for table in tables:
        render.console.print(table)
    if fits < len(shown):
        render.console.print(
            f"[yellow]note:[/yellow] the last {fits} of {len(shown)} periods fit the "
            "terminal; widen it, show fewer with --last N, or pipe into a file to "
            "see all",
            highlight=False,
        )
    for code, params in result.caveats:
        render.console.print(
            f"[yellow]caveat:[/yellow] {_caveat(code, params)}", highlight=False
        )


def _period_label(start: Any, grain: str) -> str:
    """A period's column header: 2025-07 (month), 2025-Q3, 2025-W27, 2025-07-01."""
    import pandas as pd

    ts = pd.Timestamp(start)
    if grain == "month":
        return ts.strftime("%Y-%m")
    if grain == "quarter":
        return f"{ts.year}-Q{ts.quarter}"
    if grain == "week":
        year, week, _ = ts.isocalendar()
        return f"{year}-W{week:02d}"
    return ts.strftime("%Y-%m-%d")


def _metrics_table(name: str, rows: Any, shown: list[Any], grain: str) -> Any:
    rows = rows[rows.period_start.isin(shown)]
    table = render.Table(title=f"stage {name}", title_justify="left")
    table.add_column("metric")
    for p in shown:
        table.add_column(_period_label(p, grain), justify="right", no_wrap=True)
    table.add_column("change", justify="right", no_wrap=True)
    for metric, mrows in rows.groupby("metric", sort=False):
        unit = mrows.unit.iloc[0]
        vals = dict(zip(mrows.period_start, mrows.value, strict=True))
        table.add_row(
            str(metric),
            *[render.fmt(vals.get(p), unit) for p in shown],
            render.change(float(mrows.change.iloc[-1])),
        )
    return table


def _caveat(code: str, params: dict[str, Any]) -> str:
    """A caveat in words (the report's English text), else its code and details."""
    from clm.report import i18n

    if i18n.has_key(f"caveat.{code}"):
        try:
            return i18n.translate(f"caveat.{code}", "en", **params)
        except (KeyError, ValueError):  # details the text does not expect
            pass
    return f"{code} {params}"


@app.command()
@friendly
def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")],
    workspace: WorkspaceOpt = Path("."),
    model: ModelOpt = None,
    lang: Annotated[str | None, typer.Option(help="en or de.")] = None,
    grain: Annotated[
        str | None, typer.Option(help="Period grain (default: model's).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a self-contained HTML report (opens without network access)."""
    ws = _ws(workspace)
    if lang is not None and lang not in ("en", "de"):
        raise ClmError(f"--lang {lang!r}; expected en or de")
    path = ws.report(out, lang=lang, model=model, grain=grain)
    if as_json:
        render.print_json({"report": str(path)})
    else:
        render.console.print(f"report written: {path}")


# -- models ----------------------------------------------------------------------------


@app.command("validate")
@friendly
def validate(
    source: Annotated[
        str, typer.Argument(help="A model YAML file or a template name.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Check a stage model and show its stages, or the error with file and line."""
    from clm.lifecycle.model import load_model
    from clm.metrics.compute import check_model_metrics

    m = load_model(source)
    check_model_metrics(m)
    if as_json:
        render.print_json(
            {
                "name": m.name,
                "version": m.version,
                "stages": m.stage_names,
                "valid": True,
            }
        )
        return
    render.console.print(
        f"[green]valid[/green]: {m.name} v{m.version}, grain {m.grain}, "
        f"{m.progression}, stages: {', '.join(m.stage_names)}"
    )


# -- demo ------------------------------------------------------------------------------


@app.command()
@friendly
def demo(
    workspace: WorkspaceOpt = Path("demo-workspace"),
    customers: Annotated[int, typer.Option(help="Simulated customers.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same shop).")] = 7,
    parquet: Annotated[
        Path | None,
        typer.Option(help="Only write the simulated events to this Parquet file."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Simulate a shop into a fresh workspace, run the pipeline, write the report."""
    from clm.demo.simulate import write_parquet

    progress = render.RichProgress(not as_json)
    if parquet is not None:
        rows = write_parquet(parquet, customers, seed=seed, progress=progress)
        progress.done()
        out = {"parquet": str(parquet), "events": rows, "customers": customers}
        render.print_json(out) if as_json else render.console.print(
            f"wrote {rows:,} events of {customers:,} customers to {parquet}"
        )
        return
    import clm

    marker = workspace / ".clm-demo"
    if workspace.exists() and any(workspace.iterdir()) and not marker.exists():
        raise ClmError(
            f"{workspace} exists and is not a demo workspace; "
            "choose another --workspace"
        )
    if workspace.exists():
        shutil.rmtree(workspace)
    ws = clm.init(workspace, timezone="Europe/Berlin", currency="EUR")
    marker.write_text(
        "created by `clm demo`; rerunning the demo replaces this folder\n"
    )
    events = workspace / "demo-events.parquet"
    write_parquet(events, customers, seed=seed, progress=progress)
    progress.done()
    receipts = [ws.import_events(events, progress=progress)]
    receipts += ws.run(progress=progress)
    progress.done()
    table = ws.stages()
    result = ws.metrics(grain="month")
    report_path = ws.report(workspace / "report.html")
    if as_json:
        render.print_json(
            {
                "receipts": [r.to_dict() for r in receipts],
                "stages": table,
                "report": str(report_path),
                "metrics": len(result.values),
            }
        )
        return
    for r in receipts:
        render.receipt(r)
    render.frame(
        table, f"stages as of {table.attrs['as_of']}", units={"share": "ratio"}
    )
    render.console.print(f"report: {report_path}")
    render.console.print(
        f"next: clm stages -w {workspace} · clm metrics -w {workspace} · "
        f"clm report -w {workspace} --out report-de.html --lang de"
    )


# Command groups kept in their own modules register themselves on `app` on import.
for _group in ("customer", "serve", "value"):
    importlib.import_module(f"clm.cli.{_group}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
