"""The serving endpoint: ``POST /v1/predict`` (and its older name ``/v1/summarize``)
with a study's selected model, for any objective that offers a predictor
(:class:`~hpod.objectives.base.Serves`).

The served trial is the study's stored serving choice (``serving`` state, written
by the retune policy when a retune wins) or, before any, the spec's selection
policy applied to the newest version with a feasible trial. A background thread
polls that choice; a new model is loaded completely, then swapped in under a lock:
a request holds the model it started with, so no in-flight request is dropped or
fails during a swap. The inputs' features (never the text, unless
``serving.record_text``) are recorded for the study's ``served`` data monitors.

Auth is the control API's: ``Authorization: Bearer <token>`` compared with
``hmac.compare_digest``. Bodies over ``serving.max_body_bytes`` get 413; malformed
JSON 400; a body of the wrong shape 422 — each with a message saying what to send.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

# FastAPI reads route signatures' annotations from this module's globals
from starlette.requests import Request

from hpod.core.monitoring import base_study_name, record_served, served_buckets
from hpod.core.selection import current_serving, put_serving, select_trial
from hpod.errors import HpodError, UsageError
from hpod.objectives.base import Predictor, Serves, capabilities, create_objective
from hpod.spec import parse_spec

if TYPE_CHECKING:
    from fastapi import FastAPI

    from hpod.spec import StudySpec
    from hpod.store import Store

__all__ = [
    "BatchingPredictor",
    "ModelHolder",
    "Predictor",
    "ServedModel",
    "create_serving_app",
    "initial_selection",
    "load_predictor",
    "parse_summarize_body",
    "prediction_name",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """A predictor and the selection it was loaded from (``study``, ``trial``...)."""

    selection: dict[str, Any]
    predictor: Predictor
    loaded_at: float

    @property
    def label(self) -> dict[str, Any]:
        return {"study": self.selection.get("study"), "trial": self.selection.get("trial"),
                "policy": self.selection.get("policy")}


def _serving_objective(spec: StudySpec) -> Any:
    objective = create_objective(spec.objective.name, spec.objective.params)
    if not isinstance(objective, Serves):
        raise UsageError(f"study {spec.name!r}: objective {spec.objective.name!r} offers no predictor for serving "
                         f"(its capabilities: {', '.join(capabilities(objective)) or 'none'})")
    return objective


def prediction_name(spec: StudySpec) -> str:
    """What the study's predictions are called in responses (``summaries``, ``labels``)."""
    return str(_serving_objective(spec).prediction_name)


def load_predictor(spec: StudySpec, selection: dict[str, Any], cache_dir: Path) -> Predictor:
    """The objective's predictor for the selected trial's artifacts (seed 0's).
    UsageError when the objective cannot serve or the trial saved nothing."""
    objective = _serving_objective(spec)
    artifact = selection.get("artifact_dir")
    if not artifact:
        raise UsageError(f"trial {selection.get('trial')} of {selection.get('study')} saved no artifacts")
    predictor: Predictor = objective.load_predictor(Path(artifact), cache_dir)
    return predictor


Loader = Callable[["StudySpec", dict[str, Any], Path], Predictor]


def initial_selection(store: Store, base: str) -> dict[str, Any]:
    """The stored serving choice, or the policy's pick in the newest version that has
    one (recorded as the serving choice). Raises UsageError when no version has a
    feasible completed trial."""
    served = current_serving(store, base)
    if served is not None:
        return served
    rows = sorted((r for r in store.list_studies() if base_study_name(r.name) == base),
                  key=lambda r: r.version, reverse=True)
    if not rows:
        raise UsageError(f"no study named {base!r}; `hpod status` lists the studies")

    base_spec = parse_spec(json.loads(rows[-1].spec_json))
    for row in rows:
        pick, _ = select_trial(store, row.name, policy=base_spec.serving.policy)
        if pick is not None:
            return put_serving(store, base, pick, reason="initial")
    raise UsageError(f"study {base!r} has no feasible completed trial to serve yet")


