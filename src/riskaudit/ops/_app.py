"""The HTTP service: a thin shell over one AuditLog (FastAPI on uvicorn).

Health and readiness come from the log's facts (``AuditLog.status()``), not from the
process being alive: ``/ready`` is 200 only while records reach the primary or the
spool. Without ``RISK_AUDIT_TOKENS_FILE`` the event API is closed (401): an audit
service must not accept or hand out records anonymously by default. Every read of
audit records is itself recorded as an ``access`` control record.
"""

import asyncio
import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from riskaudit._version import __version__
from riskaudit.bus import RiskEventBus
from riskaudit.config import AuditConfig
from riskaudit.errors import AuditEncodingError, AuditError, AuditPolicyError
from riskaudit.events import EventPriority, EventType, RiskEvent
from riskaudit.integrity._export import parse_time
from riskaudit.log import AuditLog
from riskaudit.ops._auth import Principal, TokenStore
from riskaudit.ops._ingest import Deduplicator, Problem, parse_body, to_event
from riskaudit.ops._metrics import CONTENT_TYPE, AuditMetrics
from riskaudit.ops._page import render_page
from riskaudit.ops._query import Query as EventQuery
from riskaudit.ops._query import run_query
from riskaudit.policy import actor_problem, schema_problem

SAMPLE_EVERY = 5.0
_MAX_SEQ = 2**63 - 1  # seq is a signed 64-bit integer on disk (orjson's limit)

_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event_type"],
    "additionalProperties": False,
    "properties": {
        "event_type": {"type": "string", "enum": [t.name for t in EventType]},
        "priority": {"type": "string", "enum": [p.name for p in EventPriority]},
        "source": {"type": "string"},
        "data": {"type": "object"},
        "metadata": {"type": "object"},
        "event_id": {"type": "string"},
        "timestamp_ns": {"type": "integer", "minimum": 0},
    },
}
_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "field": {"type": ["string", "null"]}},
}


class Service:
    """What the app needs: the log, optional bus, metrics, tokens and a rate sampler."""

    def __init__(
        self,
        log: AuditLog,
        config: AuditConfig,
        *,
        bus: RiskEventBus | None = None,
        tokens: TokenStore | None = None,
        owns_log: bool = False,
    ) -> None:
        self.log = log
        self.config = config
        self.bus = bus
        self.metrics = AuditMetrics(log, bus)
        self.tokens = tokens
        self.owns_log = owns_log
        self.dedupe = Deduplicator(config.dedupe_window)
        # Batches run in a thread pool: one at a time keeps each batch contiguous and
        # all-or-nothing, and the deduplicator consistent.
        self.ingest_lock = threading.Lock()
        self.samples: deque[tuple[float, int]] = deque(maxlen=int(900 / SAMPLE_EVERY) + 1)
        self.sample()

    def sample(self) -> None:
        self.samples.append((time.monotonic(), self.log.last_seq))

    def rates(self) -> list[tuple[float, float]]:
        """(seconds ago, events/s) between consecutive samples."""
        now = time.monotonic()
        pts = list(self.samples)
        return [
            (now - t1, max(0.0, (s1 - s0) / (t1 - t0)))
            for (t0, s0), (t1, s1) in itertools.pairwise(pts)
            if t1 > t0
        ]


def _problem(p: Problem) -> JSONResponse:
    """Every error answer has one shape, ``{"error": ..., "field": ...}``; a 401 says
    how to authenticate (RFC 6750)."""
    headers = {"WWW-Authenticate": 'Bearer realm="riskaudit"'} if p.status == 401 else None
    return JSONResponse(p.body(), status_code=p.status, headers=headers)


