"""The ask/tell loop of one study: sampler choice, jobs, constraints, the front.

The engine asks the sampler for configurations and turns each into a job in the
store; whoever runs jobs (the local executor, remote workers) writes the outcome
back; the engine then tells Optuna (values, constraints as the ``constraints`` system attribute,
measurements with provenance as user attributes), re-queues configurations whose
trial failed for infrastructure reasons, appends events, and keeps the study's
summary (counts, Pareto front size, hypervolume, best values) up to date.

Never the same configuration twice: a suggestion whose parameters equal those of a
finished or running trial of the study (the seeds a trial runs are the study's, so
equal parameters mean an equal evaluation) is closed unrun as a ``FAIL`` trial marked
``hpod.rejected`` and the sampler is asked again; after
:data:`MAX_REPEATED_SUGGESTIONS` repeats in a row the engine draws an unevaluated
configuration itself, and when none is left (a finite space, all evaluated) the study
stops with reason ``search_space_exhausted``. A resumed study's sampler is seeded from
the spec's seed and the study's trial count, so it continues instead of replaying.

The study's strategy (``spec.strategy``: pareto, scalarized, pbt; see
:mod:`hpod.core.strategies`) may pick the sampler, queue jobs itself, turn metrics
into the told values and act after each tell; ``report_handler`` (pruning, early
stopping) and ``seed_handler`` (adaptive seeds) are what the executor that runs the
study's trials calls with intermediate reports and after each seed.

Concurrency: one engine per study in one controller process; it is the only
writer of the study's Optuna trials' outcomes.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpod.core._ledger import FinishedTrials
from hpod.core.pareto import (
    derive_ideal_point,
    derive_reference_point,
    hypervolume,
    normalized_hypervolume,
)
from hpod.core.records import (
    CONSTRAINTS_ATTR,
    FAIL_REASON_ATTR,
    HYPERVOLUME_STATE_KEY,
    INFEASIBLE_ATTR,
    REJECTED_ATTR,
    SAMPLER_SECONDS_KEY,
    feasible,
)
from hpod.core.samplers import SamplerChoice, create_sampler
from hpod.core.samplers._startup import from_unit_interval
from hpod.core.strategies import PBTStrategy, ScalarizedStrategy, Strategy
from hpod.core.strategies._pruning import create_report_handler
from hpod.core.strategies._seeds import AdaptiveSeeds
from hpod.execution._trial_child import INFRA_REASONS
from hpod.objectives.base import MEMORY_INFEASIBLE, EstimatesMemory, MemoryEstimate, memory_infeasibility
from hpod.spec import ResolvedStudy, StudySpec, resolve
from hpod.store import HeldParam, JobRow, Store, config_key, holding_params, name_values, write_params

if TYPE_CHECKING:
    import optuna

__all__ = [
    "MAX_REPEATED_SUGGESTIONS",
    "SPACE_EXHAUSTED",
    "Engine",
    "StudySummary",
    "configuration_key",
    "create_strategy",
    "trial_handlers",
]

log = logging.getLogger(__name__)
_REF_MIN_TRIALS = 5
#: Repeated suggestions in a row after which the engine stops asking the sampler and
#: draws an unevaluated configuration itself (a sampler stuck on its favourite point).
MAX_REPEATED_SUGGESTIONS = 20
#: ``budget_exhausted()``'s answer once every configuration of a finite space was evaluated.
SPACE_EXHAUSTED = "search_space_exhausted"
#: Random draws tried before a finite space's unevaluated configurations are enumerated.
_RANDOM_DRAWS = 2000
#: Largest finite space whose configurations are enumerated to find an unevaluated one.
_MAX_ENUMERATED = 1_000_000


def _normalized(value: Any) -> Any:
    if isinstance(value, float):
        # 12 significant digits: grid values computed two ways (0.1 * 3 vs 0.3) are one value.
        return float(f"{value:.12g}")
    return value


def configuration_key(params: dict[str, Any]) -> str:
    """What makes two trials of a study the same evaluation: their parameters (the
    seeds are the study's, the same for every trial). Floats compare to 12 digits."""
    return json.dumps({k: _normalized(v) for k, v in params.items()}, sort_keys=True, default=str)


def _grid(dist: Any) -> list[Any] | None:
    """Every value of a finite distribution, or None for a continuous one."""
    import optuna

    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, optuna.distributions.IntDistribution):
        if dist.log:
            return list(range(int(dist.low), int(dist.high) + 1))
        return list(range(int(dist.low), int(dist.high) + 1, int(dist.step)))
    if isinstance(dist, optuna.distributions.FloatDistribution) and dist.step is not None:
        n = round((dist.high - dist.low) / dist.step) + 1
        return [float(min(dist.low + i * dist.step, dist.high)) for i in range(n)]
    return None
#: How many recent trials ``Engine.recent_run_seconds`` looks at.
RUN_SECONDS_WINDOW = 20
#: Least seconds between two saves of the sampler's seconds per suggestion.
SAMPLER_SECONDS_SAVE_SECONDS = 5.0


@dataclass
class StudySummary:
    name: str
    counts: dict[str, int]
    finished: int
    running: int
    pareto: list[int]
    #: normalized: each objective scaled by the ideal point (0) and the reference point (1); in [0, 1]
    hypervolume: float | None
    reference_point: list[float] | None
    best: dict[str, float]
    energy_spent_joules: float
    infra_failures: int
    objective_failures: int
    extra: dict[str, Any] = field(default_factory=dict)
    #: the hypervolume in the objectives' own units (a product of mixed units)
    hypervolume_raw: float | None = None
    ideal_point: list[float] | None = None


