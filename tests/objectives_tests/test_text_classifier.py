"""``text_classifier``: the offline example objective that learns a labelled domain,
offers every capability, and checks its data like any data file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpod.errors import DataError, SpecError
from hpod.objectives.base import (
    LearnsFromExamples,
    ProvidesReference,
    ScoresQuality,
    Serves,
    TrialContext,
    capabilities,
    create_objective,
)
from hpod.objectives.text_classifier import classification_metrics, synthetic_reviews

PARAMS = {"learning_rate": 1.0, "epochs": 15, "l2": 1e-5, "batch_size": 8}


def _train(tmp_path: Path, objective_params: dict, seed: int = 0) -> tuple[dict, Path]:
    objective = create_objective("text_classifier", objective_params)
    out = tmp_path / f"trial-{seed}"
    ctx = TrialContext(params=PARAMS, seed=seed, trial_number=0, study_name="clf", artifact_dir=out,
                       cache_dir=tmp_path / "cache")
    return dict(objective.run(ctx)), out


def test_offers_every_capability() -> None:
    objective = create_objective("text_classifier", {})
    for proto in (ProvidesReference, LearnsFromExamples, Serves, ScoresQuality):
        assert isinstance(objective, proto)
    assert {"reference", "examples", "serving", "quality"} <= set(capabilities(objective))
    assert objective.label_schema.fields == ("text", "label")


def test_learns_its_domain_and_is_near_chance_on_the_other(tmp_path: Path) -> None:
    metrics, artifact = _train(tmp_path, {"data": {"source": "synthetic:products"}})
    assert metrics["accuracy"] >= 0.8 and 0 < metrics["loss"] < 0.69
    objective = create_objective("text_classifier", {})
    predictor = objective.load_predictor(artifact, tmp_path)
    # held-out reviews: another seed than the training corpus
    for domain, low, high in (("products", 0.8, 1.0), ("restaurants", 0.0, 0.7)):
        held_out = synthetic_reviews(domain, 200, seed=1234)
        quality = objective.score(predictor.predict([r["text"] for r in held_out]), [r["label"] for r in held_out])
        assert low <= quality["accuracy"] <= high, (domain, quality)


def test_trains_on_a_labelled_window_file(tmp_path: Path) -> None:
    objective = create_objective("text_classifier", {})
    window = tmp_path / "window.jsonl"
    records = synthetic_reviews("restaurants", 150, seed=7)
    window.write_text("".join(json.dumps(r) + "\n" for r in records))
    params = objective.params_for_examples(window, 120, 30)
    child = create_objective("text_classifier", params)
    assert child.training_examples(1000) == records[:120]
    assert child.validation_examples(1000) == records[120:150]
    assert child.reference_texts(5) == [r["text"] for r in records[:5]]
    _, artifact = _train(tmp_path, params)
    held_out = synthetic_reviews("restaurants", 200, seed=99)
    predictions = child.load_predictor(artifact, tmp_path).predict([r["text"] for r in held_out])
    assert child.score(predictions, [r["label"] for r in held_out])["accuracy"] >= 0.8


def test_bad_data_names_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "positive"}\n{"text": "no label here"}\n')
    objective = create_objective("text_classifier", {"data": {"source": str(bad), "train_size": 1, "val_size": 1}})
    with pytest.raises(DataError, match=r"bad.jsonl:2: record lacks field 'label'"):
        objective.validate()
    with pytest.raises(SpecError, match="unknown synthetic domain"):
        create_objective("text_classifier", {"data": {"source": "synthetic:films"}}).validate()
    with pytest.raises(SpecError, match=r"objective.params.n_features"):
        create_objective("text_classifier", {"n_features": 3})


def test_classification_metrics() -> None:
    m = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert m["accuracy"] == 0.75
    assert m["f1"] == pytest.approx((2 / 3 + 0.8) / 2)
