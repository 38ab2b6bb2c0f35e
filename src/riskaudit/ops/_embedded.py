"""The ops endpoints inside a trading process that embeds the library.

One call starts ``/health``, ``/ready`` and ``/metrics`` (and the status page) for an
AuditLog on a port, served by uvicorn on a daemon thread; ``stop()`` shuts it down
cleanly. The event API stays closed (no tokens), and the log stays the caller's. It has
the service's HTTP limits (header and body timeouts, connection cap) but leaves the
host process's file-descriptor limit alone.
"""

from __future__ import annotations

import threading
import time

import uvicorn

from riskaudit.bus import RiskEventBus
from riskaudit.errors import AuditStateError
from riskaudit.log import AuditLog
from riskaudit.ops._app import Service, create_app
from riskaudit.ops._server import server_config


class OpsServer:
    """A running ops endpoint; use :meth:`stop` (or ``with``)."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, port: int) -> None:
        self._server = server
        self._thread = thread
        self.port = port

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> OpsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_ops_server(
    log: AuditLog,
    *,
    port: int = 8080,
    host: str = "127.0.0.1",
    bus: RiskEventBus | None = None,
    timeout: float = 10.0,
) -> OpsServer:
    """Serve ``/health``, ``/ready``, ``/metrics`` and ``/`` for ``log`` on a thread."""
    config = log.config.with_(tokens_file=None)
    # The host's own service (or `riskaudit serve`) records the legal holds; a status
    # port must not add a record to the host's log each time it starts.
    service = Service(log, config, bus=bus, tokens=None, owns_log=False, record_state=False)
    app = create_app(service)
    # The same header and body timeouts and connection cap as `riskaudit serve`: a
    # port inside a trading process must not be held open by clients that never finish.
    server = uvicorn.Server(server_config(app, config, host=host, port=port, embedded=True))
    thread = threading.Thread(target=server.run, name="riskaudit-ops", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise AuditStateError(f"the ops endpoints did not start on {host}:{port}")
        time.sleep(0.01)
    bound = port
    if port == 0 and server.servers:
        bound = server.servers[0].sockets[0].getsockname()[1]
    return OpsServer(server, thread, bound)
