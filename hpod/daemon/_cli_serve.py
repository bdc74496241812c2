"""``hpod serve STUDY``: serve ``POST /v1/summarize`` with the study's selected adapter,
following retunes (the served version switches when a retune wins)."""

from __future__ import annotations

from typing import Annotated

import typer

from hpod.daemon.cli import StateDirOpt, StorageOpt, _open_store, app, err
from hpod.errors import UsageError

__all__ = ["serve", "parse_listen_address"]

DEFAULT_SERVE_ADDRESS = "127.0.0.1:8766"


def parse_listen_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8766`` for IPv6) -> (host, port). Raises UsageError."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--api: expected HOST:PORT with a port in 0-65535 (found {address!r})")
    return (host.strip("[]") or "127.0.0.1"), int(port)


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

    from hpod.daemon.config import load_config, resolve_token
    from hpod.daemon.serving import create_serving_app

    host, port = parse_listen_address(api)
    store, sd = _open_store(state_dir, storage)
    token, token_path = resolve_token(load_config(overrides={"state_dir": sd}))
    fastapi_app = create_serving_app(store, study, state_dir=sd, token=token, poll_seconds=poll_seconds)
    served = fastapi_app.state.holder.current.selection
    err.print(f"serving {study}: {served['study']} trial {served['trial']} ({served['policy']}) on "
              f"http://{host}:{port}/v1/summarize — token in {token_path}")
    uvicorn.run(fastapi_app, host=host, port=port, log_level="warning")

