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
from hpod.cli._storage import _open_store
from hpod.cli.client import try_status
from hpod.core.monitoring import monitor_states
from hpod.core.retune import retune_states
from hpod.core.views import study_rows, worker_rows


@app.command()
def status(state_dir: StateDirOpt = None, storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """Every study: state, trials by state, best per objective, hypervolume, last activity."""

    daemon_status = try_status(state_dir)
    if daemon_status is not None:
        if as_json:
            _print_json(daemon_status)
        else:
            print_daemon_status(daemon_status, out)
        return

    store, _sd = _open_store(state_dir, storage, light=True)
    studies = study_rows(store)
    monitors, retunes = monitor_states(store), retune_states(store)
    workers = worker_rows(store)
    if as_json:
        _print_json({"daemon": None, "storage": store.safe_url, "studies": studies, "monitors": monitors,
                     "retunes": retunes, "workers": workers})
        return
    out.print(f"daemon: [yellow]not reachable[/] — showing what {store.safe_url} holds")
    print_studies(studies)
    print_monitors_and_retunes(monitors, retunes)
    print_workers(workers)
