"""The HTTP service: a thin shell over one AuditLog (FastAPI on uvicorn).

Health and readiness come from the log's facts (``AuditLog.status()``), not from the
process being alive: ``/ready`` is 200 only while records reach the primary or the
spool. Without ``RISK_AUDIT_TOKENS_FILE`` the event API is closed (401): an audit
service must not accept or hand out records anonymously by default. Every read of
audit records is itself recorded as an ``access`` control record.
"""

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import WithJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from riskaudit._version import __version__
from riskaudit.archive import HoldsWatch
from riskaudit.bus import RiskEventBus
from riskaudit.config import AuditConfig
from riskaudit.errors import AuditEncodingError, AuditError, AuditPolicyError
from riskaudit.events import EventPriority, EventType, RiskEvent
from riskaudit.format import holds_path
from riskaudit.integrity import TIME_FORMS, TIME_PATTERN, parse_time
from riskaudit.log import AuditLog
from riskaudit.ops._approvals import Approvals
from riskaudit.ops._auth import Principal, TokenChange, TokenStore
from riskaudit.ops._ingest import (
    _INT_MAX,
    _INT_MIN,
    Decision,
    Deduplicator,
    Problem,
    content_digest,
    parse_body,
    parse_decision,
    to_event,
)
from riskaudit.ops._metrics import CONTENT_TYPE, AuditMetrics
from riskaudit.ops._page import render_page
from riskaudit.ops._query import Query as EventQuery
from riskaudit.ops._query import run_query
from riskaudit.ops._views import ReplicationStatus
from riskaudit.policy import ACTOR_TYPE_NAMES, actor_problem, requires_approval

logger = logging.getLogger("riskaudit.ops")

SAMPLE_EVERY = 5.0
#: Seconds between looks at the tokens and holds files (a revocation lands within one).
WATCH_EVERY = 0.25
_MAX_SEQ = 2**63 - 1  # seq is a signed 64-bit integer on disk (orjson's limit)

