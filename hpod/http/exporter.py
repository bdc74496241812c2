"""Prometheus metrics for the hpod daemon: a scrape-time collector over a store snapshot,
in-process histograms for per-trial observations, and the HTTP server that serves them.

Everything is registered on a registry the daemon owns (``registry=``), never on
prometheus_client's global one. Names follow docs/ARCHITECTURE.md: ``hpod_`` prefix,
base units, ``_total`` for counters, labels bounded (study name yes, trial number never).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, TypeGuard

from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from hpod.core.views import DriftSnapshot, RetuneSnapshot, Snapshot, StudySnapshot
from hpod.errors import UsageError
from hpod.http.server import parse_address
from hpod.spec import base_unit
from hpod.store import EVENT_KINDS

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

__all__ = [
    "DURATION_BUCKETS_SECONDS",
    "ENERGY_BUCKETS_JOULES",
    "FINISHED_TRIAL_STATES",
    "MEMORY_BUCKETS_BYTES",
    "STUDY_STATES",
    "SUGGEST_BUCKETS_SECONDS",
    "DriftSnapshot",
    "HpodCollector",
    "MetricsServer",
    "RetuneSnapshot",
    "Snapshot",
    "StudySnapshot",
    "TrialObserver",
    "create_registry",
    "start_metrics_server",
]

log = logging.getLogger(__name__)

# Trial states that only ever grow, so they can be a counter. RUNNING and WAITING go
# down again and are exported as gauges (hpod_trials_running / hpod_trials_waiting).
# The three Optuna terminal states are always exported, at 0 if need be, so that
# rate()/increase() see the first failure instead of a series appearing from nothing.
# ``rejected`` counts suggestions the engine closed unrun because they repeated an
# evaluated configuration of the study (hpod_trials_total{state="rejected"}).
FINISHED_TRIAL_STATES: tuple[str, ...] = ("complete", "fail", "pruned", "rejected")
_GAUGE_TRIAL_STATES = frozenset({"running", "waiting"})

# Study lifecycle states exported as hpod_study_state{state} (1 for the current one).
STUDY_STATES: tuple[str, ...] = ("pending", "running", "paused", "completed", "cancelled", "failed")
_FINISHED_STUDY_STATES = frozenset({"completed", "cancelled", "failed"})

# Trials last from seconds (synthetic objectives) to a day (full fine-tunes).
DURATION_BUCKETS_SECONDS: tuple[float, ...] = (
    1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400,
)
# Peak memory from 64 MiB (CPU toy runs) to 256 GiB (an H200 plus host memory), powers of 2.
MEMORY_BUCKETS_BYTES: tuple[float, ...] = tuple(float(2**e) for e in range(26, 39))
# One trial's energy: 10 J (a CPU toy) to 10 MJ (~4 h at 700 W).
ENERGY_BUCKETS_JOULES: tuple[float, ...] = (
    10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7,
)
# Sampler suggest latency: random (~1 ms) to BoTorch qLogNEHVI (~10 s on 2 cores).
SUGGEST_BUCKETS_SECONDS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)


#: ``hpod_study_best_<unit>``: one family per base unit, so each series has one unit
#: (objectives named ``*_seconds``, ``*_bytes``, ``*_joules``, as hpod's meters are);
#: the others (loss, scores, the scalarized F) have no unit: ``hpod_study_best_value``.
BEST_FAMILIES: dict[str | None, tuple[str, str]] = {
    "seconds": ("hpod_study_best_seconds", "Best value so far of each objective measured in seconds."),
    "bytes": ("hpod_study_best_bytes", "Best value so far of each objective measured in bytes."),
    "joules": ("hpod_study_best_joules", "Best value so far of each objective measured in joules."),
    None: ("hpod_study_best_value", "Best value so far of each objective without a base unit "
                                    "(loss, scores, a scalarized study's F)."),
}

#: Finished studies stop being exported this long (seconds) after their last activity
#: by default; they stay in the database, ``hpod status`` and the API.
DEFAULT_RETENTION_SECONDS = 86400.0


def create_registry() -> CollectorRegistry:
    """A registry for the daemon with prometheus_client's own collectors on it:
    ``process_*`` (CPU, memory, open files of the daemon's process), ``python_info``
    and ``python_gc_*``."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def _finite(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


class HpodCollector(Collector):
    """Exports a :class:`Snapshot` taken by ``snapshot()`` at every scrape.

    ``collect`` never raises: if ``snapshot()`` fails, or one section of the snapshot
    holds something unexportable, the error is logged, counted in
    ``hpod_exporter_errors_total{section}`` and the rest of the scrape (this
    collector's other sections and every other collector on the registry) goes on.
    ``collect`` may run on several scrape threads at once; ``snapshot`` must allow that.

    With ``observer``, every unfinished study in a snapshot gets its histogram series created at 0
    (:meth:`TrialObserver.add_study`) before its first trial ends: a series that appears
    already holding its first observation is invisible to ``rate()``/``increase()``.

    A finished study (completed, cancelled, failed) is retired ``retention_seconds`` after
    its last activity: its series (and its histograms in ``observer``) are no longer
    exported, so a daemon that adds a study a day keeps a bounded scrape. It stays in
    the database, ``hpod status`` and the API.
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        registry: CollectorRegistry | None = None,
        observer: TrialObserver | None = None,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        clock: Callable[[], float] = time.time,
    ):
        if not callable(snapshot):
            raise TypeError(f"snapshot must be a callable returning a Snapshot, got {snapshot!r}")
        if isinstance(retention_seconds, bool) or not isinstance(retention_seconds, (int, float)) \
                or not retention_seconds >= 0:
            raise ValueError(f"retention_seconds must be a number >= 0, got {retention_seconds!r}")
        self._snapshot = snapshot
        self._retention = float(retention_seconds)
        self._clock = clock
        self._observer = observer
        self._errors: dict[str, int] = {}
        self._failing: set[str] = set()
        self._errors_lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def _count_error(self, section: str) -> None:
        with self._errors_lock:
            self._errors[section] = self._errors.get(section, 0) + 1
            first = section not in self._failing
            self._failing.add(section)
        # A store outage fails every scrape (every 15 s): the traceback is logged once
        # per outage, not once per scrape.
        if first:
            # Called from the except blocks of collect(): the exception is the active one.
            log.exception("metrics: exporting %r failed; skipped until it recovers", section)  # noqa: LOG004
        else:
            log.debug("metrics: exporting %r failed again", section, exc_info=True)  # noqa: LOG014

    def _count_success(self, section: str) -> None:
        if section in self._failing:  # unlocked read: a stale answer only delays a log line
            with self._errors_lock:
                self._failing.discard(section)
            log.info("metrics: exporting %r works again", section)

    def _errors_family(self) -> Metric:
        family = CounterMetricFamily(
            "hpod_exporter_errors",
            "Scrapes in which a section of the hpod exporter failed (see the daemon log).",
            labels=["section"],
        )
        with self._errors_lock:
            errors = dict(self._errors)
        for section in ("snapshot", "histograms", *_SECTIONS):
            family.add_metric([section], errors.get(section, 0))
        return family

    def _retire(self, snap: Snapshot) -> Snapshot:
        """``snap`` without the finished studies past their retention."""
        now = self._clock()
        kept, retired = [], []
        for study in snap.studies:
            finished = study.state.lower() in _FINISHED_STUDY_STATES
            if finished and study.last_activity_ts is not None and now - study.last_activity_ts > self._retention:
                retired.append(study.name)
            else:
                kept.append(study)
        if not retired:
            return snap
        if self._observer is not None:
            for name in retired:
                self._observer.forget_study(name)
        return dataclasses.replace(snap, studies=kept)

    def collect(self) -> Iterator[Metric]:
        try:
            snap = self._snapshot()
        except Exception:
            self._count_error("snapshot")
            yield self._errors_family()
            return
        self._count_success("snapshot")
        snap = self._retire(snap)
        if self._observer is not None:
            try:
                for study in snap.studies:
                    # finished studies start no more trials: no empty series for them
                    if study.state.lower() not in _FINISHED_STUDY_STATES:
                        self._observer.add_study(study.name)
            except Exception:
                self._count_error("histograms")
            else:
                self._count_success("histograms")
        for section, build in _SECTIONS.items():
            try:
                # Build a section completely before yielding any of it, so that a bad
                # value half-way never leaves a partial family in the exposition.
                families = list(build(snap))
            except Exception:
                self._count_error(section)
                continue
            self._count_success(section)
            yield from families
        yield self._errors_family()


def _daemon_families(snap: Snapshot) -> Iterable[Metric]:
    info = GaugeMetricFamily("hpod_build_info", "hpod version running; always 1.", labels=["version"])
    info.add_metric([str(snap.version)], 1)
    started = GaugeMetricFamily("hpod_start_time_seconds", "When the daemon started, Unix time in seconds.")
    started.add_metric([], float(snap.started_at))
    workers = GaugeMetricFamily("hpod_workers", "Workers known to the controller, by state.", labels=["state"])
    for state, count in sorted(snap.workers_by_state.items()):
        workers.add_metric([state.lower()], count)
    return [info, started, workers]


def _study_families(snap: Snapshot) -> Iterable[Metric]:
    trials = CounterMetricFamily(
        "hpod_trials", "Finished trials by study and final state.", labels=["study", "state"]
    )
    running = GaugeMetricFamily("hpod_trials_running", "Trials running now.", labels=["study"])
    waiting = GaugeMetricFamily("hpod_trials_waiting", "Trials queued and not started.", labels=["study"])
    energy = CounterMetricFamily(
        "hpod_trial_energy_joules", "Energy used by a study's trials, joules.", labels=["study"]
    )
    hypervolume = GaugeMetricFamily(
        "hpod_study_hypervolume",
        "Normalized hypervolume of the study's feasible Pareto front, 0..1: each objective scaled so that "
        "its ideal value is 0 and its reference value 1 (hpod status --json shows both points).",
        labels=["study"],
    )
    front = GaugeMetricFamily(
        "hpod_study_pareto_front_size", "Trials on the study's Pareto front.", labels=["study"]
    )
    best = {unit: GaugeMetricFamily(name, text, labels=["study", "objective"])
            for unit, (name, text) in BEST_FAMILIES.items()}
    budget_energy = GaugeMetricFamily(
        "hpod_study_energy_budget_joules", "The study's energy budget, joules.", labels=["study"]
    )
    budget_trials = GaugeMetricFamily(
        "hpod_study_trials_budget", "The study's trial budget (n_trials).", labels=["study"]
    )
    last_activity = GaugeMetricFamily(
        "hpod_study_last_activity_timestamp_seconds",
        "Last time a trial of the study started or finished, Unix time in seconds.",
        labels=["study"],
    )
    state = GaugeMetricFamily(
        "hpod_study_state", "1 for the study's current lifecycle state, 0 for the others.",
        labels=["study", "state"],
    )
    multiplier = GaugeMetricFamily(
        "hpod_lagrange_multiplier", "Lagrange multiplier of each constraint (scalarized strategy).",
        labels=["study", "constraint"],
    )
    for study in snap.studies:
        name = study.name
        by_state = {key.lower(): count for key, count in study.trials_by_state.items()}
        for trial_state in sorted(set(FINISHED_TRIAL_STATES) | (by_state.keys() - _GAUGE_TRIAL_STATES)):
            trials.add_metric([name, trial_state], by_state.get(trial_state, 0))
        running.add_metric([name], study.running)
        waiting.add_metric([name], by_state.get("waiting", 0))
        energy.add_metric([name], float(study.energy_joules_total))
        if _finite(study.hypervolume):
            hypervolume.add_metric([name], float(study.hypervolume))
        front.add_metric([name], study.pareto_front_size)
        for objective, value in sorted(study.best.items()):
            best[base_unit(objective)].add_metric([name, objective], float(value))
        if _finite(study.energy_budget_joules):
            budget_energy.add_metric([name], float(study.energy_budget_joules))
        if study.n_trials_budget is not None:
            budget_trials.add_metric([name], study.n_trials_budget)
        if _finite(study.last_activity_ts):
            last_activity.add_metric([name], float(study.last_activity_ts))
        current = study.state.lower()
        for lifecycle_state in sorted(set(STUDY_STATES) | {current}):
            state.add_metric([name, lifecycle_state], 1.0 if lifecycle_state == current else 0.0)
        for constraint, value in sorted(study.lagrange_multipliers.items()):
            multiplier.add_metric([name, constraint], float(value))
    return [
        trials, running, waiting, energy, hypervolume, front, *best.values(),
        budget_energy, budget_trials, last_activity, state, multiplier,
    ]


def _gpu_families(snap: Snapshot) -> Iterable[Metric]:
    info = GaugeMetricFamily("hpod_gpu_info", "GPUs on this node; always 1.", labels=["gpu", "name"])
    power = GaugeMetricFamily("hpod_gpu_power_watts", "GPU power draw, watts.", labels=["gpu"])
    used = GaugeMetricFamily("hpod_gpu_memory_used_bytes", "GPU memory in use, bytes.", labels=["gpu"])
    total = GaugeMetricFamily("hpod_gpu_memory_total_bytes", "GPU memory installed, bytes.", labels=["gpu"])
    utilization = GaugeMetricFamily(
        "hpod_gpu_utilization_ratio", "Fraction of the last sample period a kernel ran (0..1).",
        labels=["gpu"],
    )
    energy = CounterMetricFamily(
        "hpod_gpu_energy_joules", "GPU energy since the driver loaded (NVML counter), joules.",
        labels=["gpu"],
    )
    for gpu in snap.gpus:
        index = str(gpu.index)
        info.add_metric([index, gpu.name], 1)
        for family, value in (
            (power, gpu.power_watts),
            (used, gpu.memory_used_bytes),
            (total, gpu.memory_total_bytes),
            (utilization, gpu.utilization_ratio),
            (energy, gpu.energy_joules_counter),
        ):
            if _finite(value):  # unsupported on this device: leave the series out
                family.add_metric([index], float(value))
    return [info, power, used, total, utilization, energy]


def _event_families(snap: Snapshot) -> Iterable[Metric]:
    events = CounterMetricFamily("hpod_events", "Events appended to the events table, by kind.", labels=["kind"])
    # Every kind the store knows is exported, at 0 before it first happens (as above).
    for kind in sorted(set(EVENT_KINDS) | snap.events_by_kind.keys()):
        events.add_metric([kind], snap.events_by_kind.get(kind, 0))
    return [events]


def _drift_families(snap: Snapshot) -> Iterable[Metric]:
    score = GaugeMetricFamily(
        "hpod_drift_score", "Last score of each drift monitor (detector-specific scale).",
        labels=["study", "monitor"],
    )
    alarms = CounterMetricFamily(
        "hpod_drift_alarms", "Alarms raised by each drift monitor.", labels=["study", "monitor"]
    )
    for monitor in snap.drift:
        if _finite(monitor.score):
            score.add_metric([monitor.study, monitor.monitor], float(monitor.score))
        alarms.add_metric([monitor.study, monitor.monitor], monitor.alarms_total)
    retunes = CounterMetricFamily(
        "hpod_retunes", "Retunes started, by study and reason.", labels=["study", "reason"]
    )
    for retune in snap.retunes:
        retunes.add_metric([retune.study, retune.reason], retune.count)
    waiting = GaugeMetricFamily(
        "hpod_retune_waiting_for_labels", "1 while a study's retune waits for labelled records, else 0.",
        labels=["study"],
    )
    for w in snap.waiting:
        waiting.add_metric([w.study], 1.0 if w.waiting else 0.0)
    return [score, alarms, retunes, waiting]


def _cluster_families(snap: Snapshot) -> Iterable[Metric]:
    """The Ray cluster's nodes and resources as Ray reports them (only with the Ray executor)."""
    view = snap.cluster
    if not view:
        return []
    nodes = GaugeMetricFamily("hpod_cluster_nodes", "Nodes of the executor's cluster, by state.", labels=["state"])
    states = {"alive": 0, "dead": 0}
    for node in view.get("nodes", []):
        states["alive" if node.get("alive") else "dead"] += 1
    for state, count in states.items():
        nodes.add_metric([state], count)
    total = GaugeMetricFamily("hpod_cluster_resources_total",
                              "Resources of the executor's cluster (CPU, GPU, memory, custom) as it reports them.",
                              labels=["resource"])
    free = GaugeMetricFamily("hpod_cluster_resources_available",
                             "Resources of the executor's cluster not reserved by any task or actor now.",
                             labels=["resource"])
    for name, value in sorted((view.get("resources_total") or {}).items()):
        total.add_metric([name], float(value))
    for name in sorted(view.get("resources_total") or {}):
        free.add_metric([name], float((view.get("resources_available") or {}).get(name, 0.0)))
    node_free = GaugeMetricFamily("hpod_cluster_node_resources_available",
                                  "Free resources per alive node of the executor's cluster.",
                                  labels=["node", "resource"])
    for node in view.get("nodes", []):
        if node.get("alive"):
            for name, value in sorted((node.get("resources_available") or {}).items()):
                label = f"{node.get('address') or ''}/{str(node.get('node_id', ''))[:12]}"
                node_free.add_metric([label, name], float(value))
    return [nodes, total, free, node_free]


_SECTIONS: Mapping[str, Callable[[Snapshot], Iterable[Metric]]] = {
    "daemon": _daemon_families,
    "studies": _study_families,
    "gpus": _gpu_families,
    "events": _event_families,
    "drift": _drift_families,
    "cluster": _cluster_families,
}


class TrialObserver:
    """Histograms of per-trial observations, kept in the daemon's memory.

    Registers ``hpod_trial_duration_seconds{study,state}``, ``hpod_trial_memory_bytes{study}``,
    ``hpod_trial_energy_used_joules{study}`` (the energy of single trials; the per-study
    sum is ``hpod_trial_energy_joules_total``) and ``hpod_sampler_suggest_seconds{study}``
    on ``registry``. They restart empty with the daemon, as Prometheus histograms do.
    Thread-safe.
    """

    def __init__(self, registry: CollectorRegistry):
        if not isinstance(registry, CollectorRegistry):
            raise TypeError(f"registry must be a prometheus_client CollectorRegistry, got {registry!r}")
        self.trial_duration = Histogram(
            "hpod_trial_duration_seconds", "Wall time of finished trials, seconds.",
            ["study", "state"], buckets=DURATION_BUCKETS_SECONDS, registry=registry,
        )
        self.trial_memory = Histogram(
            "hpod_trial_memory_bytes", "Peak memory of finished trials, bytes.",
            ["study"], buckets=MEMORY_BUCKETS_BYTES, registry=registry,
        )
        self.trial_energy = Histogram(
            "hpod_trial_energy_used_joules", "Energy one finished trial used, joules.",
            ["study"], buckets=ENERGY_BUCKETS_JOULES, registry=registry,
        )
        self.suggest = Histogram(
            "hpod_sampler_suggest_seconds", "Time the sampler took to suggest one configuration, seconds.",
            ["study"], buckets=SUGGEST_BUCKETS_SECONDS, registry=registry,
        )

    def add_study(self, study: str) -> None:
        """Create a study's series at 0 (idempotent), so its first trial shows in rate()."""
        _check_label("study", study)
        for state in FINISHED_TRIAL_STATES:
            if state != "rejected":  # a rejected suggestion never ran: no duration
                self.trial_duration.labels(study, state)
        self.trial_memory.labels(study)
        self.trial_energy.labels(study)
        self.suggest.labels(study)

    def observe_trial(
        self,
        study: str,
        state: str,
        duration_seconds: float,
        memory_bytes: float | None,
        energy_joules: float | None,
    ) -> None:
        """Record one finished trial; ``None`` means "not measured" and records nothing.

        Raises ``ValueError`` for an empty study/state or a negative or non-finite figure.
        """
        _check_label("study", study)
        _check_label("state", state)
        _check_amount("duration_seconds", duration_seconds)
        if memory_bytes is not None:
            _check_amount("memory_bytes", memory_bytes)
        if energy_joules is not None:
            _check_amount("energy_joules", energy_joules)
        self.trial_duration.labels(study, state.lower()).observe(duration_seconds)
        if memory_bytes is not None:
            self.trial_memory.labels(study).observe(memory_bytes)
        if energy_joules is not None:
            self.trial_energy.labels(study).observe(energy_joules)

    def observe_suggest(self, study: str, seconds: float) -> None:
        """Record how long one ``ask`` (sampler suggestion) took, in seconds."""
        _check_label("study", study)
        _check_amount("seconds", seconds)
        self.suggest.labels(study).observe(seconds)

    def forget_study(self, study: str) -> None:
        """Drop a deleted study's series, so they stop being exported."""
        for histogram in (self.trial_memory, self.trial_energy, self.suggest):
            try:
                histogram.remove(study)
            except KeyError:
                pass
        # duration is also labelled by state: remove every child of this study
        self.trial_duration.remove_by_labels({"study": study})


def _check_label(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def _check_amount(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


class MetricsServer:
    """A running ``/metrics`` HTTP server on its own daemon thread; ``close()`` stops it."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread):
        self._httpd = httpd
        self._thread = thread

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The bound port (the OS's choice when the address asked for port 0)."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self, timeout_seconds: float = 5.0) -> None:
        """Stop serving and release the port; waits up to ``timeout_seconds`` for the thread."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout_seconds)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_metrics_server(address: str, registry: CollectorRegistry) -> MetricsServer:
    """Serve ``registry`` in Prometheus text format at ``http://ADDRESS/metrics``.

    ``address`` is ``HOST:PORT`` (see :func:`hpod.http.server.parse_address`). Raises
    :class:`UsageError` when the address is malformed or cannot be bound (in use,
    not an address of this host).
    """
    from prometheus_client import start_http_server

    if not isinstance(registry, CollectorRegistry):
        raise TypeError(f"registry must be a prometheus_client CollectorRegistry, got {registry!r}")
    host, port = parse_address(address, what="metrics address", default_host="0.0.0.0")
    try:
        httpd, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise UsageError(f"metrics address {address!r} cannot be bound: {exc.strerror or exc}") from exc
    server = MetricsServer(httpd, thread)
    log.info("metrics: serving %s", server.url)
    return server
