"""`clm rfm` and `clm clv fit|predict|validate`: customer value from the command line.

Each command calls one `Workspace` operation (see `clm.analyses.value`) and renders
its result; with `--json` it prints the same result as JSON. A fit that did not
converge is printed (so the user sees why) and ends with exit code 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from clm.cli import render
from clm.cli.main import JsonOpt, WorkspaceOpt, _date, _ws, app, friendly
from clm.errors import ClmError

clv_app = typer.Typer(
    help="Predictive customer value: fit, predict, validate.", no_args_is_help=True
)
app.add_typer(clv_app, name="clv")

AsOfOpt = Annotated[
    str | None,
    typer.Option("--as-of", help="Observe orders up to this day (YYYY-MM-DD)."),
]
PurchaseModelOpt = Annotated[
    str,
    typer.Option("--model", "-m", help="Purchase model: bgnbd or paretonbd."),
]


@app.command()
@friendly
def rfm(
    workspace: WorkspaceOpt = Path("."),
    as_of: AsOfOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """RFM segments: customers, share, mean recency, frequency and monetary value."""
    ws = _ws(workspace)
    _, table = ws.rfm(as_of=_date(as_of, "--as-of"))
    end = table.attrs["observation_period_end"]
    shown = table.reset_index()
    if as_json:
        render.print_json(
            {"observation_period_end": end, "time_unit": "weeks", "segments": shown}
        )
        return
    shown = shown.rename(columns={"recency": "weeks since last"})
    render.frame(
        shown,
        f"RFM segments as of {end} ({int(table.customers.sum()):,} customers)",
        units={"share": "ratio", "monetary_value": "currency"},
    )


def _fit_rows(fit: Any) -> pd.DataFrame:
    rows = []
    for result in (fit.purchases, fit.spend):
        if result is None:
            continue
        for name, value in result.params.items():
            rows.append(
                {"model": result.model, "parameter": name, "value": f"{value:.4g}"}
            )
        rows.append(
            {
                "model": result.model,
                "parameter": "log-likelihood",
                "value": f"{result.log_likelihood:,.1f}",
            }
        )
        rows.append(
            {
                "model": result.model,
                "parameter": "converged",
                "value": "yes" if result.converged else "NO",
            }
        )
    return pd.DataFrame(rows)


def _explain(fit: Any, notes: bool = True) -> None:
    for result in (fit.purchases, fit.spend):
        if result is not None and not result.converged:
            render.errors.print(
                f"{result.model} did not converge: {result.message}",
                markup=False,
                highlight=False,
            )
    for note in fit.notes if notes else ():
        render.console.print(f"[yellow]note:[/yellow] {note}", highlight=False)


@clv_app.command("fit")
@friendly
def clv_fit(
    workspace: WorkspaceOpt = Path("."),
    as_of: AsOfOpt = None,
    model: PurchaseModelOpt = "bgnbd",
    as_json: JsonOpt = False,
) -> None:
    """Fit the purchase model and Gamma-Gamma; print parameters and convergence."""
    ws = _ws(workspace)
    fit = ws.clv_fit(as_of=_date(as_of, "--as-of"), model=model)
    if as_json:
        render.print_json(fit.to_dict())
    else:
        render.frame(
            _fit_rows(fit),
            f"CLV fit, {len(fit.summary):,} customers, observed to "
            f"{fit.observation_period_end} (weeks)",
        )
        _explain(fit)
    if not fit.purchases.converged:
        if as_json:
            _explain(fit, notes=False)  # the notes are in the JSON
        raise typer.Exit(1)


@clv_app.command("predict")
@friendly
def clv_predict(
    workspace: WorkspaceOpt = Path("."),
    as_of: AsOfOpt = None,
    model: PurchaseModelOpt = "bgnbd",
    horizon: Annotated[
        int, typer.Option(help="Months of future purchases counted in the CLV.")
    ] = 12,
    discount_rate: Annotated[
        float, typer.Option(help="Discount rate per month (0.01 = 1 %).")
    ] = 0.01,
    margin: Annotated[
        float, typer.Option(help="Profit share of revenue (1 = revenue CLV).")
    ] = 1.0,
    top: Annotated[int, typer.Option(help="Customers to list.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Predict P(alive), purchases, spend and CLV per customer; store customer_value."""
    ws = _ws(workspace)
    values = ws.clv_predict(
        as_of=_date(as_of, "--as-of"),
        model=model,
        horizon_months=horizon,
        discount_rate=discount_rate,
        margin=margin,
    )
    best = values.sort_values(
        ["predicted_clv", "customer_id"], ascending=[False, True]
    ).head(top)
    totals = {
        "customers": len(values),
        "customer_equity": float(values.predicted_clv.sum()),
        "mean_clv": float(values.predicted_clv.mean()),
        "expected_purchases": float(values.expected_purchases.sum()),
        "mean_p_alive": float(values.p_alive.mean()),
    }
    if as_json:
        render.print_json(
            {
                "fit": values.attrs["fit"],
                "totals": totals,
                "top": best.drop(columns=["observation_period_end", "model"]),
            }
        )
        return
    cols = ["customer_id", "frequency", "p_alive", "expected_purchases"]
    cols += ["expected_spend", "predicted_clv", "rfm_segment"]
    render.frame(
        best[cols],
        f"top {len(best)} customers by predicted CLV ({horizon} months)",
        units={
            "p_alive": "ratio",
            "expected_purchases": "days",
            "expected_spend": "currency",
            "predicted_clv": "currency",
        },
    )
    render.frame(
        pd.DataFrame([totals]),
        "totals",
        units={
            "customer_equity": "currency",
            "mean_clv": "currency",
            "expected_purchases": "days",
            "mean_p_alive": "ratio",
        },
    )
    render.console.print(f"stored {len(values):,} rows in customer_value")


@clv_app.command("validate")
@friendly
def clv_validate(
    calibration_end: Annotated[
        str,
        typer.Option(
            "--calibration-end", help="Last day of the calibration period (YYYY-MM-DD)."
        ),
    ],
    workspace: WorkspaceOpt = Path("."),
    as_of: AsOfOpt = None,
    model: PurchaseModelOpt = "bgnbd",
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Write the holdout chart (SVG).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fit on the calibration period; predicted vs actual holdout purchases."""
    day = _date(calibration_end, "--calibration-end")
    if day is None:  # typer makes the option required; this keeps mypy honest
        raise ClmError("--calibration-end: give the last calibration day")
    ws = _ws(workspace)
    fit, table, svg = ws.clv_validate(day, as_of=_date(as_of, "--as-of"), model=model)
    if chart is not None:
        chart.write_text(svg, encoding="utf-8")
    summ = fit.summary
    shown = table.reset_index().rename(columns={"bucket": "frequency"})
    totals = {
        "customers": len(summ),
        "actual": float(summ.frequency_holdout.sum()),
        "predicted": float((table.predicted * table.customers).sum()),
    }
    if as_json:
        render.print_json(
            {
                "calibration_period_end": day,
                "observation_period_end": fit.observation_period_end,
                "fit": fit.purchases.to_dict(),
                "buckets": shown,
                "totals": totals,
                "chart": None if chart is None else str(chart),
            }
        )
        return
    render.frame(
        shown,
        f"holdout {day} → {fit.observation_period_end}: mean repeat purchases",
        units={"actual": "days", "predicted": "days"},
    )
    render.console.print(
        f"total holdout purchases: actual {totals['actual']:,.0f}, "
        f"predicted {totals['predicted']:,.1f}"
    )
    if chart is not None:
        render.console.print(f"chart: {chart}")
