"""``text_classifier``: a small offline text classifier (numpy softmax regression on
hashed bag-of-words features), the second example objective next to ``t5_lora``.

It trains on labelled text (``{"text": ..., "label": ...}``; a JSONL/CSV file or the
built-in synthetic review corpus of two domains, ``synthetic:products`` and
``synthetic:restaurants``, whose sentiment words do not overlap, so a model trained on
one domain is near chance on the other) and reports validation ``loss``
(cross-entropy), ``accuracy`` and macro ``f1``. It offers every optional capability —
reference texts for data monitors, training on a labelled window, a predictor for
serving, quality scoring — so drift monitors, feedback, retunes and serving work for it
exactly as for any objective that offers them.

Concurrency: ``run`` reads only its options and writes only under ``ctx.artifact_dir``.
"""

from __future__ import annotations

import itertools
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hpod.errors import DataError, SpecError, UsageError
from hpod.objectives.base import (
    BaseObjective,
    Measurement,
    TrialContext,
    parse_params,
    register_objective,
)
from hpod.objectives.labelled import LabelSchema, read_labelled_file

__all__ = [
    "DOMAINS",
    "MODEL_FILE",
    "ClassifierOptions",
    "TextClassifierObjective",
    "classification_metrics",
    "synthetic_reviews",
]

#: written in each trial's artifact directory (seed 0's in the directory itself)
MODEL_FILE = "text_classifier.npz"
_SYNTHETIC = "synthetic:"

# Two review domains with disjoint sentiment vocabularies; fillers carry no sentiment.
DOMAINS: dict[str, dict[str, list[str]]] = {
    "products": {
        "subject": ["the charger", "this phone case", "the headphones", "the blender", "this laptop stand",
                    "the keyboard", "the backpack", "the desk lamp", "the kettle", "this power bank"],
        "positive": ["works perfectly", "is sturdy and reliable", "arrived quickly and intact",
                     "exceeded my expectations", "has excellent battery life", "feels solid and well built",
                     "was worth every penny", "charges fast", "is quiet and efficient"],
        "negative": ["stopped working after a week", "feels flimsy and cheap", "arrived broken",
                     "is a waste of money", "has a defective switch", "went back for a refund",
                     "overheats constantly", "drains the battery", "cracked on the first day"],
        "filler": ["I ordered it last month.", "The packaging was plain.", "It comes in three colours.",
                   "I use it at my desk.", "Setup took ten minutes.", "My brother has the same model.",
                   "The manual is short.", "Delivery was on a Tuesday."],
    },
    "restaurants": {
        "subject": ["the pasta", "our waiter", "the soup", "the dessert", "the terrace", "the curry",
                    "the bread", "the staff", "the risotto", "the wine list"],
        "positive": ["was delicious", "was warm and friendly", "tasted fresh and fragrant",
                     "made the evening lovely", "was perfectly seasoned", "deserves a return visit",
                     "was generous and tasty", "was cosy and charming", "melted in the mouth"],
        "negative": ["was bland and greasy", "was rude and slow", "arrived cold", "was overpriced for the portion",
                     "tasted stale", "ruined our dinner", "was soggy and salty", "left us hungry",
                     "was dirty and noisy"],
        "filler": ["We booked a table for four.", "The room was busy on Friday.", "Parking was nearby.",
                   "We came for a birthday.", "The menu changes weekly.", "It is near the station.",
                   "We sat by the window.", "Lunch was at one."],
    },
}
LABELS = ("negative", "positive")


def synthetic_reviews(domain: str, n: int, seed: int = 0, *, label_noise: float = 0.03) -> list[dict[str, str]]:
    """``n`` labelled reviews of ``domain`` (deterministic for a seed): one or two
    sentences of the label's sentiment, sometimes one of the other, and fillers;
    ``label_noise`` of the labels flipped."""
    if domain not in DOMAINS:
        raise UsageError(f"unknown review domain {domain!r}; allowed: {', '.join(DOMAINS)}")
    words = DOMAINS[domain]
    rng = np.random.default_rng([seed, zlib.crc32(domain.encode())])
    out = []
    for _ in range(n):
        label = int(rng.integers(2))
        own, other = ("positive", "negative") if label == 1 else ("negative", "positive")
        sentences = []
        for _ in range(int(rng.integers(1, 3))):
            sentences.append(f"{rng.choice(words['subject']).capitalize()} {rng.choice(words[own])}.")
        if rng.random() < 0.3:
            sentences.append(f"{rng.choice(words['subject']).capitalize()} {rng.choice(words[other])}, though.")
        sentences += list(rng.choice(words["filler"], size=int(rng.integers(1, 3)), replace=False))
        rng.shuffle(sentences)
        if rng.random() < label_noise:
            label = 1 - label
        out.append({"text": " ".join(sentences), "label": LABELS[label]})
    return out


