"""What the offline tiny T5 (``t5_lora`` with ``model: tiny``) can do, on held-out
articles: how long its base takes to prepare, how well the base summarizes synthetic
news it never saw, and how far LoRA moves it on another domain (match reports) from a
few hundred labelled records: at a good learning rate for 10 and for 3 epochs, and at a
timid one.

Run: ``python -m benchmarks.tiny_t5 [--quick]``; writes benchmarks/results/tiny_t5.json
and .md (``--quick``: a barely trained base, small sets, benchmarks/results/quick/).
Held out: the base trains on corpus seed 1000; news is scored on seed 54321, match
reports on seed 4242; LoRA trains on match-report seed 7 (disjoint records).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._machine import describe_machine
from hpod.objectives.base import TrialContext
from hpod.objectives.t5_lora import T5LoraObjective, parse_options
from hpod.objectives.t5_lora.data import Example, synthetic_corpus
from hpod.objectives.t5_lora.metrics import summary_metrics
from hpod.objectives.t5_lora.model import TINY_CONFIG, load_base_model
from hpod.objectives.t5_lora.tools import summarize_with_adapter
from hpod.objectives.t5_lora.train import generate_summaries

RESULTS = Path(__file__).resolve().parent / "results"
#: LoRA on the new domain: the searched hyperparameters apart from the learning rate.
LORA = {"batch_size": 8, "rank": 8, "alpha": 16, "dropout": 0.1}
#: (learning rate, epochs) per run: more epochs are the cheap lever on the new domain
RUNS = {"good": (3e-3, 10), "good, 3 epochs": (3e-3, 3), "timid": (1e-5, 10)}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _score(predictions: list[str], examples: list[Example]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in summary_metrics(predictions, [e.summary for e in examples]).items()}


def run(quick: bool) -> dict[str, Any]:
    base_steps = 60 if quick else parse_options({"model": "tiny"}).base_steps
    n_news, n_sports, n_train = (16, 16, 32) if quick else (64, 48, 256)
    options = {"model": "tiny", "cpu_threads": 1, "base_steps": base_steps}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hpod-tiny-t5-") as tmp:
        cache = Path(tmp) / "cache"
        wall, cpu = time.perf_counter(), _cpu_seconds()
        T5LoraObjective(options).prepare(cache)
        prepare = {"wall_seconds": round(time.perf_counter() - wall, 1), "cpu_seconds": round(_cpu_seconds() - cpu, 1)}
        parsed = parse_options(options)
        model, tokenizer, _ = load_base_model(parsed, cache)
        news = synthetic_corpus(n_news, seed=54321)
        news_pred = generate_summaries(model, tokenizer, [e.text for e in news], parsed, "cpu")
        sports = synthetic_corpus(n_sports, seed=4242, domain="sports")
        sports_before = generate_summaries(model, tokenizer, [e.text for e in sports], parsed, "cpu")
        sports_options = {**options, "data": {"synthetic_domain": "sports", "synthetic_seed": 7,
                                              "train_size": n_train, "val_size": 8}}
        objective = T5LoraObjective(sports_options)
        after: dict[str, Any] = {}
        for label, (rate, epochs) in RUNS.items():
            artifacts = Path(tmp) / label
            started = time.perf_counter()
            objective.run(TrialContext(params={**LORA, "learning_rate": rate, "epochs": epochs}, seed=0, trial_number=0,
                                       study_name="tiny-t5-benchmark", artifact_dir=artifacts, cache_dir=cache))
            predictions = summarize_with_adapter(artifacts, [e.text for e in sports], sports_options, cache)
            after[label] = {"learning_rate": rate, "epochs": epochs,
                            "train_seconds": round(time.perf_counter() - started, 1),
                            "metrics": _score(predictions, sports), "samples": predictions[:2]}
    return {
        "benchmark": "tiny_t5",
        "command": "python -m benchmarks.tiny_t5" + (" --quick" if quick else ""),
        "machine": describe_machine("transformers", "peft", "tokenizers"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "model": {k: TINY_CONFIG[k] for k in ("vocab_size", "d_model", "d_ff", "num_layers", "num_heads")},
        "base_steps": base_steps,
        "prepare": prepare,
        "news_held_out": {"articles": n_news, "metrics": _score(news_pred, news),
                          "samples": [{"article": e.text, "reference": e.summary, "summary": p}
                                      for e, p in zip(news[:2], news_pred[:2], strict=True)]},
        "sports": {"held_out": n_sports, "train_records": n_train, "lora": LORA,
                   "references": [e.summary for e in sports[:2]],
                   "before": {"metrics": _score(sports_before, sports), "samples": sports_before[:2]},
                   "after": after},
    }


def markdown(result: dict[str, Any]) -> str:
    m, news, sports = result["machine"], result["news_held_out"], result["sports"]
    lines = [
        "# The offline tiny T5 on held-out articles",
        "",
        f"Command: `{result['command']}`. Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
        f"1 torch thread; load average {result['load_average_before'][0]} before, "
        f"{result['load_average_after'][0]} after (other work ran beside it).",
        f"Model: {result['model']}; base trained {result['base_steps']} steps: prepared in "
        f"{result['prepare']['wall_seconds']} s wall, {result['prepare']['cpu_seconds']} s CPU.",
        "",
        "| held-out set | model | ROUGE-1 | ROUGE-2 | ROUGE-L | BLEU | exact match |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, model: str, metrics: dict[str, float]) -> str:
        return (f"| {name} | {model} | {metrics['rouge1']:.3f} | {metrics['rouge2']:.3f} | {metrics['rougeL']:.3f} "
                f"| {metrics['bleu']:.1f} | {metrics['exact_match']:.2f} |")

    lines.append(row(f"news ({news['articles']} articles)", "tiny base", news["metrics"]))
    lines.append(row(f"match reports ({sports['held_out']})", "tiny base", sports["before"]["metrics"]))
    for label, entry in sports["after"].items():
        lines.append(row(f"match reports ({sports['held_out']})",
                         f"base + LoRA, lr {entry['learning_rate']:g}, {entry['epochs']} epochs ({label}), "
                         f"{sports['train_records']} records, {entry['train_seconds']} s",
                         entry["metrics"]))
    lines += ["", f"LoRA: {sports['lora']} on q,v. Samples (reference → summary):", ""]
    for s in news["samples"]:
        lines.append(f"- news: {s['reference']} → {s['summary']}")
    for i, ref in enumerate(sports["references"]):
        lines.append(f"- match report: {ref} → base: {sports['before']['samples'][i]} → LoRA (good): "
                     f"{sports['after']['good']['samples'][i]}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: a barely trained base, small sets")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = run(args.quick)
    out_dir = RESULTS / "quick" if args.quick else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tiny_t5.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out_dir / "tiny_t5.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
