"""The FastAPI app: ``POST /v1/rank``, ``GET /healthz``, ``GET /metrics`` (and ``/openapi.json``).

    larr serve --run runs/demo            # uvicorn on 127.0.0.1:8000, model stage3/larr_seed0

:func:`create_app` takes a *loader* (a function that builds the :class:`Ranker`) rather than a
ranker: the model, the LLM encoder and the store load in a background thread after the
server starts, so ``/healthz`` answers 503 ("loading") at once and 200 when ready — what a
load balancer or an orchestrator's readiness probe needs — and ``/v1/rank`` answers 503 until
then instead of hanging.

Request handling, outermost first: request metrics (count by route and status, latency; a
client that goes away before the response is status ``499`` and ``larr_client_disconnects_total``,
never a 500) → body-size limit (413 before any parsing; bodies are read in chunks and dropped
past the limit) and body check (invalid UTF-8, a number too long to convert, JSON nested deeper
than ``MAX_DEPTH``: a 422 saying so) → FastAPI (JSON parsing and strict validation against
:mod:`larr.serve.schemas`: 422 with every problem plus a one-line ``message``) → API key when ``LARR_API_KEY`` is set (401; compared with
:func:`hmac.compare_digest`, so timing does not leak it) → the ranker (a scene feature the
model does not have or a value of the wrong kind: 422 naming it). ``rank`` scores on the event
loop when every scene value is in the model's table or the in-memory cache (about a millisecond
of CPU, nothing to wait for: no thread hop) and in the thread pool otherwise, where a store read
may wait up to its deadline; no request ever waits for the LLM unless ``encode_timeout_s`` says so. No pickle anywhere; errors never echo a stack trace.

``GET /`` is the scene explorer (``larr/serve/static/``: plain HTML and JavaScript, no build step,
nothing from a CDN); the page itself holds no data, everything it shows comes from ``/v1/rank``
and the read-only ``/v1/users``, ``/v1/shops``, ``/v1/scene-features`` and ``/v1/neighbours``,
which need the API key like ``/v1/rank``. ``/healthz`` is 200 ``{"status": "degraded", "degraded":
[why]}`` while the embedding store's circuit is open or new vectors cannot be written.
"""
import asyncio
import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from larr.serve import explorer
from larr.serve.inputs import RequestError
from larr.serve.metrics import ServeMetrics
from larr.serve.ranker import Ranker
from larr.serve.schemas import (ErrorBody, Health, Neighbours, RankResponse, SceneFeatures, ShopList, UserList,
                                rank_request_model)
from larr.serve.settings import ServeSettings

log = logging.getLogger("larr.serve")
ENV_CONFIG = "LARR_SERVE_CONFIG"  # how `larr serve` hands its options to each uvicorn worker
ROUTES = ("/v1/rank", "/healthz", "/metrics", "/openapi.json", "/docs", "/", "/v1/users", "/v1/shops",
          "/v1/scene-features", "/v1/neighbours")
STATIC = Path(__file__).parent / "static"
MAX_DEPTH = 16  # a rank request is 3 levels deep; deeper JSON is refused before it is validated
ERRORS = {code: {"model": ErrorBody, "description": text} for code, text in (
    (401, "Missing or wrong API key"), (413, "Request body too large"),
    (422, "Malformed JSON, a wrong type, a limit exceeded, or a scene feature the model does not have"),
    (503, "The model is still loading (or failed to load)"))}


class _State:
    ranker: Ranker | None = None
    error: str | None = None


# ---------------------------------------------------------------------------- middleware (plain ASGI)