class ClassifierData(BaseModel):
    """``source``: ``synthetic:products`` / ``synthetic:restaurants`` or a ``.jsonl`` /
    ``.csv`` file whose first ``train_size`` records train and the next ``val_size``
    validate."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(default="synthetic:products", min_length=1)
    text_field: str = Field(default="text", min_length=1)
    label_field: str = Field(default="label", min_length=1)
    train_size: int = Field(default=400, ge=1, le=1_000_000)
    val_size: int = Field(default=100, ge=1, le=1_000_000)
    synthetic_seed: int = 0


class ClassifierOptions(BaseModel):
    """``objective.params`` of ``text_classifier``; ``n_features`` hashed buckets."""

    model_config = ConfigDict(extra="forbid")
    data: ClassifierData = Field(default_factory=ClassifierData)
    n_features: int = Field(default=4096, ge=16, le=1 << 20)


def parse_classifier_options(params: Mapping[str, Any] | None) -> ClassifierOptions:
    return parse_params(ClassifierOptions, params)


_TOKEN = re.compile(r"[a-z0-9']+")


def featurize(texts: Sequence[str], n_features: int) -> np.ndarray:
    """Hashed binary bag of words and word pairs, each row scaled to unit length."""
    x = np.zeros((len(texts), n_features), dtype=np.float32)
    for i, text in enumerate(texts):
        tokens = _TOKEN.findall(text.lower())
        grams = tokens + [a + " " + b for a, b in itertools.pairwise(tokens)]
        for g in grams:
            x[i, zlib.crc32(g.encode()) % n_features] = 1.0
        norm = float(np.linalg.norm(x[i]))
        if norm > 0:
            x[i] /= norm
    return x


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    probabilities: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return probabilities


def classification_metrics(predictions: Sequence[Any], references: Sequence[str]) -> dict[str, float]:
    """``accuracy`` and macro ``f1`` over the labels that occur in either list."""
    if len(predictions) != len(references) or not references:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    pred = [str(p) for p in predictions]
    ref = [str(r) for r in references]
    accuracy = sum(p == r for p, r in zip(pred, ref)) / len(ref)
    f1s = []
    for label in sorted(set(pred) | set(ref)):
        tp = sum(p == label and r == label for p, r in zip(pred, ref))
        fp = sum(p == label and r != label for p, r in zip(pred, ref))
        fn = sum(p != label and r == label for p, r in zip(pred, ref))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float(accuracy), "f1": float(np.mean(f1s))}


class _Predictor:
    def __init__(self, weights: np.ndarray, bias: np.ndarray, labels: list[str], n_features: int):
        self.weights, self.bias, self.labels, self.n_features = weights, bias, labels, n_features

    def predict(self, texts: Sequence[str]) -> list[str]:
        scores = featurize(list(texts), self.n_features) @ self.weights + self.bias
        return [self.labels[int(i)] for i in scores.argmax(axis=1)]


class TextClassifierObjective(BaseObjective):
    """Softmax regression on hashed features, trained by minibatch SGD with L2."""

    metric_names = frozenset({"loss", "accuracy", "f1", "train_loss", "epochs_run"})
    prediction_name = "labels"
    quality_metric = "accuracy"
    quality_names = ("accuracy", "f1")

    def __init__(self, params: Mapping[str, Any] | None = None):
        self.options = parse_classifier_options(params)
        d = self.options.data
        self.label_schema = LabelSchema(d.text_field, d.label_field, target_kind="label")

    def default_space(self) -> dict[str, dict[str, Any]]:
        return {
            "learning_rate": {"type": "float", "low": 0.05, "high": 5.0, "log": True},
            "epochs": {"type": "int", "low": 1, "high": 30},
            "l2": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
            "batch_size": {"type": "categorical", "choices": [8, 16, 32, 64]},
        }

    # ------------------------------------------------------------------ data
    def _records(self) -> list[dict[str, str]]:
        d = self.options.data
        needed = d.train_size + d.val_size
        if d.source.startswith(_SYNTHETIC):
            return synthetic_reviews(d.source[len(_SYNTHETIC):], needed, seed=d.synthetic_seed)
        records = read_labelled_file(Path(d.source), self.label_schema)
        if len(records) < needed:
            raise DataError(f"{d.source}: has {len(records)} records but train_size + val_size = {needed}; "
                            "lower them or add data")
        return records[:needed]

    def splits(self) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        records = self._records()
        n = self.options.data.train_size
        return records[:n], records[n:]

    def validate(self) -> None:
        d = self.options.data
        if d.source.startswith(_SYNTHETIC):
            domain = d.source[len(_SYNTHETIC):]
            if domain not in DOMAINS:
                raise SpecError("objective.params.data.source", "unknown synthetic domain", found=d.source,
                                allowed=", ".join(_SYNTHETIC + k for k in DOMAINS) + ", or a .jsonl/.csv file")
        self._records()

    # ------------------------------------------------------------------ capabilities
    def reference_texts(self, limit: int) -> list[str]:
        train, _ = self.splits()
        return [r[self.label_schema.input_field] for r in train[:limit]]

    def training_examples(self, limit: int) -> list[dict[str, str]]:
        train, _ = self.splits()
        return [dict(r) for r in train[:limit]]

    def validation_examples(self, limit: int) -> list[dict[str, str]]:
        _, val = self.splits()
        return [dict(r) for r in val[:limit]]

    def params_for_examples(self, path: Path, n_train: int, n_val: int) -> dict[str, Any]:
        raw = self.options.model_dump(mode="json")
        raw["data"].update(source=str(path), train_size=int(n_train), val_size=int(n_val))
        return raw

    def load_predictor(self, artifact_dir: Path, cache_dir: Path) -> _Predictor:
        path = Path(artifact_dir) / MODEL_FILE
        if not path.is_file():
            raise UsageError(f"{artifact_dir}: no trained classifier here ({MODEL_FILE} missing)")
        with np.load(path, allow_pickle=False) as z:
            labels = [str(x) for x in z["labels"]]
            return _Predictor(z["weights"], z["bias"], labels, int(z["n_features"]))

    def score(self, predictions: Sequence[Any], references: Sequence[str]) -> dict[str, float]:
        return classification_metrics(predictions, references)

    # ------------------------------------------------------------------ a trial
    def run(self, ctx: TrialContext) -> Mapping[str, float | Measurement]:
        p = ctx.params
        lr, epochs = float(p.get("learning_rate", 0.5)), int(p.get("epochs", 10))
        l2, batch = float(p.get("l2", 1e-4)), int(p.get("batch_size", 16))
        s = self.label_schema
        train, val = self.splits()
        labels = sorted({r[s.target_field] for r in train} | {r[s.target_field] for r in val})
        index = {label: i for i, label in enumerate(labels)}
        n_feat = self.options.n_features
        xt = featurize([r[s.input_field] for r in train], n_feat)
        yt = np.array([index[r[s.target_field]] for r in train])
        xv = featurize([r[s.input_field] for r in val], n_feat)
        yv = np.array([index[r[s.target_field]] for r in val])
        rng = np.random.default_rng(ctx.seed)
        w = np.zeros((n_feat, len(labels)), dtype=np.float64)
        b = np.zeros(len(labels), dtype=np.float64)
        onehot = np.eye(len(labels))[yt]

        def val_loss() -> float:
            prob = _softmax(xv @ w + b)
            return float(-np.mean(np.log(prob[np.arange(len(yv)), yv] + 1e-12)))

        best = (np.inf, w.copy(), b.copy())
        train_loss = float("nan")
        for epoch in range(1, epochs + 1):
            order = rng.permutation(len(yt))
            for start in range(0, len(order), batch):
                idx = order[start:start + batch]
                prob = _softmax(xt[idx] @ w + b)
                grad = prob - onehot[idx]
                w -= lr * (xt[idx].T @ grad / len(idx) + l2 * w)
                b -= lr * grad.mean(axis=0)
            prob = _softmax(xt @ w + b)
            train_loss = float(-np.mean(np.log(prob[np.arange(len(yt)), yt] + 1e-12)))
            loss = val_loss()
            if loss < best[0]:
                best = (loss, w.copy(), b.copy())
            ctx.report(epoch, {"loss": loss})
        loss, w, b = best
        predictor = _Predictor(w, b, labels, n_feat)
        quality = classification_metrics(predictor.predict([r[s.input_field] for r in val]),
                                         [r[s.target_field] for r in val])
        out_dir = Path(ctx.artifact_dir) if ctx.seed_index == 0 else Path(ctx.artifact_dir) / f"seed-{ctx.seed_index}"
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez(out_dir / MODEL_FILE, weights=w, bias=b, labels=np.array(labels), n_features=n_feat)
        (out_dir / "text_classifier.json").write_text(json.dumps({
            "options": self.options.model_dump(mode="json"), "params": dict(p), "seed": ctx.seed,
            "trial_number": ctx.trial_number, "study_name": ctx.study_name}, indent=2, default=str))
        return {"loss": loss, **quality, "train_loss": train_loss, "epochs_run": float(epochs)}


def create_text_classifier(params: Mapping[str, Any]) -> TextClassifierObjective:
    """Factory registered as ``text_classifier``; SpecError for bad ``objective.params``."""
    return TextClassifierObjective(params)


register_objective("text_classifier", create_text_classifier)
