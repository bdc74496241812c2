"""hpod: a multi-objective hyperparameter-optimization daemon for LoRA fine-tuning and more."""

__version__ = "0.1.0"