class ModelHolder:
    """The served model, swapped without disturbing in-flight requests.

    ``current`` is read without a lock (one reference read); :meth:`swap` loads the
    new model first and only then replaces the reference under a lock, so a request
    that took the old model finishes with it."""

    def __init__(self, store: Store, base: str, cache_dir: Path, *, loader: Loader):
        self.store, self.base, self.cache_dir, self.loader = store, base, Path(cache_dir), loader
        self._lock = threading.Lock()
        self.current: ServedModel | None = None
        self.swaps = 0
        self.last_error: str | None = None

    def _spec_of(self, study: str) -> StudySpec:

        row = self.store.get_study(study)
        return parse_spec(json.loads(row.spec_json))

    def load(self, selection: dict[str, Any]) -> ServedModel:
        spec = self._spec_of(selection["study"])
        predictor = self.loader(spec, selection, self.cache_dir)
        return ServedModel(selection=selection, predictor=predictor, loaded_at=time.time())

    def swap(self, selection: dict[str, Any]) -> ServedModel:
        """Load ``selection`` fully, then make it current; returns it."""
        served = self.load(selection)
        with self._lock:
            self.current = served
            self.swaps += 1
        log.info("serving %s: now %s trial %s", self.base, selection.get("study"), selection.get("trial"))
        return served

    def refresh(self) -> bool:
        """Swap when the stored serving choice changed. True when it swapped."""
        wanted = current_serving(self.store, self.base) if self.current is not None \
            else initial_selection(self.store, self.base)
        if wanted is None:
            return False
        now = self.current
        if now is not None and (now.selection.get("study"), now.selection.get("trial")) == \
                (wanted.get("study"), wanted.get("trial")):
            return False
        self.swap(wanted)
        return True


class _Poller:
    def __init__(self, holder: ModelHolder, interval: float):
        self.holder, self.interval = holder, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="hpod-serving-poll", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.holder.refresh()
                self.holder.last_error = None
            except Exception as exc:  # keep serving the old model; say why in /v1/serving
                self.holder.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("serving %s: cannot load the new selection (%s); still serving the old one",
                            self.holder.base, exc)


class _Request(NamedTuple):
    """A request waiting in :class:`BatchingPredictor`'s queue."""

    served: ServedModel
    texts: list[str]
    future: Any  # asyncio.Future[list[Any]]
    arrived: float  # the event loop's clock


