"""The HTTP inference server of ``resnetlab serve``: a FastAPI app on a :class:`Predictor`.

Endpoints: ``POST /v1/predict`` (images as multipart uploads or raw bytes with an image
content type; JSON rows for table models), ``POST /v1/explain`` (top class and a Grad-CAM
overlay), ``GET /healthz``, ``GET /readyz`` (ready once loaded and warmed up), ``GET /metrics``
(Prometheus text), ``GET /v1/model``, ``/docs`` (OpenAPI) and ``GET /`` (a self-contained page).

Preprocessing is the predictor's own (:meth:`Predictor.preprocess_images` and
:meth:`Predictor.preprocess_records`), the same code ``resnetlab predict`` runs, so both give the
same classes for the same file.  Requests are batched dynamically (:mod:`.batching`).  Every
error a client can cause is a 4xx JSON ``{"error": slug, "detail": text}``; bodies are capped
(413) before any parsing, and so is each image's pixel count (decompression bombs).  No request
ever names a file on the server.  The app is assembled by the caller (``resnetlab.run.serving``):
this module never imports ``analysis``; an explain function is passed in.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch
from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from resnetlab.data.readers.image import ImageTooLargeError
from resnetlab.deploy.batching import Batcher
from resnetlab.deploy.predictor import Predictor
from resnetlab.utils.errors import UserError

__all__ = ["ServerOptions", "Service", "ApiError", "create_app", "KNOWN_PATHS"]

log = logging.getLogger("resnetlab.serve")
MB = 1000 * 1000  # SI, as --max-body 10MB reads
KNOWN_PATHS = ("/", "/healthz", "/readyz", "/metrics", "/v1/model", "/v1/predict", "/v1/explain",
               "/docs", "/openapi.json")
_REASONS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
            415: "unsupported_media_type", 422: "invalid_request", 503: "not_ready"}


@dataclass
class ServerOptions:
    """Limits and batching of one server (the ``resnetlab serve`` flags)."""

    max_batch: int = 32          # rows per forward pass
    max_wait_ms: float = 5.0     # how long the first request of a batch waits for company
    max_body: int = 10 * MB      # bytes per request body (larger: 413 before parsing)
    max_pixels: int = 40_000_000  # per image, from its header (larger: 413, never decoded)
    max_images: int = 64         # images per request (more: 413)
    max_rows: int = 4096         # table rows per request (more: 413)


@dataclass
class Service:
    """What a server serves: the predictor, ``/v1/model``'s card and, for torch-loadable image
    models, ``explain(x) -> {"class", "index", "prob", "layer", "overlay_png": bytes}`` for one
    preprocessed image ``x`` of shape ``(1, C, H, W)``."""

    predictor: Predictor
    info: dict[str, Any] = field(default_factory=dict)
    explain: Callable[[torch.Tensor], dict[str, Any]] | None = None

    @property
    def kind(self) -> str:
        return str((self.predictor.data_meta or {}).get("kind", "image"))


class ApiError(Exception):
    """A client error: answered as ``status`` with ``{"error": error, "detail": detail}``."""

    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


class _Metrics:
    """The Prometheus series of one app (its own registry, so apps in one process don't mix)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("resnetlab_requests", "HTTP requests answered",
                                ["path", "method", "code"], registry=r)
        self.errors = Counter("resnetlab_errors", "HTTP answers with a 4xx/5xx status, by code",
                              ["path", "code"], registry=r)
        self.latency = Histogram("resnetlab_request_latency_seconds", "Request latency",
                                 ["path"], registry=r, buckets=(
                                     .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))
        self.batch = Histogram("resnetlab_batch_size", "Rows per forward pass", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.ready = Gauge("resnetlab_ready", "1 once the model is loaded and warmed up",
                           registry=r)

    def observe(self, path: str, method: str, code: int, seconds: float) -> None:
        path = path if path in KNOWN_PATHS else "other"  # bounded label values
        self.requests.labels(path, method, str(code)).inc()
        if code >= 400:
            self.errors.labels(path, str(code)).inc()
        self.latency.labels(path).observe(seconds)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def _input_shape(predictor: Predictor) -> tuple[int, ...]:
    meta = predictor.data_meta or {}
    if meta.get("kind") == "table":
        return (len(meta["table"]["feature_names"]),)
    return (int(meta["in_chans"]), *map(int, meta["image_size"]))


class _State:
    """Loads the service in a thread (``/healthz`` answers meanwhile), warms it up, then marks
    it ready; owns the batcher and serialises explanations (hooks on one shared model)."""

    def __init__(self, load: Callable[[], Service], options: ServerOptions, metrics: _Metrics):
        self.load, self.options, self.metrics = load, options, metrics
        self.service: Service | None = None
        self.batcher: Batcher | None = None
        self.error: str | None = None
        self.arriving = 0  # predict requests received and not yet queued (being decoded)
        self._explain_lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._load, name="resnetlab-load", daemon=True).start()

    def _load(self) -> None:
        try:
            service = self.load()
            shape, opts = _input_shape(service.predictor), self.options
            for n in sorted({1, opts.max_batch}):  # first calls allocate and pick kernels
                service.predictor.outputs(torch.zeros(n, *shape))
            if service.explain is not None:
                service.explain(torch.zeros(1, *shape))
            self.batcher = Batcher(service.predictor.outputs, opts.max_batch, opts.max_wait_ms,
                                   self.metrics.batch.observe, pending=lambda: self.arriving)
            self.service = service
            self.metrics.ready.set(1)
            log.info("ready: %s", service.info.get("architecture", "model"))
        except Exception as err:  # reported by /readyz; the process keeps answering /healthz
            self.error = f"loading the model failed: {err}"
            log.error(self.error)

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    def require(self) -> Service:
        if self.service is None:
            raise ApiError(503, "not_ready", self.error or "the model is loading and warming up")
        return self.service

    def explain(self, x: torch.Tensor) -> dict[str, Any]:
        with self._explain_lock:
            return self.require().explain(x)


