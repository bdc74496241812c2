"""``hpod daemon`` and the commands that talk to it: ``submit``, ``pause``, ``resume``,
``cancel``, ``retune``, ``events``.

The client commands read ``HPOD_API`` and ``HPOD_TOKEN_FILE`` (default: the token file
in ``HPOD_STATE_DIR``), like the daemon. ``hpod events`` reads the database directly
when no daemon answers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from hpod.cli._common import StateDirOpt, StorageOpt, _print_json, app, err, out
from hpod.cli._storage import _open_store
from hpod.cli.client import ApiClient
from hpod.core.views import event_dict
from hpod.daemon.config import load_config
from hpod.daemon.service import run_daemon
from hpod.errors import DaemonUnreachable, UsageError
from hpod.spec import load_spec

ApiOpt = Annotated[str | None, typer.Option("--api", help="Daemon API address (default: $HPOD_API or "
                                                             "127.0.0.1:8765; unix:/path for a socket).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command()
def daemon(
    config: Annotated[Path | None, typer.Option("--config", help="Settings file (TOML or YAML).")] = None,
    state_dir: StateDirOpt = None,
    storage: StorageOpt = None,
    api: Annotated[str | None, typer.Option("--api", help="API address HOST:PORT or unix:/path "
                                                             "(default 127.0.0.1:8765; $HPOD_API).")] = None,
    metrics: Annotated[str | None, typer.Option(
        "--metrics", help="Prometheus address HOST:PORT, or 'off' (default 127.0.0.1:9464; $HPOD_METRICS).")] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", help="Bearer token file; created with mode 0600 if absent ($HPOD_TOKEN_FILE).")] = None,
    gpus: Annotated[str | None, typer.Option("--gpus", help="GPU indices, one trial per GPU, e.g. 0,1.")] = None,
    cpu_slots: Annotated[int | None, typer.Option("--cpu-slots", min=0, help="CPU trial slots without GPUs "
                                                     "(0: controller only, for remote workers).")] = None,
    spec_dir: Annotated[Path | None, typer.Option("--spec-dir", help="Directory of study specs to run "
                                                                        "(re-read on SIGHUP or change).")] = None,
    grace_seconds: Annotated[float | None, typer.Option("--grace-seconds", min=0, help="On SIGTERM, how long "
                                                           "running trials may finish (default 300).")] = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help="debug, info, warning, error.")] = None,
    no_codecarbon: Annotated[bool, typer.Option("--no-codecarbon", help="Skip CodeCarbon energy tracking.")] = False,
    executor: Annotated[str | None, typer.Option("--executor", help="Where trials run: local (default), ray, "
                                                    "or ray:ADDRESS (e.g. ray:ray://head:10001).")] = None,
) -> None:
    """Run the hpod daemon: schedules studies, runs trials, serves the control API and /metrics."""

    overrides: dict[str, Any] = {"state_dir": state_dir, "storage": storage, "api": api, "metrics": metrics,
                                 "token_file": token_file, "gpus": gpus, "cpu_slots": cpu_slots,
                                 "spec_dir": spec_dir, "grace_seconds": grace_seconds, "log_level": log_level,
                                 "executor": executor}
    if no_codecarbon:
        overrides["codecarbon"] = False
    settings = load_config(config, overrides=overrides)
    raise typer.Exit(run_daemon(settings))


def _client(api: str | None, state_dir: Path | None) -> Any:

    return ApiClient(api, state_dir=state_dir, timeout=30.0)


def _report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(result)
        return
    message = result.get("message") or ""
    if result.get("ok") is False:
        err.print(f"[bold red]error:[/] {message}", highlight=False)
        raise typer.Exit(1)
    out.print(message, highlight=False)


@app.command()
def submit(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="Study spec (YAML).")],
    api: ApiOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Submit a study to the running daemon (a changed spec of an existing study updates it)."""
    import yaml


    load_spec(spec_path)  # the user's mistakes are reported here, with the file's name
    data = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    client = _client(api, state_dir)
    try:
        result = client.request("POST", "/v1/studies", json={"spec": data})
    finally:
        client.close()
    if not as_json and result.get("ok") is not False:
        changes = result.get("changes") or []
        result["message"] = f"submitted {result['study']}" + (" (new)" if result.get("created") else " (updated)") \
            + (f": {result['message']}" if result.get("message") else "") \
            + (f"\nchanged: {'; '.join(changes)}" if changes else "")
    _report(result, as_json)


def _act(action: str, study: str, api: str | None, state_dir: Path | None, as_json: bool,
         body: dict[str, Any] | None = None) -> None:
    client = _client(api, state_dir)
    try:
        result = client.request("POST", f"/v1/studies/{study}/{action}", json=body)
    finally:
        client.close()
    _report(result, as_json)


