"""Drift detectors: false-alarm rate on in-distribution windows and detection delay under shifts.

Run ``python -m benchmarks.drift`` (``--quick`` for a CI smoke run). Data monitors use
the real CNN/DailyMail sample (../shared/data/cnndm_sample_100.jsonl): the reference
is a random half of its articles; in-distribution windows are sentence-resampled
articles drawn from all 100; shifted windows are truncated (length) or have a share
of their sentences replaced by contract-like sentences of the same length
(vocabulary). Performance and cost monitors run on simulated metric streams.
Every alarm goes through the monitor's discipline (confirm=2, cooldown=10 windows).
Results: benchmarks/results/drift.json and drift.md.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._machine import describe_machine
from hpod.monitors.drift import Monitor, TextFeatures, text_features

ROOT = Path(__file__).resolve().parents[1]
CNNDM = ROOT.parent / "shared/data/cnndm_sample_100.jsonl"
RESULTS = ROOT / "benchmarks/results"
WINDOW = 50
MAX_DELAY_WINDOWS = 20
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_LEGAL_WORDS = (
    "the lessee shall indemnify lessor against any claim arising under this agreement pursuant to "
    "section clause herein thereof whereas notwithstanding foregoing party parties covenant warrant "
    "represent tenant landlord premises term termination breach remedy liability damages arbitration "
    "jurisdiction governing law severability assignment consent notice writing executed counterpart"
).split()

#: shift sizes per stream: fraction of sentences kept (length), fraction replaced by
#: another domain (vocabulary), step in reference SDs (performance), cost change.
SHIFTS: dict[str, dict[str, float]] = {
    "length": {"small": 0.8, "medium": 0.5, "large": 0.25},
    "vocabulary": {"small": 0.1, "medium": 0.25, "large": 1.0},
    "performance": {"small": 0.5, "medium": 1.0, "large": 2.0},
    "cost": {"small": 0.1, "medium": 0.2, "large": 0.3},
}
DATA_DETECTORS: dict[str, list[str]] = {
    "ks": ["ks"],
    "wasserstein": ["wasserstein"],
    "js": ["js"],
    "psi": ["psi"],
    "mmd": ["mmd"],
    "ks+js (default)": ["ks", "js"],
}


def machine() -> dict[str, Any]:
    return describe_machine()


class TextStream:
    """Windows of sentence-resampled CNN/DM articles, with optional shifts."""

    def __init__(self, articles: list[list[str]], seed: int) -> None:
        self.articles = articles
        self.rng = np.random.default_rng(seed)
        # a fixed random projection of bag-of-buckets vectors stands in for an encoder's
        # mean-pooled states in the MMD rows (no model download on a benchmark machine)
        self.projection = np.random.default_rng(12345).normal(size=(512, 32)) / np.sqrt(32)
        order = self.rng.permutation(len(articles))
        reference = [text_features(" ".join(articles[i])) for i in order[: len(articles) // 2]]
        self.reference = self._embed(reference)

    def _embed(self, features: list[TextFeatures]) -> list[TextFeatures]:
        out = []
        for item in features:
            vector = np.zeros(512)
            vector[list(item.buckets)] = list(item.buckets.values())
            vector = np.sqrt(vector / max(vector.sum(), 1.0))
            out.append(item.model_copy(update={"embedding": (vector @ self.projection).tolist()}))
        return out

    def window(self, keep: float = 1.0, replace: float = 0.0) -> list[TextFeatures]:
        rng = self.rng
        docs = []
        for _ in range(WINDOW):
            sentences = self.articles[rng.integers(len(self.articles))]
            doc = [sentences[j] for j in rng.integers(len(sentences), size=len(sentences))]
            doc = doc[: max(1, round(len(doc) * keep))]
            doc = [
                " ".join(rng.choice(_LEGAL_WORDS, size=len(s.split()))).capitalize() + "."
                if rng.random() < replace
                else s
                for s in doc
            ]
            docs.append(text_features(" ".join(doc)))
        return self._embed(docs)


def _delay(monitor: Monitor, windows: list[Any]) -> int | None:
    for index, window in enumerate(windows):
        if monitor.check(window).fired:
            return index + 1
    return None


def _row(detector: str, stream: str, shift: str, seed: int, **values: Any) -> dict[str, Any]:
    return {"detector": detector, "stream": stream, "shift": shift, "seed": seed, **values}


def run_data(articles: list[list[str]], seed: int, far_windows: int, delay_windows: int) -> list[dict[str, Any]]:
    stream = TextStream(articles, seed)
    rows: list[dict[str, Any]] = []
    in_dist = [stream.window() for _ in range(far_windows)]
    shifted = {
        (kind, size): [
            stream.window(keep=value) if kind == "length" else stream.window(replace=value)
            for _ in range(delay_windows)
        ]
        for kind in ("length", "vocabulary")
        for size, value in SHIFTS[kind].items()
    }
    for name, detectors in DATA_DETECTORS.items():
        spec = {"kind": "data", "detector": detectors, "seed": seed}
        monitor = Monitor(spec, stream.reference)
        started = time.perf_counter()
        checks = [monitor.check(window) for window in in_dist]
        seconds_per_check = (time.perf_counter() - started) / len(checks)
        rows.append(
            _row(
                name,
                "in-distribution",
                "none",
                seed,
                false_alarm_rate=sum(c.fired for c in checks) / len(checks),
                window_over_threshold_rate=sum(c.over_threshold for c in checks) / len(checks),
                windows=len(checks),
                seconds_per_check=seconds_per_check,
            )
        )
        for (kind, size), windows in shifted.items():
            delay = _delay(Monitor(spec, stream.reference), windows)
            rows.append(_row(name, kind, size, seed, detection_delay_windows=delay, detected=delay is not None))
    return rows


def run_performance(seed: int, far_windows: int, delay_windows: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for detector in ("page_hinkley", "adwin", "cusum"):
        rng = np.random.default_rng([seed, 1])
        mean, sd = 1.2, 0.05  # a validation loss and its per-batch noise
        reference = rng.normal(mean, sd, size=WINDOW)
        spec = {"kind": "performance", "detector": detector}
        monitor = Monitor(spec, reference)
        checks = [monitor.check(rng.normal(mean, sd, size=WINDOW)) for _ in range(far_windows)]
        rows.append(
            _row(
                detector,
                "in-distribution",
                "none",
                seed,
                false_alarm_rate=sum(c.fired for c in checks) / len(checks),
                window_over_threshold_rate=sum(c.over_threshold for c in checks) / len(checks),
                windows=len(checks),
            )
        )
        for size, step in SHIFTS["performance"].items():
            windows = [rng.normal(mean + step * sd, sd, size=WINDOW) for _ in range(delay_windows)]
            delay = _delay(Monitor(spec, reference), windows)
            rows.append(
                _row(detector, "performance", size, seed, detection_delay_windows=delay, detected=delay is not None)
            )
    return rows


def run_cost(seed: int, far_windows: int, delay_windows: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng([seed, 2])
    joules, noise = 5000.0, 0.03  # energy per epoch of the reference configuration, 3 % run-to-run noise
    reference = joules * (1 + noise * rng.standard_normal(5))
    spec = {"kind": "cost"}
    monitor = Monitor(spec, reference)
    checks = [monitor.check(joules * (1 + noise * rng.standard_normal(3))) for _ in range(far_windows)]
    rows = [
        _row(
            "relative_change",
            "in-distribution",
            "none",
            seed,
            false_alarm_rate=sum(c.fired for c in checks) / len(checks),
            window_over_threshold_rate=sum(c.over_threshold for c in checks) / len(checks),
            windows=len(checks),
        )
    ]
    for size, change in SHIFTS["cost"].items():
        windows = [joules * (1 + change) * (1 + noise * rng.standard_normal(3)) for _ in range(delay_windows)]
        delay = _delay(Monitor(spec, reference), windows)
        rows.append(
            _row("relative_change", "cost", size, seed, detection_delay_windows=delay, detected=delay is not None)
        )
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (detector, stream, shift), averaged over seeds."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["detector"], row["stream"], row["shift"]), []).append(row)
    out = []
    for (detector, stream, shift), members in groups.items():
        summary: dict[str, Any] = {"detector": detector, "stream": stream, "shift": shift, "seeds": len(members)}
        if stream == "in-distribution":
            summary["false_alarm_rate"] = float(np.mean([m["false_alarm_rate"] for m in members]))
            summary["window_over_threshold_rate"] = float(np.mean([m["window_over_threshold_rate"] for m in members]))
            summary["windows"] = int(members[0]["windows"])
            summary["detection_delay_windows"] = None
            if "seconds_per_check" in members[0]:
                summary["seconds_per_check"] = float(np.mean([m["seconds_per_check"] for m in members]))
        else:
            delays = [m["detection_delay_windows"] for m in members if m["detected"]]
            summary["detection_delay_windows"] = float(np.mean(delays)) if delays else None
            summary["detected_fraction"] = len(delays) / len(members)
            summary["false_alarm_rate"] = None
        out.append(summary)
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown(summary: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [
        "# Drift detectors: false alarms and detection delay",
        "",
        f"Machine: {info['machine']['cpu']}, {info['machine']['cores']} cores, torch {info['machine']['torch']}; "
        f"seeds {info['seeds']}; {info['far_windows']} in-distribution windows per seed; window = {WINDOW} samples "
        f"(cost: 3 runs); confirm = 2, cooldown = 10 windows; delay counted from the first shifted window, "
        f"censored at {info['delay_windows']} windows. Command: `{info['command']}` ({info['seconds']:.0f} s).",
        "",
        "Shifts: length = fraction of sentences kept (small 0.8, medium 0.5, large 0.25); vocabulary = fraction of "
        "sentences replaced by contract-like text (0.1 / 0.25 / 1.0); performance = step in reference SDs "
        "(0.5 / 1 / 2); cost = relative energy change (+10 % / +20 % / +30 %, threshold 15 %). "
        "MMD rows use a fixed random projection of bucket frequencies as the embedding.",
        "",
        (
            "| detector | stream | shift | false_alarm_rate | window_over_threshold_rate | detection_delay_windows "
            "| detected_fraction |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        lines.append(
            f"| {row['detector']} | {row['stream']} | {row['shift']} | {_fmt(row.get('false_alarm_rate'))} | "
            f"{_fmt(row.get('window_over_threshold_rate'))} | {_fmt(row.get('detection_delay_windows'))} | "
            f"{_fmt(row.get('detected_fraction'))} |"
        )
    lines += [
        "",
        "false_alarm_rate = alarms fired / in-distribution windows; "
        "window_over_threshold_rate = windows over threshold before confirmation; "
        "detection_delay_windows = mean windows to the alarm over the seeds that detected "
        "(– = never within the horizon).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drift", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 20 in-distribution windows (CI smoke run)")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    seeds = list(range(1 if args.quick else args.seeds))
    far_windows = 20 if args.quick else 100
    delay_windows = 6 if args.quick else MAX_DELAY_WINDOWS
    info: dict[str, Any] = {
        "machine": machine(),
        "seeds": seeds,
        "far_windows": far_windows,
        "delay_windows": delay_windows,
        "command": "python -m benchmarks.drift" + (" --quick" if args.quick else ""),
    }
    print(f"machine: {info['machine']}")
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    articles: list[list[str]] | None = None
    if CNNDM.exists():
        texts = [json.loads(line)["article"] for line in CNNDM.read_text(encoding="utf-8").splitlines() if line.strip()]
        articles = [_SENTENCE.split(text) for text in texts]
    else:
        print(f"{CNNDM} is absent: data-drift rows skipped")
    for seed in seeds:
        if articles is not None:
            rows += run_data(articles, seed, far_windows, delay_windows)
        rows += run_performance(seed, far_windows, delay_windows)
        rows += run_cost(seed, far_windows, delay_windows)
        print(f"seed {seed} done at {time.perf_counter() - started:.0f} s")
    info["seconds"] = time.perf_counter() - started
    summary = summarise(rows)
    out = args.out / "quick" if args.quick else args.out
    out.mkdir(parents=True, exist_ok=True)
    name = "drift"
    (out / f"{name}.json").write_text(
        json.dumps({"info": info, "rows": summary, "per_seed": rows}, indent=2) + "\n", encoding="utf-8"
    )
    table = markdown(summary, info)
    (out / f"{name}.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