class BatchingPredictor:
    """Groups concurrent requests into one ``predict`` call per batch (dynamic batching).

    One batch runs at a time; requests arriving meanwhile form the next one, so the
    busier the endpoint, the fuller its batches. A batch holds at most
    ``max_batch_texts`` texts (a single larger request is a batch of its own) and starts
    when it holds as many texts as are expected, or when ``max_wait_seconds`` have
    passed since its first request arrived or since the model became free, whichever is
    later. Expected are the texts the previous batch answered plus those that queued
    while it ran: clients answered by a batch usually send their next request at once,
    and waiting briefly for them keeps the clients in one batch instead of two that
    alternate, each request waiting for the other's batch to finish. A request that
    arrives after a quiet spell expects no one (it waits ``max_wait_seconds`` for
    others, at most); a lone client is never kept waiting for itself. Texts of requests
    that hold different models (a swap between them) are never mixed in one call.
    Whatever the objective's predictor is, it sees a list of texts, as it does without
    batching.

    Requests are awaited on the event loop that serves them; the predictor runs in a
    worker thread.
    """

    def __init__(self, *, max_batch_texts: int, max_wait_seconds: float) -> None:
        if max_batch_texts < 1:
            raise ValueError(f"max_batch_texts must be >= 1, got {max_batch_texts}")
        if max_wait_seconds < 0:
            raise ValueError(f"max_wait_seconds must be >= 0, got {max_wait_seconds}")
        self.max_batch_texts = max_batch_texts
        self.max_wait_seconds = max_wait_seconds
        self._queue: Any = None
        self._loop: Any = None
        self._worker: Any = None
        self._queued_texts = 0
        #: for /v1/serving: batches run, texts in them, and batches started because the
        #: wait ran out (not because they were full or held every text expected)
        self.batches = 0
        self.batched_texts = 0
        self.waits_expired = 0

    async def predict(self, served: ServedModel, texts: list[str]) -> list[Any]:
        import asyncio

        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop, self._queue, self._queued_texts = loop, asyncio.Queue(), 0
            self._worker = loop.create_task(self._run(self._queue))
        future = loop.create_future()
        self._queued_texts += len(texts)
        await self._queue.put(_Request(served, texts, future, loop.time()))
        return await future  # type: ignore[no-any-return]

    def _take(self, request: _Request) -> _Request:
        self._queued_texts -= len(request.texts)
        return request

    async def _run(self, queue: Any) -> None:
        import asyncio

        from starlette.concurrency import run_in_threadpool

        clock = asyncio.get_running_loop().time
        free_since, answered, queued_at_end = -math.inf, 0, 0
        item = self._take(await queue.get())
        while True:
            batch, size = [item], len(item.texts)
            # Texts of a request arriving within the wait after the last batch ended (or
            # queued while it ran) come with others expected back; after a quiet spell,
            # expected is whatever joins within the wait.
            returning = item.arrived <= free_since + self.max_wait_seconds
            expected = min(self.max_batch_texts, answered + queued_at_end) if returning else self.max_batch_texts
            deadline = max(item.arrived, free_since) + self.max_wait_seconds
            following = None
            while size < expected:
                try:
                    nxt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - clock()
                    try:
                        if left <= 0:
                            raise TimeoutError
                        nxt = await asyncio.wait_for(queue.get(), left)
                    except TimeoutError:
                        self.waits_expired += 1
                        break
                self._take(nxt)
                if size + len(nxt.texts) > self.max_batch_texts:
                    following = nxt  # starts the next batch
                    break
                batch.append(nxt)
                size += len(nxt.texts)
            await self._predict_batch(batch, run_in_threadpool)
            free_since, answered, queued_at_end = clock(), size, self._queued_texts
            item = following if following is not None else self._take(await queue.get())

    async def _predict_batch(self, batch: list[_Request], run_in_threadpool: Any) -> None:
        by_model: dict[int, list[_Request]] = {}
        for item in batch:
            by_model.setdefault(id(item.served), []).append(item)
        for items in by_model.values():
            texts = [t for item in items for t in item.texts]
            try:
                predictions = await run_in_threadpool(items[0].served.predictor.predict, texts)
                if len(predictions) != len(texts):
                    raise RuntimeError(f"the predictor returned {len(predictions)} predictions for {len(texts)} texts")
            except Exception as exc:  # each waiting request gets the error
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.batches += 1
            self.batched_texts += len(texts)
            start = 0
            for item in items:
                if not item.future.done():  # a client that went away leaves a cancelled future
                    item.future.set_result(list(predictions[start:start + len(item.texts)]))
                start += len(item.texts)


