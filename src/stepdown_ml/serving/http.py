"""The HTTP service: ``stepdown-ml serve``, the record path of ``predict()`` over HTTP.

An ASGI application (Starlette) served by uvicorn (uvloop and httptools when installed),
with JSON bodies read and written by orjson. Routes:

- ``POST /predict``: one candidate object, or an array of them (docs/CONTRACT.md); answers
  the scores layout, one object or an array in input order (``rank`` when ``person_id``
  is given). Input that breaks the contract is a 422 listing every (row, column, reason),
  a body that is not JSON a 400, a body that has not all arrived within the body deadline
  a 408, a body or batch over the limits a 413, a compressed body (a ``Content-Encoding``)
  a 415.
- ``GET /health``: 200 once the model is loaded, 503 before (or when loading failed).
- ``GET /metadata``: model version, threshold, metrics, features, reason codes, limits.
- ``GET /openapi.json`` and ``GET /docs``: the API, derived from the contract's columns.

Every request gets one access-log line with its status, size and latency. A failure inside
one request is a 500 for that request only; the worker keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

import stepdown_ml
from stepdown_ml.core import config
from stepdown_ml.core.recommend import REASON_CODE_NAMES
from stepdown_ml.core.schema import (
    CANDIDATE_COLUMNS,
    MAX_ID_LENGTH,
    PERSON_ID,
    RANK_COLUMN,
    RECOMMENDATIONS,
    SCORES_SCHEMA,
    SKILLS_PATTERN,
)
from stepdown_ml.serving.model import InvalidCandidateError, Model

ACCESS_LOGGER = "stepdown_ml.access"
LOGGER = "stepdown_ml.serve"
# The access log's status for a request whose client left before sending its body (as nginx).
CLIENT_CLOSED = 499
# Batches up to this size are scored on the event loop (~10 µs a record, less than
# a hand-off to a thread); larger ones in a thread, so /health answers meanwhile.
INLINE_RECORDS = 256

# Settings reach uvicorn's worker processes through the environment.
_ENV_PREFIX = "STEPDOWN_SERVE_"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class ServeSettings:
    """What one worker needs: a local model directory and the request limits."""

    model_dir: str
    max_body_bytes: int = config.SERVE_MAX_BODY_BYTES
    max_batch: int = config.SERVE_MAX_BATCH
    # A client that declares a body and sends it too slowly, or not at all, holds a request
    # open: its body must have arrived within this many seconds (408 otherwise).
    body_seconds: float = config.SERVE_BODY_SECONDS

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables (read back by :meth:`from_env`)."""
        return {
            f"{_ENV_PREFIX}MODEL_DIR": self.model_dir,
            f"{_ENV_PREFIX}MAX_BODY_BYTES": str(self.max_body_bytes),
            f"{_ENV_PREFIX}MAX_BATCH": str(self.max_batch),
            f"{_ENV_PREFIX}BODY_SECONDS": repr(self.body_seconds),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ServeSettings:
        """The settings :meth:`to_env` wrote."""
        return cls(
            model_dir=environ[f"{_ENV_PREFIX}MODEL_DIR"],
            max_body_bytes=int(environ[f"{_ENV_PREFIX}MAX_BODY_BYTES"]),
            max_batch=int(environ[f"{_ENV_PREFIX}MAX_BATCH"]),
            body_seconds=float(environ[f"{_ENV_PREFIX}BODY_SECONDS"]),
        )


class _RequestError(Exception):
    """An answer other than 200, with its JSON body."""

    def __init__(self, status: int, error: str, problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, Any] = {"error": error}
        if problems is not None:
            self.body["problems"] = problems


class _ModelState:
    """The model of this worker, loaded in a background thread so /health can say 'loading'."""

    def __init__(self, load: Callable[[], Model]) -> None:
        self.model: Model | None = None
        self.error: str | None = None
        self.metadata = b""
        self._load = load

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="model-loader", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        try:
            model = self._load()
            self.metadata = orjson.dumps(_metadata(model))
            self.model = model
            logging.getLogger(LOGGER).info("model %s loaded from %s", model.version, model.model_dir)
        except Exception as exc:  # reported by /health; the worker stays up to say why
            self.error = f"{type(exc).__name__}: {exc}"
            logging.getLogger(LOGGER).exception("the model could not be loaded")


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def create_app(settings: ServeSettings, load: Callable[[], Model] | None = None) -> ASGIApp:
    """The ASGI application for ``settings`` (``load`` replaces the model loader in tests)."""
    state = _ModelState(load or (lambda: Model(settings.model_dir)))
    openapi = orjson.dumps(openapi_spec(settings))
    docs = _docs_page(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        state.start()
        yield

    async def predict(request: Request) -> Response:
        model = state.model
        if model is None:
            raise _RequestError(503, "the model is not loaded yet" if state.error is None else state.error)
        payload = _parse(await _read_body(request, settings.max_body_bytes, settings.body_seconds))
        if isinstance(payload, dict):
            try:
                return _json(model.score_record(payload))
            except InvalidCandidateError as exc:
                raise _RequestError(
                    422, "invalid candidate", [{"row": 1, **p} for p in exc.problems]
                ) from None
        if len(payload) > settings.max_batch:
            raise _RequestError(
                413, f"a batch holds at most {settings.max_batch} records, got {len(payload)}"
            )
        try:
            if len(payload) <= INLINE_RECORDS:
                return _json(model.score_records(payload))
            return _json(await run_in_threadpool(model.score_records, payload))
        except InvalidCandidateError as exc:
            raise _RequestError(422, "invalid candidates", exc.problems) from None

    async def health(request: Request) -> Response:
        if state.model is not None:
            return _json({"status": "ready", "model_version": state.model.version})
        if state.error is not None:
            return _json({"status": "failed", "error": state.error}, 503)
        return _json({"status": "loading"}, 503)

    async def metadata(request: Request) -> Response:
        if state.model is None:
            raise _RequestError(503, "the model is not loaded yet")
        return Response(state.metadata, media_type="application/json")

    async def openapi_json(request: Request) -> Response:
        return Response(openapi, media_type="application/json")

    async def docs_page(request: Request) -> Response:
        return HTMLResponse(docs)

    async def problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _RequestError)
        return _json(exc.body, exc.status)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _json({"error": exc.detail}, exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        logging.getLogger(LOGGER).exception("request %s %s failed", request.method, request.url.path)
        return _json({"error": "internal error; the service logged it"}, 500)

    app = Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/metadata", metadata, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/docs", docs_page, methods=["GET"]),
        ],
        exception_handlers={_RequestError: problem, HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    return AccessLog(app)


def app_from_env() -> ASGIApp:
    """uvicorn's factory in each worker process: the app for the environment's settings."""
    return create_app(ServeSettings.from_env())


async def _read_body(request: Request, limit: int, seconds: float) -> bytes:
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise _RequestError(415, f"Content-Encoding {encoding} is not supported: send the JSON as it is")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _RequestError(413, f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):  # the whole body: a trickle cannot hold it open
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _RequestError(413, f"the body is over the limit of {limit} bytes")
                chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer: logged as 499 (client closed request), not as a failure.
        raise _RequestError(
            CLIENT_CLOSED, "the client closed the connection before its body was read"
        ) from None
    except TimeoutError:
        raise _RequestError(
            408, f"the body did not arrive within {seconds:g} s ({size} of {declared or '?'} bytes came)"
        ) from None
    return b"".join(chunks)


# 20 digits in a row (every digit read as 0, then found as one run: 4 ms for a 6 MB body,
# a tenth of a regular expression's time): possibly an integer past 64 bits, which orjson
# reads as a float.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 20


def _parse(body: bytes) -> dict[str, Any] | list[Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson also refuses JSON it cannot hold: a number beyond a double (1e400), an
        # escaped lone surrogate. Python's json reads those (as inf, as the character), and
        # validation then names the row, the column and the value, as predict() would.
        payload = _strict_json(body)
        if payload is None:
            raise _RequestError(400, f"the body is not valid JSON: {exc}") from None
    else:
        if _LONG_DIGITS in body.translate(_DIGITS_AS_ZERO):
            # Read again by Python's json, which keeps such an integer whole, so that its
            # reason shows its digits as predict() shows them (the body is strict JSON: orjson
            # read it; nested deeper than Python's recursion allows, orjson's reading stands).
            with contextlib.suppress(RecursionError):
                payload = json.loads(body)
    if not isinstance(payload, dict | list):
        raise _RequestError(
            400, f"expected a JSON object or an array of objects, got {type(payload).__name__}"
        )
    return payload


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _strict_json(body: bytes) -> Any:
    """``body`` read by Python's json as strict JSON in UTF-8 (no NaN or Infinity literals);
    None when it is not."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        return None


class AccessLog:
    """ASGI middleware: one line per request, with status, response size and latency."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        size = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            client = scope.get("client")
            self.logger.info(
                '%s "%s %s" %d %dB %.3fms',
                client[0] if client else "-",
                scope["method"],
                scope["path"],
                status,
                size,
                (time.perf_counter() - started) * 1000,
            )


def _metadata(model: Model) -> dict[str, Any]:
    manifest = model.manifest
    return {
        "model_name": manifest.get("model_name"),
        "model_version": model.version,
        "package_version": stepdown_ml.__version__,
        "threshold": model.threshold,
        "calibration": manifest.get("calibration"),
        "metrics": manifest.get("metrics"),
        "features": manifest.get("features"),
        "feature_groups": manifest.get("feature_groups"),
        "recommendations": list(RECOMMENDATIONS),
        "reason_codes": sorted(REASON_CODE_NAMES),
        "input_columns": [c.name for c in CANDIDATE_COLUMNS] + [PERSON_ID.name],
    }


_JSON_TYPES = {"id": "string", "enum": "string", "skills": "string", "int": "integer", "number": "number"}


def _column_schema(column: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"description": column.description}
    if column.kind == "binary":
        schema.update(type="integer", enum=[0, 1])
    else:
        schema["type"] = _JSON_TYPES[column.kind]
    if column.kind == "id":
        schema.update(minLength=1, maxLength=MAX_ID_LENGTH)
    if column.kind == "enum":
        schema["enum"] = list(column.allowed)
    if column.kind == "skills":
        schema["pattern"] = f"^({SKILLS_PATTERN.strip('^$')})?$"  # the contract's lists, or empty
    if column.low is not None:
        schema.update(minimum=column.low, maximum=column.high)
    if column.nullable:
        schema = {"anyOf": [schema, {"type": "null"}], "description": column.description}
    return schema


def openapi_spec(settings: ServeSettings) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the service, built from the contract's columns."""
    candidate = {
        "type": "object",
        "properties": {c.name: _column_schema(c) for c in (*CANDIDATE_COLUMNS, PERSON_ID)},
        "required": [c.name for c in CANDIDATE_COLUMNS if not c.nullable],
    }
    arrow_json = {"string": "string", "double": "number", "int64": "integer"}
    score = {
        "type": "object",
        "properties": {
            **{f.name: {"type": arrow_json[str(f.type)]} for f in SCORES_SCHEMA},
            RANK_COLUMN: {"type": "integer", "description": "1 = the person's best option"},
        },
    }
    problem = {
        "type": "object",
        "properties": {
            "error": {"type": "string"},
            "problems": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "row": {"type": "integer"},
                        "column": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    }

    def answer(description: str, ref: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}

    def one_or_many(name: str) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{name}"}
        return {"application/json": {"schema": {"oneOf": [ref, {"type": "array", "items": ref}]}}}

    error = "#/components/schemas/Problem"
    return {
        "openapi": "3.1.0",
        "info": {"title": "stepdown_ml", "version": stepdown_ml.__version__},
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Score one candidate or a batch (at most "
                    f"{settings.max_batch} records, {settings.max_body_bytes} bytes)",
                    "requestBody": {"required": True, "content": one_or_many("Candidate")},
                    "responses": {
                        "200": {"description": "the scores, in input order", "content": one_or_many("Score")},
                        "400": answer("the body is not a JSON object or array", error),
                        "408": answer(f"the body did not arrive within {settings.body_seconds:g} s", error),
                        "413": answer("the body or the batch is over the limit", error),
                        "415": answer("the body is compressed (a Content-Encoding): send it as it is", error),
                        "422": answer("records break the contract: every (row, column, reason)", error),
                        "503": answer("the model is not loaded yet", error),
                    },
                }
            },
            "/health": {"get": {"summary": "200 when ready to score, 503 while loading"}},
            "/metadata": {"get": {"summary": "model version, threshold, metrics, features, reasons"}},
        },
        "components": {"schemas": {"Candidate": candidate, "Score": score, "Problem": problem}},
    }


def _docs_page(settings: ServeSettings) -> str:
    rows = "".join(
        f"<tr><td><code>{c.name}</code></td><td>{html.escape(c.rule())}"
        f"{' (may be empty)' if c.nullable else ''}</td><td>{html.escape(c.description)}</td></tr>"
        for c in (*CANDIDATE_COLUMNS, PERSON_ID)
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>stepdown_ml</title></head><body>"
        "<h1>stepdown_ml scoring service</h1>"
        "<p><code>POST /predict</code> with one candidate object or an array of at most "
        f"{settings.max_batch} (body at most {settings.max_body_bytes} bytes). "
        "<code>GET /health</code>, <code>GET /metadata</code>, "
        "<a href='/openapi.json'><code>GET /openapi.json</code></a>.</p>"
        f"<h2>Candidate fields</h2><table><tr><th>field</th><th>rule</th><th>meaning</th></tr>{rows}</table>"
        "</body></html>"
    )


def log_config(level: str = "INFO") -> dict[str, Any]:
    """uvicorn's logging configuration: server messages and the access lines on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"}},
        "handlers": {"stderr": handler},
        "loggers": {
            name: {"handlers": ["stderr"], "level": level, "propagate": False}
            for name in ("uvicorn", "uvicorn.error", LOGGER, ACCESS_LOGGER)
        },
    }


def serve(
    settings: ServeSettings,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    graceful_seconds: float = 30.0,
) -> None:
    """Run the service until SIGINT/SIGTERM; in-flight requests finish before it stops."""
    import uvicorn

    os.environ.update(settings.to_env())
    uvicorn.run(
        f"{__name__}:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers if workers > 1 else None,
        access_log=False,  # AccessLog writes one line per request, with its latency
        log_config=log_config(),
        timeout_graceful_shutdown=int(graceful_seconds),
        server_header=False,
    )
