"""hpod's samplers: ``create_sampler`` turns a spec's sampler section into an Optuna sampler.

Names: ``auto``, ``nsga2``, ``qlognehvi`` (hpod's BoTorch qLogNEHVI sampler), ``tpe``,
``gp``, ``random``. Heavy libraries (torch, botorch) load only when a model is fitted.
"""

from __future__ import annotations

from hpod.core.samplers._auto import ModelThenEvolutionSampler
from hpod.core.samplers._factory import SAMPLER_NAMES, SamplerChoice, continued_seed, create_sampler
from hpod.core.samplers._multifidelity import MultiFidelitySampler
from hpod.core.samplers._qlognehvi import QLogNEHVISampler
from hpod.core.samplers._startup import SobolStartupSampler

__all__ = [
    "SAMPLER_NAMES",
    "ModelThenEvolutionSampler",
    "MultiFidelitySampler",
    "QLogNEHVISampler",
    "SamplerChoice",
    "SobolStartupSampler",
    "continued_seed",
    "create_sampler",
]
