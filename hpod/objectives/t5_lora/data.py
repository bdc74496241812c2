"""(article, summary) pairs for ``t5_lora``: the built-in synthetic news corpus and
the JSONL / CSV / Parquet / ``hf:cnn_dailymail`` loaders, which check the data and
raise :class:`~hpod.errors.DataError` naming the file, line and field.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpod.errors import DataError, SpecError
from hpod.objectives.t5_lora.options import OPTIONS_PATH, DataOptions

__all__ = [
    "SUPPORTED_SUFFIXES",
    "SYNTHETIC_DOMAINS",
    "Example",
    "check_data",
    "load_splits",
    "pretraining_corpus",
    "read_records",
    "synthetic_corpus",
]

SUPPORTED_SUFFIXES = (".jsonl", ".csv", ".parquet")


@dataclass(frozen=True)
class Example:
    """One article and its reference summary."""

    text: str
    summary: str


# Word lists for the synthetic corpus. Short, so that the tiny T5 sees each many
# times: the summary copies the article's key slots, which a small model can learn in
# a few hundred steps (a summary it cannot learn would make ROUGE flat noise).
_CITIES = ["Paris", "Lagos", "Oslo", "Lima", "Cairo", "Delhi", "Rome", "Quito", "Seoul", "Perth",
           "Dublin", "Accra", "Hanoi", "Bern", "Tunis", "Riga"]
_THINGS = ["bridges", "schools", "trains", "farms", "roads", "clinics", "ports", "mines",
           "stores", "parks", "banks", "ferries"]
_VERBS = ["closed", "rebuilt", "flooded", "opened", "sold", "repaired", "inspected", "evacuated"]
_EVENTS = ["a storm", "a strike", "an audit", "a fire", "a vote", "a drought", "a recall",
           "a protest", "an earthquake", "a heatwave"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_ORGS = ["city council", "ministry", "union", "regional agency", "police", "harbour board"]
_FILLERS = [
    "Residents gathered outside to watch.",
    "Local radio covered the story all day.",
    "Traffic was slow across the centre.",
    "Some shops stayed open late.",
    "Reporters waited for a statement.",
    "The weather was mild for the season.",
    "Schools sent letters to parents.",
    "Volunteers handed out water.",
]
_FOLLOWUPS = ["a full report next week", "more news soon", "a public meeting", "new funding",
              "further checks", "a review by spring"]


#: A second domain (match reports) for adaptation: other words, another sentence shape.
_TEAMS = ["Northport Rovers", "Kessel United", "Valdor Falcons", "Brimley Athletic", "Ostrava Lions",
          "Marlow Town", "Quarry Wanderers", "Tessin Rangers", "Hollin City", "Garrow Albion",
          "Pelham Hawks", "Sundby Olympic"]
_COMPETITIONS = ["league", "cup", "derby", "friendly", "playoff", "final"]
_MATCH_FILLERS = [
    "The stadium was nearly full.",
    "Rain fell during the second half.",
    "Both sides made late changes.",
    "The referee showed three yellow cards.",
    "Supporters sang until the final whistle.",
    "The pitch was heavy after a wet week.",
    "Tickets had sold out in an hour.",
    "The visitors travelled by overnight bus.",
]
_MATCH_FOLLOWUPS = ["a tougher away game", "a cup tie next month", "a busy winter", "a new signing",
                    "a week of rest", "the return fixture"]
_SPEAKERS = ["the coach", "the captain", "the manager", "the club", "a spokesman"]

#: The synthetic domains: ``news`` (what the tiny base is trained on) and ``sports``.
SYNTHETIC_DOMAINS = ("news", "sports")


def synthetic_corpus(n: int, seed: int = 0, domain: str = "news") -> list[Example]:
    """``n`` deterministic synthetic articles (~150-200 characters) with a one-sentence
    summary (~40-60 characters) that restates the article's key facts.

    ``news``: "{count} {things} were {verb} in {city} after {event} on {day}, ..." ->
    "{count} {things} {verb} in {city} after {event}." ``sports`` (another domain, for
    adaptation): "{home} beat {away} {a}-{b} in {city} on {day} ..." -> "{home} beat
    {away} {a}-{b} in {city}."
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if domain not in SYNTHETIC_DOMAINS:
        raise ValueError(f"domain must be one of {', '.join(SYNTHETIC_DOMAINS)}, got {domain!r}")
    name = "hpod-synthetic-news" if domain == "news" else f"hpod-synthetic-{domain}"
    rng = random.Random(f"{name}-{seed}")
    return [_news(rng) if domain == "news" else _match(rng) for _ in range(n)]


