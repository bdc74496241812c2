"""A user objective that reports summarization quality, for the report tests; the
trial process imports it as ``test_report_objectives:summarizer`` (no tests here)."""

from __future__ import annotations

import math


def summarizer(params):
    """Cheap stand-in for a LoRA summarization run: a loss / quality trade-off in the rank."""
    rank = float(params["rank"])
    lr = float(params["learning_rate"])
    quality = 0.2 + 0.05 * math.log2(rank) - 0.3 * abs(math.log10(lr) + 3.5) / 2
    return {"loss": 3.0 - quality + 0.02 * rank, "rouge1": quality + 0.15, "rouge2": quality,
            "rougeL": quality + 0.1, "bleu": 100 * quality / 2}


summarizer.metric_names = ("loss", "rouge1", "rouge2", "rougeL", "bleu")
summarizer.default_space = {"rank": {"type": "categorical", "choices": [4, 8, 16]},
                            "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}}
