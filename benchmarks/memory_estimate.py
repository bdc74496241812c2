"""How close ``t5_lora``'s memory estimate (hpod/objectives/t5_lora/memory.py) comes to
the peak memory of real training steps, on CPU (fp32).

Run: ``python -m benchmarks.memory_estimate [--only NAME]``; writes
benchmarks/results/memory_estimate.json and .md. Each configuration runs in a fresh
process: it builds a randomly initialised T5 of the configuration's shape (no hub),
wraps it with LoRA, and runs two AdamW steps on full-length random batches; the measured
figure is the process's peak resident memory minus its resident memory before the model
was built (what a trial's ``rss-peak`` meter measures, without the data and tokenizer).

The estimate's per-block multiples were fitted on the ``fit`` rows; the ``held-out``
rows (other shapes, lengths, batch sizes and checkpointing settings) were not looked at
while fitting, and their error is the figure to quote. GPU (bf16/fp16, CUDA allocator)
figures are not measured here: there is no GPU on the machine this ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._machine import describe_machine
from hpod.objectives.t5_lora.memory import estimate_training_memory
from hpod.objectives.t5_lora.model import TINY_CONFIG

RESULTS = Path(__file__).resolve().parent / "results"

_MINI = {**TINY_CONFIG, "vocab_size": 32128, "d_model": 256, "d_kv": 32, "d_ff": 1024, "num_layers": 4,
         "num_decoder_layers": 4, "num_heads": 8, "dropout_rate": 0.1}
_SMALL = {"vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_decoder_layers": 6,
          "num_heads": 8, "feed_forward_proj": "relu", "dropout_rate": 0.1, "pad_token_id": 0, "eos_token_id": 1,
          "decoder_start_token_id": 0}

#: (name, role, shape, LoRA rank, targets, micro-batch, source length, target length, checkpointing)
CASES: list[tuple[str, str, dict[str, Any], int, list[str], int, int, int, bool]] = [
    ("tiny b16 s128", "fit", TINY_CONFIG, 8, ["q", "v"], 16, 128, 64, False),
    ("tiny b32 s256", "fit", TINY_CONFIG, 8, ["q", "v"], 32, 256, 64, False),
    ("mini b8 s256", "fit", _MINI, 8, ["q", "v"], 8, 256, 64, False),
    ("mini b8 s256 ckpt", "fit", _MINI, 8, ["q", "v"], 8, 256, 64, True),
    ("tiny b64 s128 qkvo+ff", "fit", TINY_CONFIG, 16, ["q", "k", "v", "o", "wi", "wo"], 64, 128, 32, False),
    ("mini b16 s128 ckpt", "fit", _MINI, 16, ["q", "k", "v", "o"], 16, 128, 32, True),
    ("tiny b8 s512", "held-out", TINY_CONFIG, 4, ["q", "v"], 8, 512, 128, False),
    ("mini b4 s512 qkvo", "held-out", _MINI, 8, ["q", "k", "v", "o"], 4, 512, 128, False),
    ("mini b8 s512 ckpt", "held-out", _MINI, 8, ["q", "v"], 8, 512, 128, True),
    ("t5-small-shape b4 s256", "held-out", _SMALL, 8, ["q", "v"], 4, 256, 64, False),
    ("t5-small-shape b8 s256 ckpt", "held-out", _SMALL, 8, ["q", "v"], 8, 256, 64, True),
]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(case: dict[str, Any]) -> dict[str, float]:
    """Runs in a fresh process: build, wrap, train two steps; peak RSS growth, bytes."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from hpod.objectives.t5_lora.model import apply_lora
    from hpod.objectives.t5_lora.train import enable_gradient_checkpointing

    torch.set_num_threads(1)
    torch.manual_seed(0)
    before = _rss_bytes()
    model = T5ForConditionalGeneration(T5Config(**case["shape"]))
    if case["checkpointing"]:
        enable_gradient_checkpointing(model)
    model = apply_lora(model, rank=case["rank"], alpha=16, dropout=0.1, target_modules=case["targets"])
    model.train()
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    b, s, t, vocab = case["micro_batch"], case["source_length"], case["target_length"], case["shape"]["vocab_size"]
    started = time.perf_counter()
    for _ in range(2):
        input_ids = torch.randint(2, vocab, (b, s))
        labels = torch.randint(2, vocab, (b, t))
        model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"measured_bytes": float(peak - before), "build_peak_bytes": float(built - before),
            "step_seconds": (time.perf_counter() - started) / 2}


