"""The daemon's control API (FastAPI): status, studies, trials, Pareto fronts, pause /
resume / cancel / retune, monitor observations, events; plus ``/healthz`` and ``/metrics``.

Every route except ``GET /healthz`` and ``GET /metrics`` needs ``Authorization: Bearer
<token>`` (compared in constant time). Requests that change something append an event
(the main loop acts on it) and wait briefly for its outcome. Errors are JSON
``{"error": …}`` with a message a person can act on; bodies over the size limit get
413; no request, however malformed, gets a traceback or stops the daemon.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from hpod import __version__
from hpod.core.actions import StudyAction, action_refusal
from hpod.core.feedback import add_examples, set_reference, window_summary
from hpod.core.retune import manual_retune_wait
from hpod.core.views import event_dict, study_rows, trial_records
from hpod.errors import DataError, HpodError, ObjectiveNotAllowed, SpecError, StorageError, StudyNotFound, UsageError
from hpod.objectives.base import DEFAULT_ALLOWED_OBJECTIVES, check_objective_allowed
from hpod.spec import parse_spec, resolve, spec_changes, spec_json_schema
from hpod.store import Store

__all__ = ["ApiContext", "ExamplesBody", "ObservationsBody", "ReferenceBody", "RetuneBody", "SubmitRequest",
           "create_app", "submit_study"]

log = logging.getLogger(__name__)

#: seconds a state-changing request waits for the main loop to act on its event
HANDLE_WAIT_SECONDS = 10.0


@dataclass
class ApiContext:
    """What the API needs from the daemon. ``status()`` builds ``GET /v1/status``;
    ``wait_handled(event_id, timeout)`` returns the outcome once the main loop handled
    the event (or None); ``ready()`` is False while starting or stopping."""

    store: Store
    token: str
    status: Callable[[], dict[str, Any]] | None = None
    registry: Any = None
    max_request_bytes: int = 1_048_576
    wait_handled: Callable[[int, float], dict[str, Any] | None] = lambda event_id, timeout: None
    ready: Callable[[], bool] = lambda: True
    wake: Callable[[], None] = lambda: None
    handle_wait_seconds: float = HANDLE_WAIT_SECONDS
    #: (study, monitor, items) -> summary; the drift monitors' observation intake
    add_observations: Callable[[str, str, list[Any]], dict[str, Any]] | None = None
    #: the objectives a submitted spec may name (the daemon's ``allowed_objectives``)
    allowed_objectives: tuple[str, ...] = DEFAULT_ALLOWED_OBJECTIVES
    extra: dict[str, Any] = field(default_factory=dict)


#: the OpenAPI component that documents a submitted spec (see ``_add_spec_schema``)
SPEC_SCHEMA_NAME = "StudySpec"


class SubmitRequest(BaseModel):
    """``spec``: the study spec as a JSON object (the YAML file, parsed).

    Taken as a plain object here and validated by :func:`hpod.spec.parse_spec`, whose
    messages name the field, what was found and what is allowed (422); documented in the
    OpenAPI by that same model's schema (``StudySpec``)."""

    spec: dict[str, Any]


def _add_spec_schema(document: dict[str, Any]) -> None:
    """Put the study spec's schema (and the schemas it refers to) in the OpenAPI
    document's components and make it the schema of ``SubmitRequest.spec``. A spec
    submitted to the daemon cannot choose the database: ``storage`` is left out (it is
    refused)."""
    ref_template = "#/components/schemas/{model}"
    spec = spec_json_schema(ref_template=ref_template)
    spec["properties"].pop("storage", None)
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in {**spec.pop("$defs", {}), SPEC_SCHEMA_NAME: spec}.items():
        if name in components and components[name] != schema:
            raise RuntimeError(f"OpenAPI component {name!r} is defined twice")  # a renamed model fixes it
        components[name] = schema
    submit = components[SubmitRequest.__name__]["properties"]
    submit["spec"] = {"$ref": ref_template.format(model=SPEC_SCHEMA_NAME),
                      "description": "the study spec (the YAML file, parsed)"}


class ObservationsBody(BaseModel):
    """``items``: numbers (performance / cost monitors) or texts / text features (data
    monitors) for the study's monitor ``monitor`` whose source is ``observations``."""

    monitor: str = Field(min_length=1, max_length=200)
    items: list[Any] = Field(min_length=1, max_length=10_000)


class ExamplesBody(BaseModel):
    """``records``: labelled records, each with the objective's input and reference
    output fields (``{"text": "...", "label": "..."}`` for ``text_classifier``)."""

    records: list[Any] = Field(min_length=1, max_length=100_000)


class ReferenceBody(BaseModel):
    """``texts``: the new reference of the study's data monitors (or of ``monitor``)."""

    texts: list[Any] = Field(min_length=1, max_length=100_000)
    monitor: str | None = Field(default=None, min_length=1, max_length=200)