def _content_type(headers: Any) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


class _Guard:
    """ASGI middleware: the body cap (413 before the app reads anything) and the metrics."""

    def __init__(self, app: Callable, options: ServerOptions, metrics: _Metrics):
        self.app, self.options, self.metrics = app, options, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, cap = time.perf_counter(), [500], self.options.max_body

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            replay = await _read_capped(scope, receive, cap)
            if replay is None:
                await JSONResponse({"error": "body_too_large", "detail": (
                    f"the request body is over --max-body ({cap} bytes)")},
                    status_code=413)(scope, receive, send_status)
            else:
                await self.app(scope, replay, send_status)
        finally:
            self.metrics.observe(scope["path"], scope["method"], status[0],
                                 time.perf_counter() - start)


async def _read_capped(scope: dict, receive: Callable, cap: int) -> Callable | None:
    """A ``receive`` that replays the whole body, or None when it is over ``cap`` bytes (told
    by Content-Length, or counted while reading a chunked body)."""
    if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return receive
    length = dict(scope["headers"]).get(b"content-length", b"")
    if length.isdigit() and int(length) > cap:
        return None
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; the app will see the disconnect
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
        if size > cap:
            return None
    body, sent = b"".join(chunks), [False]

    async def replay() -> dict:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


async def _uploads(request: Any, options: ServerOptions) -> tuple[list[bytes], list[str]]:
    """Image bytes and labels from multipart file fields or a raw image body."""
    ctype = _content_type(request.headers)
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=options.max_images, max_fields=options.max_images)
        except HTTPException as err:
            if "Too many" in str(err.detail):
                raise ApiError(413, "too_many_images", f"at most {options.max_images} images "
                               "per request") from None
            raise ApiError(400, "bad_multipart", str(err.detail)) from None
        files = [v for _, v in form.multi_items() if not isinstance(v, str)]
        blobs = [await f.read() for f in files]
        names = [(f.filename or "upload")[:200] for f in files]
        await form.close()
    elif ctype.startswith("image/") or ctype == "application/octet-stream":
        blobs, names = [await request.body()], ["body"]
    else:
        raise ApiError(415, "unsupported_media_type", (
            f"content type {ctype or '(none)'}: send images as multipart/form-data file fields "
            "or one image as the raw body with an image/* content type"))
    if not blobs:
        raise ApiError(422, "no_images", "no file fields in the form; send e.g. -F file=@x.png")
    empty = [n for n, b in zip(names, blobs, strict=True) if not b]
    if empty:
        raise ApiError(400, "empty_body", f"{empty[0]}: no bytes")
    return blobs, names


async def _rows(request: Any, options: ServerOptions) -> list[Any]:
    """Table rows from a JSON body: a list of rows, or ``{"rows": [...]}``."""
    ctype = _content_type(request.headers)
    if ctype != "application/json":
        raise ApiError(415, "unsupported_media_type", f"content type {ctype or '(none)'}: this "
                       "table model takes a JSON body of rows (application/json)")
    body = await request.body()
    if not body.strip():
        raise ApiError(400, "empty_body", "no JSON rows in the body")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as err:
        raise ApiError(400, "invalid_json", f"the body is not JSON ({err})") from None
    rows = data.get("rows") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise ApiError(422, "bad_rows", 'send a JSON list of rows or {"rows": [...]}')
    if len(rows) > options.max_rows:
        raise ApiError(413, "too_many_rows", f"at most {options.max_rows} rows per request")
    return rows