class BodyLimit:
    """413 for a body over ``max_bytes``, decided before the app parses anything.

    A ``Content-Length`` over the limit is refused at once; a body without one (chunked) is
    read chunk by chunk and refused as soon as it passes the limit, so it is never held whole.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(scope, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._refuse(scope, send)
        body, replayed = b"".join(chunks), False
        problem = body_problem(body)
        if problem is not None:
            return await JSONResponse({"detail": problem, "message": problem}, status_code=422)(scope, None, send)

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, send) -> None:
        msg = f"request body larger than {self.max_bytes} bytes"
        await JSONResponse({"detail": msg, "message": msg}, status_code=413)(scope, None, send)


def body_problem(body: bytes) -> str | None:
    """What FastAPI would only call "There was an error parsing the body" (a 400), said in one line; None
    for a body it parses (malformed JSON included: FastAPI's own 422 names the character)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"request body is not valid UTF-8 (byte {e.start}: {body[e.start:e.start + 1]!r})"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None
    except RecursionError:
        return f"JSON nested deeper than {MAX_DEPTH} levels"
    except ValueError as e:  # Python's int-conversion limit: a number of thousands of digits
        return f"JSON number too long ({' '.join(str(e).split())[:100]})"
    todo, depth = [doc], 0
    while todo:
        depth += 1
        if depth > MAX_DEPTH:
            return f"JSON nested deeper than {MAX_DEPTH} levels"
        todo = [v for d in todo if isinstance(d, (dict, list)) for v in (d.values() if isinstance(d, dict) else d)]
        todo = [v for v in todo if isinstance(v, (dict, list))]
    return None


class RequestMetrics:
    """Counts every response by route and status (413s, 401s and 500s included) and times it.

    A request whose client disconnected before a response started is counted as status ``499``
    (and in ``larr_client_disconnects_total``), not as a server error; an exception it caused is
    not re-raised (there is nobody to answer)."""

    def __init__(self, app, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, gone = time.perf_counter(), None, False

        async def receive_and_note():
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
            return message

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        route = scope["path"] if scope["path"] in ROUTES else "other"  # bounded label values
        try:
            await self.app(scope, receive_and_note, send_and_note)
        except Exception:
            if not gone or status is not None:
                status = status or 500
                raise
        finally:
            if status is None:
                status = 499 if gone else 500
            if status == 499:
                self.metrics.client_disconnects.labels(route).inc()
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)


# ---------------------------------------------------------------------------- the app


def create_app(loader: Callable[[ServeMetrics], Ranker] | Ranker, settings: ServeSettings | None = None,
               metrics: ServeMetrics | None = None) -> FastAPI:
    """The app; ``loader(metrics)`` builds the ranker in the background (a ready ``Ranker`` also works)."""
    if settings is None:
        settings = loader.settings if isinstance(loader, Ranker) else ServeSettings()
    metrics = metrics or (loader.metrics if isinstance(loader, Ranker) else ServeMetrics())
    state = _State()
    if isinstance(loader, Ranker):
        state.ranker = loader  # ready now: no need to wait for the lifespan (tests, in-process use)

    def load() -> None:
        if state.ranker is not None:
            return
        try:
            state.ranker = loader if isinstance(loader, Ranker) else loader(metrics)
            log.info("serving %s (%s)", state.ranker.version, state.ranker.backend)
        except Exception as e:  # reported by /healthz; the process stays up so the failure is visible
            state.error = f"{type(e).__name__}: {e}"
            log.error("could not load the model: %s", state.error)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.get_running_loop().run_in_executor(None, load)
        yield
        await task
        if state.ranker is not None:
            await asyncio.get_running_loop().run_in_executor(None, state.ranker.close)

    app = FastAPI(title="larr", version="1", lifespan=lifespan,
                  description="LARR real-time scene recommendation: rank shops for a user in a scene. "
                  "Scene values are mapped to cached frozen-LLM vectors; no LLM call per request.")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.state.metrics, app.state.settings, app.state.serving = metrics, settings, state

    bearer, header_key = HTTPBearer(auto_error=False), APIKeyHeader(name="X-API-Key", auto_error=False)

    async def api_key(creds: HTTPAuthorizationCredentials | None = Security(bearer),  # async: no thread hop
                key: str | None = Security(header_key)) -> None:
        if settings.api_key is None:
            return
        want = settings.api_key.encode()
        given = [g.encode() for g in (creds.credentials if creds else None, key) if g]
        if not any([hmac.compare_digest(g, want) for g in given]):  # list: compare every one, no short cut
            raise HTTPException(401, "missing or wrong API key (send 'Authorization: Bearer KEY' or 'X-API-Key: KEY')",
                                headers={"WWW-Authenticate": "Bearer"})

    def ready() -> Ranker:
        if state.ranker is None:
            raise HTTPException(503, f"model failed to load: {state.error}" if state.error else "model is loading")
        return state.ranker

    RankRequest = rank_request_model(settings)

    @app.post("/v1/rank", response_model=RankResponse, responses=ERRORS, tags=["ranking"])
    async def rank(req: RankRequest, _: None = Depends(api_key)) -> Response:
        """Rank the candidates for the user in the scene (one batched forward; best first)."""
        ranker = ready()
        if ranker.in_memory(req.scene):  # ~1 ms of CPU and nothing to wait for: no thread hop
            return rank_now(ranker, req)
        return await run_in_threadpool(rank_now, ranker, req)  # a store read (bounded by its deadline)

    def rank_now(ranker: Ranker, req) -> Response:
        try:
            out = ranker.rank(req.user_id, req.scene, req.candidates, req.top_k)
        except RequestError as e:
            raise HTTPException(422, str(e)) from None
        body = RankResponse.model_validate({
            "model": ranker.model, "version": out.version, "unknown_user": out.unknown_user,
            "unknown_shops": out.unknown_shops, "scene_sources": out.scene_sources,
            "items": [{"shop_id": s, "score": p} for s, p in zip(out.shop_ids, out.scores)]})
        # serialised here, once: returning the model would make FastAPI dump, re-validate and encode it again
        return Response(body.model_dump_json(), media_type="application/json")

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}}, tags=["ops"])
    async def healthz() -> JSONResponse:  # async: answers from the event loop, even when the pool is busy
        """200 once the model is loaded (status ok, or degraded with the reasons), 503 while loading or after
        a failed load."""
        r = state.ranker
        if r is not None:
            why = r.degraded
            body = Health(status="degraded" if why else "ok", degraded=why or None, model=r.model, version=r.version,
                          backend=r.backend)
            return JSONResponse(body.model_dump(exclude_none=True))
        body = Health(status="error" if state.error else "loading", error=state.error)
        return JSONResponse(body.model_dump(), status_code=503)

    @app.get("/metrics", response_class=Response, tags=["ops"], responses={401: ERRORS[401]},
             dependencies=[Depends(api_key)])
    async def prometheus() -> Response:
        """Prometheus text format: requests, latency, scene cache, LLM fallbacks, unknown users/shops."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    catalog: list[explorer.Catalog] = []

    def shop_catalog() -> explorer.Catalog:
        if not catalog:
            catalog.append(explorer.Catalog(ready().data_dir))
        return catalog[0]

    explore = {"tags": ["explorer"], "responses": {k: ERRORS[k] for k in (401, 422, 503)},
               "dependencies": [Depends(api_key)]}

    @app.get("/v1/users", response_model=UserList, **explore)
    def users(q: str = Query("", max_length=settings.max_string_length,
                             description="Words that must all appear in the id or the profile (any case)."),
              limit: int = Query(20, ge=1, le=200)) -> UserList:
        """Users of the run whose id or profile match ``q`` (the explorer's user picker)."""
        found, total = shop_catalog().users(q, limit)
        return UserList.model_validate({"users": found, "total": total})

    @app.get("/v1/shops", response_model=ShopList, **explore)
    def shops(limit: int = Query(settings.max_candidates, ge=1, le=settings.max_candidates)) -> ShopList:
        """Shops of the run: id, name, category, district, price level (the explorer ranks all of them)."""
        found, total = shop_catalog().shops(limit)
        return ShopList.model_validate({"shops": found, "total": total})

    @app.get("/v1/scene-features", response_model=SceneFeatures, **explore)
    def scene_features() -> SceneFeatures:
        """The model's scene features: kind, the values it was trained with, the range a number must fall in."""
        return SceneFeatures.model_validate(explorer.scene_features(ready()))

    @app.get("/v1/neighbours", response_model=Neighbours, **explore)
    def neighbours(feature: str = Query(..., min_length=1, max_length=settings.max_string_length),
                   value: str = Query(..., min_length=1, max_length=settings.max_string_length),
                   k: int = Query(5, ge=1, le=50)) -> Neighbours:
        """A scene value's nearest known values (cosine of the LLM vectors) and where its vector came from.
        A never-seen value is queued for the encoder as in ``/v1/rank`` (``source: pending`` until it is done)."""
        try:
            return Neighbours.model_validate(explorer.neighbours(ready(), feature, value, k))
        except RequestError as e:
            raise HTTPException(422, str(e)) from None

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = exc.errors()
        errors = [{k: v for k, v in e.items() if k not in ("input", "url", "ctx")} for e in raw]
        if raw and raw[0].get("type") == "json_invalid":
            at, why = raw[0]["loc"][-1], (raw[0].get("ctx") or {}).get("error", "")
            message = f"malformed JSON body at character {at}: {why}".rstrip(": ")
        else:  # a union (id: int or str) fails once per branch: say every way it failed
            message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:4]) \
                or "invalid request"
        return JSONResponse({"detail": jsonable_encoder(errors), "message": message}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {"detail": exc.detail, "message": exc.detail if isinstance(exc.detail, str) else None}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    return app


# ---------------------------------------------------------------------------- uvicorn


def server_config(run_dir: Path, model: str, backend: str, store: str | None, data_dir: Path | None,
                  settings: dict) -> str:
    """The JSON each worker process reads from ``$LARR_SERVE_CONFIG`` (never the API key: that stays in
    ``$LARR_API_KEY``)."""
    return json.dumps({"run_dir": str(run_dir), "model": model, "backend": backend, "store": store,
                       "data_dir": str(data_dir) if data_dir else None,
                       "settings": {k: v for k, v in settings.items() if k != "api_key"}})


def app_from_env() -> FastAPI:
    """uvicorn factory (``larr.serve.app:app_from_env``): one app per worker process."""
    cfg = json.loads(os.environ[ENV_CONFIG])
    settings = ServeSettings.from_env(**cfg["settings"])

    def loader(metrics: ServeMetrics) -> Ranker:
        return Ranker.load(Path(cfg["run_dir"]), cfg["model"], cfg["backend"], cfg["store"],
                           Path(cfg["data_dir"]) if cfg["data_dir"] else None, settings, metrics=metrics)

    return create_app(loader, settings)


def run_server(run_dir: Path, model: str, backend: str = "torch", store: str | None = None,
               data_dir: Path | None = None, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
               settings: dict | None = None, log_level: str = "info", access_log: bool = True) -> None:
    """Start uvicorn (blocking) with ``workers`` processes, each loading the model."""
    import uvicorn

    os.environ[ENV_CONFIG] = server_config(run_dir, model, backend, store, data_dir, settings or {})
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    uvicorn.run("larr.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=access_log, server_header=False, timeout_graceful_shutdown=10)