class RetuneBody(BaseModel):
    reason: str = Field(default="manual request", min_length=1, max_length=500)


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": "<what is wrong, what is allowed>"}``."""

    error: str


_ERROR_TEXT = {
    400: "Bad request: a body that cannot be parsed, an invalid header or setting",
    401: "Missing or invalid bearer token",
    403: "The spec names an objective this daemon's allowed_objectives does not list (nothing was imported)",
    404: "No study of that name",
    409: "The study's state does not take this action (e.g. resuming a cancelled study); the message says what does",
    413: "Request body over max_request_bytes",
    422: "Invalid request or spec; the message names the field, what was found and what is allowed",
    429: "Too many manual retunes; the Retry-After header says when to retry",
    503: "The daemon is starting, stopping, or its database is unavailable; retry shortly",
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error codes a route really answers with."""
    return {code: {"model": ErrorBody, "description": _ERROR_TEXT[code]} for code in codes}


class _Problem(Exception):
    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if status == 429 and "retry_after_seconds" in extra:
        headers["Retry-After"] = str(int(extra["retry_after_seconds"]))
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers or None)


def submit_study(store: Store, spec: Any, *, by: str, allowed_objectives: tuple[str, ...] | list[str]
                 ) -> tuple[int, bool]:
    """Check ``spec``'s objective against ``allowed_objectives`` (before anything is
    imported), validate the spec against its objective, register the study if it is
    new, and append an unhandled ``study_submitted`` event for the main loop. Returns
    ``(event_id, created)``. Raises :class:`~hpod.errors.ObjectiveNotAllowed` for an
    objective the daemon does not run, :class:`SpecError` for an invalid spec or one
    that clashes with the stored study of that name (different objectives)."""

    check_objective_allowed(spec.objective.name, allowed_objectives)
    if spec.storage is not None:
        raise SpecError("storage", "a spec submitted to the daemon cannot choose the database: the daemon keeps "
                        "every study in its own (its `storage` setting)", found=spec.storage,
                        allowed="no storage field (storage is for `hpod run`)")
    resolved = resolve(spec)  # bad space, objective names it does not report
    resolved.objective.validate()  # its inputs (data files), as `hpod run` checks them
    created = store.check_compatible(spec) is None
    if created:
        store.register_study(spec, state="queued")
    event_id = store.append_event("study_submitted", study=spec.name,
                                  payload={"by": by, "created": created, "spec": spec.model_dump(mode="json")})
    return event_id, created


def _body_limit(app: Any, limit: int) -> Callable[..., Awaitable[None]]:
    """ASGI middleware: read at most ``limit`` bytes of body, else answer 413."""

    async def middleware(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = _error(413, f"request body too large: the limit is {limit} bytes (max_request_bytes)")
        if declared is not None:
            try:
                if int(declared) > limit:
                    await too_big(scope, receive, send)
                    return
            except ValueError:
                await _error(400, "invalid Content-Length header")(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await too_big(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            message: dict[str, Any] = await receive()
            return message

        await app(scope, replay, send)

    return middleware


def _catch_all(app: Any) -> Callable[..., Awaitable[None]]:
    """ASGI middleware: an unexpected exception becomes a JSON 500, never a crash."""

    async def middleware(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await app(scope, receive, tracking_send)
        except Exception as exc:
            log.exception("API request %s %s failed", scope.get("method"), scope.get("path"))
            if scope["type"] == "http" and not started:
                await _error(500, f"internal error ({type(exc).__name__}); the daemon log has the details")(
                    scope, receive, send)

    return middleware


def create_app(ctx: ApiContext) -> Any:
    """The ASGI application (FastAPI wrapped in the body-limit and catch-all layers)."""
    api = FastAPI(title="hpod control API", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None,
                  description="Control the hpod daemon. Every route but /healthz and /metrics needs "
                              "`Authorization: Bearer <token>`.")
    store = ctx.store
    expected = ctx.token.encode()
    fastapi_openapi = api.openapi

    def openapi_document() -> dict[str, Any]:
        if api.openapi_schema is None:
            _add_spec_schema(fastapi_openapi())  # FastAPI builds and caches it; the spec's schema joins once
        return api.openapi_schema  # type: ignore[return-value]  # set by fastapi_openapi()

    api.openapi = openapi_document  # type: ignore[method-assign]  # the documented way to extend FastAPI's schema

    def require_token(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise _Problem(401, "missing bearer token: send `Authorization: Bearer <token>` (the token is in the "
                                "daemon's token file; clients read HPOD_TOKEN_FILE)")
        if not hmac.compare_digest(given.strip().encode(), expected):
            raise _Problem(401, "invalid token: use the daemon's token file (HPOD_TOKEN_FILE)")

    auth = [Depends(require_token)]

    # ------------------------------------------------------------------ errors
    @api.exception_handler(_Problem)
    async def _problem(request: Request, exc: _Problem) -> JSONResponse:
        return _error(exc.status, exc.message, **exc.extra)

    @api.exception_handler(HpodError)
    async def _hpod_error(request: Request, exc: HpodError) -> JSONResponse:
        if isinstance(exc, StudyNotFound):
            return _error(404, str(exc))
        if isinstance(exc, ObjectiveNotAllowed):
            return _error(403, str(exc))
        if isinstance(exc, (SpecError, DataError)):
            return _error(422, str(exc))
        if isinstance(exc, UsageError):
            return _error(400, str(exc))
        if isinstance(exc, StorageError):
            return _error(503, f"{exc}; retry shortly")
        return _error(500, str(exc))

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's error middleware answers with this, then re-raises for the
        # server's log; the outer catch-all layer logs it and keeps the daemon up.
        return _error(500, f"internal error ({type(exc).__name__}); the daemon log has the details")

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append(f"{loc}: {e.get('msg', 'invalid')}")
        return _error(422, "invalid request: " + "; ".join(problems))

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: f"no route {request.method} {request.url.path}; GET /openapi.json lists the routes",
                   405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code,
                                                                                        str(exc.detail))
        return _error(exc.status_code, message)

    # ------------------------------------------------------------------ helpers
    def study_row(name: str) -> Any:
        row = store.get_study(name, missing_ok=True)
        if row is None:
            raise _Problem(404, f"no study named {name!r}; GET /v1/studies lists them")
        return row

    def act(kind: str, name: str, payload: dict[str, Any] | None = None,
            action: StudyAction | None = None) -> dict[str, Any]:
        row = study_row(name)
        refusal = action_refusal(action, name, row.state) if action is not None else None
        if refusal is not None:
            raise _Problem(409, refusal)  # before the event is written: nothing is left behind
        event_id = store.append_event(kind, study=name, payload=payload or {"by": "api"})
        ctx.wake()
        outcome = ctx.wait_handled(event_id, ctx.handle_wait_seconds)
        row = store.get_study(name, missing_ok=True)
        return {"event_id": event_id, "study": name, "handled": outcome is not None,
                "ok": outcome["ok"] if outcome else None,
                "message": outcome["message"] if outcome else "accepted; the daemon acts on it shortly",
                "state": row.state if row is not None else None}

    # ------------------------------------------------------------------ open routes
    @api.get("/healthz", summary="Liveness and readiness (no token needed)",
             responses={503: {"description": "Starting or stopping: not ready"}})
    def healthz() -> JSONResponse:
        ready = ctx.ready()
        return JSONResponse({"status": "ok" if ready else "unavailable", "ready": ready, "version": __version__},
                            status_code=200 if ready else 503)

    @api.get("/metrics", summary="Prometheus metrics (no token needed)", response_class=PlainTextResponse,
             responses={200: {"description": "Prometheus text exposition format 0.0.4",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}})
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if ctx.registry is None:
            return Response("", media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ authenticated routes
    @api.get("/openapi.json", dependencies=auth, include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(api.openapi())

    @api.get("/v1/status", dependencies=auth, summary="Daemon, slots, workers, studies, monitors, last events",
             responses=_responses(401, 503))
    def status() -> dict[str, Any]:
        if ctx.status is None:

            return {"daemon": {"version": __version__}, "storage": store.safe_url, "studies": study_rows(store)}
        return ctx.status()

    @api.get("/v1/studies", dependencies=auth, summary="All studies", responses=_responses(401, 503))
    def list_studies() -> list[dict[str, Any]]:

        return study_rows(store)

    @api.post("/v1/studies", dependencies=auth, status_code=202, summary="Submit a study spec",
              responses=_responses(400, 401, 403, 413, 422, 503))
    def submit(body: SubmitRequest) -> dict[str, Any]:

        spec = parse_spec(body.spec, source="request body")
        stored = store.get_study(spec.name, missing_ok=True)
        event_id, created = submit_study(store, spec, by="api", allowed_objectives=ctx.allowed_objectives)
        # what a resubmission changes (only what a study may change: submit_study refused the rest)
        changes = [] if stored is None else spec_changes(json.loads(stored.spec_json), spec.model_dump(mode="json"))
        ctx.wake()
        outcome = ctx.wait_handled(event_id, ctx.handle_wait_seconds)
        return {"event_id": event_id, "study": spec.name, "created": created, "handled": outcome is not None,
                "ok": outcome["ok"] if outcome else None, "changes": [str(c) for c in changes],
                "message": outcome["message"] if outcome else "accepted; the daemon starts it shortly"}

    @api.get("/v1/studies/{name}", dependencies=auth, summary="One study, with its spec",
             responses=_responses(401, 404, 422, 503))
    def get_study(name: str) -> dict[str, Any]:

        row = study_row(name)
        out = next((s for s in study_rows(store) if s["name"] == name), {"name": name})
        out["spec"] = json.loads(row.spec_json)
        return out

    @api.get("/v1/studies/{name}/trials", dependencies=auth, summary="The study's trials",
             responses=_responses(401, 404, 422, 503))
    def trials(name: str, offset: int = Query(0, ge=0, le=2**63 - 1), limit: int = Query(1000, ge=1, le=100000)) -> Any:

        study_row(name)
        return trial_records(store, name)[offset:offset + limit]

    @api.get("/v1/studies/{name}/pareto", dependencies=auth, summary="The study's Pareto front",
             responses=_responses(401, 404, 422, 503))
    def pareto(name: str) -> Any:

        study_row(name)
        return trial_records(store, name, pareto_only=True)

    @api.post("/v1/studies/{name}/pause", dependencies=auth, summary="Start no new trials of the study",
              responses=_responses(401, 404, 409, 422, 503))
    def pause(name: str) -> dict[str, Any]:
        return act("study_paused", name, action="pause")

    @api.post("/v1/studies/{name}/resume", dependencies=auth, summary="Resume a paused study",
              responses=_responses(401, 404, 409, 422, 503))
    def resume(name: str) -> dict[str, Any]:
        return act("study_resumed", name, action="resume")

    @api.post("/v1/studies/{name}/cancel", dependencies=auth, summary="Cancel queued trials; end the study",
              responses=_responses(401, 404, 409, 422, 503))
    def cancel(name: str) -> dict[str, Any]:
        return act("study_cancelled", name, action="cancel")

    @api.post("/v1/studies/{name}/retune", dependencies=auth, summary="Retune the study now",
              responses=_responses(400, 401, 404, 413, 422, 429, 503))
    def retune(name: str, body: RetuneBody | None = None) -> dict[str, Any]:
        note = body.reason if body is not None else "manual request"
        study_row(name)
        wait, interval = manual_retune_wait(store, name)
        if wait > 0:
            raise _Problem(429, f"retune of {name}: a manual retune was requested less than "
                                f"retune.min_manual_interval ({interval:.0f} s) ago; retry in {math.ceil(wait)} s",
                           retry_after_seconds=math.ceil(wait))
        return act("retune_started", name, {"reason": "manual", "note": note, "by": "api"})

    @api.post("/v1/studies/{name}/observations", dependencies=auth, status_code=202,
              summary="Observations for a drift monitor whose source is `observations`",
              responses=_responses(400, 401, 404, 413, 422, 503))
    def observations(name: str, body: ObservationsBody) -> dict[str, Any]:
        study_row(name)
        if ctx.add_observations is None:
            raise _Problem(503, "drift monitors are not running in this process")
        return ctx.add_observations(name, body.monitor, body.items)

    @api.post("/v1/studies/{name}/examples", dependencies=auth, status_code=201,
              summary="Labelled records (input + reference output): a new data window a retune trains on",
              responses=_responses(400, 401, 404, 413, 422, 503))
    def examples(name: str, body: ExamplesBody) -> dict[str, Any]:
        study_row(name)
        result = add_examples(store, name, body.records, source="api")
        ctx.wake()
        return result

    @api.get("/v1/studies/{name}/examples", dependencies=auth, summary="The study's labelled data windows",
             responses=_responses(401, 404, 422, 503))
    def list_examples(name: str) -> list[dict[str, Any]]:
        study_row(name)
        return [window_summary(w) for w in store.data_windows(name.split("@", 1)[0], "labelled")]

    @api.put("/v1/studies/{name}/monitors/reference", dependencies=auth,
             summary="Set the reference of the study's data monitors (adopted at their next check)",
             responses=_responses(400, 401, 404, 413, 422, 503))
    def reference(name: str, body: ReferenceBody) -> dict[str, Any]:
        study_row(name)
        return set_reference(store, name, body.texts, monitor=body.monitor, source="api")

    @api.get("/v1/events", dependencies=auth, summary="Events, oldest first, after an id",
             responses=_responses(401, 422, 503))
    def events(study: str | None = Query(None, max_length=200), after: int = Query(0, ge=0, le=2**63 - 1),
               limit: int = Query(200, ge=1, le=5000), kind: str | None = Query(None, max_length=64)) -> Any:

        rows = store.events(study=study or None, after_id=after, limit=limit, kinds=[kind] if kind else None)
        return [event_dict(e) for e in rows]

    return _catch_all(_body_limit(api, ctx.max_request_bytes))
