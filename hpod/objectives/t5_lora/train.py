"""Training and evaluation loops for ``t5_lora``: LoRA fine-tuning of one trial
(linear warmup schedule, gradient accumulation, bf16 on GPU, validation loss
reported each evaluation step, early stopping) and the tiny base's full training.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpod.objectives.t5_lora.data import Example
from hpod.objectives.t5_lora.options import T5LoraOptions

__all__ = [
    "Hyperparameters",
    "TrainResult",
    "accumulate_gradients",
    "artifact_subdir",
    "compute_precision",
    "configure_torch",
    "enable_gradient_checkpointing",
    "encode",
    "generate_summaries",
    "seed_everything",
    "train_full",
    "train_lora",
]


@dataclass(frozen=True)
class Hyperparameters:
    """One trial's searched hyperparameters (the ``t5_lora`` default space)."""

    learning_rate: float = 5e-5
    batch_size: int = 8
    epochs: int = 3
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.1

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Hyperparameters:
        """Read a trial's params; missing ones take the default-baseline values.

        Raises ValueError naming the parameter for an unknown name or a bad value.
        """
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown t5_lora hyperparameter(s) {unknown}; known: {sorted(known)}")
        values = {**cls().__dict__, **params}
        hp = cls(
            learning_rate=float(values["learning_rate"]),
            batch_size=int(values["batch_size"]),
            epochs=int(values["epochs"]),
            rank=int(values["rank"]),
            alpha=round(float(values["alpha"])),
            dropout=float(values["dropout"]),
        )
        checks = [
            ("learning_rate", hp.learning_rate > 0 and math.isfinite(hp.learning_rate), "> 0"),
            ("batch_size", hp.batch_size >= 1, ">= 1"),
            ("epochs", hp.epochs >= 1, ">= 1"),
            ("rank", hp.rank >= 1, ">= 1"),
            # peft's LoraConfig.lora_alpha is an int: 16.0 is accepted, 16.5 is refused.
            ("alpha", hp.alpha > 0 and float(values["alpha"]) == hp.alpha, "a whole number > 0"),
            ("dropout", 0.0 <= hp.dropout < 1.0, "in [0, 1)"),
        ]
        for name, ok, bound in checks:
            if not ok:
                raise ValueError(f"{name} must be {bound}, got {values[name]!r}")
        return hp


@dataclass
class TrainResult:
    """What :func:`train_lora` measured (the adapter is left in ``model``)."""

    best_val_loss: float
    final_train_loss: float
    steps: int
    epochs_run: float
    early_stopped: bool
    train_seconds: float
    evaluations: int
    #: the optimizer's state after the last step (interval training only), for resuming
    optimizer_state: Any = None


@dataclass(frozen=True)
class _Encoded:
    input_ids: list[list[int]]
    labels: list[list[int]]


def encode(tokenizer: Any, examples: Sequence[Example], options: T5LoraOptions) -> _Encoded:
    """Tokenize (prefix + article, summary) pairs, truncated to the options' lengths."""
    sources = tokenizer([options.prefix + e.text for e in examples], max_length=options.source_length,
                        truncation=True)["input_ids"]
    targets = tokenizer([e.summary for e in examples], max_length=options.target_length,
                        truncation=True)["input_ids"]
    return _Encoded(list(sources), list(targets))


def _collate(encoded: _Encoded, indices: Sequence[int], pad_id: int, device: Any) -> dict[str, Any]:
    import torch

    sources = [encoded.input_ids[i] for i in indices]
    targets = [encoded.labels[i] for i in indices]
    src_len = max(len(s) for s in sources)
    tgt_len = max(len(t) for t in targets)
    input_ids = torch.full((len(indices), src_len), pad_id, dtype=torch.long)
    attention = torch.zeros((len(indices), src_len), dtype=torch.long)
    # -100 is ignored by the cross-entropy loss: padding does not count as a target.
    labels = torch.full((len(indices), tgt_len), -100, dtype=torch.long)
    for row, (s, t) in enumerate(zip(sources, targets, strict=True)):
        input_ids[row, : len(s)] = torch.tensor(s)
        attention[row, : len(s)] = 1
        labels[row, : len(t)] = torch.tensor(t)
    return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device), "labels": labels.to(device)}


