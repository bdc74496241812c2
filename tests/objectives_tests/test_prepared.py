"""Prepare once: concurrent callers (threads and processes) of the same key get one
build and the same artifact; the t5_lora tiny base is trained once however many
studies ask for it at the same time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import hpod.objectives.t5_lora.model as t5_model
from hpod.objectives.prepared import BUILD_LOG, DONE_FILE, is_prepared, prepare_once
from hpod.objectives.t5_lora import T5LoraObjective

FAST = {"model": "tiny", "base_steps": 10, "cpu_threads": 1}


def _builds(log_dir: Path) -> list[dict[str, Any]]:
    log = log_dir / BUILD_LOG
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _start_together(n: int, work: Any) -> list[Any]:
    """Run ``work(i)`` in ``n`` threads released at once; return results (or raise the first error)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not [t for t in threads if t.is_alive()], "a preparing thread did not finish"
    if errors:
        raise errors[0]
    return results


def test_threads_preparing_one_key_build_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def build(out: Path) -> None:
        calls.append(threading.get_ident())
        (out / "artifact.txt").write_text(f"built by {threading.get_ident()}")

    target = tmp_path / "cache" / "thing-abc"
    results = _start_together(8, lambda i: prepare_once(target, build, info={"what": "test"}))
    assert len(calls) == 1
    assert set(results) == {target}
    assert (target / "artifact.txt").read_text() == f"built by {calls[0]}"
    assert is_prepared(target) and json.loads((target / DONE_FILE).read_text())["what"] == "test"
    assert [b["directory"] for b in _builds(target.parent)] == ["thing-abc"]
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".tmp")]


def test_processes_preparing_one_key_build_once(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "thing-xyz"
    go = tmp_path / "go"
    code = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from hpod.objectives.prepared import prepare_once

        while not Path({str(go)!r}).exists():  # start together
            time.sleep(0.01)

        def build(out):
            time.sleep(0.5)  # widen the window in which the others arrive
            (out / "artifact.txt").write_text(str(os.getpid()))

        print(prepare_once(Path({str(target)!r}), build))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    go.write_text("")
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in outputs]
    assert {out.strip() for out, _ in outputs} == {str(target)}
    builds = _builds(target.parent)
    assert len(builds) == 1
    assert (target / "artifact.txt").read_text() == str(builds[0]["pid"])


def test_a_failed_build_leaves_nothing_and_the_next_caller_builds(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "thing-fail"

    def broken(out: Path) -> None:
        (out / "half.txt").write_text("half")
        raise RuntimeError("out of disk")

    with pytest.raises(RuntimeError, match="out of disk"):
        prepare_once(target, broken)
    assert not target.exists() and _builds(target.parent) == []
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".tmp")]
    prepare_once(target, lambda out: (out / "ok.txt").write_text("ok"))
    assert (target / "ok.txt").read_text() == "ok" and len(_builds(target.parent)) == 1


def test_concurrent_t5_studies_train_the_tiny_base_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainings: list[int] = []
    real_train = t5_model.train_full

    def counted(*args: Any, **kwargs: Any) -> None:
        trainings.append(threading.get_ident())
        real_train(*args, **kwargs)

    monkeypatch.setattr(t5_model, "train_full", counted)
    cache = tmp_path / "cache"
    # Four studies of the same tiny recipe (different data) prepare at once, as the daemon's
    # preparation threads do; a fifth with another recipe gets its own base.
    objectives = [T5LoraObjective({**FAST, "data": {"synthetic_seed": i}}) for i in range(4)]
    _start_together(4, lambda i: objectives[i].prepare(cache))
    assert len(trainings) == 1
    base = t5_model.tiny_base_dir(objectives[0].options, cache)
    assert {t5_model.tiny_base_dir(o.options, cache) for o in objectives} == {base}
    assert (base / "config.json").exists() and (base / "tokenizer.json").exists()
    T5LoraObjective({**FAST, "base_steps": 11}).prepare(cache)
    assert len(trainings) == 2
    assert len(_builds(base.parent)) == 2


def test_trial_processes_and_a_study_share_one_tiny_base(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    code = ("import sys; from pathlib import Path; from hpod.objectives.t5_lora import T5LoraObjective; "
            f"T5LoraObjective({FAST!r}).prepare(Path(sys.argv[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(cache)], stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    T5LoraObjective(FAST).prepare(cache)
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    base = t5_model.tiny_base_dir(T5LoraObjective(FAST).options, cache)
    assert [b["directory"] for b in _builds(base.parent)] == [base.name]
