"""Everything the CLI prints as tables: one place for the shapes of ``hpod status``,
``trials``, ``pareto`` and the daemon's status, whether read from the database or the API."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from hpod.cli._common import out
from hpod.core.selection import select_trial
from hpod.core.views import trial_records
from hpod.objectives.base import QUALITY_METRICS


def _running_text(current: list[dict[str, Any]]) -> str:
    """A worker's running trials as ``study#trial, ...`` (– when idle)."""
    return ", ".join(f"{c.get('study')}#{c.get('trial')}" for c in current) or "–"


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _ago(ts: float | None) -> str:
    import time

    if not ts:
        return "–"
    d = time.time() - ts
    if d < 60:
        return f"{d:.0f}s ago"
    if d < 3600:
        return f"{d / 60:.0f}m ago"
    if d < 86400:
        return f"{d / 3600:.1f}h ago"
    return f"{d / 86400:.1f}d ago"


def print_workers(workers: list[dict[str, Any]]) -> None:
    """Workers: node, state, slots, the trials they run, last heartbeat."""
    if not workers:
        return
    t = Table(title="workers")
    for col in ("worker", "node", "state", "slots", "running", "last heartbeat"):
        t.add_column(col)
    for w in workers:
        running = _running_text(w["current"])
        slots = str(w["slots"]) + (f" (GPU {w['gpus']})" if w["gpus"] else "")
        t.add_row(w["name"], w["node"], w["state"], slots, running, _ago(w["last_heartbeat"]))
    out.print(t)


def print_monitors_and_retunes(monitors: list[dict[str, Any]], retunes: list[dict[str, Any]]) -> None:
    """Drift monitors (score, alarms) and study versions (reason, outcome, serving)."""
    if monitors:
        t = Table(title="monitors")
        for col in ("study", "monitor", "kind", "source", "window", "texts to alarm", "score", "alarms",
                    "last alarm", "last check", "reference (source, size, since)", "error"):
            t.add_column(col)
        for m in monitors:
            ref = m.get("reference") or {}
            size = ref.get("size") if ref.get("size") is not None else "?"
            ref_text = f"{ref['source']}, {size} texts, {_ago(ref.get('since'))}" if ref.get("source") else "–"
            t.add_row(m["study"], m["monitor"], str(m.get("kind") or "–"), str(m.get("source") or "–"),
                      _fmt(m.get("window")), _fmt(m.get("samples_to_alarm")), _fmt(m.get("score")),
                      str(m.get("alarms_total", 0)), _ago(m.get("last_alarm")),
                      _ago(m.get("last_check")), ref_text[:80], (m.get("error") or "")[:60])
        out.print(t)
    if retunes:
        t = Table(title="versions and retunes")
        for col in ("study", "version", "parent", "reason", "state", "outcome", "serving"):
            t.add_column(col)
        for r in retunes:
            history = {h["child"]: h for h in r.get("history", [])}
            serving = r.get("serving") or {}
            for v in r["versions"]:
                outcome = (history.get(v["name"]) or {}).get("outcome") or {}
                text = ("switched" if outcome.get("switched") else outcome.get("why") or "kept") if outcome \
                    else ("running" if r.get("active") == v["name"] else "–")
                served = f"trial {serving.get('trial')}" if serving.get("study") == v["name"] else ""
                t.add_row(r["study"], v["name"], str(v.get("parent") or "–"), str(v.get("reason") or "–"),
                          v["state"], text, served)
        out.print(t)
        for r in retunes:
            waiting, labels = r.get("waiting"), r.get("labels") or {}
            if waiting:
                out.print(f"[yellow]{r['study']}: retune waiting_for_labels[/] since {_ago(waiting.get('since'))} "
                          f"({waiting.get('have')} of {waiting.get('need')} labelled records; {waiting.get('reason')})"
                          f" — post them with `hpod feedback {r['study']} FILE`", highlight=False)
            elif labels.get("pending_records"):
                out.print(f"{r['study']}: {labels['pending_records']} labelled record(s) not yet used by a retune "
                          f"(windows {labels.get('pending_windows')})", highlight=False)


