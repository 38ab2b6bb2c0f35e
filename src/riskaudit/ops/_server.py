"""The HTTP server of ``riskaudit serve``: uvicorn with the limits it lacks.

uvicorn (its h11 protocol) has no timeout for receiving a request's headers or body, and
no bound on open connections that does not also refuse requests (``limit_concurrency``
answers every request, ``/health`` included, with 503 while that many connections are
merely open). A client that opens connections and never finishes a request would hold
each one, and a file descriptor, for ever. :class:`GuardedH11Protocol` adds:

* a **header timeout** (``RISK_AUDIT_HTTP_HEADER_TIMEOUT``): from the moment a
  connection can send a request (accepted, or its previous response sent) until that
  request's headers have arrived; then the connection is closed, with a 408 if part of a
  request had arrived (an idle keep-alive connection is just closed, as uvicorn's own
  keep-alive timeout would);
* a **body timeout** (``RISK_AUDIT_HTTP_BODY_TIMEOUT``): from the end of the headers to
  the end of the body, however steadily it trickles in; then a 408 (unless the answer has
  begun) and the connection is closed, and the application sees the client disconnect;
* a **connection cap** (``RISK_AUDIT_HTTP_MAX_CONNECTIONS``): at the cap, a new
  connection evicts the oldest connection still waiting for its request headers (an
  honest client sends them within milliseconds of connecting, so under a flood of slow
  connections it is the flood that goes, not the health checks); when every connection
  is busy with a request, the new one is answered 503 and closed at once.

The timers are asyncio timer handles, armed and cancelled as the h11 state of the
connection changes, so 10,000 slow connections cost 10,000 timers, not tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

import h11
import orjson
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from riskaudit.config import AuditConfig

logger = logging.getLogger("riskaudit.ops")

#: File descriptors kept for everything but client connections (the log, its sidecars,
#: the spool, the listening socket, NATS, the thread pool's files).
FD_MARGIN = 256
#: At most one warning per kind of limit in this many seconds (a flood would otherwise
#: write one line per connection).
WARN_EVERY = 10.0
#: Timed-out connections are closed ``REAP_BATCH`` at a time, ``REAP_PAUSE`` seconds
#: apart (12,800 a second): thousands timing out together leave the loop, and the GIL
#: that the thread pool serving requests needs, free most of the time.
REAP_BATCH = 64
REAP_PAUSE = 0.005
STARTUP_FAILURE = 3  # uvicorn's exit status when it could not start (port in use, ...)


def _answer(status: int, reason: str, message: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps({"error": message, "field": None})
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n%s\r\n%s" % (status, reason.encode(), len(body), extra, body)
    )


_HEADERS_LATE = _answer(408, "Request Timeout", "the request headers did not arrive in time")
_BODY_LATE = _answer(408, "Request Timeout", "the request body did not arrive in time")
_FULL = _answer(
    503, "Service Unavailable", "too many open connections", extra=b"retry-after: 1\r\n"
)


@dataclass
class ConnectionGuard:
    """What every connection of one server shares: the limits, and the connections
    waiting for request headers, oldest first (the ones a new connection may evict)."""

    header_timeout: float
    body_timeout: float
    max_connections: int
    waiting: OrderedDict[GuardedH11Protocol, None] = field(default_factory=OrderedDict)
    expired: deque[tuple[GuardedH11Protocol, str, asyncio.TimerHandle | None]] = field(
        default_factory=deque
    )
    reaping: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    _noted: dict[str, float] = field(default_factory=dict)

    def note(self, kind: str, message: str) -> None:
        """Count a closed connection; warn at most once per ``WARN_EVERY`` per kind."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._noted.get(kind, -WARN_EVERY) >= WARN_EVERY:
            self._noted[kind] = now
            logger.warning("%s (%d so far)", message, self.counts[kind])

    def reap(self, conn: GuardedH11Protocol, kind: str, timer: asyncio.TimerHandle | None) -> None:
        """Close ``conn`` for a timeout soon: at most ``REAP_BATCH`` closes per turn of
        the event loop, so thousands of connections timing out together (they were
        opened together) do not stall the requests being served."""
        self.expired.append((conn, kind, timer))
        if not self.reaping:
            self.reaping = True
            conn.loop.call_soon(self._reap_some, conn.loop)

    def _reap_some(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            for _ in range(min(REAP_BATCH, len(self.expired))):
                conn, kind, timer = self.expired.popleft()
                conn.expire(kind, timer)
        finally:
            if self.expired:
                loop.call_later(REAP_PAUSE, self._reap_some, loop)
            else:
                self.reaping = False

    def evict_oldest_waiting(self) -> bool:
        """Close the connection that has waited longest for its headers; False if none."""
        while self.waiting:
            oldest, _ = self.waiting.popitem(last=False)
            if not oldest.transport.is_closing():
                oldest.evict()
                return True
        return False


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body timeouts and a connection cap.

    Use :func:`guarded_protocol` for a subclass bound to one server's limits.
    """

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # -- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        guard = self.guard
        if len(self.connections) >= guard.max_connections and not guard.evict_oldest_waiting():
            self._refused = True
            self.transport = transport
            transport.write(_FULL)
            transport.close()
            guard.note(
                "refused",
                f"connection cap reached ({guard.max_connections} connections, all busy "
                "with requests; RISK_AUDIT_HTTP_MAX_CONNECTIONS): refusing new connections",
            )
            return
        super().connection_made(transport)
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._stop_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._stop_timers()
        super().handle_websocket_upgrade(event)

    # -- the limits ----------------------------------------------------------------
    def _track(self) -> None:
        """Arm or cancel the timers for the state h11 says the request is in."""
        if self.transport.is_closing():
            self._stop_timers()
            return
        theirs = self.conn.their_state
        if theirs is h11.IDLE:  # waiting for a request's headers
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(
                    self.guard.header_timeout, self._headers_late
                )
                self.guard.waiting[self] = None
            return
        self._stop_header_timer()
        if theirs is h11.SEND_BODY:  # headers in, body arriving
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.guard.body_timeout, self._body_late)
        elif self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.guard.waiting.pop(self, None)

    def _stop_timers(self) -> None:
        self._stop_header_timer()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    # A fired timer stays in its attribute until the connection is closed or the request
    # moves on (which sets it to None, and a later wait arms a new one): the reaper
    # closes the connection only if the timer that fired is still the current one.
    def _headers_late(self) -> None:
        self.guard.reap(self, "header", self._header_timer)

    def _body_late(self) -> None:
        self.guard.reap(self, "body", self._body_timer)

    def expire(self, kind: str, timer: asyncio.TimerHandle | None) -> None:
        """Close the connection for a timeout that fired, if it still applies."""
        if self.transport.is_closing():
            return
        guard = self.guard
        if kind == "header":
            if timer is None or self._header_timer is not timer:  # the headers came
                return
            # An idle keep-alive connection is just closed; a partial request hears why.
            answer = _HEADERS_LATE if self.conn.trailing_data[0] else b""
            message = (
                f"closed connections that did not send their request headers within "
                f"{guard.header_timeout:g} s (RISK_AUDIT_HTTP_HEADER_TIMEOUT)"
            )
        else:
            if timer is None or self._body_timer is not timer:
                return
            started = self.cycle is not None and self.cycle.response_started
            answer = b"" if started else _BODY_LATE
            message = (
                f"closed connections whose request body did not arrive within "
                f"{guard.body_timeout:g} s (RISK_AUDIT_HTTP_BODY_TIMEOUT)"
            )
        if answer:
            self.transport.write(answer)
        self._close()
        guard.note(f"{kind}_timeout", message)

    def evict(self) -> None:
        """Closed to make room for a new connection (the cap is reached)."""
        self._close()
        self.guard.note(
            "evicted",
            f"connection cap reached ({self.guard.max_connections}; "
            "RISK_AUDIT_HTTP_MAX_CONNECTIONS): closing the connections that have waited "
            "longest for their request headers",
        )

    def _close(self) -> None:
        """Close now; the application (if a request is running) sees a disconnect and
        anything it still sends is dropped."""
        self._stop_timers()
        self.connections.discard(self)  # its place is free now, not after connection_lost
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass bound to ``guard`` (uvicorn builds a
    protocol per connection from the class alone)."""

    class Bound(GuardedH11Protocol):
        pass

    Bound.guard = guard
    return Bound


def connection_budget(wanted: int, *, raise_limit: bool = True) -> int:
    """Make room for ``wanted`` connections: raise the soft RLIMIT_NOFILE to the hard
    limit if it is lower than ``wanted`` + ``FD_MARGIN`` (unless ``raise_limit`` is
    false: inside a host process the limit is the host's); the cap the limit allows.

    A cap above what the descriptors allow would let ``accept`` fail with EMFILE, and
    asyncio then stops accepting (health checks included) for a second at a time.
    """
    need = wanted + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if raise_limit and soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("could not raise RLIMIT_NOFILE to %d: %s", target, exc)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    cap = max(1, soft - FD_MARGIN)
    if not raise_limit:  # a host process's limit is its own choice: fit it quietly
        logger.debug("connection cap %d fits RLIMIT_NOFILE %d", cap, soft)
        return cap
    logger.warning(
        "RISK_AUDIT_HTTP_MAX_CONNECTIONS is %d but RLIMIT_NOFILE allows %d descriptors: "
        "at most %d connections (raise the hard limit, e.g. `ulimit -Hn`, LimitNOFILE=)",
        wanted,
        soft,
        cap,
    )
    return cap


def server_config(
    app: Any,
    config: AuditConfig,
    *,
    host: str,
    port: int,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    embedded: bool = False,
) -> uvicorn.Config:
    """The uvicorn configuration for ``app`` with riskaudit's HTTP limits. ``embedded``:
    inside someone else's process, which keeps its file-descriptor limit and its
    logging (uvicorn's own messages at warning only)."""
    guard = ConnectionGuard(
        header_timeout=config.http_header_timeout,
        body_timeout=config.http_body_timeout,
        max_connections=connection_budget(config.http_max_connections, raise_limit=not embedded),
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning" if embedded else config.log_level.lower(),
        lifespan="on",
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        http=guarded_protocol(guard),
        # X-Forwarded-For is believed only from RISK_AUDIT_TRUSTED_PROXIES, by the app
        # (Service.principal): uvicorn's own rewrite trusts 127.0.0.1 by default.
        proxy_headers=False,
    )


def run_server(cfg: uvicorn.Config) -> None:
    """Serve until stopped, as ``uvicorn.run`` would (exit status 3 if it could not
    start); ``cfg`` from :func:`server_config` carries the timeouts and the cap."""
    server = uvicorn.Server(config=cfg)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has shut down
        server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)
