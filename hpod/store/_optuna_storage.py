"""Fewer round trips for Optuna's ask on an RDBStorage.

Optuna writes each suggested parameter in its own transaction (a read of the trial, a
read of a previous distribution, the insert, the commit) and reads a trial it has just
created back from the database. While :func:`holding_params` is open on a storage (the
controller's ``Study.ask``), both stay in memory where that changes nothing a reader
can see:

- parameters set on a trial are checked as Optuna checks them (distribution
  compatibility with the study's) and held; :meth:`ParamHold.take` hands a trial's to
  the caller, who writes them (:meth:`hpod.store.Store.queue_trial`, with the trial's
  job, in one transaction, or :func:`write_params`); what is not taken is written when
  the hold closes. ``get_trial`` of a trial with held parameters shows them;
- the first ``get_trial`` of a trial created inside the hold without a template (what
  ``Study.ask`` does next) answers from the trial the creation returned: no other
  process knows of that trial yet, so nothing else can have written to it.

The hold shadows three methods on the storage instance for its duration (Optuna's
storage has no hook for this); other threads' calls reach Optuna's methods unchanged.
Optuna is imported on first use: a light store (``hpod status``) never imports it.

Concurrency: one thread holds at a time (the controller's).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["HeldParam", "ParamHold", "holding_params", "insert_params", "param_rows", "write_params"]

#: ``(trial_id, param_name, internal value, distribution)``
HeldParam = tuple[int, str, float, Any]

_SHADOWED = ("_create_new_trial", "get_trial", "_set_trial_param")


class ParamHold:
    """The parameters held while :func:`holding_params` is open."""

    def __init__(self, storage: Any):
        self._storage = storage
        self.held: list[HeldParam] = []
        self._fresh: dict[int, Any] = {}

    def take(self, trial_id: int) -> list[HeldParam]:
        """The held parameters of ``trial_id``, now the caller's to write."""
        mine = [h for h in self.held if h[0] == trial_id]
        self.held = [h for h in self.held if h[0] != trial_id]
        return mine

    # The storage's methods while the hold is open (same signatures as Optuna's).
    def _create_new_trial(self, study_id: int, template_trial: Any = None) -> Any:
        frozen = type(self._storage)._create_new_trial(self._storage, study_id, template_trial)
        if template_trial is None:
            self._fresh[frozen._trial_id] = copy.deepcopy(frozen)
        return frozen

    def get_trial(self, trial_id: int) -> Any:
        fresh = self._fresh.pop(trial_id, None)
        frozen = fresh if fresh is not None else type(self._storage).get_trial(self._storage, trial_id)
        for held_id, name, value, dist in self.held:
            if held_id == trial_id:
                frozen.params[name] = dist.to_external_repr(value)
                frozen.distributions[name] = dist
        return frozen

    def _set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float, distribution: Any,
                         previous_distribution: Any) -> None:
        from optuna.distributions import check_distribution_compatibility, json_to_distribution
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        if previous_distribution is None:
            # Optuna's check: the study's first record of this parameter (its cached
            # storage passes that record once it has seen one).
            with _create_scoped_session(self._storage.scoped_session) as session:
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
                self._storage.check_trial_is_updatable(trial_id, trial.state)
                record = (session.query(models.TrialParamModel).join(models.TrialModel)
                          .filter(models.TrialModel.study_id == trial.study_id)
                          .filter(models.TrialParamModel.param_name == param_name).first())
                if record is not None:
                    previous_distribution = json_to_distribution(str(record.distribution_json))
        if previous_distribution is not None:
            check_distribution_compatibility(previous_distribution, distribution)
        self.held.append((trial_id, param_name, param_value_internal, distribution))


@contextmanager
def holding_params(storage: Any) -> Iterator[ParamHold]:
    """Hold the parameter writes on ``storage`` (Optuna's RDBStorage) while open; see
    the module docstring. Not reentrant."""
    hold = ParamHold(storage)
    for name in _SHADOWED:
        setattr(storage, name, getattr(hold, name))
    try:
        yield hold
    finally:
        for name in _SHADOWED:
            vars(storage).pop(name, None)
        if hold.held:
            write_params(storage, hold.held)


def param_rows(held: list[HeldParam]) -> list[dict[str, Any]]:
    """Optuna's rows (of ``trial_params``) of held parameters, for one executemany insert."""
    from optuna.distributions import distribution_to_json

    return [{"trial_id": trial_id, "param_name": name, "param_value": value,
             "distribution_json": distribution_to_json(dist)} for trial_id, name, value, dist in held]


def insert_params(session: Any, held: list[HeldParam]) -> None:
    """Insert held parameters in ``session``'s transaction (one statement)."""
    from optuna.storages._rdb import models
    from sqlalchemy import insert

    if held:
        session.execute(insert(models.TrialParamModel.__table__), param_rows(held))


def write_params(storage: Any, held: list[HeldParam]) -> None:
    """Write held parameters through ``storage`` in one transaction."""
    from optuna.storages._rdb.storage import _create_scoped_session

    if held:
        with _create_scoped_session(storage.scoped_session, True) as session:
            insert_params(session, held)
