"""Commands that read never create files; a missing database is "no studies yet" for
`hpod status`; explicit flags win over a daemon's answer; the shell's habits
(completion, journald log lines, trial 0)."""

from __future__ import annotations

import json
import logging
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from hpod_testing import fake_daemon_api, run_cli
from rich.console import Console

from hpod.cli._render import print_daemon_status
from hpod.daemon.config import log_format
from hpod.store import NoDatabase, Store, default_storage_url, same_database

READ_COMMANDS = [
    ["trials", "x"], ["pareto", "x"], ["export", "x"], ["report", "x"], ["events"],
    ["export-adapter", "x", "--out", "{tmp}/adapter"], ["compare", "x"],
]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: a[0])
def test_read_commands_create_nothing(tmp_path: Path, args: list[str]) -> None:
    typo = tmp_path / "no" / "such" / "state"
    empty = tmp_path / "empty"
    empty.mkdir()
    for state_dir in (typo, empty):
        argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
        proc = run_cli([*argv, "--state-dir", str(state_dir)])
        assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
        assert "no hpod database at" in proc.stderr and str(state_dir) in proc.stderr
        assert "Traceback" not in proc.stderr
    assert _tree(tmp_path) == ["empty"], "a command that reads created files"


def test_read_commands_create_no_sqlite_file_named_by_url(tmp_path: Path) -> None:
    db = tmp_path / "missing.db"
    proc = run_cli(["trials", "x", "--storage", f"sqlite:///{db}"])
    assert proc.returncode == 2 and "no hpod database at" in proc.stderr
    assert not db.exists() and _tree(tmp_path) == []


def test_status_without_a_database_is_no_studies_yet(tmp_path: Path) -> None:
    missing = tmp_path / "fresh"
    proc = run_cli(["status", "--state-dir", str(missing)])
    assert proc.returncode == 0, proc.stderr
    assert "no studies yet" in proc.stdout
    proc = run_cli(["status", "--json"], HPOD_STATE_DIR=str(missing))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["daemon"] is None and data["studies"] == [] and data["workers"] == []
    assert not missing.exists()


def test_store_refuses_missing_sqlite_when_it_only_reads(tmp_path: Path) -> None:
    with pytest.raises(NoDatabase, match="no hpod database"):
        Store.for_state_dir(tmp_path / "x", create=False)
    with pytest.raises(NoDatabase):
        Store(f"sqlite:///{tmp_path / 'y.db'}", light=True)
    assert _tree(tmp_path) == []


def _two_databases(tmp_path: Path) -> tuple[Path, Path]:
    """Two state directories with a database each: ours, and the one the daemon serves."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for d in (ours, theirs):
        Store.for_state_dir(d).close()
    return ours, theirs


def _daemon_answer(state_dir: Path) -> dict[str, Any]:
    """What a daemon serving ``state_dir``'s database answers to ``GET /v1/status``."""
    return {"daemon": {"version": "fake", "pid": 1}, "storage": default_storage_url(state_dir), "studies": [],
            "events": []}


def test_explicit_state_dir_wins_over_the_daemon(tmp_path: Path) -> None:
    ours, theirs = _two_databases(tmp_path)
    with fake_daemon_api(lambda: _daemon_answer(theirs)) as api:
        # no flag: the daemon answers
        proc = run_cli(["status", "--json"], HPOD_API=api, HPOD_STATE_DIR=str(theirs))
        assert json.loads(proc.stdout)["daemon"] == {"version": "fake", "pid": 1}
        # a flag naming the daemon's database: still the daemon's view
        proc = run_cli(["status", "--json", "--state-dir", str(theirs)], HPOD_API=api)
        assert json.loads(proc.stdout)["daemon"] is not None
        # a flag naming another database: that database
        proc = run_cli(["status", "--json", "--state-dir", str(ours)], HPOD_API=api, HPOD_STATE_DIR=str(theirs))
        data = json.loads(proc.stdout)
        assert data["daemon"] is None and same_database(data["storage"], default_storage_url(ours))


def test_same_database() -> None:
    assert same_database("sqlite:////a/b/../b/hpod.db", "sqlite:////a/b/hpod.db")
    assert same_database("postgresql+psycopg://hpod:***@db:5432/hpod", "postgresql+psycopg://hpod:pw@db:5432/hpod")
    assert not same_database("postgresql+psycopg://hpod@db:5432/hpod", "postgresql+psycopg://hpod@db:5432/other")


def test_trial_zero_is_shown_in_last_events() -> None:
    buffer = StringIO()
    status = {"daemon": {"version": "x", "pid": 1}, "studies": [], "events": [
        {"id": 7, "kind": "trial_completed", "study": "s", "trial_number": 0, "payload": {}},
        {"id": 8, "kind": "daemon_started", "study": None, "trial_number": None, "payload": {}},
    ]}
    print_daemon_status(status, Console(file=buffer, width=200))
    rows = [line for line in buffer.getvalue().splitlines() if "trial_completed" in line]
    assert rows and [c.strip() for c in rows[0].split("│") if c.strip()][:4] == ["7", "trial_completed", "s", "0"]


def test_long_running_processes_drop_timestamps_under_journald(monkeypatch: pytest.MonkeyPatch) -> None:
    record = logging.LogRecord("hpod.x", logging.INFO, __file__, 1, "hello", None, None)
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    assert logging.Formatter(log_format()).format(record) == "INFO hpod.x: hello"
    monkeypatch.delenv("JOURNAL_STREAM")
    assert logging.Formatter(log_format()).format(record).endswith("INFO hpod.x: hello")
    assert logging.Formatter(log_format()).format(record) != "INFO hpod.x: hello"


def test_shell_completion_is_enabled(tmp_path: Path) -> None:
    proc = run_cli(["--install-completion"], HOME=str(tmp_path), SHELL="/bin/bash")
    assert proc.returncode == 0, proc.stderr
    script = tmp_path / ".bash_completions" / "hpod.sh"
    assert "_hpod_completion" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()
    # what bash asks for when a user types `hpod sta<TAB>`
    proc = run_cli([], _HPOD_COMPLETE="complete_bash", COMP_WORDS="hpod sta", COMP_CWORD="1")
    assert proc.stdout.split() == ["status"]


def test_status_names_the_daemon_that_serves_another_database(tmp_path: Path) -> None:
    """A daemon that answers but serves another database is not called "not reachable"."""
    ours, theirs = _two_databases(tmp_path)
    with fake_daemon_api(lambda: _daemon_answer(theirs)) as api:
        proc = run_cli(["status", "--state-dir", str(ours)], HPOD_API=api, COLUMNS="300")
        assert proc.returncode == 0, proc.stderr
        header = proc.stdout.splitlines()[0]
        assert "not reachable" not in header and str(theirs) in header and str(ours) in header