def compute_precision(device: str, options: T5LoraOptions, *, bf16_supported: bool | None = None) -> str:
    """What ``options.precision`` means on ``device``: ``fp32``, ``bf16`` or ``fp16``
    (mixed precision: weights stay fp32, matrix products run in the 16-bit type).

    ``auto`` is bf16 on a CUDA device that supports it, fp16 on one that does not, fp32
    elsewhere; ``fp16`` off CUDA is fp32 (CPU autocast has no loss scaling); ``bf16`` on
    CPU is CPU autocast. ``bf16_supported`` overrides the CUDA query (estimates, tests)."""
    on_cuda = str(device).startswith("cuda")
    if not on_cuda:
        return "bf16" if options.precision == "bf16" else "fp32"
    if options.precision in ("fp32", "bf16", "fp16"):
        return options.precision
    if bf16_supported is None:
        import torch

        bf16_supported = bool(torch.cuda.is_bf16_supported())
    return "bf16" if bf16_supported else "fp16"


def _autocast(device: str, options: T5LoraOptions) -> Any:
    import contextlib

    import torch

    precision = compute_precision(device, options)
    if precision == "fp32":
        return contextlib.nullcontext()
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _micro_batches(indices: Sequence[int], max_micro: int | None) -> list[Sequence[int]]:
    if not max_micro or len(indices) <= max_micro:
        return [indices]
    return [indices[i: i + max_micro] for i in range(0, len(indices), max_micro)]


def _token_count(batch: Mapping[str, Any]) -> int:
    return int((batch["labels"] != -100).sum().item())


def _data_parallel() -> tuple[int, int]:
    """``(rank, world size)`` of the trial's ``torch.distributed`` group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce_sum(values: list[float]) -> list[float]:
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return [float(v) for v in t.cpu().tolist()]


def _sync_gradients(trainable: Sequence[Any]) -> None:
    """Sum the ranks' gradients (each rank weighted its loss by its share of the global
    batch's tokens, so the sum is the whole batch's gradient) — what DDP's all-reduce
    does, without requiring the same number of micro-batches on every rank."""
    import torch
    import torch.distributed as dist

    for p in trainable:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)


def adapter_digest(model: Any) -> str:
    """SHA-256 of the trainable (LoRA) weights: equal on every rank of a data-parallel trial."""
    import hashlib

    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        if p.requires_grad:
            digest.update(name.encode())
            digest.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def accumulate_gradients(model: Any, encoded: _Encoded, indices: Sequence[int], pad_id: int, device: str,
                         options: T5LoraOptions, *, trainable: Sequence[Any], world: int = 1,
                         scaler: Any = None) -> float:
    """Put this rank's share (``indices``) of one optimizer step's batch through the model
    in micro-batches of at most ``options.max_micro_batch`` and leave the whole batch's
    gradient in ``.grad`` (summed over the ranks when ``world`` > 1); return the batch's
    token-weighted mean loss.

    Each micro-batch's mean loss is weighted by its share of the batch's target tokens,
    so the accumulated gradient equals the gradient of the whole batch at once: the
    search space's ``batch_size`` is the effective batch whatever fits in memory."""
    micro = [_collate(encoded, m, pad_id, device)
             for m in _micro_batches(indices, options.max_micro_batch)] if indices else []
    tokens = sum(_token_count(b) for b in micro)
    if world > 1:
        tokens = int(_all_reduce_sum([float(tokens)])[0])
    batch_loss = 0.0
    for batch in micro:
        with _autocast(device, options):
            loss = model(**batch).loss
        share = _token_count(batch) / max(tokens, 1)
        weighted = loss * share
        (scaler.scale(weighted) if scaler is not None and scaler.is_enabled() else weighted).backward()
        batch_loss += float(loss.detach().float()) * share
    if world > 1:
        _sync_gradients(trainable)
        batch_loss = _all_reduce_sum([batch_loss])[0]
    return batch_loss