def _news(rng: random.Random) -> Example:
    city, things, verb, event = (rng.choice(_CITIES), rng.choice(_THINGS),
                                 rng.choice(_VERBS), rng.choice(_EVENTS))
    count = rng.randint(2, 90)
    day, org, follow = rng.choice(_DAYS), rng.choice(_ORGS), rng.choice(_FOLLOWUPS)
    filler = " ".join(rng.sample(_FILLERS, 2))
    # Lead-first, like wire news (and CNN/DailyMail): the summary restates the
    # opening clause, so the tiny model can learn it by aligning, not reordering.
    text = (
        f"{count} {things} were {verb} in {city} after {event} on {day}, the {org} said. "
        f"{filler} Officials expect {follow}."
    )
    return Example(text, f"{count} {things} {verb} in {city} after {event}.")


def _match(rng: random.Random) -> Example:
    home, away = rng.sample(_TEAMS, 2)
    winner = rng.randint(1, 6)
    score = f"{winner}-{rng.randint(0, winner - 1)}"
    city, day = rng.choice(_CITIES), rng.choice(_DAYS)
    competition, speaker, follow = rng.choice(_COMPETITIONS), rng.choice(_SPEAKERS), rng.choice(_MATCH_FOLLOWUPS)
    filler = " ".join(rng.sample(_MATCH_FILLERS, 2))
    text = (
        f"{home} beat {away} {score} in {city} on {day} in the {competition}, {speaker} said. "
        f"{filler} The team faces {follow}."
    )
    return Example(text, f"{home} beat {away} {score} in {city}.")


#: Syllables of the made-up names in the tiny base's training corpus.
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def _made_up(rng: random.Random, capital: bool) -> str:
    word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
    return word.capitalize() if capital else word


def pretraining_corpus(n: int, seed: int, novel_share: float = 0.3) -> list[Example]:
    """The tiny base's training corpus: ``news`` articles, a ``novel_share`` of them
    with a made-up place, made-up things and a count up to 9999, so that the base
    learns to copy words it has no single token for (those of a new domain) sub-word
    by sub-word, not only the corpus's own words."""
    rng = random.Random(f"hpod-pretraining-{seed}")
    out: list[Example] = []
    for example in synthetic_corpus(n, seed=seed):
        if rng.random() >= novel_share:
            out.append(example)
            continue
        words = example.summary.split(" ")
        old_lead, old_city = f"{words[0]} {words[1]}", words[4]
        new_lead = f"{rng.randint(2, 9999)} {_made_up(rng, capital=False)}s"
        new_city = _made_up(rng, capital=True)
        out.append(Example(
            example.text.replace(old_lead, new_lead, 1).replace(f" in {old_city} ", f" in {new_city} ", 1),
            example.summary.replace(old_lead, new_lead, 1).replace(f" in {old_city} ", f" in {new_city} ", 1),
        ))
    return out


def _field_value(record: object, field: str, path: Path, line: int) -> str:
    if not isinstance(record, dict):
        raise DataError(f"{path}:{line}: expected a JSON object with field {field!r}, "
                        f"found {type(record).__name__}")
    if field not in record:
        present = ", ".join(sorted(map(str, record))) or "none"
        raise DataError(f"{path}:{line}: record lacks field {field!r} (fields present: {present})")
    value = record[field]
    if not isinstance(value, str):
        raise DataError(f"{path}:{line}: field {field!r} must be text, found {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{path}:{line}: field {field!r} is empty")
    return value


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "re-encode the file as UTF-8"
        ) from None


def _read_jsonl(path: Path, text_field: str, summary_field: str, limit: int) -> list[Example]:
    examples: list[Example] = []
    with path.open("rb") as handle:
        offset = 0
        for line_no, raw in enumerate(handle, start=1):
            if len(examples) >= limit:
                break
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{line_no}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                    f"{offset + exc.start}); re-encode the file as UTF-8"
                ) from None
            offset += len(raw)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            examples.append(Example(_field_value(record, text_field, path, line_no),
                                    _field_value(record, summary_field, path, line_no)))
    return examples


def _read_csv(path: Path, text_field: str, summary_field: str, limit: int) -> list[Example]:
    text = _decode(path, path.read_bytes())
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    for field in (text_field, summary_field):
        if field not in header:
            raise DataError(f"{path}:1: header lacks field {field!r} (columns: {', '.join(header) or 'none'})")
    examples: list[Example] = []
    for row in reader:
        if len(examples) >= limit:
            break
        # reader.line_num is the physical line the row ended on (quoted fields span lines).
        line_no = reader.line_num
        examples.append(Example(_field_value(row, text_field, path, line_no),
                                _field_value(row, summary_field, path, line_no)))
    return examples


