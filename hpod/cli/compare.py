"""``hpod compare`` and ``hpod export-adapter``: the experiment's before/after table,
and a study's chosen model exported where its framework loads it (for ``t5_lora`` a
LoRA adapter ``PeftModel.from_pretrained`` loads) — for any objective that offers
those capabilities."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from hpod.cli._common import (
    JsonOpt,
    StateDirOpt,
    StorageOpt,
    _print_json,
    app,
    err,
    out,
)
from hpod.cli._storage import _open_store
from hpod.core.selection import select_trial
from hpod.errors import UsageError
from hpod.execution.isolated import run_configuration
from hpod.objectives.base import (
    ComparesToBaseline,
    ExportsModel,
    LearnsFromExamples,
    Serves,
    capabilities,
    create_objective,
)
from hpod.spec import parse_spec, resolve

__all__ = ["COMPARE_KEY", "compare_study"]

#: state key holding the last comparison (the report shows it)
COMPARE_KEY = "compare"


def _fmt4(v: float | None) -> str:
    return "–" if v is None else f"{v:.4g}"


def _load(store: Any, study: str) -> Any:

    row = store.get_study(study)
    return parse_spec(json.loads(row.spec_json))


def _trial_by_number(store: Any, study: str, number: int) -> Any:
    trials = store.load_optuna_study(study).get_trials(deepcopy=False)
    for t in trials:
        if t.number == number:
            return t
    raise UsageError(f"study {study!r} has no trial {number} (it has {len(trials)} trials)")


def _chosen(store: Any, study: str, spec: Any, *, trial: int | None, policy: str) -> tuple[int, dict[str, Any],
                                                                                        str | None]:
    """(trial number, params, artifact dir) of an explicit trial or the policy's pick."""
    if trial is not None:
        t = _trial_by_number(store, study, trial)
        if t.state.name != "COMPLETE":
            raise UsageError(f"trial {trial} of {study!r} is {t.state.name}, not COMPLETE")
        return t.number, dict(t.params), (t.user_attrs.get("hpod.info") or {}).get("artifact_dir")

    if policy not in ("knee", "min-loss") and not policy.startswith("objective"):
        raise UsageError(f"--policy: expected knee, min-loss or 'objective NAME' (found {policy!r})")
    selection, _ = select_trial(store, study, spec=spec, policy=policy)
    if selection is None:
        raise UsageError(f"study {study!r} has no feasible completed trial to choose from")
    return selection.trial, dict(selection.params), selection.artifact_dir


