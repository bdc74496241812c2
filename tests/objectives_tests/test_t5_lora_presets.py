"""``t5_lora`` presets for T5-small/base/large, gradient accumulation as the effective
batch, and the memory estimate's arithmetic (tiny models on CPU, no hub)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hpod.errors import SpecError
from hpod.objectives.base import EstimatesMemory, TrialContext, capabilities
from hpod.objectives.t5_lora import T5LoraObjective, parse_options
from hpod.objectives.t5_lora.memory import (
    PUBLISHED_SHAPES,
    count_lora_parameters,
    count_t5_parameters,
    micro_batch_size,
)
from hpod.objectives.t5_lora.model import TINY_CONFIG
from hpod.objectives.t5_lora.options import PRESETS

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAST = {"model": "tiny", "base_steps": 10, "cpu_threads": 1, "max_source_length": 64,
        "max_target_length": 24, "max_new_tokens": 12, "data": {"train_size": 16, "val_size": 4}}


# --- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_preset_sets_its_model_targets_checkpointing_precision_and_micro_batch(preset: str) -> None:
    options = parse_options({"preset": preset})
    expected = PRESETS[preset]
    assert options.model == expected["model"] == preset
    assert options.target_modules == expected["target_modules"]
    assert options.gradient_checkpointing is expected["gradient_checkpointing"]
    assert options.precision == "auto" and options.max_micro_batch == expected["max_micro_batch"]


def test_options_given_explicitly_win_over_the_preset() -> None:
    options = parse_options({"preset": "t5-large", "model": "tiny", "gradient_checkpointing": False,
                             "max_micro_batch": 2})
    assert options.model == "tiny" and options.gradient_checkpointing is False and options.max_micro_batch == 2
    assert options.target_modules == ["q", "k", "v", "o", "wi", "wo"]  # still the preset's


def test_an_unknown_preset_is_one_message_naming_the_allowed_values() -> None:
    with pytest.raises(SpecError) as info:
        T5LoraObjective({"preset": "t5-xxl"})
    assert info.value.path == "objective.params.preset"
    message = str(info.value)
    assert "t5-xxl" in message and all(name in message for name in ("t5-small", "t5-base", "t5-large"))


def test_precision_means_fp32_on_cpu_and_16_bit_on_gpu() -> None:
    from hpod.objectives.t5_lora.train import compute_precision

    auto = parse_options({})
    assert compute_precision("cpu", auto) == "fp32"
    assert compute_precision("cuda:0", auto, bf16_supported=True) == "bf16"
    assert compute_precision("cuda:0", auto, bf16_supported=False) == "fp16"
    assert compute_precision("cpu", parse_options({"precision": "fp16"})) == "fp32"
    assert compute_precision("cuda:1", parse_options({"precision": "fp32"}), bf16_supported=True) == "fp32"


# --- gradient accumulation -------------------------------------------------------------------


def _tiny_lora_model(*, checkpointing: bool = False) -> Any:
    import torch
    from transformers import T5ForConditionalGeneration

    from hpod.objectives.t5_lora.model import apply_lora, tiny_config
    from hpod.objectives.t5_lora.train import enable_gradient_checkpointing

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(tiny_config())
    if checkpointing:
        enable_gradient_checkpointing(model)
    model = apply_lora(model, rank=4, alpha=8, dropout=0.0, target_modules=["q", "v"])
    with torch.no_grad():  # LoRA's B starts at zero; give both factors a gradient to compare
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)
    model.train()
    return model


def _batch_gradients(model: Any, max_micro_batch: int | None) -> dict[str, Any]:
    import torch

    from hpod.objectives.t5_lora.train import _Encoded, accumulate_gradients

    generator = torch.Generator().manual_seed(1)
    # Ragged lengths: micro-batches then hold different numbers of target tokens, which
    # is what the token weighting must get right.
    sources = [torch.randint(3, 1000, (int(n),), generator=generator).tolist() for n in range(12, 36, 2)]
    targets = [torch.randint(3, 1000, (int(n),), generator=generator).tolist() for n in range(4, 28, 2)]
    options = parse_options({"model": "tiny", "max_micro_batch": max_micro_batch})
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.grad = None
    loss = accumulate_gradients(model, _Encoded(sources, targets), list(range(12)), 0, "cpu", options,
                                trainable=trainable)
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    grads["__loss__"] = torch.tensor(loss)
    return grads


@pytest.mark.parametrize("micro", [1, 5])
def test_accumulated_micro_batches_give_the_whole_batchs_gradient(micro: int) -> None:
    import torch

    model = _tiny_lora_model()
    whole = _batch_gradients(model, None)
    split = _batch_gradients(model, micro)
    assert set(whole) == set(split) and len(whole) > 1
    for name, grad in whole.items():
        assert torch.allclose(split[name], grad, rtol=1e-4, atol=1e-7), name
    assert any(float(g.abs().max()) > 0 for n, g in whole.items() if "lora_A" in n)


def test_gradient_checkpointing_gives_the_same_gradient() -> None:
    import torch

    plain = _batch_gradients(_tiny_lora_model(), 4)
    recomputed = _batch_gradients(_tiny_lora_model(checkpointing=True), 4)
    for name, grad in plain.items():
        assert torch.allclose(recomputed[name], grad, rtol=1e-4, atol=1e-7), name


def test_a_trial_applies_the_presets_targets_and_checkpointing(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import hpod.objectives.t5_lora._objective as objective_module

    enabled: list[Any] = []
    real = objective_module.enable_gradient_checkpointing
    monkeypatch.setattr(objective_module, "enable_gradient_checkpointing",
                        lambda model: (enabled.append(model), real(model)))
    objective = T5LoraObjective({**FAST, "preset": "t5-large", "max_micro_batch": 3})
    params = {"learning_rate": 1e-3, "batch_size": 8, "epochs": 1, "rank": 4, "alpha": 16, "dropout": 0.1}
    ctx = TrialContext(params=params, seed=0, trial_number=0, study_name="t", artifact_dir=tmp_path / "a",
                       cache_dir=tmp_path / "cache")
    metrics = objective.run(ctx)
    assert len(enabled) == 1 and enabled[0].is_gradient_checkpointing
    lora, unknown = count_lora_parameters(TINY_CONFIG, 4, PRESETS["t5-large"]["target_modules"])
    assert not unknown and metrics["trainable_parameters"] == lora
    assert metrics["steps"] == 2  # 16 examples, effective batch 8: accumulation kept the step count


# --- memory estimate arithmetic ----------------------------------------------------------------


@pytest.mark.parametrize("shape", [TINY_CONFIG, PUBLISHED_SHAPES["t5-small"],
                                   {**PUBLISHED_SHAPES["t5-small"], "feed_forward_proj": "gated-gelu"}])
def test_parameter_counts_match_the_models_built(shape: dict[str, Any]) -> None:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from hpod.objectives.t5_lora.model import apply_lora, count_parameters

    with torch.device("meta"):
        model = T5ForConditionalGeneration(T5Config(**shape))
    assert count_t5_parameters(shape) == sum(p.numel() for p in model.parameters())
    gated = "gated" in shape.get("feed_forward_proj", "")
    targets = ["q", "k", "v", "o", "wo"] + (["wi_0", "wi_1"] if gated else ["wi"])
    trainable, _ = count_parameters(apply_lora(model, rank=8, alpha=16, dropout=0.0, target_modules=targets))
    assert count_lora_parameters(shape, 8, targets) == (trainable, [])


def test_each_presets_micro_batch_fits_a_24_gb_gpu() -> None:
    for preset in PRESETS:
        objective = T5LoraObjective({"preset": preset})
        estimate = objective.estimate_memory({"batch_size": 32, "rank": 16, "dropout": 0.1}, world_size=1,
                                             on_gpu=True)
        assert estimate is not None and estimate.details["precision"] == "bf16"
        assert estimate.details["micro_batch"] == PRESETS[preset]["max_micro_batch"]
        assert estimate.peak_bytes <= 24e9, (preset, estimate.peak_bytes)


def test_the_estimate_follows_batch_ranks_precision_and_checkpointing() -> None:
    objective = T5LoraObjective({"model": "t5-base", "max_micro_batch": 16})
    assert isinstance(objective, EstimatesMemory) and "memory_estimate" in capabilities(objective)

    def peak(params: dict[str, Any], **kw: Any) -> float:
        estimate = objective.estimate_memory(params, **{"world_size": 1, "on_gpu": True, **kw})
        assert estimate is not None
        return estimate.peak_bytes

    assert peak({"batch_size": 8}) < peak({"batch_size": 16}) == peak({"batch_size": 32})  # micro-batch 16
    assert peak({"batch_size": 32}, world_size=2) == peak({"batch_size": 16})  # each rank takes half
    assert peak({"batch_size": 8}, on_gpu=False) > peak({"batch_size": 8})  # fp32 activations on CPU
    checkpointed = T5LoraObjective({"model": "t5-base", "gradient_checkpointing": True})
    assert checkpointed.estimate_memory({"batch_size": 8}, world_size=1, on_gpu=True).peak_bytes < peak(  # type: ignore[union-attr]
        {"batch_size": 8})
    assert micro_batch_size(32, 4, None) == 8 and micro_batch_size(30, 4, 4) == 4
    assert T5LoraObjective({"model": "/nonexistent/model"}).estimate_memory(
        {"batch_size": 8}, world_size=1, on_gpu=True) is None
