"""The daemon's settings: a TOML or YAML file, overridden by ``HPOD_*`` environment
variables, overridden by command-line flags; plus the API token (created on first start).

Precedence for every key: flag > ``HPOD_<KEY>`` > config file > default. The client
commands (``hpod status``, ``hpod submit``…) read the same ``HPOD_API``,
``HPOD_TOKEN_FILE`` and ``HPOD_STATE_DIR``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hpod.errors import UsageError, first_validation_issue
from hpod.http.server import parse_address
from hpod.objectives.base import DEFAULT_ALLOWED_OBJECTIVES, check_allowed_entry
from hpod.store import default_state_dir

__all__ = [
    "CONFIG_KEYS",
    "CREDENTIAL_NAME",
    "DEFAULT_API",
    "DEFAULT_METRICS",
    "DaemonConfig",
    "ExecutorConfig",
    "load_config",
    "log_format",
    "resolve_token",
]


def log_format() -> str:
    """The log line format of hpod's long-running processes (daemon, workers): under
    systemd (``JOURNAL_STREAM`` set) journald adds its own timestamps; a terminal gets
    them from the format."""
    if os.environ.get("JOURNAL_STREAM"):
        return "%(levelname)s %(name)s: %(message)s"
    return "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger(__name__)

DEFAULT_API = "127.0.0.1:8765"
DEFAULT_METRICS = "127.0.0.1:9464"
#: name of the systemd credential holding the token (``LoadCredential=hpod-token:…``)
CREDENTIAL_NAME = "hpod-token"


class ExecutorConfig(BaseModel):
    """Where the daemon runs trials: ``local`` (child processes on this node's slots) or
    ``ray`` (one Ray actor per trial on the cluster at ``address``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local", "ray"] = "local"
    #: the Ray cluster: ``auto`` (``$RAY_ADDRESS`` or the node's running cluster),
    #: ``HOST:PORT`` of its head, or ``ray://HOST:10001`` (Ray Client)
    address: str = "auto"
    #: trials in flight on the cluster; None: its GPUs if it has any, else its CPUs
    slots: int | None = Field(default=None, ge=1, le=100_000)
    #: Ray namespace of the trial actors
    namespace: str = Field(default="hpod", min_length=1, max_length=100)
    #: artifacts and caches on the nodes (storage every node can read, for PBT); None: state_dir
    cluster_dir: Path | None = None
    #: a trial actor that no daemon contacts for this long stops its trial, seconds
    abandon_seconds: float = Field(default=600.0, gt=0, le=7 * 86400)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        """``local``, ``ray`` or ``ray:ADDRESS`` (for ``HPOD_EXECUTOR`` and flags), or a JSON table."""
        if isinstance(data, str):
            text = data.strip()
            if text.startswith("{"):
                try:
                    return json.loads(text)
                except ValueError as exc:
                    raise ValueError(f"invalid JSON: {exc}") from None
            kind, sep, address = text.partition(":")
            if kind not in ("local", "ray") or (kind == "local" and sep):
                raise ValueError("expected local, ray, ray:ADDRESS or a table {kind: ray, address: ...}")
            return {"kind": kind, **({"address": address} if sep else {})}
        return data

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("needs auto, HOST:PORT or ray://HOST:PORT")
        return v


class DaemonConfig(BaseModel):
    """Validated daemon settings. Paths are expanded; ``state_dir`` is always set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state_dir: Path
    #: SQLAlchemy URL; None: SQLite ``hpod.db`` in the state dir
    storage: str | None = None
    #: ``HOST:PORT`` or ``unix:/path``
    api: str = DEFAULT_API
    #: ``HOST:PORT`` for the Prometheus endpoint (also served at the API's ``/metrics``)
    metrics: str | None = DEFAULT_METRICS
    #: the bearer token file; None: ``$CREDENTIALS_DIRECTORY/hpod-token`` or ``<state_dir>/token``
    token_file: Path | None = None
    #: GPU indices, one trial per GPU (``"0,1"``); None: CPU slots
    gpus: str | None = None
    #: CPU trial slots when no GPUs are given; 0 makes the daemon a pure controller
    cpu_slots: int = Field(default=1, ge=0, le=1024)
    #: directory of study specs (``*.yaml``, ``*.yml``, ``*.json``) submitted on start,
    #: on SIGHUP and when a file there changes
    spec_dir: Path | None = None
    #: seconds running trials may finish after SIGTERM before they are terminated
    grace_seconds: float = Field(default=300.0, ge=0, le=86400)
    #: a local trial's lease; a daemon killed with -9 leaves trials that expire after it
    lease_seconds: float = Field(default=30.0, gt=1, le=3600)
    #: how often the spec directory is checked for changes, seconds
    spec_poll_seconds: float = Field(default=10.0, gt=0, le=86400)
    #: a worker whose heartbeat is older than this is marked lost, seconds
    worker_timeout_seconds: float = Field(default=60.0, gt=0, le=86400)
    #: how often monitor hooks run, seconds
    monitor_interval_seconds: float = Field(default=60.0, gt=0, le=86400)
    #: a finished study's series leave /metrics this long after its last activity, seconds
    #: (it stays in the database, `hpod status` and the API)
    metrics_retention_seconds: float = Field(default=86400.0, ge=0, le=366 * 86400)
    #: largest request body the API accepts, bytes
    max_request_bytes: int = Field(default=1_048_576, ge=1024, le=1 << 30)
    log_level: str = "info"
    #: skip CodeCarbon in trials (CPU-only test machines, where it only estimates)
    codecarbon: bool = True
    #: where trials run (see ExecutorConfig): ``local`` (default) or ``{kind: ray, address: ...}``
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    #: objectives a submitted spec may name (specs from the API and the spec directory):
    #: ``builtin`` (hpod's synthetic:* and t5_lora), ``entry-points`` (installed
    #: ``hpod.objectives`` plugins), a module (``mylab.objectives`` allows
    #: ``mylab.objectives[.sub]:callable``) or one ``module:callable``. Anything else is
    #: refused (API 403) before it is imported. A comma-separated string in HPOD_ALLOWED_OBJECTIVES.
    allowed_objectives: tuple[str, ...] = DEFAULT_ALLOWED_OBJECTIVES

    @field_validator("api")
    @classmethod
    def _api(cls, v: str) -> str:
        if v.startswith("unix:"):
            if len(v) <= 5:
                raise ValueError("unix: needs a socket path, e.g. unix:/run/hpod/api.sock")
            return v
        try:
            parse_address(v, what="api")
        except UsageError as exc:
            raise ValueError(f"{exc} (or unix:/path)") from None
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: str | None) -> str | None:
        if v in (None, "", "off", "none"):
            return None
        try:
            parse_address(v, what="metrics address", default_host="0.0.0.0")
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("allowed_objectives", mode="before")
    @classmethod
    def _allowed_objectives(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [part.strip() for part in v.split(",") if part.strip()]
        if isinstance(v, (list, tuple)):
            for entry in v:
                problem = check_allowed_entry(entry) if isinstance(entry, str) else f"{entry!r} is not a string"
                if problem is not None:
                    raise ValueError(problem)
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        allowed = ("debug", "info", "warning", "error")
        if v.lower() not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {v!r}")
        return v.lower()

    @field_validator("state_dir", "token_file", "spec_dir")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return Path(v).expanduser() if v is not None else None

    @property
    def api_display(self) -> str:
        return self.api if self.api.startswith("unix:") else f"http://{self.api}"


CONFIG_KEYS: tuple[str, ...] = tuple(DaemonConfig.model_fields)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--config: file not found: {path}") from None
    except OSError as exc:
        raise UsageError(f"--config: cannot read {path}: {exc.strerror}") from None
    if ".toml" in [s.lower() for s in path.suffixes]:  # hpod.toml, hpod.toml.example
        import tomllib

        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path}: invalid TOML: {exc}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a table of settings, found {type(data).__name__}")
    # A `[daemon]` table is accepted as well as top-level keys.
    if set(data) == {"daemon"} and isinstance(data["daemon"], dict):
        data = data["daemon"]
    settings: dict[str, Any] = data
    return settings


def _env_settings(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in CONFIG_KEYS:
        value = env.get(f"HPOD_{key.upper()}")
        if value is not None and value != "":
            out[key] = value
    return out


def load_config(path: Path | None = None, *, overrides: Mapping[str, Any] | None = None,
                env: Mapping[str, str] | None = None) -> DaemonConfig:
    """Build the settings from ``path`` (TOML when its name has ``.toml``, otherwise YAML), the
    ``HPOD_*`` environment and ``overrides`` (flags; ``None`` values are ignored).

    Raises :class:`UsageError` naming the key, where it came from, and what is allowed.
    """
    env = os.environ if env is None else env
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        layers.append((str(path), _read_file(Path(path))))
    layers.append(("environment", _env_settings(env)))
    layers.append(("command line", {k: v for k, v in (overrides or {}).items() if v is not None}))
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for where, values in layers:
        for key, value in values.items():
            if key not in CONFIG_KEYS:
                raise UsageError(f"{where}: unknown setting {key!r}; allowed: {', '.join(CONFIG_KEYS)}")
            merged[key] = value
            origin[key] = where
    if isinstance(merged.get("gpus"), list):
        merged["gpus"] = ",".join(str(g) for g in merged["gpus"])
    if "state_dir" not in merged:

        merged["state_dir"] = default_state_dir(None)
        origin["state_dir"] = "default"
    try:
        return DaemonConfig(**merged)
    except ValidationError as exc:
        issue = first_validation_issue(exc)
        key = str(issue.loc[0]) if issue.loc else "?"
        setting = ".".join(str(p) for p in issue.loc) or "?"
        where = origin.get(key, "settings")
        found = issue.found if len(issue.loc) > 1 and issue.found is not None else merged.get(key)
        raise UsageError(f"{where}: setting {setting!r}: {issue.message} (found {found!r})") from None


def _write_new_token(path: Path) -> str:
    """Create ``path`` with a fresh token, mode 0600, failing if it appeared meanwhile."""
    token = secrets.token_hex(32)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    log.info("created API token file %s (mode 0600)", path)
    return token


def _read_token(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"token file {path}: cannot read it: {exc.strerror}") from None
    if not token:
        raise UsageError(f"token file {path} is empty; delete it to have the daemon create one")
    if len(token) < 16:
        raise UsageError(f"token file {path}: the token has {len(token)} characters; use at least 16 "
                         "(e.g. `openssl rand -hex 32`)")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("token file %s is accessible by other users (mode %o); chmod 600 it", path, mode & 0o777)
    return token


def resolve_token(config: DaemonConfig, env: Mapping[str, str] | None = None) -> tuple[str, Path]:
    """The API token and where it came from.

    Order: an explicit ``token_file`` (created if absent); systemd's
    ``$CREDENTIALS_DIRECTORY/hpod-token``; ``<state_dir>/token`` (created if absent).
    """
    env = os.environ if env is None else env
    if config.token_file is not None:
        path = config.token_file
    else:
        creds = env.get("CREDENTIALS_DIRECTORY")
        credential = Path(creds) / CREDENTIAL_NAME if creds else None
        if credential is not None and credential.exists():
            return _read_token(credential), credential
        path = config.state_dir / "token"
    if not path.exists():
        try:
            return _write_new_token(path), path
        except FileExistsError:
            pass  # another process created it first: read theirs
        except OSError as exc:
            raise UsageError(f"token file {path}: cannot create it: {exc.strerror}") from None
    return _read_token(path), path
