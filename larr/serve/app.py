"""The FastAPI app: ``POST /v1/rank``, ``GET /healthz``, ``GET /metrics`` (and ``/openapi.json``).

    larr serve --run runs/demo            # uvicorn on 127.0.0.1:8000, model stage3/larr_seed0

:func:`create_app` takes a *loader* (a function that builds the :class:`Ranker`) rather than a
ranker: the model, the LLM encoder and the store load in a background thread after the
server starts, so ``/healthz`` answers 503 ("loading") at once and 200 when ready — what a
load balancer or an orchestrator's readiness probe needs — and ``/v1/rank`` answers 503 until
then instead of hanging.

Request handling, outermost first: request metrics (count by route and status, latency) →
body-size limit (413 before any parsing; bodies are read in chunks and dropped past the limit)
→ FastAPI (JSON parsing and validation against :mod:`larr.serve.schemas`: 422 with every
problem plus a one-line ``message``) → API key when ``LARR_API_KEY`` is set (401; compared with
:func:`hmac.compare_digest`, so timing does not leak it) → the ranker (a scene feature the
model does not have or a value of the wrong kind: 422 naming it). ``rank`` is a plain ``def``:
FastAPI runs it in its thread pool, so a request waiting for the LLM never blocks the event
loop. No pickle anywhere; errors never echo a stack trace.
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

from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from larr.serve.inputs import RequestError
from larr.serve.metrics import ServeMetrics
from larr.serve.ranker import Ranker
from larr.serve.schemas import ErrorBody, Health, RankResponse, rank_request_model
from larr.serve.settings import ServeSettings

log = logging.getLogger("larr.serve")
ENV_CONFIG = "LARR_SERVE_CONFIG"  # how `larr serve` hands its options to each uvicorn worker
ROUTES = ("/v1/rank", "/healthz", "/metrics", "/openapi.json", "/docs")
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


class RequestMetrics:
    """Counts every response by route and status (413s, 401s and 500s included) and times it."""

    def __init__(self, app, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"  # bounded label values
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
    def rank(req: RankRequest, _: None = Depends(api_key)) -> Response:
        """Rank the candidates for the user in the scene (one batched forward; best first)."""
        ranker = ready()
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
        """200 once the model is loaded, 503 while loading or after a failed load."""
        r = state.ranker
        if r is not None:
            return JSONResponse(Health(status="ok", model=r.model, version=r.version, backend=r.backend).model_dump())
        body = Health(status="error" if state.error else "loading", error=state.error)
        return JSONResponse(body.model_dump(), status_code=503)

    @app.get("/metrics", response_class=Response, tags=["ops"], responses={401: ERRORS[401]},
             dependencies=[Depends(api_key)])
    async def prometheus() -> Response:
        """Prometheus text format: requests, latency, scene cache, LLM fallbacks, unknown users/shops."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

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