def _read_parquet(path: Path, text_field: str, summary_field: str, limit: int) -> list[Example]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    columns = parquet.schema_arrow.names
    for field in (text_field, summary_field):
        if field not in columns:
            raise DataError(f"{path}: lacks column {field!r} (columns: {', '.join(columns) or 'none'})")
    examples: list[Example] = []
    row_no = 0
    for batch in parquet.iter_batches(columns=[text_field, summary_field], batch_size=1024):
        for record in batch.to_pylist():
            row_no += 1
            if len(examples) >= limit:
                return examples
            # Parquet has no lines: "row N" (1-based) plays that part in messages.
            examples.append(Example(_field_value(record, text_field, path, row_no),
                                    _field_value(record, summary_field, path, row_no)))
    return examples


def read_records(path: Path, text_field: str, summary_field: str, limit: int) -> list[Example]:
    """Read and check up to ``limit`` examples from a .jsonl/.csv/.parquet file.

    Raises DataError for a missing, empty or non-UTF-8 file, a bad JSON line, or a
    record that lacks (or has an empty) ``text_field`` / ``summary_field``.
    """
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{path}: unsupported data file type {suffix or '(none)'!r}; "
                        f"use one of {', '.join(SUPPORTED_SUFFIXES)}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: data file is empty")
    reader = {".jsonl": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}[suffix]
    examples = reader(path, text_field, summary_field, limit)
    if not examples:
        raise DataError(f"{path}: data file has no records")
    return examples


def _load_hf(options: DataOptions) -> tuple[list[Example], list[Example]]:
    try:
        import datasets
    except ImportError:
        raise SpecError(f"{OPTIONS_PATH}.data.source", "needs the datasets package "
                        "(pip install 'hpod[datasets]')", found=options.source) from None
    try:
        train = datasets.load_dataset("cnn_dailymail", "3.0.0", split=f"train[:{options.train_size}]")
        val = datasets.load_dataset("cnn_dailymail", "3.0.0", split=f"validation[:{options.val_size}]")
    except Exception as exc:  # offline, no cache, hub errors: all the user's to fix
        raise DataError(f"hf:cnn_dailymail: cannot load the dataset ({exc}); "
                        "download it once or use a local .jsonl file") from None

    def convert(split: Iterable[Any], name: str) -> list[Example]:
        out = []
        for i, row in enumerate(split):
            out.append(Example(_field_value(row, options.text_field, Path(f"hf:cnn_dailymail/{name}"), i + 1),
                               _field_value(row, options.summary_field, Path(f"hf:cnn_dailymail/{name}"), i + 1)))
        return out

    return convert(train, "train"), convert(val, "validation")


def load_splits(options: DataOptions) -> tuple[list[Example], list[Example]]:
    """The (train, validation) examples the options describe.

    Files give their first ``train_size`` records to training and the next
    ``val_size`` to validation; a file with fewer records is a DataError (a silent
    smaller split would change what the study measures).
    """
    if options.source == "synthetic":
        corpus = synthetic_corpus(options.train_size + options.val_size, seed=options.synthetic_seed,
                                  domain=options.synthetic_domain)
        return corpus[: options.train_size], corpus[options.train_size:]
    if options.source.startswith("hf:"):
        return _load_hf(options)
    path = Path(options.source).expanduser()
    needed = options.train_size + options.val_size
    examples = read_records(path, options.text_field, options.summary_field, needed)
    if len(examples) < needed:
        raise DataError(
            f"{path}: has {len(examples)} records but train_size + val_size = "
            f"{options.train_size} + {options.val_size} = {needed}; lower them or add data"
        )
    return examples[: options.train_size], examples[options.train_size:]


def check_data(options: DataOptions) -> None:
    """Submission-time check: everything a trial would read is read and checked now.

    For ``hf:cnn_dailymail`` only the ``datasets`` package is checked (a hub download
    at submission would block the caller for minutes).
    """
    if options.source == "synthetic":
        return
    if options.source.startswith("hf:"):
        try:
            import datasets  # noqa: F401
        except ImportError:
            raise SpecError(f"{OPTIONS_PATH}.data.source", "needs the datasets package "
                            "(pip install 'hpod[datasets]')", found=options.source) from None
        return
    load_splits(options)