def print_studies(studies: list[dict[str, Any]]) -> None:
    if not studies:
        out.print("no studies yet: `hpod run SPEC.yaml` starts one")
        return
    t = Table(title="studies")
    for col in ("study", "state", "done", "running", "failed", "pruned", "front", "hypervolume", "best", "energy",
                "sampler s/trial", "last activity"):
        t.add_column(col)
    for s in studies:
        c = s["trials"]
        done = c.get("COMPLETE", 0) + c.get("PRUNED", 0)
        best = ", ".join(f"{k}={_fmt(v)}" for k, v in s["best"].items())
        t.add_row(s["name"], s["state"], f"{done}/{s['n_trials'] or '∞'}", str(c.get("RUNNING", 0)),
                  str(c.get("FAIL", 0)), str(c.get("PRUNED", 0)), str(s["pareto_front_size"]),
                  _fmt(s["hypervolume"]), best, _energy(s),
                  _sampler_seconds(s.get("sampler_seconds")), _ago(s["last_activity"]))
    out.print(t)
    _print_strategies(studies)


def _energy(study: dict[str, Any]) -> str:
    """Energy spent, and the budget's limit when the study has one ("1.2e+05 / 5e+05 J")."""
    limit = study.get("energy_budget_joules")
    spent = f"{study['energy_spent_joules']:.4g}"
    return f"{spent} / {limit:.4g} J" if limit is not None else f"{spent} J"


def _sampler_seconds(stats: dict[str, Any] | None) -> str:
    """Mean (and last) seconds the sampler took per suggestion, or "-" before any."""
    if not stats:
        return "-"
    return f"{stats['mean']:.3g} s (last {stats['last']:.3g})"


def _print_strategies(studies: list[dict[str, Any]]) -> None:
    """One line per study whose strategy keeps state (Lagrange multipliers, PBT progress)."""
    for s in studies:
        st = s.get("strategy") or {}
        if st.get("kind") == "scalarized":
            mu = ", ".join(f"μ[{k}]={_fmt(float(v))}" for k, v in (st.get("multipliers") or {}).items())
            out.print(f"{s['name']}: scalarized, λ={_fmt(st.get('cost_weight'))}"
                      + (f", Lagrange multipliers {mu}" if mu else ""))
        elif st.get("kind") == "pbt":
            medians = [m for m in st.get("median_by_generation") or [] if m is not None]
            trend = f", median {_fmt(medians[0])} → {_fmt(medians[-1])}" if medians else ""
            out.print(f"{s['name']}: pbt, generation {st.get('generation')}, population {st.get('population')}, "
                      f"{st.get('exploits', 0)} exploit steps{trend}")


def print_pareto_table(store: Any, study: str) -> None:
    recs = trial_records(store, study, pareto_only=True)
    print_records(recs, title=f"Pareto front of {study} ({len(recs)} trials)")
    _print_selected(store, study, recs)


def _print_selected(store: Any, study: str, front: list[dict[str, Any]]) -> None:
    """The configuration a user would take (the front's knee) with its quality metrics."""
    if not front:
        return

    selection, _ = select_trial(store, study, policy="knee")
    if selection is None:
        return
    rec = next((r for r in front if r["number"] == selection.trial), None)
    if rec is None:
        return
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(rec["params"].items()))
    out.print(f"[bold]selected (knee of the front): trial {rec['number']}[/] — {params}")
    shown = {k: rec["metrics"][k] for k in QUALITY_METRICS if k in rec["metrics"]}
    values = {**(rec["values"] or {}), **shown}
    out.print("  " + ", ".join(f"{k}={_fmt(v)}" for k, v in values.items()))


def print_records(recs: list[dict[str, Any]], *, title: str) -> None:
    if not recs:
        out.print(f"{title}: none")
        return
    value_names = next((list(r["values"]) for r in recs if r["values"]), [])
    param_names = sorted({k for r in recs for k in r["params"]})
    t = Table(title=title)
    t.add_column("#", justify="right")
    t.add_column("state")
    for n in value_names:
        t.add_column(n, justify="right")
    for p in param_names:
        t.add_column(p, justify="right")
    t.add_column("feasible")
    t.add_column("energy method")
    for r in recs:
        vals = [_fmt(r["values"][n]) if r["values"] else "–" for n in value_names]
        params = [_fmt(r["params"].get(p)) for p in param_names]
        state = r["state"] if not r["fail_reason"] else f"FAIL: {r['fail_reason'][:40]}"
        method = (r["measurements"].get("energy_joules") or {}).get("method", "–")
        t.add_row(str(r["number"]), state, *vals, *params, "yes" if r["feasible"] else "no", method)
    out.print(t)


