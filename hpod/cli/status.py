"""``hpod status``: the daemon's view when one answers, else what the database holds.

Reads only: it imports neither torch nor Optuna's samplers, so it answers in well under
a second on a node that is busy training."""

from __future__ import annotations

from hpod.cli._common import JsonOpt, StateDirOpt, StorageOpt, _print_json, app, out
from hpod.cli._render import (
    print_daemon_status,
    print_monitors_and_retunes,
    print_studies,
    print_workers,
)
from hpod.cli._storage import _named_url, _open_store
from hpod.cli.client import try_status
from hpod.core.monitoring import monitor_states
from hpod.core.retune import retune_states
from hpod.core.views import study_rows, worker_rows
from hpod.store import NoDatabase, same_database


@app.command()
def status(state_dir: StateDirOpt = None, storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """Every study: state, trials by state, best per objective, hypervolume, last activity."""

    # --state-dir / --storage name a database: the daemon's answer is used only when it
    # serves that one; otherwise the named database is read directly.
    explicit = state_dir is not None or storage is not None
    daemon_status = try_status(state_dir, quiet=explicit)
    #: the database the daemon that answered serves, when it is not the one named
    elsewhere: str | None = None
    if daemon_status is not None and explicit and \
            not same_database(str(daemon_status.get("storage") or ""), _named_url(state_dir, storage)):
        elsewhere = str(daemon_status.get("storage") or "another database")
        daemon_status = None
    if daemon_status is not None:
        if as_json:
            _print_json(daemon_status)
        else:
            print_daemon_status(daemon_status, out)
        return

    try:
        store, _sd = _open_store(state_dir, storage, light=True)
    except NoDatabase as exc:
        # A fresh install: nothing has run yet. Not an error, and nothing is created.
        if as_json:
            _print_json({"daemon": None, "storage": _named_url(state_dir, storage), "studies": [],
                         "monitors": [], "retunes": [], "workers": []})
        else:
            out.print(f"daemon: [yellow]{_daemon_line(elsewhere)}[/] — no studies yet ({exc})", highlight=False)
        return
    studies = study_rows(store)
    monitors, retunes = monitor_states(store), retune_states(store)
    workers = worker_rows(store)
    if as_json:
        _print_json({"daemon": None, "storage": store.safe_url, "studies": studies, "monitors": monitors,
                     "retunes": retunes, "workers": workers})
        return
    out.print(f"daemon: [yellow]{_daemon_line(elsewhere)}[/] — showing what {store.safe_url} holds", highlight=False)
    print_studies(studies)
    print_monitors_and_retunes(monitors, retunes)
    print_workers(workers)


def _daemon_line(elsewhere: str | None) -> str:
    """What the status header says of the daemon when it shows the database itself: a
    daemon that answered for another database is not "not reachable"."""
    return "not reachable" if elsewhere is None else f"it serves {elsewhere}, not this database"