def validation_loss(model: Any, encoded: _Encoded, pad_id: int, device: str, options: T5LoraOptions,
                    batch_size: int) -> float:
    """Token-weighted mean cross-entropy on the validation split (nats per token)."""
    import torch

    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad(), _autocast(device, options):
        for start in range(0, len(encoded.input_ids), batch_size):
            batch = _collate(encoded, range(start, min(start + batch_size, len(encoded.input_ids))), pad_id, device)
            n = _token_count(batch)
            # HF returns the mean over non-ignored tokens; weight it back to a sum.
            total += float(model(**batch).loss.float()) * n
            tokens += n
    model.train(was_training)
    return total / max(tokens, 1)


def generate_summaries(model: Any, tokenizer: Any, texts: Sequence[str], options: T5LoraOptions,
                       device: str, batch_size: int = 16) -> list[str]:
    """Summaries of ``texts`` (the prefix is added here) with the options' beams and length."""
    import torch

    model.eval()
    out: list[str] = []
    with torch.no_grad(), _autocast(device, options):
        for start in range(0, len(texts), batch_size):
            chunk = [options.prefix + t for t in texts[start: start + batch_size]]
            enc = tokenizer(chunk, max_length=options.source_length, truncation=True, padding=True,
                            return_tensors="pt").to(device)
            ids = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                 num_beams=options.num_beams, max_new_tokens=options.new_tokens,
                                 do_sample=False)
            out.extend(s.strip() for s in tokenizer.batch_decode(ids, skip_special_tokens=True))
    return out