# GET /v1/events: the schema says exactly what the app takes. `since`/`until` are checked by
# parse_time (a 422 naming the parameter); their `pattern` is the very regex it applies.
_TIME_SCHEMA = WithJsonSchema({"type": "string", "pattern": TIME_PATTERN})
_SINCE = f"Records at or after this time: {TIME_FORMS}."
_UNTIL = f"Records before this time: {TIME_FORMS}."
# `source` is free text: one value or several, any text a source (`?source=false` included).
_SOURCE_SCHEMA = WithJsonSchema(
    {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
)
if TYPE_CHECKING:  # to mypy the names are strings; at run time a Literal lists them
    from riskaudit.replication import Forwarder

    _TypeName = str
    _PriorityName = str
else:
    _TypeName = Literal[tuple(t.name for t in EventType)]
    _PriorityName = Literal[tuple(p.name for p in EventPriority)]

# Any JSON value a record can hold, for `data` and `metadata`: an integer beyond 64 bits
# is a 422 (it would be written as a rounded float), so the schema bounds integers too.
_JSON_VALUE_REF = "#/components/schemas/JsonValue"
_SCHEMAS: dict[str, Any] = {
    "JsonValue": {
        "description": "Any JSON value; integers from -2**63 to 2**64-1 (send larger ones "
        "as strings)",
        "anyOf": [
            {"type": ["null", "boolean", "string"]},
            {"type": "integer", "minimum": _INT_MIN, "maximum": _INT_MAX},
            {"type": "number", "not": {"type": "integer"}},
            {"type": "array", "items": {"$ref": _JSON_VALUE_REF}},
            {"type": "object", "additionalProperties": {"$ref": _JSON_VALUE_REF}},
        ],
    }
}

#: What only an approval through its own token may say; a client sending it is refused.
_APPROVAL_CLAIMS = ("approved_by", "approval_seq")
_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event_type"],
    "additionalProperties": False,
    "properties": {
        "event_type": {"type": "string", "enum": [t.name for t in EventType]},
        "priority": {"type": "string", "enum": [p.name for p in EventPriority]},
        "source": {"type": "string"},
        "data": {"type": "object", "additionalProperties": {"$ref": _JSON_VALUE_REF}},
        "metadata": {
            "type": "object",
            "properties": dict.fromkeys(_APPROVAL_CLAIMS, False),
            "additionalProperties": {"$ref": _JSON_VALUE_REF},
        },
        "event_id": {"type": "string"},
        "timestamp_ns": {"type": "integer", "minimum": 0, "maximum": _INT_MAX},
    },
}
_APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "decision": {"type": "string", "enum": ["approve", "reject"]},
        "actor": {"type": "string"},
        "comment": {"type": "string"},
        "request_seq": {"type": "integer", "minimum": 1, "maximum": _MAX_SEQ},
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
        record_state: bool = True,
    ) -> None:
        self.log = log
        self.config = config
        self.bus = bus
        self.metrics = AuditMetrics(log, bus)
        self.tokens = tokens
        self.owns_log = owns_log
        self.record_state = record_state
        self.forwarder: Forwarder | None = None  # `serve --forward` sets it
        self.dedupe = Deduplicator(config.dedupe_window)
        self.approvals = Approvals(config.approval_window)
        self.proxies = tuple(ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies)
        # Batches run in a thread pool: one at a time keeps each batch contiguous and
        # all-or-nothing, and the deduplicator consistent.
        self.ingest_lock = threading.Lock()
        self.samples: deque[tuple[float, int]] = deque(maxlen=int(900 / SAMPLE_EVERY) + 1)
        self.sample()
        # Who may do what, and what may not be deleted, are evidence too: their state
        # at start and every change after it are chained records.
        self.holds = HoldsWatch(config.holds_file or holds_path(config.log_path))
        if record_state:  # the service that owns the log's housekeeping does, once
            self._record_holds(self.holds.snapshot(), "start")
        if tokens is not None:
            tokens.on_change = self._record_tokens
            self._record_tokens(tokens.snapshot(), "start")

    def replication(self) -> ReplicationStatus | None:
        """The forwarder's view, end to end (None when this service does not forward)."""
        fwd = self.forwarder
        if fwd is None:
            return None
        return ReplicationStatus(
            replicated_seq=fwd.replicated_seq,
            broker_acked_seq=fwd.cursor.seq if fwd.cursor else 0,
            lag_records=fwd.replication_lag(),
            lag_seconds=round(fwd.replication_lag_seconds(), 3),
            repairs=fwd.stats.repairs,
            errors=fwd.stats.errors,
            last_error=fwd.stats.last_error,
        )

    def status(self) -> dict[str, Any]:
        """The log's status, with replication when this service forwards, as JSON
        (``GET /v1/status``)."""
        st = self.log.status().to_dict()
        rep = self.replication()
        if rep is not None:
            st["replication"] = asdict(rep)
        return st

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Whether to take traffic: records reach a durable destination, and — with
        ``RISK_AUDIT_READY_MAX_REPLICATION_LAG`` — the collector is not too far behind."""
        st = self.log.status()
        json_form = st.to_dict()
        ready = st.ready
        reasons = list(st.health.reasons)
        limit = self.config.ready_max_replication_lag
        rep = self.replication()
        if rep is not None and limit is not None and rep.lag_seconds > limit:
            ready = False
            reasons.append(
                f"replication: the oldest record not fsynced centrally is "
                f"{rep.lag_seconds:.0f}s old (RISK_AUDIT_READY_MAX_REPLICATION_LAG "
                f"{limit:g}s)"
            )
        body: dict[str, Any] = {
            "ready": ready,
            "destination": st.destination,
            **json_form["health"],
            "reasons": reasons,
            "integrity": json_form["integrity"],
        }
        if rep is not None:
            body["replication"] = asdict(rep)
        return ready, body

    def watch(self) -> None:
        """Pick up a changed tokens or holds file (the service calls this every
        ``WATCH_EVERY`` seconds; a request's token check also looks)."""
        if self.tokens is not None:
            self.tokens.poll()
        if not self.record_state:
            return
        change = self.holds.poll()
        if change is not None:
            self._record_holds(change, "changed")

    def _record_tokens(self, change: TokenChange, reason: str) -> None:
        self.log.append_control("tokens", change.record(reason))

    def _record_holds(self, fields: dict[str, Any], reason: str) -> None:
        self.log.append_control("holds", {"reason": reason, **fields})

    def principal(self, who: Principal, request: Request, request_id: str) -> dict[str, Any]:
        """What the record says of who posted it: from the token and the connection,
        never from the body. ``X-Forwarded-For`` is believed only from a trusted proxy."""
        direct = request.client.host if request.client is not None else None
        peer = direct
        via: list[str] = []
        if direct is not None and self._trusted(direct):
            hops = [
                h.strip()
                for header in request.headers.getlist("x-forwarded-for")
                for h in header.split(",")
                if h.strip()
            ]
            via.append(direct)
            while hops:  # from the nearest hop: the first one not a trusted proxy is the client
                hop = hops.pop()
                peer = hop
                if not self._trusted(hop):
                    break
                via.append(hop)
        fields: dict[str, Any] = {
            "name": who.name,
            "role": who.role,
            "token": who.fingerprint,
            "peer": peer,
            "request_id": request_id,
        }
        if via:
            fields["via"] = via
        return fields

    def _trusted(self, address: str) -> bool:
        if not self.proxies:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.proxies)

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


