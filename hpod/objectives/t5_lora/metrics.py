"""Summarization metrics as reported in papers: ROUGE-1/2/L F-measure (rouge-score,
with Porter stemming), corpus BLEU (sacrebleu, 0-100) and exact match (0-1).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["summary_metrics"]


def summary_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE F-measures, corpus BLEU and exact-match rate of ``predictions``
    against ``references`` (same length, at least one pair)."""
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references must have the same length, got {len(predictions)} and {len(references)}"
        )
    if not predictions:
        raise ValueError("need at least one prediction to score, got 0")
    import sacrebleu
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    exact = 0
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)
        for name in totals:
            totals[name] += scores[name].fmeasure
        exact += int(" ".join(prediction.split()) == " ".join(reference.split()))
    n = len(predictions)
    result = {name: value / n for name, value in totals.items()}
    result["bleu"] = float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)
    result["exact_match"] = exact / n
    return result