def run_case(name: str, role: str, shape: dict[str, Any], rank: int, targets: list[str], micro_batch: int,
             source_length: int, target_length: int, checkpointing: bool) -> dict[str, Any]:
    case = {"shape": shape, "rank": rank, "targets": targets, "micro_batch": micro_batch,
            "source_length": source_length, "target_length": target_length, "checkpointing": checkpointing}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.memory_estimate", "--child", json.dumps(case)],
                          capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: {proc.stderr[-2000:]}")
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    estimate = estimate_training_memory(shape, rank=rank, lora_dropout=0.1, target_modules=targets,
                                        micro_batch=micro_batch, source_length=source_length,
                                        target_length=target_length, precision="fp32",
                                        gradient_checkpointing=checkpointing)
    error = (estimate.total - measured["measured_bytes"]) / measured["measured_bytes"]
    return {"name": name, "role": role, **case, "shape": {k: shape[k] for k in ("d_model", "num_layers", "vocab_size")},
            "estimate": estimate.as_dict(), **measured, "relative_error": error}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# t5_lora memory estimate against measured peak memory (CPU, fp32)",
        "",
        "`python -m benchmarks.memory_estimate`. Measured: peak RSS growth of a fresh process that builds the",
        "model, wraps it with LoRA and runs two AdamW steps on full-length random batches. Estimate:",
        "`hpod.objectives.t5_lora.memory.estimate_training_memory`. Error = (estimate - measured) / measured.",
        "The estimate's multiples were fitted on the `fit` rows only; quote the `held-out` rows.",
        "",
        f"Machine: {result['machine']}; load average before/after: {result['load_before']} / {result['load_after']}.",
        "",
        "| case | role | estimate MB | measured MB | error | weights MB | activations MB | logits MB | s/step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        e = row["estimate"]
        mb = {key: e[f"{key}_bytes"] / 1e6 for key in ("total", "weights", "activations", "logits")}
        lines.append(f"| {row['name']} | {row['role']} | {mb['total']:.1f} | {row['measured_bytes'] / 1e6:.1f} | "
                     f"{row['relative_error']:+.0%} | {mb['weights']:.1f} | {mb['activations']:.1f} | "
                     f"{mb['logits']:.1f} | {row['step_seconds']:.2f} |")
    held = [abs(r["relative_error"]) for r in result["rows"] if r["role"] == "held-out"]
    if held:
        lines += ["", f"Held-out: mean absolute error {sum(held) / len(held):.0%}, largest {max(held):.0%} "
                      f"({len(held)} configurations)."]
    lines += ["", "Not measured: GPU runs (bf16/fp16 activations, the CUDA caching allocator, the CUDA context).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--only", help="run only the cases whose name contains this")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    load_before = os.getloadavg()[0]
    rows = []
    for case in CASES:
        if args.only and args.only not in case[0]:
            continue
        row = run_case(*case)
        print(f"{row['name']:32s} {row['role']:9s} est {row['estimate']['total_bytes'] / 1e6:8.1f} MB  "
              f"measured {row['measured_bytes'] / 1e6:8.1f} MB  error {row['relative_error']:+.0%}", flush=True)
        rows.append(row)
    result = {"machine": describe_machine("transformers", "peft"), "load_before": round(load_before, 2),
              "load_after": round(os.getloadavg()[0], 2), "rows": rows}
    if args.only:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory_estimate.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out / "memory_estimate.md").write_text(markdown(result), encoding="utf-8")


if __name__ == "__main__":
    main()