@app.command("export-adapter")
def export_adapter_cmd(
    study: Annotated[str, typer.Argument(help="Study name.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write (must not exist or be empty).")],
    trial: Annotated[int | None, typer.Option("--trial", help="Trial number (default: --policy).")] = None,
    policy: Annotated[str, typer.Option("--policy", help="knee | min-loss | 'objective NAME'.")] = "knee",
    merge: Annotated[bool, typer.Option("--merge", help="Also write the merged model.")] = False,
    state_dir: StateDirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Write a trial's model where its framework loads it (t5_lora: `PeftModel.from_pretrained`)."""
    store, sd = _open_store(state_dir, storage)
    spec = _load(store, study)
    objective = create_objective(spec.objective.name, spec.objective.params)
    if not isinstance(objective, ExportsModel):
        raise UsageError(f"study {study!r} tunes {spec.objective.name}, which offers no model export "
                         f"(its capabilities: {', '.join(capabilities(objective)) or 'none'})")
    number, _, artifact_dir = _chosen(store, study, spec, trial=trial, policy=policy)
    if not artifact_dir or not Path(artifact_dir).exists():
        raise UsageError(f"trial {number} of {study!r} has no saved model (looked in {artifact_dir})")

    path = objective.export_model(Path(artifact_dir), out_dir, sd / "cache", merge=merge)
    err.print(f"exported the adapter of trial {number} to {path}")


def compare_study(store: Any, state_dir: Path, study: str, *, baseline: str = "default", best_trial: int | None = None,
                  policy: str = "knee", data: Path | None = None, codecarbon: bool = True) -> dict[str, Any]:
    """Retrain the baseline and the selected configuration; the before/after table."""

    spec = _load(store, study)
    objective_params = dict(spec.objective.params)
    if data is not None:
        if not data.exists():
            raise UsageError(f"--data: {data} does not exist")
        data_opts = dict(objective_params.get("data") or {})
        data_opts["source"] = str(data.resolve())
        objective_params["data"] = data_opts
    objective = create_objective(spec.objective.name, objective_params)
    objective.validate()
    resolved = resolve(spec, objective)
    number, best_params, _ = _chosen(store, study, spec, trial=best_trial, policy=policy)
    if baseline == "default":
        if not isinstance(objective, ComparesToBaseline):
            raise UsageError(f"--baseline default: objective {spec.objective.name} names no default baseline; "
                             "pass --baseline 'trial N'")
        baseline_params = dict(objective.baseline_params)
        baseline_label = objective.baseline_label
    else:
        text = baseline.replace("trial", "").strip()
        if not text.isdigit():
            raise UsageError(f"--baseline: expected 'default' or 'trial N' (found {baseline!r})")
        _, baseline_params, _ = _chosen(store, study, spec, trial=int(text), policy=policy)
        baseline_label = f"trial {text}"
    fixed = resolved.fixed
    work = state_dir / "compare" / study
    if work.exists():
        shutil.rmtree(work)
    results: dict[str, Any] = {}
    for label, params in (("baseline", {**fixed, **baseline_params}), ("best", {**fixed, **best_params})):
        err.print(f"training the {label} configuration: {params}")
        result, reason = run_configuration(
            objective_name=spec.objective.name, objective_params=objective_params, params=params,
            seeds=spec.seeds, artifact_dir=work / label, cache_dir=state_dir / "cache", required=["loss"],
            objective=objective, codecarbon=codecarbon, label=f"compare-{label}")
        if result is None:
            raise UsageError(f"the {label} configuration failed: {reason}")
        results[label] = {"params": params, **result}

    def figures(r: dict[str, Any]) -> dict[str, Any]:
        return {**r["metrics"], **r["measurements"]}

    rows: list[dict[str, Any]]
    if isinstance(objective, ComparesToBaseline):
        rows = objective.compare_rows(figures(results["baseline"]), figures(results["best"]))
    else:
        rows = []
        for key in sorted(set(results["baseline"]["metrics"]) & set(results["best"]["metrics"])):
            b, a = results["baseline"]["metrics"][key], results["best"]["metrics"][key]
            rows.append({"metric": key, "key": key, "baseline": b, "best": a,
                         "change_percent": (a - b) / abs(b) * 100 if b else None})
    sample: dict[str, Any] | None = None
    if isinstance(objective, Serves) and isinstance(objective, LearnsFromExamples):
        # one held-out validation record, predicted by both trained models
        held_out = objective.validation_examples(1)
        if held_out:
            field_in, field_out = objective.label_schema.fields
            record = held_out[0]
            predicted = {label: objective.load_predictor(work / label, state_dir / "cache").predict(
                [record[field_in]])[0] for label in ("baseline", "best")}
            sample = {"article": record[field_in], "reference": record[field_out], **predicted}
    report = {
        "study": study, "baseline": baseline_label, "best_trial": number, "policy": policy if best_trial is None
        else f"trial {best_trial}", "baseline_params": results["baseline"]["params"],
        "best_params": results["best"]["params"], "rows": rows, "sample": sample,
        "measurements": {k: v["measurements"] for k, v in results.items()},
    }
    store.put_state(study, COMPARE_KEY, report)
    return report


@app.command()
def compare(
    study: Annotated[str, typer.Argument(help="Study name.")],
    baseline: Annotated[str, typer.Option("--baseline", help="'default' or 'trial N'.")] = "default",
    trial: Annotated[int | None, typer.Option("--trial", help="Best trial (default: --policy).")] = None,
    policy: Annotated[str, typer.Option("--policy", help="knee | min-loss | 'objective NAME'.")] = "knee",
    data: Annotated[Path | None, typer.Option("--data", help="Evaluate on this JSONL/CSV/Parquet file.")] = None,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Retrain the baseline and the best configuration; print the before/after table."""
    store, sd = _open_store(state_dir, storage)
    report = compare_study(store, sd, study, baseline=baseline, best_trial=trial, policy=policy, data=data)
    if as_json:
        _print_json(report)
        return
    t = Table(title=f"{study}: baseline {report['baseline']} vs trial {report['best_trial']} ({report['policy']})")
    for col in ("metric", "baseline", "optimized", "change"):
        t.add_column(col, justify="right" if col != "metric" else "left")
    for r in report["rows"]:
        change = f"{r['change_percent']:+.1f} %" if r.get("change_percent") is not None else "–"
        t.add_row(r["metric"], _fmt4(r["baseline"]), _fmt4(r["best"]), change)
    out.print(t)
    if report["sample"]:
        s = report["sample"]
        out.print(f"[bold]article[/]: {s['article'][:300]}")
        out.print(f"[bold]reference[/]: {s['reference']}")
        out.print(f"[bold]non-optimized[/]: {s['baseline']}")
        out.print(f"[bold]optimized[/]: {s['best']}")
    sys.stdout.flush()
