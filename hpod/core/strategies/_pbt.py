"""Population-based training: members train in intervals, each interval a normal job
that resumes from the member's checkpoint; between generations the bottom quantile
copies a top member (exploit) and perturbs or resamples its hyperparameters (explore).

Checkpoints: before an interval is queued, its starting checkpoint is copied to
``<state_dir>/pbt/<study>/gen-<g>/member-<i>/`` with a ``pbt.json`` that tells the
objective how many steps to train (``{"interval_steps", "member", "generation"}``);
the job carries the path as ``hpod.resume_from`` (the trial sees it as
``ctx.resume_from``), so any worker that can read the state directory can run it,
and a job lost with its node is re-queued from the same checkpoint. The objective
writes the member's new checkpoint under ``ctx.artifact_dir``.

State (``store.put_state(study, "strategy.pbt")``): the members (parameters, last
checkpoint, score history), the pending intervals, the median score of each
generation and the lineage: who copied whom, at which generation, with which mutation.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpod.core.samplers import SamplerChoice
from hpod.core.strategies._base import EngineView, Strategy

if TYPE_CHECKING:
    import optuna

    from hpod.core.samplers import SamplerChoice
    from hpod.store import JobRow, Store

__all__ = ["RESUME_KEY", "STATE_KEY", "PBTStrategy", "pbt_lineage", "pbt_state"]

log = logging.getLogger(__name__)
STATE_KEY = "strategy.pbt"
#: one event per interval (member, generation, trial, score, copied_from, mutation), for ``hpod report``
EVENTS_KEY = "pbt_lineage"
#: the job parameter the executor turns into the trial's ``resume_from``
RESUME_KEY = "hpod.resume_from"


class PBTStrategy(Strategy):
    kind = "pbt"

    def __init__(self, engine: EngineView):
        super().__init__(engine)
        spec = engine.spec
        self.options = spec.strategy
        first = spec.objectives[0]
        self.metric = self.options.metric or first.name
        direction = next(o.direction for o in spec.objectives if o.name == self.metric)
        self.sign = 1.0 if direction == "minimize" else -1.0
        self.population = self.options.population
        self.root = engine.state_dir / "pbt" / engine.name
        self.state: dict[str, Any] = engine.store.get_state(engine.name, STATE_KEY) or {
            "generation": 0,
            "members": [{"member": i, "params": None, "checkpoint": None, "score": None, "scores": []}
                        for i in range(self.population)],
            "queued": [],  # members of the current generation already queued
            "pending": {},  # trial number -> {member, generation, resume}
            "results": {},  # member -> score of the current generation
            "medians": [],
            "lineage": [],
            "done": False,
        }

    # ------------------------------------------------------------------ plumbing
    def _save(self) -> None:
        self.engine.store.put_state(self.engine.name, STATE_KEY, self.state)
        self.engine.store.put_state(self.engine.name, EVENTS_KEY, self.state.get("events", []))

    def create_sampler(self) -> SamplerChoice:
        import optuna


        # The first generation is a random population; later ones come from exploit/explore.
        return SamplerChoice(optuna.samplers.RandomSampler(seed=self.engine.spec.sampler.seed), "random",
                             "pbt strategy: random initial population, then exploit/explore")

    def budget_exhausted(self) -> str | None:
        return "generations" if self.state["done"] else None

    def _prepare_resume(self, member: dict[str, Any], generation: int) -> Path:
        dest = self.root / f"gen-{generation}" / f"member-{member['member']}"
        if dest.exists():
            shutil.rmtree(dest)
        src = member.get("checkpoint")
        if src and Path(src).is_dir():
            shutil.copytree(src, dest)
        else:
            dest.mkdir(parents=True, exist_ok=True)
        (dest / "pbt.json").write_text(json.dumps({
            "interval_steps": self.options.interval_steps, "member": member["member"], "generation": generation,
            "study": self.engine.name}), encoding="utf-8")
        return dest

    def _clip(self, params: dict[str, Any]) -> dict[str, Any]:
        import optuna

        out = {}
        for name, value in params.items():
            dist = self.engine.distributions.get(name)
            if isinstance(dist, optuna.distributions.FloatDistribution):
                out[name] = float(min(max(value, dist.low), dist.high))
            elif isinstance(dist, optuna.distributions.IntDistribution):
                out[name] = int(min(max(round(value), dist.low), dist.high))
            else:
                out[name] = value
        return out

    def _queue(self, member: dict[str, Any], generation: int, params: dict[str, Any] | None,
               resume: Path | None = None, attempt: int = 1) -> JobRow:
        study = self.engine.study
        if params is not None:
            study.enqueue_trial(self._clip(params), skip_if_exists=False)
        trial = study.ask(self.engine.distributions)
        params = dict(trial.params)
        if resume is None:
            resume = self._prepare_resume(member, generation)
        trial.set_user_attr("hpod.pbt", {"member": member["member"], "generation": generation,
                                         "resume_from": str(resume)})
        trial.set_user_attr("hpod.ask", {"attempt": attempt, "sampler": "pbt", "retry_of": None})
        job = self.engine.store.create_job(study=self.engine.name, trial_id=trial._trial_id,
                                           trial_number=trial.number, params={**params, RESUME_KEY: str(resume)},
                                           attempt=attempt, priority=self.engine.spec.priority)
        member["params"] = params
        self.state["pending"][str(trial.number)] = {"member": member["member"], "generation": generation,
                                                    "resume": str(resume)}
        return job

    # ------------------------------------------------------------------ ask
    def ask(self, n: int) -> list[JobRow]:
        if self.state["done"]:
            return []
        g = self.state["generation"]
        jobs: list[JobRow] = []
        for member in self.state["members"]:
            if len(jobs) >= n:
                break
            if member["member"] in self.state["queued"]:
                continue
            jobs.append(self._queue(member, g, member["params"]))
            self.state["queued"].append(member["member"])
        if jobs:
            self._save()
        return jobs

    def requeue_lost(self, job: JobRow, reason: str) -> bool:
        entry = self.state["pending"].pop(str(job.trial_number), None)
        if entry is None:
            return False
        member = self.state["members"][entry["member"]]
        if job.attempt > self.engine.spec.budget.max_retries:
            self._record(member, entry["generation"], None, None)
            return False
        # The member resumes from the same checkpoint on whichever slot claims it next.
        params = {k: v for k, v in json.loads(job.params_json).items() if k != RESUME_KEY}
        self._queue(member, entry["generation"], params, resume=Path(entry["resume"]), attempt=job.attempt + 1)
        self._save()
        return True

    # ------------------------------------------------------------------ tell
    def after_tell(self, frozen: optuna.trial.FrozenTrial, job: JobRow) -> None:
        import optuna

        entry = self.state["pending"].get(str(frozen.number))
        if entry is None:
            return  # not an interval of this population, or re-queued by requeue_lost
        self.state["pending"].pop(str(frozen.number))
        member = self.state["members"][entry["member"]]
        score = None
        checkpoint = None
        if frozen.state == optuna.trial.TrialState.COMPLETE:
            metrics = frozen.user_attrs.get("hpod.metrics") or {}
            if self.metric in metrics and math.isfinite(float(metrics[self.metric])):
                score = float(metrics[self.metric])
            checkpoint = (frozen.user_attrs.get("hpod.info") or {}).get("artifact_dir")
        self._record(member, entry["generation"], score, checkpoint, trial=frozen.number)
        self._save()

    def _record(self, member: dict[str, Any], generation: int, score: float | None, checkpoint: str | None,
                trial: int | None = None) -> None:
        if score is not None:
            member["score"] = score
            member["checkpoint"] = checkpoint
        member["scores"].append([generation, trial, score])
        copied = member.pop("copied", None) or {}
        self.state.setdefault("events", []).append({
            "member": member["member"], "generation": generation, "trial": trial, "score": score,
            "copied_from": copied.get("copied_from"), "mutation": copied.get("mutation")})
        self.state["results"][str(member["member"])] = score
        if len(self.state["results"]) >= self.population and not self.state["pending"]:
            self._next_generation()

    def _next_generation(self) -> None:
        g = self.state["generation"]
        scores = {int(k): v for k, v in self.state["results"].items()}
        finite = [v for v in scores.values() if v is not None]
        self.state["medians"].append(statistics.median(finite) if finite else None)
        self.state["results"] = {}
        self.state["queued"] = []
        if self.options.generations is not None and g + 1 >= self.options.generations:
            self.state["done"] = True
            return
        self._exploit_explore(g, scores)
        self.state["generation"] = g + 1

    def _exploit_explore(self, generation: int, scores: dict[int, float | None]) -> None:
        rng = np.random.default_rng([self.engine.spec.sampler.seed or 0, generation])
        # Worst first: a failed interval (None) ranks below every scored one.
        def worst_first(member: int) -> float:
            score = scores[member]
            return math.inf if score is None else self.sign * score

        ranked = sorted(scores, key=worst_first)
        k = max(1, math.floor(self.population * self.options.quantile))
        top, bottom = ranked[:k], ranked[-k:]
        members = self.state["members"]
        for b in bottom:
            if b in top:
                continue
            donor = members[int(rng.choice(top))]
            params, mutation = self._explore(dict(donor["params"] or {}), rng)
            loser = members[b]
            self.state["lineage"].append({
                "generation": generation, "member": b, "copied_from": donor["member"],
                "donor_score": scores.get(donor["member"]), "replaced_score": scores.get(b),
                "donor_checkpoint": donor["checkpoint"], "mutation": mutation, "at": time.time(),
            })
            loser["checkpoint"], loser["params"] = donor["checkpoint"], params
            loser["copied"] = {"copied_from": donor["member"], "mutation": mutation}

    def _explore(self, params: dict[str, Any], rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, str]]:
        import optuna

        mutation: dict[str, str] = {}
        for name in self.options.perturb:
            dist = self.engine.distributions.get(name)
            if dist is None or name not in params:
                continue
            if rng.random() < self.options.resample_probability:
                params[name] = _sample(dist, rng)
                mutation[name] = "resample"
                continue
            factor = float(rng.choice(self.options.perturb_factors))
            value = params[name]
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                params[name] = _nearest_choice(dist.choices, value, factor)
            elif isinstance(value, (int, float)):
                params[name] = value * factor
            mutation[name] = f"x{factor:g}"
        return self._clip(params), mutation

    def public_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "generation": self.state["generation"], "population": self.population,
                "median_by_generation": self.state["medians"], "exploits": len(self.state["lineage"]),
                "done": self.state["done"]}


def _sample(dist: Any, rng: np.random.Generator) -> Any:
    import optuna

    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return dist.choices[int(rng.integers(len(dist.choices)))]
    if isinstance(dist, optuna.distributions.IntDistribution):
        return int(rng.integers(dist.low, dist.high + 1))
    if dist.log:
        return float(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high))))
    return float(rng.uniform(dist.low, dist.high))


def _nearest_choice(choices: Any, value: Any, factor: float) -> Any:
    """The numeric choice nearest ``value·factor``, at least one step away from ``value``
    in the factor's direction (if there is one)."""
    numeric = [c for c in choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
    if not isinstance(value, (int, float)) or not numeric:
        return value
    target = value * factor
    ordered = sorted(numeric)
    best = min(ordered, key=lambda c: abs(c - target))
    if best == value:
        idx = ordered.index(value) if value in ordered else 0
        idx = min(len(ordered) - 1, idx + 1) if factor > 1 else max(0, idx - 1)
        best = ordered[idx]
    return best


def pbt_state(store: Store, study: str) -> dict[str, Any]:
    """The stored PBT state of a study (members, medians per generation, lineage)."""
    return dict(store.get_state(study, STATE_KEY) or {})


def pbt_lineage(store: Store, study: str) -> list[dict[str, Any]]:
    """Every exploit step: ``{generation, member, copied_from, donor_score, replaced_score,
    donor_checkpoint, mutation: {param: "x1.2" | "resample"}, at}``."""
    return list(pbt_state(store, study).get("lineage", []))
