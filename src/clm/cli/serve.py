"""`clm serve`: run the collector (Segment and Matomo tracking APIs, /clm.js).

Settings come from the workspace's `serve.*` rows (see `clm.settings`); `--host` and
`--port` override them for one run. The warehouse file is held open by the server's
loader while it runs; stop the server (Ctrl-C or SIGTERM: queued events are loaded
first) before running other clm commands on the same workspace.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from clm.cli import render
from clm.cli.main import WorkspaceOpt, _ws, app, friendly


@app.command()
@friendly
def serve(
    workspace: WorkspaceOpt = Path("."),
    host: Annotated[
        str | None, typer.Option(help="Bind address (default: serve.host).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default: serve.port).")
    ] = None,
) -> None:
    """Collect events over HTTP (Segment and Matomo APIs) into the warehouse."""
    import gc

    import uvicorn

    from clm.collect.intake import CollectorConfig, Intake
    from clm.server.app import create_app

    ws = _ws(workspace)
    config = CollectorConfig.from_settings(ws.config, ws.root)
    intake = Intake(config, ws.warehouse)
    bind = host or ws.config["serve.host"]
    listen = port if port is not None else ws.config["serve.port"]
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(message)s"
    )
    if not config.write_keys:
        render.errors.print(
            "warning: serve.write_keys is empty, so every Segment call and /clm.js "
            "will be refused (401); add KEY=SOURCE entries to clm.yaml",
            markup=False,
            highlight=False,
        )
    render.console.print(
        f"clm collector on http://{bind}:{listen} (spool {config.spool_dir}); "
        "Ctrl-C stops it"
    )
    # Requests allocate many short-lived dicts; the default thresholds made the
    # cyclic collector run every few requests and showed up in the p99 latency.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    # Started here, not only in the app's lifespan, so that a spool already in use
    # is reported as one clear error instead of a server traceback.
    intake.start()
    try:
        uvicorn.run(
            create_app(intake),
            host=bind,
            port=listen,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
    finally:
        intake.stop()  # a no-op after a clean shutdown; loads the spool otherwise
        ws.close()
