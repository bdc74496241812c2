"""Prepare once: build an expensive, deterministic artifact (a base model, a
tokenizer, a dataset) once per key and share it between threads and processes.

Every study, retune and trial process that needs the artifact calls
:func:`prepare_once` with the same directory; exactly one of them builds it (under a
thread lock *and* an ``fcntl`` file lock next to the directory, so callers in other
processes wait too), the others wait and then read the finished directory. A build
happens in a private temporary directory that is renamed into place only after it is
complete, so no reader ever sees a half-written artifact, and a build that fails
leaves nothing behind (the next caller builds again). Each build appends one line to
``prepare-log.jsonl`` beside the directory (what was built, by which process, how long
it took, when it finished), so an operator can see that it was built once.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["BUILD_LOG", "DONE_FILE", "is_prepared", "prepare_once"]

#: Written last into a finished artifact directory (its presence means "complete").
DONE_FILE = ".hpod-prepared.json"
#: One JSON line per finished build, in the artifact directory's parent.
BUILD_LOG = "prepare-log.jsonl"

_GUARD = threading.Lock()
_THREAD_LOCKS: dict[str, threading.Lock] = {}


def is_prepared(directory: Path) -> bool:
    """Whether ``directory`` holds a finished artifact."""
    return (Path(directory) / DONE_FILE).is_file()


def _thread_lock(key: str) -> threading.Lock:
    with _GUARD:
        return _THREAD_LOCKS.setdefault(key, threading.Lock())


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def prepare_once(directory: Path, build: Callable[[Path], Any], *, info: dict[str, Any] | None = None) -> Path:
    """Return ``directory`` once it holds the artifact ``build`` writes, building it
    only if no caller (in any thread or process) has finished it yet.

    ``build(tmp)`` writes the artifact into the empty directory ``tmp``; it runs at
    most once at a time per ``directory`` across all threads and processes on this
    machine (the lock file is ``.<name>.lock`` beside ``directory``). ``info`` is
    recorded in the done-marker (with the builder's pid and the build's duration).
    """
    directory = Path(directory)
    if is_prepared(directory):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock_path = directory.parent / f".{directory.name}.lock"
    with _thread_lock(str(lock_path.resolve())), _file_lock(lock_path):
        if is_prepared(directory):  # another caller finished while this one waited
            return directory
        tmp = directory.parent / f".tmp-{directory.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            started = time.perf_counter()
            build(tmp)
            marker = {**(info or {}), "pid": os.getpid(), "build_seconds": round(time.perf_counter() - started, 3),
                      "finished_at": round(time.time(), 3)}
            (tmp / DONE_FILE).write_text(json.dumps(marker, sort_keys=True, default=str), encoding="utf-8")
            if directory.exists():
                # Left by a build that died before this scheme existed or mid-rename: incomplete.
                shutil.rmtree(directory)
            os.rename(tmp, directory)
            with (directory.parent / BUILD_LOG).open("a", encoding="utf-8") as log:
                log.write(json.dumps({"directory": directory.name, **marker}, sort_keys=True, default=str) + "\n")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return directory