def parse_summarize_body(raw: bytes, *, max_texts: int) -> list[str]:
    """``{"texts": [..]}`` or ``{"text": ".."}`` -> texts. Raises ValueError (message
    for a 422) or json.JSONDecodeError (400)."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f'the body must be a JSON object {{"texts": ["..."]}} (found {type(data).__name__})')
    unknown = sorted(set(data) - {"texts", "text"})
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; send {{\"texts\": [\"...\"]}} or {{\"text\": \"...\"}}")
    if ("texts" in data) == ("text" in data):
        raise ValueError('send exactly one of "texts" (a list of strings) or "text" (a string)')
    texts = data["texts"] if "texts" in data else [data["text"]]
    if not isinstance(texts, list) or not texts:
        raise ValueError('"texts" must be a non-empty list of strings')
    if len(texts) > max_texts:
        raise ValueError(f'"texts" holds {len(texts)} items; at most serving.max_texts={max_texts} per request')
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f'texts[{i}] must be a non-empty string (found {type(t).__name__})')
    return texts


def create_serving_app(store: Store, study: str, *, state_dir: Path, token: str,
                       loader: Loader | None = None, poll_seconds: float = 2.0,
                       cache_dir: Path | None = None) -> FastAPI:
    """The serving app for ``study`` (its submitted name; versions are followed).

    ``token``: the Bearer token clients must send (the control API's). The first
    model is loaded here (UsageError when nothing can be served); the poll thread
    starts and stops with the app's lifespan. Routes: ``POST /v1/predict`` (alias
    ``/v1/summarize``; the response holds ``predictions`` and the same list under the
    objective's ``prediction_name``, e.g. ``summaries``),
    ``GET /v1/serving`` (what is served, swaps, last load error), ``GET /healthz``.
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    if not token:
        raise UsageError("serving needs a token: the control API's token file is missing or empty")
    if poll_seconds <= 0:
        raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
    base = base_study_name(study)
    holder = ModelHolder(store, base, cache_dir or Path(state_dir) / "cache",
                         loader=loader or load_predictor)
    holder.refresh()
    poller = _Poller(holder, poll_seconds)

    # The base study's spec, read again at most every ``poll_seconds`` (the model poll's
    # pace): a request reads no database row for it (a read and a parse were ~10 ms of a
    # request's ~30 ms of work outside the model on the demo).
    spec_cache: list[Any] = [None, -math.inf]

    def base_spec() -> StudySpec:
        now = time.monotonic()
        if spec_cache[0] is None or now - spec_cache[1] >= poll_seconds:
            spec_cache[0], spec_cache[1] = holder._spec_of(base), now
        return spec_cache[0]  # type: ignore[no-any-return]

    limits = base_spec().serving
    batcher = BatchingPredictor(max_batch_texts=limits.max_batch_texts, max_wait_seconds=limits.batch_wait_seconds)
    try:
        names = prediction_name(base_spec())
    except UsageError:  # a custom loader serves an objective that has no predictor of its own
        names = "predictions"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        poller.thread.start()
        try:
            yield
        finally:
            poller.stop.set()

    app = FastAPI(title=f"hpod serving: {base}", lifespan=lifespan)
    app.state.holder = holder
    app.state.poller = poller
    app.state.batcher = batcher
    expected = f"Bearer {token}".encode()

    def error(status: int, message: str) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": message}, status_code=status, headers=headers)

    def authorized(request: Request) -> bool:
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, expected)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": holder.current is not None}

    @app.get("/v1/serving")
    async def serving_info(request: Request) -> Any:
        if not authorized(request):
            return error(401, "missing or wrong bearer token")
        cur = holder.current
        return {"study": base, "serving": cur.selection if cur else None, "swaps": holder.swaps,
                "last_error": holder.last_error,
                "batching": {"max_batch_texts": batcher.max_batch_texts,
                             "max_wait_seconds": batcher.max_wait_seconds, "batches": batcher.batches,
                             "texts": batcher.batched_texts, "waits_expired": batcher.waits_expired}}

    @app.post("/v1/predict")
    @app.post("/v1/summarize")
    async def predict(request: Request) -> Any:
        if not authorized(request):
            return error(401, "missing or wrong bearer token")
        limit = limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return error(413, f"body of {declared} bytes exceeds serving.max_body_bytes={limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return error(413, f"body exceeds serving.max_body_bytes={limit}")
            chunks.append(chunk)
        try:
            texts = parse_summarize_body(b"".join(chunks), max_texts=limits.max_texts)
        except json.JSONDecodeError as exc:
            return error(400, f"the body is not JSON ({exc.msg} at position {exc.pos}); "
                              'send {"texts": ["..."]}')
        except UnicodeDecodeError:
            return error(400, "the body is not UTF-8 JSON")
        except ValueError as exc:
            return error(422, str(exc))
        served = holder.current  # this request keeps this model even if a swap happens now
        if served is None:
            return error(503, "no model loaded yet")
        predictions = await batcher.predict(served, texts)
        spec = base_spec()
        if served_buckets(spec):  # no thread hop when no monitor reads served inputs
            try:
                await run_in_threadpool(record_served, store, spec, texts)
            except HpodError as exc:  # monitoring must never fail a request
                log.warning("serving %s: input features not recorded (%s)", base, exc)
        return {"predictions": predictions, names: predictions, "model": served.label}

    return app