def create_app(service: Service) -> FastAPI:
    """The ASGI app for one Service."""
    cfg = service.config

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def sampler() -> None:
            while True:
                await asyncio.sleep(SAMPLE_EVERY)
                service.sample()

        task = asyncio.create_task(sampler())
        try:
            yield
        finally:
            task.cancel()
            if service.owns_log:
                await run_in_threadpool(service.log.close)

    app = FastAPI(
        title="riskaudit",
        version=__version__,
        description="The audit trail of a trading risk engine: hash-chained, losing nothing.",
        lifespan=lifespan,
        docs_url=None,  # served below from packaged assets: a trading network has no CDN
        redoc_url=None,
    )
    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="riskaudit API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )

    def principal_for(request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        if service.tokens is None or not header.lower().startswith("bearer "):
            return None
        return service.tokens.identify(header[7:].strip())

    def guard(endpoint: str, role: str | None) -> Callable[[Request], Principal | None]:
        def check(request: Request) -> Principal | None:
            if endpoint in cfg.open_endpoints:
                return principal_for(request)
            who = principal_for(request)
            if who is None:
                hint = (
                    "the event API is closed: set RISK_AUDIT_TOKENS_FILE"
                    if service.tokens is None
                    else "a valid bearer token is required"
                )
                raise _HTTPProblem(Problem(401, "authorization", hint))
            if role is not None and not who.may(role):
                raise _HTTPProblem(
                    Problem(403, "authorization", f"role {who.role!r} may not do this")
                )
            return who

        return check

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, _HTTPProblem):
            return _problem(exc.problem)
        return JSONResponse({"error": f"internal error: {exc!r}", "field": None}, status_code=500)

    @app.exception_handler(_HTTPProblem)
    async def http_problem(request: Request, exc: _HTTPProblem) -> JSONResponse:
        return _problem(exc.problem)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or None
        message = str(first.get("msg", "invalid request"))
        return _problem(Problem(422, where, message))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        answer = _problem(Problem(exc.status_code, None, str(exc.detail)))
        answer.headers.update(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the methods of the one route it tried; a path served
            # by several routes (GET and POST /v1/events) allows all of theirs.
            answer.headers["allow"] = ", ".join(_methods_for(app, request.url.path))
        return answer

    @app.get("/health", summary="Liveness: the process answers and the writer thread is alive")
    def health(_: Annotated[Principal | None, Depends(guard("health", None))]) -> JSONResponse:
        st = service.log.status()
        body = {**st["health"], "writer_alive": st["writer_alive"]}
        return JSONResponse(body, status_code=200 if st["writer_alive"] else 503)

    @app.get("/ready", summary="200 only while records reach the primary or the spool")
    def ready(_: Annotated[Principal | None, Depends(guard("ready", None))]) -> JSONResponse:
        st = service.log.status()
        body = {
            "ready": st["ready"],
            "destination": st["destination"],
            **st["health"],
            "integrity": st["integrity"],
        }
        return JSONResponse(body, status_code=200 if st["ready"] else 503)

    @app.get("/metrics", summary="Prometheus text format", response_class=Response)
    def metrics(_: Annotated[Principal | None, Depends(guard("metrics", None))]) -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/status", summary="Chain head, durable watermark, checkpoint, storage, clock")
    def status(
        _: Annotated[Principal | None, Depends(guard("status", "reader"))],
    ) -> dict[str, Any]:
        return service.log.status()

    @app.get("/", response_class=HTMLResponse, summary="Status page (no event content)")
    def page(_: Annotated[Principal | None, Depends(guard("page", "reader"))]) -> HTMLResponse:
        return HTMLResponse(render_page(service.log.status(), service.rates(), __version__))

    @app.post(
        "/v1/events",
        summary="Append one JSON event or an NDJSON batch (all or nothing)",
        status_code=202,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _EVENT_SCHEMA},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                },
            },
            "responses": {
                "202": {"description": "accepted: the seq range"},
                "200": {"description": "durable (with ?durable=true)"},
                "400": {
                    "description": "malformed",
                    "content": {"application/json": {"schema": _ERROR}},
                },
                "401": {
                    "description": "no valid token",
                    "content": {"application/json": {"schema": _ERROR}},
                },
                "403": {"description": "wrong role, or refused by the actor rules"},
                "413": {
                    "description": "too large",
                    "content": {"application/json": {"schema": _ERROR}},
                },
                "415": {
                    "description": "wrong content type",
                    "content": {"application/json": {"schema": _ERROR}},
                },
                "422": {
                    "description": "invalid event",
                    "content": {"application/json": {"schema": _ERROR}},
                },
                "503": {"description": "only the emergency path took it"},
            },
        },
    )
    async def post_events(
        request: Request,
        who: Annotated[Principal | None, Depends(guard("events", "writer"))],
        durable: bool = False,
    ) -> JSONResponse:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_body_bytes:
            return _problem(Problem(413, None, f"body over {cfg.max_body_bytes} bytes"))
        raw = await request.body()
        if len(raw) > cfg.max_body_bytes:
            return _problem(Problem(413, None, f"body over {cfg.max_body_bytes} bytes"))
        try:
            objs = parse_body(raw, request.headers.get("content-type", ""), cfg.max_batch)
            batch = len(objs) > 1
            events = [to_event(o, f"[{i}]." if batch else "") for i, o in enumerate(objs)]
            if cfg.schema_policy == "enforce":
                for i, ev in enumerate(events):
                    problem = schema_problem(ev)
                    if problem is not None:
                        field = problem.rsplit(" ", 1)[-1]
                        raise Problem(422, f"[{i}].{field}" if batch else field, problem)
            for i, ev in enumerate(events):  # the whole batch encodes, or none is written
                try:
                    service.log.check(ev)
                except AuditEncodingError as exc:
                    field = exc.field or "data"
                    raise Problem(422, f"[{i}].{field}" if batch else field, str(exc)) from None
        except Problem as p:
            return _problem(p)
        return await run_in_threadpool(_locked_append, service, events, durable)

    @app.get("/v1/events", summary="Query records; every read is itself recorded")
    def get_events(
        who: Annotated[Principal | None, Depends(guard("events", "reader"))],
        since: str | None = None,
        until: str | None = None,
        seq_from: Annotated[int | None, Query(ge=1, le=_MAX_SEQ)] = None,
        seq_to: Annotated[int | None, Query(ge=1, le=_MAX_SEQ)] = None,
        event_type: Annotated[list[str] | None, Query(alias="type")] = None,
        source: Annotated[list[str] | None, Query()] = None,
        priority: Annotated[list[str] | None, Query()] = None,
        after: Annotated[int, Query(ge=0, le=_MAX_SEQ)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> JSONResponse:
        times: dict[str, int | None] = {}
        for name, text in (("since", since), ("until", until)):
            try:
                times[name] = parse_time(text) if text else None
            except AuditError as exc:
                return _problem(Problem(422, f"query.{name}", str(exc)))
        try:
            q = EventQuery(
                since_ns=times["since"],
                until_ns=times["until"],
                seq_from=seq_from,
                seq_to=seq_to,
                types=frozenset(event_type or []),
                sources=frozenset(source or []),
                priorities=frozenset(priority or []),
                after=after,
                limit=limit,
            )
        except AuditError as exc:
            return _problem(Problem(422, "query", str(exc)))
        records, cursor = run_query(str(service.log.path.parent), q)
        service.log.append_control(
            "access",
            {
                "who": who.name if who else "anonymous",
                "role": who.role if who else None,
                "endpoint": "GET /v1/events",
                "query": {
                    k: v
                    for k, v in {
                        "since": since,
                        "until": until,
                        "seq_from": seq_from,
                        "seq_to": seq_to,
                        "type": event_type,
                        "source": source,
                        "priority": priority,
                        "after": after or None,
                        "limit": limit,
                    }.items()
                    if v
                },
                "count": len(records),
                "first_seq": records[0]["seq"] if records else None,
                "last_seq": records[-1]["seq"] if records else None,
            },
        )
        return JSONResponse({"records": records, "next_after": cursor})

    return app


class _HTTPProblem(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _methods_for(app: FastAPI, path: str) -> list[str]:
    """Every method some route serves at ``path``, sorted, for a 405's ``Allow``."""
    methods: set[str] = set()
    for route in app.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _locked_append(service: Service, events: list[RiskEvent], durable: bool) -> JSONResponse:
    if not durable:
        with service.ingest_lock:
            return _append_batch(service, events)
    with service.ingest_lock:
        response = _append_batch(service, events)
    if response.status_code != 202:
        return response
    return _make_durable(service, response)


def _make_durable(service: Service, response: JSONResponse) -> JSONResponse:
    """Wait for the batch's fsync outside the ingest lock (other batches go on)."""
    body = orjson.loads(bytes(response.body))
    target = max([body["last_seq"] or 0, *(int(d["seq"]) for d in body["duplicates"])])
    try:
        service.log.wait_durable(target, timeout=30)
    except AuditError as exc:
        return JSONResponse({**body, "error": str(exc), "durable": False}, status_code=503)
    return JSONResponse({**body, "durable": True}, status_code=200)


def _append_batch(service: Service, events: list[RiskEvent]) -> JSONResponse:
    log = service.log
    for i, ev in enumerate(events):  # the actor rules refuse the whole batch
        if actor_problem(ev) is not None and log.config.actor_policy == "enforce":
            try:
                log.append(ev)  # records the attempt as policy_violation, then raises
            except AuditPolicyError as exc:
                where = f"[{i}]." if len(events) > 1 else ""
                return JSONResponse(
                    {
                        "error": str(exc),
                        "field": f"{where}metadata",
                        "rule": exc.rule,
                        "violation_seq": exc.seq,
                    },
                    status_code=403,
                )
    seqs: list[int] = []
    duplicates: list[dict[str, Any]] = []
    for ev in events:
        known = service.dedupe.get(ev.event_id)
        if known is not None:
            duplicates.append({"event_id": ev.event_id, "seq": known})
            continue
        seq = log.append(ev)
        if seq is None:
            return JSONResponse(
                {
                    "error": "the audit queue was full: event(s) went out as unsequenced emergency "
                    "lines (recoverable), not to durable storage",
                    "field": None,
                    "written": seqs,
                },
                status_code=503,
            )
        service.dedupe.add(ev.event_id, seq)
        seqs.append(seq)
    body: dict[str, Any] = {
        "accepted": len(seqs),
        "first_seq": seqs[0] if seqs else None,
        "last_seq": seqs[-1] if seqs else None,
        "seqs": seqs,
        "duplicates": duplicates,
    }
    return JSONResponse(body, status_code=202)
