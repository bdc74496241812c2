"""``hpod serve STUDY``: serve ``POST /v1/summarize`` with the study's selected adapter,
following retunes (the served version switches when a retune wins)."""

from __future__ import annotations

from typing import Annotated

import typer

from hpod.cli._common import StateDirOpt, StorageOpt, app, err
from hpod.cli._storage import _open_store
from hpod.daemon.config import load_config, resolve_token
from hpod.http.server import parse_address
from hpod.http.serving import create_serving_app

__all__ = ["serve"]

DEFAULT_SERVE_ADDRESS = "127.0.0.1:8766"


@app.command()
def serve(
    study: Annotated[str, typer.Argument(help="Study name (its retune versions are followed).")],
    api: Annotated[str, typer.Option("--api", help="Address to listen on, HOST:PORT.")] = DEFAULT_SERVE_ADDRESS,
    state_dir: StateDirOpt = None,
    storage: StorageOpt = None,
    poll_seconds: Annotated[float, typer.Option("--poll-seconds", min=0.1,
                                                help="How often the serving choice is re-read.")] = 2.0,
) -> None:
    """Serve POST /v1/summarize with the study's selected adapter (Bearer token: the daemon's)."""
    import uvicorn


    host, port = parse_address(api, what="--api")
    store, sd = _open_store(state_dir, storage)
    token, token_path = resolve_token(load_config(overrides={"state_dir": sd}))
    fastapi_app = create_serving_app(store, study, state_dir=sd, token=token, poll_seconds=poll_seconds)
    served = fastapi_app.state.holder.current.selection
    err.print(f"serving {study}: {served['study']} trial {served['trial']} ({served['policy']}) on "
              f"http://{host}:{port}/v1/summarize — token in {token_path}")
    uvicorn.run(fastapi_app, host=host, port=port, log_level="warning")