class _RequestIds:
    """Every answer names its request in ``X-Request-ID``: the id the records written
    for it carry in ``principal``, so a client can point at exactly what it did."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        await self.app(scope, receive, send_named)


def _request_id(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else uuid.uuid4().hex


async def _read_body(request: Request, limit: int, too_large: str) -> bytes | JSONResponse:
    """The body, counted while it arrives: the 413 comes as soon as ``limit`` is passed
    (or at once for a Content-Length over it), so a chunked body without Content-Length
    cannot make the service hold more than ``limit`` bytes. The rest is never read: the
    413 closes the connection. A client gone before the end (or cut off by the body
    timeout) gets an answer nobody reads, instead of a traceback in the log."""
    length = request.headers.get("content-length")
    refused = _problem(Problem(413, None, too_large))
    refused.headers["connection"] = "close"
    if length is not None and length.isdigit() and int(length) > limit:
        return refused
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return refused
            chunks.append(chunk)
    except ClientDisconnect:
        return _problem(Problem(400, None, "the client closed the connection mid-body"))
    return b"".join(chunks)


def create_app(service: Service) -> FastAPI:
    """The ASGI app for one Service."""
    cfg = service.config

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def sampler() -> None:
            while True:
                await asyncio.sleep(SAMPLE_EVERY)
                service.sample()

        async def watcher() -> None:
            while True:
                await asyncio.sleep(WATCH_EVERY)
                try:
                    await run_in_threadpool(service.watch)
                except Exception:  # keep watching: a change missed now is caught next time
                    logger.exception("could not record a tokens or holds change")

        task = asyncio.create_task(sampler())
        watch = asyncio.create_task(watcher())
        try:
            yield
        finally:
            task.cancel()
            watch.cancel()
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
    app.add_middleware(_RequestIds)
    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document (built once) plus the schemas the request bodies refer to."""
        doc = fastapi_openapi()
        doc.setdefault("components", {}).setdefault("schemas", {}).update(_SCHEMAS)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]

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
        h = st.health
        body = {
            "status": h.status,
            "reasons": list(h.reasons),
            "warnings": list(h.warnings),
            "writer_alive": st.writer_alive,
        }
        return JSONResponse(body, status_code=200 if st.writer_alive else 503)

    @app.get("/ready", summary="200 only while records reach the primary or the spool")
    def ready(_: Annotated[Principal | None, Depends(guard("ready", None))]) -> JSONResponse:
        ok, body = service.ready()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", summary="Prometheus text format", response_class=Response)
    def metrics(_: Annotated[Principal | None, Depends(guard("metrics", None))]) -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/status", summary="Chain head, durable watermark, checkpoint, storage, clock")
    def status(
        _: Annotated[Principal | None, Depends(guard("status", "reader"))],
    ) -> dict[str, Any]:
        return service.status()

    @app.get("/", response_class=HTMLResponse, summary="Status page (no event content)")
    def page(_: Annotated[Principal | None, Depends(guard("page", "reader"))]) -> HTMLResponse:
        return HTMLResponse(
            render_page(service.log.status(), service.replication(), service.rates(), __version__)
        )

    @app.post(
        "/v1/events",
        summary="Append one JSON event or an NDJSON batch (all or nothing)",
        status_code=202,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _EVENT_SCHEMA},
                    # As OpenAPI 3.2 reads a sequential media type: the schema is the whole
                    # stream as an array of its items (any string would not be a batch).
                    "application/x-ndjson": {
                        "schema": {
                            "type": "array",
                            "items": _EVENT_SCHEMA,
                            "minItems": 1,
                            "description": "The events, one JSON object per line (blank "
                            f"lines are skipped); at most {cfg.max_batch} (413 above).",
                        }
                    },
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
                "403": {
                    "description": "wrong role, refused by the actor rules, or an actor the "
                    "token is not bound to",
                    "content": {"application/json": {"schema": _ERROR}},
                },
                "409": {
                    "description": "an event_id already used for other content (recorded as "
                    "a conflict record; nothing of the request written)",
                    "content": {"application/json": {"schema": _ERROR}},
                },
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
        raw = await _read_body(request, cfg.max_body_bytes, f"body over {cfg.max_body_bytes} bytes")
        if isinstance(raw, JSONResponse):
            return raw
        request_id = _request_id(request)
        if who is None:  # the events endpoint is never open: the guard admitted a token
            return _problem(Problem(401, "authorization", "a valid bearer token is required"))
        principal = service.principal(who, request, request_id)
        try:
            objs = parse_body(raw, request.headers.get("content-type", ""), cfg.max_batch)
            batch = len(objs) > 1
            events = [to_event(o, f"[{i}]." if batch else "") for i, o in enumerate(objs)]
            for i, ev in enumerate(events):  # the whole batch encodes, or none is written
                where = f"[{i}]." if batch else ""
                for claim in _APPROVAL_CLAIMS:
                    if claim in ev.metadata:
                        raise Problem(
                            422,
                            f"{where}metadata.{claim}",
                            "an approval is not taken from the body: the approver posts "
                            "POST /v1/approvals/{event_id} with a token of their own",
                        )
                try:
                    service.log.check(ev, principal=principal)
                except AuditEncodingError as exc:
                    raise Problem(422, f"{where}{exc.field or 'data'}", str(exc)) from None
        except Problem as p:
            return _problem(p)
        digests = [content_digest(o) for o in objs]
        answer = await run_in_threadpool(
            _locked_append, service, Batch(events, digests, who, principal), durable
        )
        return answer

    @app.get(
        "/v1/approvals",
        summary="Changes waiting for a second principal's approval",
        responses=_errors(("401", "no valid token"), ("403", "wrong role")),
    )
    def list_approvals(
        request: Request,
        who: Annotated[Principal | None, Depends(guard("events", "reader"))],
    ) -> JSONResponse:
        pending = service.approvals.listing()
        service.log.append_control(  # it shows event content: a read like any other
            "access",
            {
                "who": who.name if who else "anonymous",
                "role": who.role if who else None,
                "principal": service.principal(who, request, _request_id(request)) if who else None,
                "endpoint": "GET /v1/approvals",
                "count": len(pending),
                "event_ids": [p["event_id"] for p in pending],
            },
        )
        return JSONResponse({"pending": pending})

    @app.post(
        "/v1/approvals/{event_id}",
        summary="Approve (or reject) a pending limit increase or kill-switch reset",
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": _APPROVAL_SCHEMA}},
            },
            "responses": {
                "200": {"description": "approved (the event's seq) or rejected"},
                **_errors(
                    ("400", "malformed JSON"),
                    ("401", "no valid token"),
                    ("403", "wrong role, four eyes, or an actor the token is not bound to"),
                    ("404", "no change with this event_id is waiting for approval"),
                    ("409", "the approved change could not be written"),
                    ("413", "body too large"),
                    ("422", "invalid approval"),
                    ("503", "only the emergency path took the approved change"),
                ),
            },
        },
    )
    async def approve(
        event_id: str,
        request: Request,
        who: Annotated[Principal | None, Depends(guard("events", "writer"))],
    ) -> JSONResponse:
        request_id = _request_id(request)
        if who is None:
            return _problem(Problem(401, "authorization", "a valid bearer token is required"))
        raw = await _read_body(request, 4096, "an approval body is at most 4096 bytes")
        if isinstance(raw, JSONResponse):
            return raw
        try:
            decision = parse_decision(raw)
        except Problem as p:
            return _problem(p)
        principal = service.principal(who, request, request_id)
        answer = await run_in_threadpool(_decide, service, event_id, who, principal, decision)
        return answer

    @app.get("/v1/events", summary="Query records; every read is itself recorded")
    def get_events(
        request: Request,
        who: Annotated[Principal | None, Depends(guard("events", "reader"))],
        since: Annotated[str | None, Query(description=_SINCE), _TIME_SCHEMA] = None,
        until: Annotated[str | None, Query(description=_UNTIL), _TIME_SCHEMA] = None,
        seq_from: Annotated[int | None, Query(ge=1, le=_MAX_SEQ)] = None,
        seq_to: Annotated[int | None, Query(ge=1, le=_MAX_SEQ)] = None,
        event_type: Annotated[list[_TypeName] | None, Query(alias="type")] = None,
        source: Annotated[list[str] | None, Query(), _SOURCE_SCHEMA] = None,
        priority: Annotated[list[_PriorityName] | None, Query()] = None,
        after: Annotated[int, Query(ge=0, le=_MAX_SEQ)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> JSONResponse:
        times: dict[str, int | None] = {}
        for name, text in (("since", since), ("until", until)):
            try:
                times[name] = parse_time(text) if text is not None else None
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
        request_id = _request_id(request)
        service.log.append_control(
            "access",
            {
                "who": who.name if who else "anonymous",
                "role": who.role if who else None,
                "principal": service.principal(who, request, request_id) if who else None,
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


def _errors(*pairs: tuple[str, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error answers, all in the one error shape."""
    return {
        code: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
        for code, text in pairs
    }


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


@dataclass(frozen=True, slots=True)
class Batch:
    """One request's events, with what each was posted as and who posted them."""

    events: list[RiskEvent]
    digests: list[str]  # of each event as posted: a re-post is compared by content
    who: Principal
    principal: dict[str, Any]  # the record's ``principal`` field


def _locked_append(service: Service, batch: Batch, durable: bool) -> JSONResponse:
    if not durable:
        with service.ingest_lock:
            return _append_batch(service, batch)
    with service.ingest_lock:
        response = _append_batch(service, batch)
    if response.status_code != 202:
        return response
    return _make_durable(service, response)


def _make_durable(service: Service, response: JSONResponse) -> JSONResponse:
    """Wait for the batch's fsync outside the ingest lock (other batches go on)."""
    body = orjson.loads(bytes(response.body))
    target = max(
        [
            body["last_seq"] or 0,
            *(int(d["seq"]) for d in body["duplicates"]),
            *(int(p["request_seq"]) for p in body["pending_approval"]),
        ]
    )
    try:
        service.log.wait_durable(target, timeout=30)
    except AuditError as exc:
        return JSONResponse({**body, "error": str(exc), "durable": False}, status_code=503)
    return JSONResponse({**body, "durable": True}, status_code=200)


def _refuse(status: int, field: str, message: str, **extra: Any) -> JSONResponse:
    """A refusal in the one error shape, with what the client needs to act on it (the
    rule, the seq of the record that keeps the attempt)."""
    return JSONResponse(Problem(status, field, message).body() | extra, status_code=status)


def _append_batch(service: Service, batch: Batch) -> JSONResponse:
    """Check the whole batch against the rules that need the service's state (actor
    bindings, the actor rules, re-used ids, four eyes), then write it — or write only the
    evidence of why it was refused."""
    log = service.log
    events = batch.events
    many = len(events) > 1
    principal = batch.principal
    enforce = log.config.actor_policy == "enforce"
    plan: list[str] = []  # per event: "write", "duplicate", "approval"
    seen: dict[str, str] = {}  # event_id → digest within this batch
    for i, ev in enumerate(events):
        where = f"[{i}]." if many else ""
        actor = ev.metadata.get("actor")
        if actor is not None and not (isinstance(actor, str) and batch.who.may_act_as(actor)):
            seq = log.append_control(
                "policy_violation",
                {
                    "rule": "actor_binding",
                    "detail": f"token {batch.who.name!r} may not act as {actor!r}",
                    "event_id": ev.event_id,
                    "outcome": "refused",
                    "principal": principal,
                    "event": log.event_fields(ev),
                },
            )
            return _refuse(
                403,
                f"{where}metadata.actor",
                f"token {batch.who.name!r} may not act as {actor!r}; the attempt is recorded "
                f"as policy_violation seq {seq}",
                rule="actor_binding",
                violation_seq=seq,
            )
        rule = actor_problem(ev) if ev.event_type._name_ in ACTOR_TYPE_NAMES else None
        if rule is not None and enforce and rule[0] != "approval_required":
            try:
                log.append(ev, principal=principal)  # records the attempt, then raises
            except AuditPolicyError as exc:
                return _refuse(
                    403, f"{where}metadata", str(exc), rule=exc.rule, violation_seq=exc.seq
                )
        digest = batch.digests[i]
        known = service.dedupe.get(ev.event_id)
        if known is None and (waiting := service.approvals.get(ev.event_id)) is not None:
            # Past the dedupe window but still pending: the approver may be reading
            # it, so other content under its id must not take its place.
            known = (waiting.request_seq, waiting.digest)
        earlier = seen.get(ev.event_id)
        if (known is not None and known[1] != digest) or (
            earlier is not None and earlier != digest
        ):
            original = known[0] if known is not None else None
            seq = log.append_control(
                "conflict",
                {
                    "event_id": ev.event_id,
                    "original_seq": original,
                    "principal": principal,
                    "event": log.event_fields(ev),
                },
            )
            return _refuse(
                409,
                f"{where}event_id",
                f"event_id {ev.event_id!r} was already used for other content"
                + (f" (seq {original})" if original is not None else " earlier in this batch")
                + f"; nothing of this request was written but the conflict record seq {seq}",
                event_id=ev.event_id,
                original_seq=original,
                conflict_seq=seq,
            )
        seen[ev.event_id] = digest
        if known is not None or earlier is not None:
            plan.append("duplicate")
        elif requires_approval(ev):  # over HTTP always four eyes, whatever the policy
            if service.approvals.count_for(principal["name"]) >= service.approvals.per_principal:
                return _refuse(
                    429,
                    f"{where}event_id",
                    f"{batch.who.name!r} has {service.approvals.per_principal} changes "
                    "waiting for approval already: have them approved or let them expire",
                )
            plan.append("approval")
        else:
            plan.append("write")
    seqs: list[int] = []
    duplicates: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    for ev, step, digest in zip(events, plan, batch.digests, strict=True):
        if step == "duplicate":
            known = service.dedupe.get(ev.event_id)
            waiting = service.approvals.get(ev.event_id)
            seq_of = known[0] if known else waiting.request_seq if waiting else None
            duplicates.append({"event_id": ev.event_id, "seq": seq_of})
            continue
        if step == "approval":
            shown = log.event_fields(ev)
            request_seq = log.append_control(
                "approval_request",
                {
                    "event_id": ev.event_id,
                    "principal": principal,
                    "event": shown,
                    "window_s": service.approvals.window,
                },
            )
            service.approvals.add(ev, shown, principal, request_seq, digest)
            service.dedupe.add(ev.event_id, request_seq, digest)
            pending.append({"event_id": ev.event_id, "request_seq": request_seq})
            continue
        written = log.append(ev, principal=principal)
        if written is None:
            return JSONResponse(
                {
                    "error": "the audit queue was full: event(s) went out as unsequenced emergency "
                    "lines (recoverable), not to durable storage",
                    "field": None,
                    "written": seqs,
                },
                status_code=503,
            )
        service.dedupe.add(ev.event_id, written, digest)
        seqs.append(written)
    body: dict[str, Any] = {
        "accepted": len(seqs),
        "first_seq": seqs[0] if seqs else None,
        "last_seq": seqs[-1] if seqs else None,
        "seqs": seqs,
        "duplicates": duplicates,
        "pending_approval": pending,
    }
    return JSONResponse(body, status_code=202)


def _decide(
    service: Service,
    event_id: str,
    who: Principal,
    principal: dict[str, Any],
    decision: Decision,
) -> JSONResponse:
    """An approver's answer to a pending change: four eyes, each through its own token."""
    log = service.log
    with service.ingest_lock:
        pending = service.approvals.get(event_id)
        if pending is None:
            return _refuse(
                404, "event_id", f"no change {event_id!r} is waiting for approval (or it expired)"
            )
        if decision.request_seq is not None and decision.request_seq != pending.request_seq:
            return _refuse(
                409,
                "request_seq",
                f"the change waiting under {event_id!r} is approval_request seq "
                f"{pending.request_seq}, not {decision.request_seq}: read it again",
            )
        approver = decision.actor
        if approver is None:
            if who.actors is not None and len(who.actors) > 1:
                return _refuse(
                    422,
                    "actor",
                    f"token {who.name!r} may act as {sorted(who.actors)}: name the approver "
                    'in "actor"',
                )
            approver = next(iter(who.actors)) if who.actors is not None else who.name
        requester = pending.principal
        requested_actor = pending.event.metadata.get("actor")
        refusal: tuple[int, str, str, str] | None = None
        if not who.may_act_as(approver):
            refusal = (
                403,
                "actor",
                "actor_binding",
                f"token {who.name!r} may not act as {approver!r}",
            )
        elif requester.get("name") == who.name or approver == requested_actor:
            refusal = (
                403,
                "authorization",
                "four_eyes",
                "the approver must be another principal, acting as another actor, than "
                f"the requester ({requester.get('name')!r} as {requested_actor!r})",
            )
        if refusal is not None:
            status, field, rule, detail = refusal
            seq = log.append_control(
                "policy_violation",
                {
                    "rule": rule,
                    "detail": detail,
                    "event_id": event_id,
                    "outcome": "refused",
                    "principal": principal,
                    "request_seq": pending.request_seq,
                },
            )
            return _refuse(
                status,
                field,
                f"{detail}; the attempt is recorded as policy_violation seq {seq}",
                rule=rule,
                violation_seq=seq,
            )
        service.approvals.take(event_id)
        approval_seq = log.append_control(
            "approval",
            {
                "event_id": event_id,
                "request_seq": pending.request_seq,
                "decision": decision.decision,
                "approver": approver,
                "principal": principal,
                "comment": decision.comment,
            },
        )
        answer: dict[str, Any] = {
            "event_id": event_id,
            "decision": decision.decision,
            "approval_seq": approval_seq,
            "request_seq": pending.request_seq,
            "seq": None,
        }
        if decision.decision == "reject":
            return JSONResponse(answer, status_code=200)
        ev = pending.event
        approved = RiskEvent(
            ev.event_type,
            ev.priority,
            ev.source,
            ev.data,
            {**ev.metadata, "approved_by": approver, "approval_seq": approval_seq},
            event_id=ev.event_id,
            timestamp_ns=ev.timestamp_ns,
        )
        try:
            event_seq = log.append(approved, principal=requester)
        except AuditError as exc:
            service.approvals.put_back(pending)  # the approval stands; it can be given again
            return _refuse(409, "event_id", f"the approved change was not written: {exc}")
        if event_seq is None:
            return JSONResponse(
                {**answer, "error": "only the emergency path took the approved change"},
                status_code=503,
            )
        # Past the dedupe window the id may be unknown again: a re-post of the same change
        # must find the written event, not open a second request.
        service.dedupe.add(event_id, event_seq, pending.digest)
        return JSONResponse({**answer, "seq": event_seq}, status_code=200)
