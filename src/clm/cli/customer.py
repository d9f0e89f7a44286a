"""`clm customer`: the single customer view, data subject export and erasure, split.

`clm customer ID-OR-IDENTIFIER` shows one customer; `export`, `erase` and `split` act
on one. Anything that is not a sub-command name is taken as the customer to show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from clm.cli import render
from clm.cli.main import JsonOpt, WidthOpt, WorkspaceOpt, _ws, app, friendly


class _ShowByDefault(TyperGroup):
    """Route `clm customer X` to `clm customer show X` unless X is a sub-command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


customer_app = typer.Typer(
    cls=_ShowByDefault,
    help="One customer: profile, identifiers, merges, timeline; export, erase, split.",
    no_args_is_help=True,
)
app.add_typer(customer_app, name="customer")


def _find(ws: Any, ref: str) -> str:
    from clm.identity.view import find_customer

    return find_customer(ws.warehouse, ref, salt=ws.config["identity.salt"])


def _options(ws: Any) -> dict[str, Any]:
    from clm.identity.resolve import options_from

    return options_from(ws.config)


def _recompute(ws: Any, as_json: bool) -> list[Any]:
    """Stages, metrics and profiles depend on who is who: run them again."""
    receipts = ws.run(progress=render.RichProgress(not as_json))
    for m in ws.models():
        mv = ws.warehouse.table("metric_values")
        done = mv.filter(mv.model == m.name).select("grain").distinct().to_pandas()
        for grain in done.grain.tolist():
            ws.metrics(m.name, grain=grain)
    return receipts


@customer_app.command("show")
@friendly
def show(
    ref: Annotated[str, typer.Argument(help="Customer id or any identifier.")],
    workspace: WorkspaceOpt = Path("."),
    page: Annotated[int, typer.Option(help="Timeline page (newest first).")] = 1,
    page_size: Annotated[int, typer.Option(help="Events per page.")] = 20,
    width: WidthOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a customer's profile, identifiers, merges, stages and timeline."""
    from clm.identity.view import customer_view

    ws = _ws(workspace)
    cid = _find(ws, ref)
    view = customer_view(ws.warehouse, cid, page=page, page_size=page_size)
    if as_json:
        render.print_json(view)
        return
    # Times in the reporting zone, missing values blank: this is read by a person.
    tz = ws.timezone
    render.console.print(f"[bold]customer {cid}[/bold]  (times in {tz.key})")
    prof = view["profile"]
    if prof:
        shown = {
            "first seen": render.local_time(prof.get("first_seen"), tz),
            "last seen": render.local_time(prof.get("last_seen"), tz),
            "orders": render.fmt(prof.get("orders"), missing=""),
            "revenue": (
                f"{render.fmt(prof.get('revenue'), 'currency', '')} {ws.currency}"
            ).strip(),
            "first channel": render.fmt(prof.get("first_channel"), missing=""),
        }
        render.console.print(
            "  " + " · ".join(f"{k}: {v}" for k, v in shown.items()), highlight=False
        )
        stages = ", ".join(f"{m}: {s}" for m, s in prof["stages"].items())
        render.console.print(f"  stages: {stages}", highlight=False)
        if prof["traits"]:
            traits = json.dumps(prof["traits"], default=str, ensure_ascii=False)
            render.console.print(f"  traits: {traits}", highlight=False)
    for name in ("identifiers", "merges", "conflicts", "stage_history"):
        df = view[name]
        if len(df):
            render.frame(df, name.replace("_", " "), tz=tz, missing="")
    tl = view["timeline"]
    render.frame(
        tl["rows"],
        f"timeline page {tl['page']} ({tl['events']} events, {tl['page_size']}/page)",
        tz=tz,
        missing="",
    )


@customer_app.command("export")
@friendly
def export(
    ref: Annotated[str, typer.Argument(help="Customer id or any identifier.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON file to write.")],
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Write everything stored about a customer to a JSON file (data subject access)."""
    from clm.identity.rights import export_customer

    ws = _ws(workspace)
    path = export_customer(ws.warehouse, _find(ws, ref), out)
    if as_json:
        render.print_json({"export": str(path)})
    else:
        render.console.print(f"export written: {path}")


@customer_app.command("erase")
@friendly
def erase(
    ref: Annotated[str, typer.Argument(help="Customer id or any identifier.")],
    workspace: WorkspaceOpt = Path("."),
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask to confirm.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a customer's events, identifiers, profile and derived rows."""
    from clm.identity.rights import erase_customer

    ws = _ws(workspace)
    cid = _find(ws, ref)
    if not yes and not typer.confirm(f"erase customer {cid} for good?"):
        raise typer.Abort()
    r = erase_customer(ws.warehouse, cid)
    ws._save_receipt(r)
    _recompute(ws, as_json)
    render.print_json(r.to_dict()) if as_json else render.receipt(r)


@customer_app.command("split")
@friendly
def split_cmd(
    ref: Annotated[str, typer.Argument(help="Customer id or any identifier.")],
    workspace: WorkspaceOpt = Path("."),
    identifier: Annotated[
        str | None,
        typer.Option(help="Split this identifier off (blocks it), e.g. anon:abc."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Undo the customer's latest merge, or split one identifier off."""
    from clm.identity.split import split

    ws = _ws(workspace)
    r = split(ws.warehouse, _find(ws, ref), identifier=identifier, **_options(ws))
    ws._save_receipt(r)
    _recompute(ws, as_json)
    render.print_json(r.to_dict()) if as_json else render.receipt(r)
