"""LoRA vs full fine-tuning of a T5-small-sized model on CPU: trainable parameters,
time per training step and peak memory, as ratios to full fine-tuning.

Run ``python -m benchmarks.lora`` (``--quick`` for a CI smoke run on a tiny model).
The model is built from T5-small's configuration with random weights (no download);
the batch is 8 random token sequences. Each configuration runs in a fresh Python
process, so its peak memory is its own: peak RSS (``ru_maxrss``) of that process,
and the growth of RSS from just after the model is built to that peak (gradients,
optimizer state, activations). Results: benchmarks/results/lora.json and lora.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"

T5_SMALL = {"vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_heads": 8,
            "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}
TINY = {"vocab_size": 384, "d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_heads": 4,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}


def machine() -> dict[str, Any]:
    return describe_machine()


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in this (fresh) process: returns its measurements."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from hpod.objectives.t5_lora.model import apply_lora, count_parameters

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(**job["config"]))
    if job["rank"]:
        model = apply_lora(model, rank=job["rank"], alpha=2 * job["rank"], dropout=0.1, target_modules=["q", "v"])
    trainable, total = count_parameters(model)
    model.train()
    rss_after_build = _rss_bytes()
    generator = torch.Generator().manual_seed(1)
    vocab = job["config"]["vocab_size"]
    batch = {
        "input_ids": torch.randint(2, vocab, (job["batch"], job["source_length"]), generator=generator),
        "attention_mask": torch.ones(job["batch"], job["source_length"], dtype=torch.long),
        "labels": torch.randint(2, vocab, (job["batch"], job["target_length"]), generator=generator),
    }
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # the first step allocates optimizer state; not timed
    started = time.perf_counter()
    for _ in range(job["steps"]):
        step()
    seconds_per_step = (time.perf_counter() - started) / job["steps"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {
        "method": f"LoRA r={job['rank']}" if job["rank"] else "full fine-tuning",
        "rank": job["rank"],
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_share": trainable / total,
        "seconds_per_step": seconds_per_step,
        "peak_rss_bytes": peak,
        "rss_growth_bytes": peak - rss_after_build,
    }


def run(quick: bool, threads: int, steps: int | None) -> dict[str, Any]:
    settings = {
        "config": TINY if quick else T5_SMALL,
        "model": "tiny T5 (quick)" if quick else "T5-small-sized (random weights)",
        "batch": 8,
        "source_length": 32 if quick else 256,
        "target_length": 8 if quick else 64,
        "steps": steps or (1 if quick else 5),
        "threads": threads,
    }
    rows = []
    for rank in [0, 4, 8, 16]:
        job = {**settings, "rank": rank}
        out = subprocess.run([sys.executable, "-m", "benchmarks.lora", "--worker", json.dumps(job)],
                             capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            raise SystemExit(f"configuration {job['rank'] or 'full'} failed:\n{out.stderr[-3000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        peak_mib = row["peak_rss_bytes"] / 2**20
        print(f"  {row['method']:<18} {row['seconds_per_step']:.3f} s/step, peak {peak_mib:.0f} MiB", flush=True)
    full = rows[0]
    for row in rows:
        row["trainable_ratio"] = row["trainable_parameters"] / full["trainable_parameters"]
        row["time_ratio"] = row["seconds_per_step"] / full["seconds_per_step"]
        row["peak_memory_ratio"] = row["peak_rss_bytes"] / full["peak_rss_bytes"]
        row["memory_growth_ratio"] = row["rss_growth_bytes"] / full["rss_growth_bytes"]
    return {
        "benchmark": "lora",
        "machine": machine(),
        "settings": dict(settings.items()),
        "memory_method": "rss-peak: ru_maxrss of a fresh process per configuration; growth = peak - RSS after build",
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    lines = [
        "# LoRA vs full fine-tuning (CPU)",
        "",
        f"Command: `python -m benchmarks.lora`. Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; "
        f"{s['threads']} torch thread(s).",
        f"Model: {s['model']}; batch {s['batch']}, source {s['source_length']} / target {s['target_length']} tokens, "
        f"{s['steps']} timed steps after one warm-up step; LoRA on q,v with alpha = 2 x rank.",
        f"Memory: {result['memory_method']}.",
        "",
        "| method | trainable params | share | s/step | peak RSS (MiB) | RSS growth (MiB) "
        "| trainable vs full | time vs full | peak vs full | growth vs full |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {r['trainable_parameters']:,} | {r['trainable_share']:.2%} "
            f"| {r['seconds_per_step']:.3f} "
            f"| {r['peak_rss_bytes'] / 2**20:.0f} | {r['rss_growth_bytes'] / 2**20:.0f} | {r['trainable_ratio']:.4f} "
            f"| {r['time_ratio']:.2f} | {r['peak_memory_ratio']:.2f} | {r['memory_growth_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, one step: a smoke run")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: stable timings on a shared machine)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}", flush=True)
    result = run(args.quick, args.threads, args.steps)
    out = RESULTS / "quick" if args.quick else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "lora.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "lora.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