@app.command()
def pause(study: Annotated[str, typer.Argument(help="Study name.")], api: ApiOpt = None,
          state_dir: StateDirOpt = None, as_json: JsonFlag = False) -> None:
    """Start no new trials of a study (running trials finish)."""
    _act("pause", study, api, state_dir, as_json)


@app.command()
def resume(study: Annotated[str, typer.Argument(help="Study name.")], api: ApiOpt = None,
           state_dir: StateDirOpt = None, as_json: JsonFlag = False) -> None:
    """Resume a paused study."""
    _act("resume", study, api, state_dir, as_json)


@app.command()
def cancel(study: Annotated[str, typer.Argument(help="Study name.")], api: ApiOpt = None,
           state_dir: StateDirOpt = None, as_json: JsonFlag = False) -> None:
    """Cancel a study: queued trials are dropped, running ones finish, no new ones start."""
    _act("cancel", study, api, state_dir, as_json)


@app.command()
def retune(study: Annotated[str, typer.Argument(help="Study name.")],
           reason: Annotated[str, typer.Option("--reason", help="Why (recorded with the retune).")],
           api: ApiOpt = None, state_dir: StateDirOpt = None, as_json: JsonFlag = False) -> None:
    """Retune a study now (recorded as a `retune_started` event with reason `manual`)."""
    if not reason.strip():
        raise UsageError("--reason must not be empty")
    _act("retune", study, api, state_dir, as_json, body={"reason": reason})


def _print_events(rows: list[dict[str, Any]], as_json: bool) -> None:
    for e in rows:
        if as_json:
            sys.stdout.write(json.dumps(e, default=str) + "\n")
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts"]))
        where = e.get("study") or ""
        if e.get("trial_number") is not None:
            where += f"#{e['trial_number']}"
        payload = e.get("payload") or {}
        detail = " ".join(f"{k}={v}" for k, v in payload.items() if k not in ("params", "spec"))
        out.print(f"{when}  {e['id']:>6}  {e['kind']:<16} {where:<24} {detail}", highlight=False, soft_wrap=True)
    sys.stdout.flush()


@app.command()
def events(
    study: Annotated[str | None, typer.Option("--study", help="Only this study (and its versions).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
    after: Annotated[int, typer.Option("--after", min=0, help="Only events after this id.")] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, max=5000, help="At most this many (without --follow: "
                                                                        "the newest).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    api: ApiOpt = None,
    state_dir: StateDirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """The daemon's events (every fact it acted on), oldest first."""

    client: ApiClient | None = None
    # --state-dir / --storage name a database: read its events there (the daemon's API
    # would answer from its own database, whichever that is), unless --api names the daemon
    if api is not None or (state_dir is None and storage is None):
        try:
            client = _client(api, state_dir)
            client.request("GET", "/healthz")
        except DaemonUnreachable:
            if client is not None:
                client.close()
            client = None
    reader = _api_reader(client) if client is not None else _db_reader(state_dir, storage)
    try:
        if after == 0 and not follow:
            rows = reader(study, 0, 1_000_000)  # the newest `limit`
            rows = rows[-limit:]
        else:
            rows = reader(study, after, limit)
        _print_events(rows, as_json)
        last = rows[-1]["id"] if rows else after
        if after == 0 and follow and not rows:
            last = 0
        while follow:
            time.sleep(1.0)
            new = reader(study, last, 1000)
            if new:
                _print_events(new, as_json)
                last = new[-1]["id"]
    except KeyboardInterrupt:
        pass
    finally:
        if client is not None:
            client.close()


def _api_reader(client: Any) -> Any:
    def read(study: str | None, after: int, limit: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        while len(rows) < limit:
            params: dict[str, Any] = {"after": after, "limit": min(5000, limit - len(rows))}
            if study:
                params["study"] = study
            page = client.request("GET", "/v1/events", params=params)
            rows += page
            if len(page) < params["limit"]:
                break
            after = page[-1]["id"]
        return rows

    return read


def _db_reader(state_dir: Path | None, storage: str | None) -> Any:

    store, _ = _open_store(state_dir, storage, light=True)
    err.print(f"daemon not reachable: reading events from {store.safe_url}")

    def read(study: str | None, after: int, limit: int) -> list[dict[str, Any]]:
        return [event_dict(e) for e in store.events(study=study, after_id=after, limit=limit)]

    return read


__all__ = ["cancel", "daemon", "events", "pause", "resume", "retune", "submit"]
