"""A workspace: a folder with `clm.yaml` and the warehouse, and the Python API over it.

`clm.open(path)` returns a `Workspace`; the CLI does nothing a workspace cannot do.
"""

from __future__ import annotations

from datetime import date
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pandas as pd
import yaml

from clm import settings
from clm.errors import ConfigError, WorkspaceError
from clm.lifecycle.spec import StageModel
from clm.metrics.compute import MetricsResult
from clm.progress import SILENT, Progress
from clm.receipts import Receipt
from clm.warehouse.engine import Warehouse

CONFIG_FILE = "clm.yaml"


def init(directory: str | Path, **overrides: Any) -> Workspace:
    """Create a workspace in `directory` (made if missing); an existing one is kept."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / CONFIG_FILE
    if not cfg.exists():
        values = {s.name: overrides.get(s.name, s.default) for s in settings.SETTINGS}
        settings.resolve(values)  # refuse bad overrides before writing anything
        text = "# clm workspace settings; see docs/settings.md for every key\n"
        text += yaml.safe_dump(values, sort_keys=False, allow_unicode=True)
        cfg.write_text(text, encoding="utf-8")
    ws = open_workspace(root)
    ws.warehouse  # noqa: B018 - creates the warehouse file and its tables
    return ws


def open_workspace(directory: str | Path = ".") -> Workspace:
    root = Path(directory)
    if not (root / CONFIG_FILE).exists():
        raise WorkspaceError(
            f"no workspace at {root.resolve()}: {CONFIG_FILE} is missing; "
            f"create one with `clm init {directory}` or pass --workspace DIR"
        )
    return Workspace(root)


# -- operations: the Python API; the CLI calls exactly these ---------------------------


class Operations:
    """Mixin of everything a user can do with a workspace."""

    root: Path
    config: dict[str, Any]

    if TYPE_CHECKING:  # provided by Workspace

        @property
        def warehouse(self) -> Warehouse: ...

        @property
        def timezone(self) -> ZoneInfo: ...

        @property
        def currency(self) -> str: ...

    # models -------------------------------------------------------------------------

    def models(self) -> list[StageModel]:
        """The stage models in use (clm.yaml `models`), loaded and checked."""
        from clm.lifecycle.model import load_model

        out = []
        for source in self.config["models"]:
            path = self.root / source
            out.append(load_model(path if path.suffix in (".yaml", ".yml") else source))
        return out

    def model(self, name: str | None = None, version: int | None = None) -> StageModel:
        """A model in use; with `version`, that version as it ran (kept in `models`)."""
        from clm.errors import NotFoundError, known

        models = self.models()
        if not models:
            raise ConfigError("clm.yaml lists no stage models under `models`")
        found = (
            models[0]
            if name is None
            else next((m for m in models if m.name == name), None)
        )
        if found is None:
            raise NotFoundError(
                f"no stage model `{name}` in this workspace; known: "
                f"{known(m.name for m in models)} (add it to `models` in clm.yaml)"
            )
        if version is None or version == found.version:
            return found
        return self._stored_model(found.name, version)

    def _stored_model(self, name: str, version: int) -> StageModel:
        from clm.errors import NotFoundError, known
        from clm.lifecycle.model import load_model_text

        t = self.warehouse.table("models")
        rows = t.filter(t.name == name).select("version", "definition").to_pandas()
        match = rows[rows.version == version]
        if match.empty:
            raise NotFoundError(
                f"model `{name}` has no stored version {version}; versions that ran: "
                f"{known(str(v) for v in rows.version)}"
            )
        return load_model_text(match.definition.iloc[0], source=f"{name} v{version}")

    # import -------------------------------------------------------------------------

    def import_transactions(self, path: str | Path, **options: Any) -> Receipt:
        from clm.collect.transactions import import_transactions

        options.setdefault("timezone", self.config["timezone"])
        options.setdefault("currency", self.config["currency"])
        receipt = import_transactions(self.warehouse, path, **options)
        return receipt

    def import_events(self, path: str | Path, **options: Any) -> Receipt:
        from clm.collect.events_file import import_events

        options.setdefault("timezone", self.config["timezone"])
        return import_events(self.warehouse, path, **options)

    # lifecycle ----------------------------------------------------------------------

    def run(
        self,
        model: str | None = None,
        *,
        as_of: date | None = None,
        progress: Progress = SILENT,
    ) -> list[Receipt]:
        """Replay stage history of one model (or all in use) and store it."""
        from clm.errors import MetricError
        from clm.identity.profiles import build_profiles
        from clm.identity.resolve import options_from, resolve, run_customer_keys
        from clm.lifecycle.history import run_model
        from clm.metrics.compute import check_model_metrics

        chosen = [self.model(model)] if model else self.models()
        # A wrong metric name should not wait for `clm metrics` to surface; it is a
        # warning here, since a metric may be registered later from Python.
        unknown_metrics = []
        for m in chosen:
            try:
                check_model_metrics(m)
            except MetricError as exc:
                unknown_metrics.append(str(exc))
        # Resolve new events first so that stages count customers, not cookies.
        identity = resolve(
            self.warehouse, progress=progress, **options_from(self.config)
        )
        self._save_receipt(identity)
        receipts = []
        # Every step below reads customer events (the stage engine, profiles, the
        # metrics of the precompute): each raw id pair is looked up once for all.
        with run_customer_keys(self.warehouse):
            for m in chosen:
                result = run_model(
                    self.warehouse,
                    m,
                    timezone=self.timezone,
                    as_of=as_of,
                    progress=progress,
                )
                self._save_receipt(result.receipt)
                receipts.append(result.receipt)
            profiles = build_profiles(self.warehouse)
            identity.counts["profiles"] = profiles.counts["profiles"]
            receipts.append(identity)
            if receipts and unknown_metrics:
                receipts[0].warnings.extend(unknown_metrics)
            # What the dashboard's pages need, so that they stay fast on big
            # workspaces. Shortcoming: the one place where the core reaches into a
            # front end (a lazy import). It goes when the view functions, which only
            # read the core, move from clm.server.views into a core package of their
            # own.
            from clm.server.views import precompute_after_run

            precompute_after_run(self, chosen)  # type: ignore[arg-type]  # a Workspace
        return receipts

    def stages(
        self,
        model: str | None = None,
        as_of: date | None = None,
        version: int | None = None,
    ) -> pd.DataFrame:
        from clm.lifecycle import queries

        m = self.model(model, version)
        day = as_of or queries.last_day(self.warehouse, m, self.timezone)
        df = queries.populations(self.warehouse, m, day, self.timezone)
        df.attrs.update(model=m.name, version=m.version, as_of=day.isoformat())
        return df

    def transitions(
        self,
        start: date,
        end: date,
        model: str | None = None,
        version: int | None = None,
    ) -> pd.DataFrame:
        from clm.lifecycle import queries

        m = self.model(model, version)
        return queries.transition_matrix(self.warehouse, m, start, end, self.timezone)

    def metrics(
        self,
        model: str | None = None,
        *,
        grain: str = "month",
        stage: str | None = None,
    ) -> MetricsResult:
        """Metrics per stage and period; the values `clm run` (or an earlier call)
        stored for the same question on the same data are reused, see
        `clm.metrics.compute` for the rule. `context` is None when they are."""
        from clm.metrics.compute import GRAINS, compute_metrics, stored_metrics

        if grain not in GRAINS:
            raise ConfigError(f"grain {grain!r}; expected one of {', '.join(GRAINS)}")
        m, tz = self.model(model), self.timezone
        found = stored_metrics(self.warehouse, m, grain=grain, timezone=tz, stage=stage)
        if found is not None:
            return found
        return compute_metrics(self.warehouse, m, grain=grain, timezone=tz, stage=stage)

    # customer value (clm.analyses.value) -------------------------------------------

    def rfm(self, *, as_of: date | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Per-customer RFM scores and the segment table."""
        from clm.analyses.value import rfm_summary, rfm_table

        summ = rfm_summary(self.warehouse, self.timezone, as_of=as_of)
        scores, table = rfm_table(summ)
        table.attrs["observation_period_end"] = summ.attrs["observation_period_end"]
        return scores, table

    def clv_fit(self, *, as_of: date | None = None, model: str = "bgnbd") -> Any:
        """Fit the purchase model and Gamma-Gamma; stored in `value_fits`."""
        from clm.analyses.value import ValueOptions, fit_value, rfm_summary, store_fit

        summ = rfm_summary(self.warehouse, self.timezone, as_of=as_of)
        fit = fit_value(summ, model)
        store_fit(self.warehouse, fit, ValueOptions(model=model))
        return fit

    def clv_predict(self, *, as_of: date | None = None, **options: Any) -> pd.DataFrame:
        """Fit, predict every customer's value and store it in `customer_value`,
        with a receipt: the server's cached answers (RFM and CLV pages, metrics
        that read customer value) are keyed by the receipts, so they follow."""
        from clm.analyses.value import ValueOptions, predict, store_values

        opts = ValueOptions(**options)
        opts.check()
        receipt = Receipt("clv_predict", source=opts.model)
        with receipt.timed("fit"):
            fit = self.clv_fit(as_of=as_of, model=opts.model)
        with receipt.timed("predict"):
            values = predict(fit, opts)
        with receipt.timed("store"):
            store_values(self.warehouse, values)
        receipt.counts.update(customers=len(values))
        receipt.details.update(
            observation_end=str(fit.observation_period_end),
            horizon_months=opts.horizon_months,
            discount_rate=opts.discount_rate,
            margin=opts.margin,
        )
        self._save_receipt(receipt)
        values.attrs["fit"] = fit.to_dict()
        return values

    def clv_validate(
        self,
        calibration_end: date,
        *,
        as_of: date | None = None,
        model: str = "bgnbd",
    ) -> tuple[Any, pd.DataFrame, str]:
        from clm.analyses.value import validate

        return validate(
            self.warehouse, self.timezone, calibration_end, as_of=as_of, model=model
        )

    def report(
        self,
        out: str | Path,
        *,
        lang: str | None = None,
        model: str | None = None,
        grain: str | None = None,
    ) -> Path:
        from clm.report.build import build_report_data
        from clm.report.html import write_report

        m = self.model(model)
        chosen = lang or self.config["language"]
        data = build_report_data(self, m, grain=grain or m.grain, lang=chosen)
        return write_report(data, out, chosen)

    def _save_receipt(self, receipt: Receipt) -> None:
        import json

        self.warehouse.append(
            "receipts",
            pd.DataFrame(
                {
                    "receipt_id": [receipt.receipt_id],
                    "operation": [receipt.operation],
                    "source": [receipt.source],
                    "started_at": [receipt.started_at],
                    "body": [json.dumps(receipt.to_dict(), default=str)],
                }
            ),
        )


class Workspace(Operations):
    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            raw = yaml.safe_load((root / CONFIG_FILE).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{root / CONFIG_FILE}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{root / CONFIG_FILE}: expected a mapping of settings")
        self.config = settings.resolve(raw)

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.config["timezone"])

    @property
    def currency(self) -> str:
        return str(self.config["currency"])

    @cached_property
    def warehouse(self) -> Warehouse:
        path = self.root / self.config["warehouse"]
        return Warehouse.duckdb(
            path,
            threads=self.config["threads"] or None,
            memory_limit=self.config["memory_limit"] or None,
        )

    def close(self) -> None:
        if "warehouse" in self.__dict__:
            self.warehouse.close()
            del self.__dict__["warehouse"]

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