class Engine:
    """Ask/tell for one study, backed by the store's jobs."""

    def __init__(self, store: Store, spec: StudySpec, *, state_dir: Path, parallelism: int = 1,
                 resolved: ResolvedStudy | None = None):
        self.store = store
        self.spec = spec
        self.state_dir = state_dir
        self.resolved = resolved or resolve(spec)
        self.parallelism = max(1, parallelism)
        self.constraints = spec.parsed_constraints()
        self.distributions = self.resolved.distributions()
        self._study: optuna.Study | None = None
        self.sampler_name: str | None = None
        self.sampler_reason: str | None = None
        self.started_at = time.time()
        #: called after each told trial: (engine, frozen trial, job)
        self.on_told: list[Callable[[Engine, Any, JobRow], None]] = []
        #: called with the seconds a sampler took to suggest one configuration
        self.on_suggest: list[Callable[[str, float], None]] = []
        self._summary: StudySummary | None = None
        self._finished = FinishedTrials(self.spec.directions,
                                        keep_first_complete=max(_REF_MIN_TRIALS, 2 * len(self.spec.value_names)))
        #: the summary's reference point and its source, once fixed; its ideal point, once fixed
        self._reference: tuple[list[float], str] | None = None
        self._ideal: list[float] | None = None
        self._ideal_source: str | None = None
        self._reference_saved = False
        self._hv_cache: tuple[Any, tuple[float | None, float | None]] = (None, (None, None))
        self.strategy: Strategy = create_strategy(self)
        self._report_handler: Callable[[JobRow, int, int, dict[str, float]], bool] | None = None
        self._seed_handler: AdaptiveSeeds | None = None
        self._sampler_choice: SamplerChoice | None = None
        #: the sampler's seconds per suggestion (see SAMPLER_SECONDS_KEY), saved with the summary
        self._sampler_seconds: dict[str, Any] | None = None
        self._sampler_seconds_dirty = False
        #: why the search space cannot give a new configuration (set once, then the study stops)
        self._exhausted: str | None = None
        #: ``configuration_key -> trial number`` of every evaluation (see
        #: ``_evaluated_configurations``): read from the study once per engine (so once per
        #: process and resume), then kept up to date on ask and tell
        self._evaluated: dict[str, int] | None = None
        self._sampler_seconds_saved_at = -math.inf
        #: events of the trial being told (see ``_tell_event``), and whether its tell
        #: also marked its job told
        self._tell_events: list[dict[str, Any]] = []
        self._marked_told = False
        #: the study's unfinished trials as ``collect`` read them (trial id -> trial), while it tells
        self._unfinished: dict[int, Any] = {}
        #: the summary's write (fields, states) ``collect`` deferred to the next ask
        self._pending_summary: tuple[dict[str, Any], dict[str, Any]] | None = None
        #: trials told COMPLETE by ``_tell_complete`` in the current ``collect``
        self._told_complete = 0
        #: whether the last summary found no enqueued (WAITING) trial and none was enqueued since
        self._none_waiting = False
        #: seconds the study's recent trials ran (claim to result), newest last
        self._run_seconds: deque[float] = deque(maxlen=RUN_SECONDS_WINDOW)

    @property
    def report_handler(self) -> Callable[[JobRow, int, int, dict[str, float]], bool] | None:
        """The pruner / early stopping of ``spec.pruner`` as an executor report handler, or None."""
        if self._report_handler is None and self.spec.pruner.kind != "none":

            self._report_handler = create_report_handler(self.spec, self.store)
        return self._report_handler

    @property
    def seed_handler(self) -> Callable[[JobRow, int, dict[str, float]], bool] | None:
        """Adaptive seeds: ``(job, seed_index, values) -> run another seed?``, or None."""
        if self._seed_handler is None and self.spec.seeds_adaptive is not None:

            self._seed_handler = AdaptiveSeeds(self)
        return self._seed_handler

    # ------------------------------------------------------------------ setup
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = self._load()
        return self._study

    def _choose_sampler(self) -> SamplerChoice:
        """The study's sampler, built (and its options validated) once; raises SpecError.

        A resumed study's sampler continues from its history rather than replaying the
        sequence its seed started (the spec's seed alone would repeat trials)."""
        if self._sampler_choice is None:
            self._sampler_choice = self.strategy.create_sampler() or create_sampler(
                self.spec.sampler.name, dict(self.spec.sampler.options), directions=self.spec.directions,
                n_trials=self.spec.budget.n_trials, n_params=len(self.distributions),
                parallelism=self.parallelism, seed=self.spec.sampler.seed,
                has_constraints=bool(self.constraints), reference_point=self.stated_reference_point(),
                n_trials_so_far=self._trials_so_far(),
                energy_budget_joules=self.spec.budget.energy_joules,
                time_budget_seconds=self.spec.budget.timeout_seconds,
                objective_names=self.spec.value_names,
            )
        return self._sampler_choice

    def _trials_so_far(self) -> int:
        storage = self.store.optuna_storage
        try:
            study_id = storage.get_study_id_from_name(self.spec.name)
        except KeyError:
            return 0
        return len(storage.get_all_trials(study_id, deepcopy=False))

    def _load(self) -> optuna.Study:
        choice = self._choose_sampler()
        self.sampler_name, self.sampler_reason = choice.name, choice.reason
        study = self.store.load_optuna_study(self.spec.name, sampler=choice.sampler)
        name_values(study, self.spec.value_names)  # studies stored before hpod named them
        self.store.update_study(self.spec.name, sampler_name=choice.name, sampler_reason=choice.reason)
        return study

    def start(self, *, submitted_by: str = "cli") -> bool:
        """Register the study (or find it) and recover orphans. Returns True when new.

        The sampler is built first, so a sampler option the spec got wrong is reported
        before any row is written."""
        self._choose_sampler()
        row, created = self.store.register_study(self.spec, state="running")
        if created:
            self.store.append_event("study_submitted", study=self.name,
                                    payload={"by": submitted_by, "objective": self.spec.objective.name}, handled=True)
        elif row is not None and row.state not in ("running",):
            self.store.update_study(self.name, state="running")
        _ = self.study
        return created

    def recover_orphans(self, *, alive: Callable[[JobRow], bool]) -> int:
        """Fail and re-queue this study's trials that a dead process left RUNNING.

        ``alive(job)`` says whether the job's holder may still be running it (e.g. its
        lease has not expired, or its pid is alive on this node)."""
        import optuna

        n = 0
        # Every job of the study, whatever its state: a job that already holds an outcome
        # (done / failed / lost) is not an orphan; `collect` tells Optuna about it.
        by_trial = {j.trial_id: j for j in self.store.jobs(self.name)}
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            job = by_trial.get(t._trial_id)
            if job is not None and (job.state not in ("running", "queued") or alive(job)):
                continue
            if job is not None:
                self.store.release_jobs([job.id], reason="orphaned")  # type: ignore[list-item]  # a stored row has an id; SQLModel types it Optional for inserts
            else:
                self._fail_trial(t._trial_id, "orphaned")
                self._forget(t.number, dict(t.params))
                self._requeue(dict(t.params), t.number, attempt=1)
            n += 1
        return n

    # ------------------------------------------------------------------ budget
    def summary(self, *, refresh: bool = False) -> StudySummary:
        if self._summary is None or refresh:
            self._summary = self._compute_summary()
        return self._summary

    def remaining_trials(self) -> int | None:
        n = self.spec.budget.n_trials
        if n is None:
            return None
        s = self.summary()
        return max(0, n - s.finished - s.running)

    def budget_exhausted(self) -> str | None:
        """Why no new trial may start, or None."""
        b = self.spec.budget
        s = self.summary()
        if b.n_trials is not None and s.finished >= b.n_trials:
            return "n_trials"
        if b.energy_joules is not None and s.energy_spent_joules >= b.energy_joules:
            return "energy_joules"
        if b.timeout_seconds is not None and time.time() - self.started_at >= b.timeout_seconds:
            return "timeout_seconds"
        if self._exhausted is not None:
            return SPACE_EXHAUSTED
        return self.strategy.budget_exhausted()

    def recent_run_seconds(self) -> float | None:
        """The median seconds of this study's last :data:`RUN_SECONDS_WINDOW` finished
        trials (from the claim of their job to its result), or None before any finished
        in this process."""
        return float(np.median(self._run_seconds)) if self._run_seconds else None

    def done(self) -> bool:
        s = self.summary()
        return self.budget_exhausted() is not None and s.running == 0

    # ------------------------------------------------------------------ ask
    def ask(self, n: int = 1) -> list[JobRow]:
        """Ask the sampler for up to ``n`` configurations within the budget and queue them."""
        if self.budget_exhausted() is not None:
            return []
        remaining = self.remaining_trials()
        if remaining is not None:
            n = min(n, remaining)
        own = self.strategy.ask(max(0, n))
        if own is not None:
            self._none_waiting = False  # the strategy may have enqueued trials
            if own:
                self._summary = None
            return own
        jobs = []
        evaluated = self._evaluated_configurations() if n > 0 else {}
        for _ in range(max(0, n)):
            job = self._ask_new(evaluated)
            if job is None:
                break
            jobs.append(job)
        for _ in jobs:
            self._count_asked()
        if self._exhausted is not None:
            self._summary = None
        return jobs

    # ------------------------------------------------------------------ no repeats
    def _evaluated_configurations(self) -> dict[str, int]:
        """``configuration_key -> trial number`` of every trial that ran or runs:
        complete, pruned, failed by the objective, running. Trials failed for
        infrastructure reasons are not evaluations (they are re-queued), nor are rejected
        repeats.

        Incremental: the study's trials are read once per engine (a resumed study, a
        restarted daemon or controller builds a new engine, so it reads them once); after
        that ``_ask_new`` adds each configuration it queues and ``_forget`` drops one
        whose trial failed for an infrastructure reason. This engine is the only one that
        asks for or tells this study's trials (see the module docstring), so the map
        stays what a full read would give."""
        if self._evaluated is None:
            self._evaluated = self._read_evaluated_configurations()
        return self._evaluated

    def _forget(self, number: int, params: dict[str, Any]) -> None:
        """Trial ``number`` failed for an infrastructure reason: its configuration was not
        evaluated (it is re-queued, and its retry must not be refused as a repeat)."""
        if self._evaluated is not None and params:
            key = configuration_key(params)
            if self._evaluated.get(key) == number:
                del self._evaluated[key]

    def _read_evaluated_configurations(self) -> dict[str, int]:
        import optuna

        out: dict[str, int] = {}
        for t in self.study.get_trials(deepcopy=False):
            if t.user_attrs.get(REJECTED_ATTR) is not None or not t.params:
                continue
            if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get(FAIL_REASON_ATTR) in INFRA_REASONS:
                continue
            out.setdefault(configuration_key(dict(t.params)), t.number)
        return out

    def space_size(self) -> int | None:
        """How many distinct configurations the tunable space holds; None when a
        parameter is continuous (an unstepped float)."""
        size = 1
        for dist in self.distributions.values():
            grid = _grid(dist)
            if grid is None:
                return None
            size *= max(1, len(grid))
        return size

    def _ask_new(self, evaluated: dict[str, int]) -> JobRow | None:
        """Ask until the sampler suggests a configuration not evaluated yet and queue
        it; after MAX_REPEATED_SUGGESTIONS repeats draw one; None when none is left."""
        size = self.space_size()
        if size is not None and len(evaluated) >= size:
            self._mark_exhausted(size)
            return None
        repeats = 0
        storage = self.store.optuna_storage
        while True:
            t0 = time.perf_counter()
            # The parameters are written with the job (one transaction, ``_queue_job``),
            # or before the trial is closed otherwise.
            with holding_params(storage) as hold, self._no_waiting_trials():
                trial = self.study.ask(self.distributions)
                held = hold.take(trial._trial_id)
            elapsed = time.perf_counter() - t0
            self._count_suggest(elapsed)
            for cb in self.on_suggest:
                cb(self.name, elapsed)
            params = dict(trial.params)
            key = configuration_key(params)
            if key in evaluated:
                write_params(storage, held)
                self._reject(trial, evaluated[key])
                repeats += 1
                if repeats >= MAX_REPEATED_SUGGESTIONS:
                    fresh = self._unevaluated_configuration(evaluated, size)
                    if fresh is None:
                        self._mark_exhausted(size)
                        return None
                    log.info("study %s: the sampler repeated %d evaluated configurations in a row; running an "
                             "unevaluated one drawn at random", self.name, repeats)
                    self.study.enqueue_trial(fresh, user_attrs={"hpod.drawn_after_repeats": repeats})
                    self._none_waiting = False
                    repeats = 0
                continue
            evaluated[key] = trial.number
            if self.memory_limit() is not None:
                write_params(storage, held)
                held = []
                if self._refuse_for_memory(trial, params):
                    return None  # recorded as infeasible; the next step asks again
            return self._queue_job(trial, params, elapsed, held)

    @contextmanager
    def _no_waiting_trials(self) -> Iterator[None]:
        """While open, ``Study.ask`` skips its look for an enqueued (WAITING) trial to
        run (a read of every unfinished trial) when the last summary's read of the
        study found none and this engine enqueued none since; another process's
        enqueued trial is then run after the next summary."""
        study = self.study
        if not self._none_waiting:
            yield
            return
        study._pop_waiting_trial_id = lambda: None  # type: ignore[method-assign]
        try:
            yield
        finally:
            vars(study).pop("_pop_waiting_trial_id", None)

    def _queue_job(self, trial: optuna.Trial, params: dict[str, Any], elapsed: float,
                   held: list[HeldParam]) -> JobRow:
        retry_of = trial.user_attrs.get("hpod.retry_of")
        attempt = int(trial.user_attrs.get("hpod.attempt", 1))
        sampler = self.sampler_name if retry_of is None else "requeued"
        if "hpod.drawn_after_repeats" in trial.user_attrs:
            sampler = "drawn: the sampler repeated evaluated configurations"
        ask = {"attempt": attempt, "config_key": config_key(params), "suggest_seconds": elapsed,
               "retry_of": retry_of, "sampler": sampler}
        job = self.store.queue_trial(study=self.name, trial_id=trial._trial_id, trial_number=trial.number,
                                     params=params, held=held, user_attrs={"hpod.ask": ask}, attempt=attempt,
                                     priority=self.spec.priority, study_update=self._pending_summary)
        self._pending_summary = None  # written with the job
        return job

    # ------------------------------------------------------------------ memory
    #: the measured peak-memory name a ``memory_bytes <= M`` constraint bounds
    _MEMORY_METRIC = "memory_bytes"

    def memory_limit(self) -> tuple[float, str] | None:
        """The spec's memory limit per device and where it comes from: the smaller of
        ``resources.memory_limit_bytes`` and the bound of a ``memory_bytes <= M``
        constraint; None when the spec states neither."""
        limits: list[tuple[float, str]] = []
        if self.spec.resources.memory_limit_bytes is not None:
            limits.append((float(self.spec.resources.memory_limit_bytes), "resources.memory_limit_bytes"))
        limits += [(c.bound, f"constraint {c.text}") for c in self.constraints
                   if c.metric == self._MEMORY_METRIC and c.op in ("<=", "<")]
        return min(limits) if limits else None

    def _estimate_for(self, params: dict[str, Any]) -> MemoryEstimate | None:
        objective = self.resolved.objective
        if not isinstance(objective, EstimatesMemory):
            return None
        try:
            return objective.estimate_memory({**self.resolved.fixed, **params},
                                             world_size=self.spec.resources.world_size,
                                             on_gpu=self.spec.resources.gpus_per_trial > 0)
        except (ValueError, TypeError, KeyError):
            return None

    def _refuse_for_memory(self, trial: optuna.Trial, params: dict[str, Any]) -> bool:
        """Record ``trial`` as infeasible without running it when the objective estimates
        that its configuration needs more memory than the spec's limit; True if so."""
        limit = self.memory_limit()
        if limit is None:
            return False
        refusal = memory_infeasibility(self.resolved.objective, {**self.resolved.fixed, **params},
                                       world_size=self.spec.resources.world_size,
                                       on_gpu=self.spec.resources.gpus_per_trial > 0,
                                       limit_bytes=limit[0], limit_source=limit[1])
        if refusal is None:
            return False
        reason, estimate = refusal
        self._record_infeasible(trial._trial_id, trial.number, reason, estimate)
        return True

    def _record_infeasible(self, trial_id: int, number: int, reason: str,
                           estimate: MemoryEstimate | None) -> optuna.trial.FrozenTrial | None:
        """A configuration that cannot fit, told without having run: a PRUNED trial (the
        samplers that learn from pruned trials rank it last; TPE reads its constraint
        violations as infeasible) carrying the reason, the estimate, and, when the spec
        has constraints, the memory constraint's violation by the estimate. It counts as
        evaluated (never run again) and towards ``budget.n_trials``."""
        import optuna

        storage = self.store.optuna_storage
        if storage.get_trial(trial_id).state.is_finished():
            return None
        storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, reason)
        storage.set_trial_user_attr(trial_id, INFEASIBLE_ATTR, {
            "reason": reason, "estimate": estimate.as_dict() if estimate is not None else None})
        if self.constraints and estimate is not None:
            # Only the memory constraint is known without running; the others read as met.
            storage.set_trial_system_attr(trial_id, CONSTRAINTS_ATTR, [
                c.violation(estimate.peak_bytes) if c.metric == self._MEMORY_METRIC else 0.0
                for c in self.constraints])
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.PRUNED)
        self.store.append_event("trial_pruned", study=self.name, trial_number=number,
                                payload={"infeasible": reason, "energy_spent_joules": 0.0}, handled=True)
        log.info("study %s: trial %d not run: %s", self.name, number, reason)
        self._summary = None
        return storage.get_trial(trial_id)

    def _reject(self, trial: optuna.Trial, original: int) -> None:
        """Close a repeated suggestion unrun: a FAIL trial marked as rejected (samplers
        learn from complete trials only; counts and budgets leave it out)."""
        import optuna

        trial.set_user_attr(REJECTED_ATTR, {"reason": "duplicate", "duplicate_of": original})
        trial.set_user_attr(FAIL_REASON_ATTR, f"duplicate of trial {original}: not run again")
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self._summary = None  # the next summary counts the rejected trial

    def _unevaluated_configuration(self, evaluated: dict[str, int], size: int | None) -> dict[str, Any] | None:
        """A configuration of the space that no trial evaluated, drawn at random; None
        when every configuration of a finite space was evaluated."""
        import itertools

        rng = np.random.default_rng()
        names = list(self.distributions)
        for _ in range(_RANDOM_DRAWS):
            params = {n: from_unit_interval(float(rng.random()), self.distributions[n]) for n in names}
            if configuration_key(params) not in evaluated:
                return params
        if size is None or size > _MAX_ENUMERATED:
            return None  # not provably exhausted, but the sampler and 2000 random draws found nothing new
        grids = [_grid(self.distributions[n]) or [] for n in names]
        left = [values for values in itertools.product(*grids)
                if configuration_key(dict(zip(names, values))) not in evaluated]
        if not left:
            return None
        return dict(zip(names, left[int(rng.integers(len(left)))]))

    def _mark_exhausted(self, size: int | None) -> None:
        if self._exhausted is not None:
            return
        what = (f"all {size} configurations of the search space were evaluated" if size is not None
                else "no unevaluated configuration found after the sampler repeated itself "
                     f"{MAX_REPEATED_SUGGESTIONS} times and {_RANDOM_DRAWS} random draws")
        self._exhausted = what
        log.warning("study %s: %s; the study stops", self.name, what)
        self.store.update_study(self.name, message=f"search space exhausted: {what}")
        self.store.append_event("search_space_exhausted", study=self.name, handled=True,
                                payload={"message": what, "space_size": size})

    def _count_asked(self) -> None:
        """The asked trial is RUNNING now: counted here rather than by re-reading the
        study's trials after every ask. With enqueued (WAITING) trials around, which one
        Optuna took is not known here, so the next summary recounts."""
        s = self._summary
        if s is None:
            return
        if s.counts.get("WAITING", 0):
            self._summary = None
            return
        s.counts["RUNNING"] = s.counts.get("RUNNING", 0) + 1
        s.running += 1

    def _count_suggest(self, seconds: float) -> None:
        if self._sampler_seconds is None:
            self._sampler_seconds = self.store.get_state(self.name, SAMPLER_SECONDS_KEY) or {
                "trials": 0, "total": 0.0, "last": None, "max": 0.0}
        stats = self._sampler_seconds
        stats["trials"] += 1
        stats["total"] += seconds
        stats["last"] = seconds
        stats["max"] = max(stats["max"], seconds)
        self._sampler_seconds_dirty = True

    def _requeue(self, params: dict[str, Any], number: int, *, attempt: int) -> bool:
        if attempt > self.spec.budget.max_retries:
            log.warning("study %s: configuration of trial %d failed %d times; not re-queued",
                        self.name, number, attempt)
            return False
        self.study.enqueue_trial(params, user_attrs={"hpod.retry_of": number, "hpod.attempt": attempt + 1})
        self._none_waiting = False
        return True

    # ------------------------------------------------------------------ tell
    def collect(self, *, defer_summary: bool = False) -> list[optuna.trial.FrozenTrial]:
        """Tell Optuna about every finished job of this study; returns the told trials.

        ``defer_summary``: the summary's write waits for the next ask's transaction
        (:meth:`_queue_job`), or :meth:`flush_summary` when no ask takes it (the
        controller calls it at the end of each step).

        One read of the study's unfinished trials (Optuna's cached storage reads only
        those, and the trials new since its last read) serves both the tells (each reads
        its trial from it) and the summary after them, where each told trial is replaced
        by what its tell wrote: one read per batch instead of one per trial plus the
        summary's. The summary reads the study again when a tell went another way than
        :meth:`_tell_complete` (a failure may re-queue a configuration as a new trial) or
        the strategy may add trials after a tell (PBT)."""
        jobs = self.store.jobs_to_tell(self.name)
        if not jobs:
            return []
        trials = {t._trial_id: t for t in self.study.get_trials(deepcopy=False)}
        self._unfinished = {tid: t for tid, t in trials.items() if not t.state.is_finished()}
        self._told_complete = 0
        told = []
        try:
            told = self._tell_jobs(jobs)
        finally:
            self._unfinished = {}
        if told:
            if self._told_complete == len(jobs) == len(told) and self.strategy.kind != "pbt":
                for frozen in told:
                    trials[frozen._trial_id] = frozen
                self._summary = self._compute_summary(sorted(trials.values(), key=lambda t: t.number))
            else:
                self._summary = None
            self.update_store_summary(refresh=self._summary is None, defer=defer_summary)
        return told

    def _tell_jobs(self, jobs: list[JobRow]) -> list[optuna.trial.FrozenTrial]:
        told = []
        for job in jobs:
            self._tell_events = []
            self._marked_told = False
            frozen = self._tell(job)
            if not self._marked_told:
                # The trial's event goes in with the job's told mark: one transaction.
                self.store.mark_told(job.id, self._tell_events)  # type: ignore[arg-type]  # a stored row has an id; SQLModel types it Optional for inserts
            if job.claimed_at is not None and job.finished_at is not None and job.state == "done":
                self._run_seconds.append(job.finished_at - job.claimed_at)
            if frozen is not None:
                told.append(frozen)
                try:
                    self.strategy.after_tell(frozen, job)
                except Exception:
                    log.exception("study %s: strategy %s failed after trial %d", self.name, self.strategy.kind,
                                  frozen.number)
                for cb in self.on_told:
                    try:
                        cb(self, frozen, job)
                    except Exception:
                        log.exception("on_told callback failed")
        return told

    def _fail_trial(self, trial_id: int, reason: str) -> optuna.trial.FrozenTrial | None:
        import optuna

        storage = self.store.optuna_storage
        if storage.get_trial(trial_id).state.is_finished():
            return None
        storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, reason)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        return storage.get_trial(trial_id)

    def _tell(self, job: JobRow) -> optuna.trial.FrozenTrial | None:
        import optuna

        storage = self.store.optuna_storage
        info: dict[str, Any] = {"worker": job.worker, "job_id": job.id}
        if job.result_json is None and (job.fail_reason or "").startswith(MEMORY_INFEASIBLE):
            # The executor refused it for its devices' memory before starting it.
            storage.set_trial_user_attr(job.trial_id, "hpod.info", info)
            return self._record_infeasible(job.trial_id, job.trial_number, job.fail_reason or "",
                                           self._estimate_for(json.loads(job.params_json)))
        if job.state in ("lost", "cancelled") or job.result_json is None:
            if storage.get_trial(job.trial_id).state.is_finished():
                return None  # told before a crash; idempotent
            reason = job.fail_reason or "unknown failure"
            storage.set_trial_user_attr(job.trial_id, "hpod.info", info)
            frozen = self._fail_trial(job.trial_id, reason)
            if reason in INFRA_REASONS:
                self._forget(job.trial_number, json.loads(job.params_json))
            requeued = False
            if job.state == "lost" and reason in INFRA_REASONS:
                own = self.strategy.requeue_lost(job, reason)
                requeued = own if own is not None else \
                    self._requeue(json.loads(job.params_json), job.trial_number, attempt=job.attempt)
            self._tell_event("trial_failed", study=self.name, trial_number=job.trial_number,
                             payload={"reason": reason, "requeued": requeued, "worker": job.worker,
                                      "infrastructure": reason in INFRA_REASONS}, handled=True)
            return frozen
        result = json.loads(job.result_json)
        info.update({k: result.get(k) for k in ("metrics_std", "energy_spent_joules", "notes", "artifact_dir",
                                                "placement", "ranks")})
        info["intermediate"] = (result.get("intermediate") or [])[-100:]
        metrics = result.get("metrics", {})
        attrs = {attr: result.get(key, {}) for key, attr in (("metrics", "hpod.metrics"),
                                                             ("measurements", "hpod.measurements"),
                                                             ("seeds", "hpod.seeds"))}
        attrs["hpod.info"] = info
        missing = [n for n in self.spec.objective_names if n not in metrics]
        missing += [c.metric for c in self.constraints if c.metric not in metrics]
        system: dict[str, Any] = {}
        if self.constraints and not result.get("pruned") and not missing:
            # One list in the spec's order: the form optuna-dashboard and every Optuna
            # sampler read (``FrozenTrial.constraints`` reads it as "0", "1", ...).
            system[CONSTRAINTS_ATTR] = [c.violation(metrics[c.metric]) for c in self.constraints]
        if not result.get("pruned") and not missing:
            values = self.strategy.values(metrics, job)
            if _tellable(values, len(self.spec.directions)):
                return self._tell_complete(job, values, attrs, system)
        # The trial's attributes (and constraints) in one transaction, then the tell.
        try:
            self.store.set_trial_attrs(job.trial_id, attrs, system)
        except optuna.exceptions.UpdateFinishedTrialError:
            return None  # told before a crash; idempotent
        # By number: an optuna.Trial object would read the trial and call the sampler's
        # before_trial again, and tell reads the trial itself.
        trial = job.trial_number
        if result.get("pruned"):
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            self._tell_event("trial_pruned", study=self.name, trial_number=job.trial_number,
                             payload={"energy_spent_joules": result.get("energy_spent_joules")}, handled=True)
            return storage.get_trial(job.trial_id)
        if missing:
            reason = f"objective did not report {', '.join(sorted(set(missing)))} (it reported: " \
                     f"{', '.join(sorted(metrics)) or 'nothing'})"
            frozen = self._fail_trial(job.trial_id, reason)
            self._tell_event("trial_failed", study=self.name, trial_number=job.trial_number,
                             payload={"reason": reason, "requeued": False}, handled=True)
            return frozen
        values = self.strategy.values(metrics, job)
        frozen = self.study.tell(trial, values)
        if frozen.state != optuna.trial.TrialState.COMPLETE:  # Optuna refused the values (NaN)
            self._tell_event("trial_failed", study=self.name, trial_number=job.trial_number,
                             payload={"reason": f"values Optuna cannot tell: {values!r}", "requeued": False},
                             handled=True)
            return frozen
        self._tell_event(
            "trial_completed", study=self.name, trial_number=job.trial_number,
            payload={"values": dict(zip(self.spec.value_names, values)), "feasible": feasible(frozen),
                     "worker": job.worker}, handled=True)
        return frozen

    def _tell_complete(self, job: JobRow, values: list[float], attrs: dict[str, Any],
                       system: dict[str, Any]) -> optuna.trial.FrozenTrial | None:
        """Tell a trial COMPLETE as ``study.tell`` does (the sampler's ``after_trial``
        with the trial as stored, then the state and values), with its attributes, its
        event and the job's told mark in one transaction (``Store.tell_trial``) instead
        of one per attribute and two more reads of the trial."""
        import optuna

        storage = self.store.optuna_storage
        read = self._unfinished.get(job.trial_id)
        # A copy: the read's trials are the cached storage's own objects.
        frozen = copy.deepcopy(read) if read is not None else storage.get_trial(job.trial_id)
        if frozen.state.is_finished():
            return None  # told before a crash; idempotent
        # Nothing to replace: the trial as just read has no values and none of the keys.
        fresh = frozen.values is None and not (set(attrs) & set(frozen.user_attrs)) \
            and not (set(system) & set(frozen.system_attrs))
        frozen.user_attrs.update(attrs)  # what Optuna's tell would have read back
        frozen.system_attrs.update(system)
        self._tell_event(
            "trial_completed", study=self.name, trial_number=job.trial_number,
            payload={"values": dict(zip(self.spec.value_names, values)),
                     "feasible": feasible(frozen), "worker": job.worker}, handled=True)
        state = optuna.trial.TrialState.COMPLETE
        study = self.study
        study._thread_local.cached_all_trials = None  # as Study.tell: the trials changed
        self._sampler_after_trial(frozen, values)
        completed = self.store.tell_trial(job.trial_id, values, user_attrs=attrs, system_attrs=system,
                                          job_id=job.id, events=self._tell_events,  # type: ignore[arg-type]  # a stored row has an id
                                          fresh=fresh)
        if completed is None:
            return None
        self._marked_told = True  # the tell wrote the told mark and the events
        self._told_complete += 1
        frozen.state, frozen.values, frozen.datetime_complete = state, values, completed
        return frozen

    def _sampler_after_trial(self, frozen: optuna.trial.FrozenTrial, values: list[float]) -> None:
        """The sampler's ``after_trial`` for a trial about to be told COMPLETE, with the
        study as Optuna's tell passes it."""
        import optuna

        study = self.study
        filtered = getattr(optuna.pruners, "_filter_study", None)
        if filtered is not None:
            study = filtered(study, frozen)
        study.sampler.after_trial(study, frozen, optuna.trial.TrialState.COMPLETE, values)

    def _tell_event(self, kind: str, **event: Any) -> None:
        """An event of the trial being told: written with the job's told mark (``collect``)."""
        self._tell_events.append({"kind": kind, **event})

    # ------------------------------------------------------------------ summary
    def _oriented(self, values: list[float]) -> list[float]:
        return [v if d == "minimize" else -v for v, d in zip(values, self.spec.directions)]

    def stated_reference_point(self) -> list[float | None] | None:
        """The reference point the model-based samplers aim at, in the values' own
        directions: the one the spec or the objective states, else, per objective, the
        spec's or objective's value or the bound of a constraint on it (``time_seconds <=
        T``: a user who says so values nothing beyond T), with ``None`` for an objective
        nothing bounds; ``None`` when nothing bounds any objective, or the study is
        scalarized."""
        stated = self._stated_reference()
        if stated is not None:
            return list(stated[0])
        partial = self._bounded_reference()
        return partial if any(v is not None for v in partial) else None

    def _stated_reference(self) -> tuple[list[float], str] | None:
        stated = self._stated("reference_point")
        if stated is not None:
            return stated
        partial = self._bounded_reference()
        if all(v is not None for v in partial):
            return [float(v) for v in partial if v is not None], "constraints"
        return None

    def _stated(self, kind: str) -> tuple[list[float], str] | None:
        """``kind`` (reference_point / ideal_point) as the spec or the objective states it
        for every value, in the values' own directions, and who stated it."""
        names = self.spec.value_names
        for point, source in ((getattr(self.spec, kind), "spec"), (getattr(self.resolved.objective, kind, None),
                                                                     "objective")):
            if point and all(n in point for n in names):
                return [float(point[n]) for n in names], source
        return None

    def ideal_point(self, complete: list[optuna.trial.FrozenTrial],
                    reference: list[float] | None) -> tuple[list[float] | None, str | None]:
        """The normalized hypervolume's ideal point (minimization orientation) and its
        source: stated (spec, objective), stored, or derived once from the first trials
        (:func:`~hpod.core.pareto.derive_ideal_point`) and then kept, so the normalized
        hypervolume is comparable over the study's life."""
        stated = self._stated("ideal_point")
        if stated is not None:
            return self._oriented(stated[0]), stated[1]
        saved = self.store.get_state(self.name, HYPERVOLUME_STATE_KEY) or {}
        if saved.get("ideal_point") is not None:
            return [float(v) for v in saved["ideal_point"]], saved.get("ideal_point_source")
        if reference is None or len(complete) < _REF_MIN_TRIALS:
            return None, None
        pts = np.array([self._oriented(list(t.values))
                        for t in complete[:max(_REF_MIN_TRIALS, 2 * len(self.spec.value_names))]])
        return [float(v) for v in derive_ideal_point(pts, np.array(reference))], "derived"

    def _bounded_reference(self) -> list[float | None]:
        """Per value: the spec's reference value, the objective's, or the tightest bound
        of a constraint that bounds it in the direction it is optimised; None if none."""
        if self.strategy.kind == "scalarized":
            return [None] * len(self.spec.value_names)
        out: list[float | None] = []
        for name, direction in zip(self.spec.value_names, self.spec.directions):
            value: float | None = None
            for ref in (self.spec.reference_point, self.resolved.objective.reference_point):
                if ref and name in ref:
                    value = float(ref[name])
                    break
            if value is None:
                upper = direction == "minimize"
                bounds = [c.bound for c in self.constraints
                          if c.metric == name and (c.op in ("<=", "<")) == upper]
                if bounds:
                    value = min(bounds) if upper else max(bounds)
            out.append(value)
        return out

    def reference_point(self, complete: list[optuna.trial.FrozenTrial]) -> tuple[list[float] | None, str | None]:
        """The hypervolume reference point (minimization orientation) and its source."""
        names = self.spec.value_names
        stated = self._stated_reference()
        if stated is not None:
            return self._oriented(stated[0]), stated[1]
        row = self.store.get_study(self.name)
        if row is not None and row.reference_point_json:
            return json.loads(row.reference_point_json), row.reference_point_source
        if len(complete) < _REF_MIN_TRIALS:
            return None, None

        pts = np.array([self._oriented(list(t.values)) for t in complete[:max(_REF_MIN_TRIALS, 2 * len(names))]])
        return self._with_bounds([float(v) for v in derive_reference_point(pts)])

    def _with_bounds(self, derived: list[float]) -> tuple[list[float], str]:
        """A derived reference point (minimization orientation) with the coordinates that
        constraints or stated values bound replaced by those bounds."""
        bounded = self._bounded_reference()
        if all(v is None for v in bounded):
            return derived, "derived"
        oriented = [d if b is None else (b if direction == "minimize" else -b)
                    for d, b, direction in zip(derived, bounded, self.spec.directions)]
        return oriented, "derived+constraints"

    def _compute_summary(self, trials: list[optuna.trial.FrozenTrial] | None = None) -> StudySummary:
        """The summary from the study's trials as read now, or from ``trials`` (every
        trial of the study, as a read just gave them)."""
        ledger = self._finished
        live: dict[str, int] = {}
        new_complete = False
        for t in self.study.get_trials(deepcopy=False) if trials is None else trials:
            if not t.state.is_finished():
                live[t.state.name] = live.get(t.state.name, 0) + 1
            elif not ledger.is_folded(t):
                ledger.fold(t)
                new_complete |= t.state.name == "COMPLETE"
        self._none_waiting = "WAITING" not in live
        counts = dict(ledger.counts)
        for state, n in live.items():
            counts[state] = counts.get(state, 0) + n
        finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) + ledger.objective_failures
        pareto = ledger.pareto_numbers()
        ref = self._summary_reference()
        ideal = self._summary_ideal(ref)
        best: dict[str, float] = {}
        hv: float | None = None
        hv_raw: float | None = None
        if pareto:
            best = dict(zip(self.spec.value_names, ledger.best()))
            if self.strategy.kind == "scalarized" and ledger.top is not None:
                # F alone says little to a user: show the components of the best trial too.
                metrics = ledger.top[2]
                best.update({n: float(metrics[n]) for n in self.spec.objective_names if n in metrics})
            key = (tuple(pareto), tuple(ref) if ref is not None else None, tuple(ideal) if ideal else None)
            if ref is not None and key == self._hv_cache[0]:
                hv, hv_raw = self._hv_cache[1]
            elif ref is not None:
                try:
                    front = np.array([ledger.front[n] for n in pareto])
                    hv_raw = hypervolume(front, np.array(ref))
                    if ideal is not None:
                        hv = normalized_hypervolume(front, np.array(ideal), np.array(ref))
                    self._hv_cache = (key, (hv, hv_raw))
                except ValueError as exc:
                    log.warning("hypervolume failed: %s", exc)
        running = counts.get("RUNNING", 0)
        return StudySummary(name=self.name, counts=counts, finished=finished, running=running, pareto=pareto,
                            hypervolume=hv, reference_point=ref, best=best, energy_spent_joules=ledger.energy_joules,
                            infra_failures=ledger.infra_failures, objective_failures=ledger.objective_failures,
                            extra={"strategy": self.strategy.public_state()}, hypervolume_raw=hv_raw,
                            ideal_point=ideal)

    def _summary_reference(self) -> list[float] | None:
        """The summary's reference point: stated, or the one stored with the study (fixed
        once set, so looked up until found), or derived from the first completed trials."""
        if self._reference is not None:
            return self._reference[0]
        stated = self._stated_reference()
        if stated is not None:
            self._reference = (self._oriented(stated[0]), stated[1])
            return self._reference[0]
        row = self.store.get_study(self.name)
        if row is not None and row.reference_point_json:
            self._reference = (json.loads(row.reference_point_json), row.reference_point_source or "derived")
            return self._reference[0]
        first = self._finished.first_complete
        if len(first) < _REF_MIN_TRIALS:
            return None
        return self._with_bounds([float(v) for v in derive_reference_point(np.array([p for _, p in first]))])[0]

    def _summary_ideal(self, reference: list[float] | None) -> list[float] | None:
        """The summary's ideal point (see :meth:`ideal_point`): stated or stored (then
        kept), else derived from the first completed trials."""
        if self._ideal is not None:
            return self._ideal
        stated = self._stated("ideal_point")
        if stated is not None:
            self._ideal, self._ideal_source = self._oriented(stated[0]), stated[1]
            return self._ideal
        saved = self.store.get_state(self.name, HYPERVOLUME_STATE_KEY) or {}
        if saved.get("ideal_point") is not None:
            self._ideal = [float(v) for v in saved["ideal_point"]]
            self._ideal_source = saved.get("ideal_point_source")
            return self._ideal
        first = self._finished.first_complete
        if reference is None or len(first) < _REF_MIN_TRIALS:
            return None
        self._ideal_source = "derived"
        return [float(v) for v in derive_ideal_point(np.array([p for _, p in first]), np.array(reference))]

    def update_store_summary(self, *, final: bool = False, refresh: bool = True,
                             defer: bool = False) -> StudySummary:
        """Write the summary to the study's row (read afresh unless not ``refresh``: the
        caller has just computed it); ``final`` when the study stops (saves what is
        otherwise saved at most every few seconds); ``defer``: keep the write for the
        next ask's transaction or :meth:`flush_summary`."""
        s = self.summary(refresh=refresh)
        fields: dict[str, Any] = {
            "hypervolume": s.hypervolume, "pareto_front_size": len(s.pareto),
            "energy_spent_joules": s.energy_spent_joules,
            "counts_json": json.dumps(s.counts), "best_json": json.dumps(s.best), "last_activity_at": time.time(),
        }
        strategy_state = s.extra.get("strategy")
        if strategy_state is not None:
            fields["strategy_json"] = json.dumps(strategy_state, default=float)
        if s.reference_point is not None and not self._reference_saved:
            row = self.store.get_study(self.name)
            self._reference_saved = row is not None and row.reference_point_json is not None
            if row is not None and row.reference_point_json is None:
                stated = self._stated_reference()
                source = stated[1] if stated is not None else self._with_bounds(list(s.reference_point))[1]
                fields["reference_point_json"] = json.dumps(s.reference_point)
                fields["reference_point_source"] = source
                self._reference_saved = True
        states: dict[str, Any] = {}
        if s.ideal_point is not None:
            # The source of the ideal point the summary used (see _summary_ideal).
            states[HYPERVOLUME_STATE_KEY] = {
                "ideal_point": s.ideal_point, "ideal_point_source": self._ideal_source or "derived",
                "reference_point": s.reference_point, "raw": s.hypervolume_raw, "normalized": s.hypervolume}
        # The row and the hypervolume's state: one transaction per summary, or none of
        # its own when deferred (a summary replaces any older one not yet written).
        self._pending_summary = (fields, states)
        if not defer:
            self.flush_summary()
        self._save_sampler_seconds(now=final)
        return s

    def flush_summary(self) -> None:
        """Write the summary :meth:`collect` deferred, unless an ask wrote it already.
        Raises StorageError (the summary stays pending)."""
        pending = self._pending_summary
        if pending is not None:
            self.store.update_study(self.name, states=pending[1], **pending[0])
            self._pending_summary = None

    def _save_sampler_seconds(self, *, now: bool = False) -> None:
        """Store the sampler's seconds per suggestion: at most every few seconds (one
        write less per trial), and ``now`` when the study stops."""
        due = now or time.monotonic() - self._sampler_seconds_saved_at >= SAMPLER_SECONDS_SAVE_SECONDS
        if self._sampler_seconds_dirty and due:
            self.store.put_state(self.name, SAMPLER_SECONDS_KEY, self._sampler_seconds)
            self._sampler_seconds_dirty = False
            self._sampler_seconds_saved_at = time.monotonic()

    def finish(self, state: str = "completed") -> None:
        s = self.update_store_summary(final=True)
        self.store.update_study(self.name, state=state)
        if state == "completed":
            self.store.append_event("study_completed", study=self.name, payload={
                "finished": s.finished, "hypervolume": s.hypervolume, "pareto_front_size": len(s.pareto),
                "reason": self.budget_exhausted()}, handled=True)


def _tellable(values: list[float], n: int) -> bool:
    """Values Optuna's tell accepts as COMPLETE (else it fails the trial with a warning)."""
    try:
        return len(values) == n and not any(math.isnan(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


def is_finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def create_strategy(engine: Engine) -> Strategy:
    """The strategy the spec names (``strategy.kind``), bound to ``engine``."""
    kind = engine.spec.strategy.kind
    if kind == "scalarized":
        return ScalarizedStrategy(engine)
    if kind == "pbt":
        return PBTStrategy(engine)
    return Strategy(engine)


def trial_handlers(store: Any, spec: Any, state_dir: Any) -> tuple[Any, Any]:
    """``(report_handler, seed_handler)`` of a study, for an executor outside the
    controller's process (``hpod worker``): install them as
    ``executor.report_handlers[spec.name]`` / ``executor.seed_handlers[spec.name]``.
    Either is None when the study has no pruner / no adaptive seeds. They read the
    study's trials from the shared store, so their view is as fresh as the database."""

    engine = Engine(store, spec, state_dir=state_dir)
    return engine.report_handler, engine.seed_handler