def configure_torch(options: T5LoraOptions) -> None:
    """Apply process-wide torch settings from the options (CPU threads)."""
    import torch

    if options.cpu_threads is not None:
        torch.set_num_threads(options.cpu_threads)
    # Progress bars on every model load/save would flood a trial's log.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute each block's activations during the backward pass (``options.
    gradient_checkpointing``). Call on the base model before LoRA wraps it. Non-reentrant
    checkpointing: gradients reach the adapters although the frozen embeddings need none."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False  # the decoder's key/value cache is useless while training


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a CPU run repeats exactly."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def train_lora(
    model: Any,
    tokenizer: Any,
    train: Sequence[Example],
    val: Sequence[Example],
    hp: Hyperparameters,
    options: T5LoraOptions,
    *,
    seed: int,
    device: str,
    report: Callable[[int, Mapping[str, float]], None],
    start_step: int = 0,
    max_steps: int | None = None,
    optimizer_state: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train the (already LoRA-wrapped) ``model`` in place.

    Interval training (population-based training): with ``max_steps``, train exactly
    that many steps from step ``start_step`` at a constant learning rate
    (``hp.learning_rate``, which PBT may have perturbed), restoring ``optimizer_state``
    first, evaluating at the interval's end and returning the optimizer's state.

    Validation loss is computed every ``eval_steps`` optimizer steps (and after the
    last) and passed to ``report(step, {"loss": ...})``, which may raise TrialPruned.
    Early stopping: after ``patience`` evaluations that each improve on the best by
    less than ``min_delta``, training stops. The adapter weights of the best
    evaluation are restored at the end, so the returned loss is the saved model's.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    train_enc, val_enc = encode(tokenizer, train, options), encode(tokenizer, val, options)
    pad_id = int(tokenizer.pad_token_id)
    steps_per_epoch = math.ceil(len(train) / hp.batch_size)
    total_steps = steps_per_epoch * hp.epochs
    eval_every = options.eval_steps or max(1, steps_per_epoch // 4)
    eval_batch = options.max_micro_batch or max(hp.batch_size, 16)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=hp.learning_rate, weight_decay=options.weight_decay)
    end_step = None if max_steps is None else start_step + max_steps
    if end_step is None:
        scheduler = get_linear_schedule_with_warmup(optimizer, int(options.warmup_ratio * total_steps), total_steps)
    else:
        if optimizer_state is not None:
            optimizer.load_state_dict(dict(optimizer_state))
            for group in optimizer.param_groups:
                # The (possibly perturbed) rate, not the saved one; the scheduler starts from initial_lr.
                group["lr"] = group["initial_lr"] = hp.learning_rate
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        total_steps = end_step
    order = torch.Generator().manual_seed(seed + start_step)

    best, reference_best = math.inf, math.inf
    best_state: dict[str, Any] | None = None
    stale, step, evaluations, last_loss = 0, start_step, 0, math.nan
    early_stopped = False
    model.train()
    # Data parallel (the trial spans several ranks): each rank takes every world-th example
    # of each batch; the space's batch size stays the effective batch.
    rank, world = _data_parallel()
    # fp16 needs loss scaling (small gradients underflow); bf16 and fp32 do not.
    scaler = torch.amp.GradScaler("cuda", enabled=compute_precision(device, options) == "fp16")
    started = time.perf_counter()
    epochs = hp.epochs if max_steps is None else math.ceil(max_steps / steps_per_epoch)
    for _epoch in range(epochs):
        permutation = torch.randperm(len(train), generator=order).tolist()
        for start in range(0, len(permutation), hp.batch_size):
            indices = permutation[start: start + hp.batch_size][rank::world]
            batch_loss = accumulate_gradients(model, train_enc, indices, pad_id, device, options,
                                              trainable=trainable, world=world, scaler=scaler)
            if scaler.is_enabled():
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            if scaler.is_enabled():
                # An overflowing step is skipped and the scale lowered (fp16 only).
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            last_loss = batch_loss
            if step % eval_every and step != total_steps:
                continue
            val_loss = validation_loss(model, val_enc, pad_id, device, options, eval_batch)
            evaluations += 1
            report(step, {"loss": val_loss})  # may raise TrialPruned: nothing saved yet
            if val_loss < best:
                best = val_loss
                best_state = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
            if val_loss < reference_best - options.min_delta:
                reference_best, stale = val_loss, 0
            else:
                stale += 1
                if stale >= options.patience:
                    early_stopped = True
                    break
            if step == end_step:
                break
        if early_stopped or step == end_step:
            break
    train_seconds = time.perf_counter() - started
    if best_state is not None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in best_state.items():
                params[name].copy_(value)
    return TrainResult(
        best_val_loss=best,
        final_train_loss=last_loss,
        steps=step,
        epochs_run=(step - start_step) / steps_per_epoch,
        early_stopped=early_stopped,
        train_seconds=train_seconds,
        evaluations=evaluations,
        optimizer_state=optimizer.state_dict() if end_step is not None else None,
    )


def train_full(model: Any, tokenizer: Any, options: T5LoraOptions, corpus: Sequence[Example], *, steps: int,
               seed: int, batch_size: int = 16, learning_rate: float = 1e-3) -> None:
    """Train every weight of ``model`` for ``steps`` steps on ``corpus`` (the tiny
    base's pretraining), on CPU, deterministically."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    if steps <= 0:
        return
    encoded = encode(tokenizer, corpus, options)
    pad_id = int(tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, steps // 20), steps)
    order = torch.Generator().manual_seed(seed)
    model.train()
    permutation: list[int] = []
    for _ in range(steps):
        if len(permutation) < batch_size:
            permutation = torch.randperm(len(corpus), generator=order).tolist()
        indices, permutation = permutation[:batch_size], permutation[batch_size:]
        loss = model(**_collate(encoded, indices, pad_id, "cpu")).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def artifact_subdir(artifact_dir: Path, seed_index: int) -> Path:
    """Seed 0's adapter goes in ``artifact_dir`` itself, seed i's in ``seed-<i>``."""
    return Path(artifact_dir) if seed_index == 0 else Path(artifact_dir) / f"seed-{seed_index}"