def _resources(values: dict[str, Any], keys: list[str]) -> str:
    parts = []
    for k in keys:
        v = values.get(k)
        if v is None:
            continue
        parts.append(f"{k} {v / 2**30:.1f} GiB" if k in ("memory", "object_store_memory") else f"{k} {v:g}")
    return ", ".join(parts) or "–"


def print_cluster(cluster: dict[str, Any] | None, console: Console) -> None:
    """The executor's cluster (Ray): each node with its total and free resources."""
    if not cluster:
        return
    total = cluster.get("resources_total") or {}
    keys = ["CPU", "GPU", *sorted(k for k in total if k not in ("CPU", "GPU", "memory", "object_store_memory")),
            "memory"]
    free = cluster.get("resources_available") or {}
    t = Table(title=f"{cluster.get('kind', 'cluster')} cluster {cluster.get('address', '')}: "
                    f"free {_resources(free, keys)} of {_resources(total, keys)}")
    for col in ("node", "address", "state", "resources", "free"):
        t.add_column(col)
    for n in cluster.get("nodes") or []:
        t.add_row(str(n.get("node_id", ""))[:12], str(n.get("address") or "–"),
                  "alive" if n.get("alive") else "dead", _resources(n.get("resources_total") or {}, keys),
                  _resources(n.get("resources_available") or {}, keys) if n.get("alive") else "–")
    console.print(t)


def print_daemon_status(status: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    d = status.get("daemon") or {}
    console.print(f"hpod {d.get('version', '?')} — up {d.get('uptime_seconds', 0):.0f}s — "
                  f"storage {status.get('storage', '?')}")
    slots = status.get("slots") or []
    if slots:
        t = Table(title="slots")
        for col in ("slot", "gpu", "trial", "power W", "memory"):
            t.add_column(col)
        for s in slots:
            gpu = s.get("gpu_index")
            power, memory = s.get("power_watts"), s.get("memory_used_bytes")
            t.add_row(str(s.get("name")), "–" if gpu is None else str(gpu), str(s.get("trial") or "idle"),
                      "–" if power is None else f"{power:.0f}",
                      "–" if memory is None else f"{memory / 2**30:.1f} GiB")
        console.print(t)
    print_cluster(status.get("cluster"), console)
    workers = status.get("workers") or []
    if workers:
        t = Table(title="workers")
        for col in ("worker", "node", "state", "slots", "current", "last heartbeat"):
            t.add_column(col)
        for w in workers:
            current = _running_text(w.get("current", []))
            t.add_row(w["name"], w.get("node", ""), w.get("state", ""), str(w.get("slots", "")),
                      current, f"{w.get('heartbeat_age_seconds', 0):.0f}s ago")
        console.print(t)
    studies = status.get("studies") or []
    print_studies(studies)
    scheduled = [st for st in studies if st.get("next_run") or st.get("window")]
    if scheduled:
        import time

        t = Table(title="schedules")
        for col in ("study", "next scheduled retune", "trial window"):
            t.add_column(col)
        for st in scheduled:
            nxt = time.strftime("%Y-%m-%d %H:%M", time.localtime(st["next_run"])) if st.get("next_run") else "–"
            t.add_row(st["name"], nxt, st.get("window") or "–")
        console.print(t)
    # The same tables as the database view of `hpod status`.
    print_monitors_and_retunes(status.get("monitors") or [], status.get("retunes") or [])
    events = status.get("events") or []
    if events:
        t = Table(title="last events")
        for col in ("id", "kind", "study", "trial", "payload"):
            t.add_column(col)
        for e in events[-10:]:
            trial = e.get("trial_number")  # trial 0 is a trial: only None is blank
            t.add_row(str(e["id"]), e["kind"], str(e.get("study") or ""), "" if trial is None else str(trial),
                      str(e.get("payload"))[:80])
        console.print(t)
