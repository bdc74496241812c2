"""Serving throughput and latency with dynamic batching, on the README demo's model.

The demo model: ``examples/t5-lora-demo.yaml``'s objective (the tiny T5 trained on the
synthetic news corpus, cached after the first run) with a LoRA adapter of rank 8 at its
initialisation (LoRA's B = 0: the adapter adds nothing, so this is the demo base's
generation cost; a trained adapter costs the same per token). It is served by
``create_serving_app`` on a local uvicorn server; clients send one synthetic news
article per ``POST /v1/predict`` request, ``--requests`` requests per run, from 1, 4 and
8 concurrent client processes (apart from the server's), ``--repeats`` runs of each,
interleaved. Two server settings: batching as the spec's defaults set it
(``serving.max_batch_texts``, ``serving.batch_wait_seconds``), and batching off
(``max_batch_texts: 1``: one model call per request, as before batching existed).

Run: ``python -m benchmarks.serving [--requests N] [--repeats R] [--quick]``; writes
benchmarks/results/serving.json and .md (``--quick``: benchmarks/results/quick/;
``--tag T``: serving-T.json and .md, a run under other conditions kept beside the main
one; ``--beside TEXT`` records what else ran on the machine).
Target (issue 16): 8 concurrent clients get >= 3x the requests/s of one serial client,
at p95 latency <= 2x the serial p95.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks._machine import describe_machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEMO_SPEC = ROOT / "examples" / "t5-lora-demo.yaml"
TOKEN = "benchmark-token-0123456789"
CONCURRENCY = (1, 4, 8)


def machine() -> dict[str, Any]:
    return describe_machine("transformers", "peft", "uvicorn", "fastapi")


def _demo_study(root: Path, cache: Path, settings: dict[str, Any]) -> Any:
    """A store holding one completed trial of the demo study whose artifact is the demo
    model (see the module doc), with ``settings`` as its serving section."""
    import optuna

    from hpod.objectives.t5_lora.model import apply_lora, load_base_model
    from hpod.objectives.t5_lora.options import parse_options
    from hpod.spec import parse_spec
    from hpod.store import Store

    demo = yaml.safe_load(DEMO_SPEC.read_text())
    params = demo["objective"]["params"]
    artifact = root / "trial-0"
    if not artifact.exists():
        base, _, _ = load_base_model(parse_options(params), cache)
        apply_lora(base, rank=8, alpha=16, dropout=0.0, target_modules=["q", "v"]).save_pretrained(artifact)
    store = Store.for_state_dir(root / f"state-{settings['max_batch_texts']}")
    spec = parse_spec({"name": "demo", "objective": {"name": "t5_lora", "params": params},
                       "objectives": [{"name": "loss"}], "budget": {"n_trials": 1}, "serving": settings})
    store.register_study(spec, state="completed")
    study = store.load_optuna_study("demo")
    if not study.get_trials(deepcopy=False):
        dist: dict[str, optuna.distributions.BaseDistribution] = {
            "learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)}
        study.add_trial(optuna.trial.create_trial(params={"learning_rate": 1e-3}, distributions=dist, values=[1.0],
                                                  user_attrs={"hpod.info": {"artifact_dir": str(artifact)}}))
    return store


def _serve(store: Any, root: Path, cache: Path) -> tuple[Any, threading.Thread, str]:
    import uvicorn

    from hpod.http.serving import create_serving_app

    app = create_serving_app(store, "demo", state_dir=root, token=TOKEN, poll_seconds=5.0, cache_dir=cache)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


def _load(url: str, texts: list[str], clients: int) -> dict[str, Any]:
    """``len(texts)`` requests from ``clients`` client processes (as a deployment's clients
    are: independent processes, not threads sharing one interpreter lock, which would
    queue their HTTP work one after another), each sending its share of the texts one
    request after another. Timing starts once every client process is up and connected.
    Returns the wall seconds, each request's latency and the failures."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    shares = [texts[i::clients] for i in range(clients)]
    procs = [ctx.Process(target=_client, args=(url, share, go, results)) for share in shares]
    for proc in procs:
        proc.start()
    ready = [results.get(timeout=120) for _ in procs]  # each says it is connected
    assert all(r == "ready" for r in ready), ready
    t0 = time.perf_counter()
    go.set()
    outcomes = [results.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - t0
    for proc in procs:
        proc.join(60)
    return {"seconds": wall, "latencies": [x for o in outcomes for x in o["latencies"]],
            "failures": [f for o in outcomes for f in o["failures"]]}


def _summary(clients: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the repeated runs of ``clients`` clients: requests/s over all of
    them, p50/p95 over every request's latency, and each run's requests/s."""
    latencies = sorted(x for run in runs for x in run["latencies"])
    failures = [f for run in runs for f in run["failures"]]
    seconds = sum(run["seconds"] for run in runs)
    return {
        "clients": clients, "requests": len(latencies), "failed": len(failures), "seconds": seconds,
        "requests_per_second": len(latencies) / seconds,
        "requests_per_second_each_repeat": [len(run["latencies"]) / run["seconds"] for run in runs],
        "p50_seconds": statistics.median(latencies),
        "p95_seconds": statistics.quantiles(latencies, n=20, method="inclusive")[18],
        "failures": failures[:3],
    }


def _client(url: str, texts: list[str], go: Any, results: Any) -> None:
    """One client process of :func:`_load`: connect, wait for the start, send its texts."""
    import httpx

    latencies: list[float] = []
    failures: list[str] = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as http:
        http.get("/healthz")  # connected before the clock starts
        results.put("ready")
        go.wait()
        for text in texts:
            t0 = time.perf_counter()
            r = http.post("/v1/predict", json={"text": text})
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                failures.append(f"{r.status_code}: {r.text[:200]}")
    results.put({"latencies": latencies, "failures": failures})


def run(requests: int, repeats: int, cache: Path, work: Path) -> dict[str, Any]:
    from hpod.objectives.t5_lora.data import synthetic_corpus
    from hpod.spec import ServingSpec

    defaults = ServingSpec()
    settings = {
        "batching": {"max_batch_texts": defaults.max_batch_texts, "batch_wait_seconds": defaults.batch_wait_seconds},
        "off": {"max_batch_texts": 1, "batch_wait_seconds": 0.0},
    }
    # Held-out texts: articles the demo base never trained on (other seed).
    texts = [e.text for e in synthetic_corpus(requests, seed=12345)]
    rows = []
    for label, serving in settings.items():
        store = _demo_study(work, cache, serving)
        server, thread, url = _serve(store, work, cache)
        try:
            _load(url, texts[: max(2, requests // 10)], 1)  # warm-up: first generate call, thread pool
            # Each repeat runs every client count once, so a change in the machine's
            # speed during the run reaches all of them alike.
            runs: dict[int, list[dict[str, Any]]] = {clients: [] for clients in CONCURRENCY}
            for _ in range(repeats):
                for clients in CONCURRENCY:
                    runs[clients].append(_load(url, texts, clients))
            for clients in CONCURRENCY:
                row = {"batching": label, **serving, **_summary(clients, runs[clients])}
                rows.append(row)
                print(f"batching {label:8s} clients {clients}: {row['requests_per_second']:.2f} req/s, "
                      f"p50 {row['p50_seconds']:.3f} s, p95 {row['p95_seconds']:.3f} s, failed {row['failed']}")
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            store.close()
    return {"rows": rows}


def _verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    on = {r["clients"]: r for r in rows if r["batching"] == "batching"}
    serial, eight = on[1], on[max(CONCURRENCY)]
    speedup = eight["requests_per_second"] / serial["requests_per_second"]
    p95_ratio = eight["p95_seconds"] / serial["p95_seconds"]
    return {"throughput_ratio_8_vs_1": speedup, "p95_ratio_8_vs_1": p95_ratio,
            "target_met": speedup >= 3.0 and p95_ratio <= 2.0}


def write(result: dict[str, Any], out_dir: Path, name: str = "serving") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    v = result["verdict"]
    lines = [
        "# Serving with dynamic batching",
        "",
        f"`python -m benchmarks.serving --requests {result['requests']} --repeats {result['repeats']}"
        + (f" --tag {result['tag']}" if result.get("tag") else "") + "` on "
        f"{m['cpu']}, {m['cores']} cores "
        f"(shared with other people's jobs: 1-min load average {result['load_average_1min_at_start']} at the start, "
        f"{result['load_average_1min_at_end']} at the end), Python {m['python']}, torch {m['torch']}, "
        f"transformers {m['transformers']}."
        + (f" Beside it ran: {result['beside']}." if result.get("beside") else ""),
        "",
        "Model: the README demo's (`examples/t5-lora-demo.yaml`: tiny T5 trained on the synthetic news "
        "corpus, `max_new_tokens` 24, one torch thread) with a rank-8 LoRA adapter at its initialisation. "
        f"One held-out synthetic article per request; each run sends the same {result['requests']} requests, and "
        f"each row pools {result['repeats']} runs, interleaved with the other client counts' runs (requests/s: all "
        "requests over all runs' seconds; p50/p95: over every request). Each client is a "
        "process of its own, sending its share of the requests one after another (from 2026-12-01; "
        "before, the clients were threads of the server's process and took its interpreter lock for their HTTP work).",
        "",
        "| batching | max batch (texts) | wait (s) | clients | requests | failed | requests/s | per run | p50 (s) | "
        "p95 (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['batching']} | {r['max_batch_texts']} | {r['batch_wait_seconds']} | {r['clients']} | "
                     f"{r['requests']} | {r['failed']} | {r['requests_per_second']:.2f} | "
                     f"{', '.join(f'{x:.1f}' for x in r['requests_per_second_each_repeat'])} | "
                     f"{r['p50_seconds']:.3f} | "
                     f"{r['p95_seconds']:.3f} |")
    lines += [
        "",
        f"With batching, 8 concurrent clients get {v['throughput_ratio_8_vs_1']:.2f}x the requests/s of one serial "
        f"client, at {v['p95_ratio_8_vs_1']:.2f}x its p95 latency (target: >= 3x at <= 2x): "
        + ("met." if v["target_met"] else "**not met**."),
        "",
        "`off` is one model call per request (`max_batch_texts: 1`), what serving did before batching. "
        "Figures move with the machine's load: the benchmark shares two cores with other work.",
    ]
    (out_dir / f"{name}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=96, help="requests per run (default 96)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each client count, interleaved (default 3); rows pool them")
    parser.add_argument("--tag", default="",
                        help="write benchmarks/results/serving-TAG.{json,md} instead of serving.{json,md} "
                             "(a run under other conditions, kept beside the main one)")
    parser.add_argument("--beside", default="",
                        help="what else ran on the machine meanwhile, recorded with the results "
                             "(e.g. 'three busy loops')")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "hpod" / "benchmarks",
                        help="where the demo base is trained once and kept")
    parser.add_argument("--quick", action="store_true", help="8 requests; results in benchmarks/results/quick/")
    args = parser.parse_args()
    if args.tag and not re.fullmatch(r"[A-Za-z0-9_-]+", args.tag):
        parser.error(f"--tag {args.tag!r}: letters, digits, '-' and '_' only (it names the results files)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    requests, repeats = (8, 1) if args.quick else (args.requests, args.repeats)
    import tempfile

    load_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="hpod-serving-bench-") as tmp:
        result: dict[str, Any] = {"machine": machine(), "requests": requests, "repeats": repeats,
                                  "beside": args.beside, "tag": args.tag,
                                  "load_average_1min_at_start": load_start,
                                  **run(requests, repeats, args.cache_dir, Path(tmp))}
    result["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    result["verdict"] = _verdict(result["rows"])
    write(result, RESULTS / "quick" if args.quick else RESULTS, f"serving-{args.tag}" if args.tag else "serving")


if __name__ == "__main__":
    main()