async def _inputs(request: Any, service: Service, options: ServerOptions
                  ) -> tuple[torch.Tensor, list[str]]:
    """The request's inputs, preprocessed by the predictor (in a worker thread)."""
    predictor = service.predictor
    try:
        if service.kind == "table":
            rows = await _rows(request, options)
            return (await run_in_threadpool(predictor.preprocess_records, rows),
                    [f"row {i + 1}" for i in range(len(rows))])
        blobs, names = await _uploads(request, options)
        return (await run_in_threadpool(predictor.preprocess_images, blobs, names,
                                        options.max_pixels), names)
    except ImageTooLargeError as err:
        raise ApiError(413, "image_too_large", str(err)) from None
    except UserError as err:
        raise ApiError(422, "bad_image" if service.kind == "image" else "bad_rows",
                       str(err)) from None


def _error_handlers(app: Any) -> None:
    """Every error as ``{"error", "detail"}``; validation and HTTP errors keep their 4xx."""
    def reply(status: int, error: str, detail: str) -> JSONResponse:
        return JSONResponse({"error": error, "detail": detail}, status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(request: Any, err: ApiError) -> JSONResponse:
        return reply(err.status, err.error, err.detail)

    @app.exception_handler(HTTPException)
    async def http_error(request: Any, err: HTTPException) -> JSONResponse:
        return reply(err.status_code, _REASONS.get(err.status_code, "http_error"), str(err.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Any, err: RequestValidationError) -> JSONResponse:
        first = (err.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return reply(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def bug(request: Any, err: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return reply(500, "internal", f"{type(err).__name__}: {err}")


_BODY_DOC = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {
        "type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "application/json": {"schema": {"type": "array", "items": {}},
                         "example": [{"column": 1.0}]}}}}


def _model_routes(app: Any, state: _State, options: ServerOptions) -> None:
    @app.post("/v1/predict", openapi_extra=_BODY_DOC)
    async def predict(request: Request, k: int = Query(5, ge=1, le=1000)) -> dict[str, Any]:
        """Top-k classes (names, indices, probabilities) of each image or table row."""
        service = state.require()
        state.arriving += 1  # the batcher waits for company only while someone is on the way
        try:
            x, labels = await _inputs(request, service, options)
        finally:
            state.arriving -= 1
        out = await state.batcher.submit(x)
        return {"predictions": [p.to_dict() for p in
                                service.predictor.predictions(out, labels, k)]}

    @app.post("/v1/explain", openapi_extra=_BODY_DOC)
    async def explain(request: Request) -> dict[str, Any]:
        """The top class of one image and its Grad-CAM overlay (PNG, base64)."""
        service = state.require()
        if service.kind != "image":
            raise ApiError(422, "not_an_image_model", "Grad-CAM explains image models only")
        if service.explain is None:
            raise ApiError(404, "explain_unavailable", "this server has no PyTorch model to "
                           "explain with (an .onnx file was given); serve the run directory")
        x, names = await _inputs(request, service, options)
        if len(names) != 1:
            raise ApiError(422, "one_image", f"explain takes one image, got {len(names)}")
        result = await run_in_threadpool(state.explain, x)
        png = base64.b64encode(result.pop("overlay_png")).decode("ascii")
        return {"input": names[0], **result, "overlay_png": png}


def _info_routes(app: Any, state: _State, metrics: _Metrics) -> None:
    page = resources.files("resnetlab.deploy").joinpath("static/serve.html").read_text("utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up (it may still be loading)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 once the model is loaded and warmed up, else 503."""
        if state.service is None:
            return JSONResponse({"error": "not_ready", "detail": state.error or
                                 "the model is loading and warming up"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Requests, errors by code, latency and batch-size histograms (Prometheus text)."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        """Architecture, input, classes, the run's test accuracy and the file's sha256."""
        return state.require().info


def create_app(load: Callable[[], Service], options: ServerOptions | None = None) -> Any:
    """The FastAPI app serving the :class:`Service` that ``load()`` returns.

    ``load`` runs in a background thread when the app starts (with a warm-up forward pass at
    batch sizes 1 and ``max_batch``); ``/readyz`` is 503 until it has finished.  On shutdown
    the batcher finishes every queued request before it stops.
    """
    options = options or ServerOptions()
    metrics = _Metrics()
    state = _State(load, options, metrics)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        state.start()
        yield
        state.stop()

    app = FastAPI(title="resnetlab serve", version="1", lifespan=lifespan,
                  description="Top-k classes and Grad-CAM explanations of a resnetlab model.")
    _error_handlers(app)
    _model_routes(app, state, options)
    _info_routes(app, state, metrics)
    app.add_middleware(_Guard, options=options, metrics=metrics)
    app.state.resnetlab = state
    return app
