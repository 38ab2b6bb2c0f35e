"""``riskaudit serve`` and ``riskaudit token create``"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import orjson
import typer

from riskaudit.bus import RiskEventBus
from riskaudit.cli._common import EXIT_INVALID, fail, load_config, setup
from riskaudit.demo import RiskEngineSimulator
from riskaudit.errors import AuditConfigError, AuditError
from riskaudit.log import AuditLog
from riskaudit.ops import (
    Housekeeper,
    Service,
    TokenStore,
    create_app,
    create_token,
    revoke_token,
    run_server,
    server_config,
)
from riskaudit.replication import ForwarderThread


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",  # noqa: S104
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    demo: Annotated[bool, typer.Option(help="Run the simulated risk engine inside.")] = False,
    demo_rate: Annotated[float, typer.Option(help="Demo events per second.")] = 200.0,
    ssl_certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    forward: Annotated[
        bool, typer.Option(help="Also forward the log to NATS JetStream (RISK_AUDIT_NATS_*).")
    ] = False,
) -> None:
    """Serve /health, /ready, /metrics, the event API and the status page."""
    config = load_config()
    setup(config)
    signal.signal(signal.SIGTERM, _stopped)
    early = _hold_signals()  # the lock file names our pid before the log is open
    try:
        tokens = TokenStore.load(config.tokens_file) if config.tokens_file else None
        log = AuditLog(config)
    except AuditError as exc:
        raise fail(str(exc), EXIT_INVALID) from exc
    bus = RiskEventBus(log)
    service = Service(log, config, bus=bus, tokens=tokens, owns_log=False)
    _install_signals(log, tokens)
    for signum in early:
        _ACTIONS[signum](log)
    if config.pid_file is not None:
        config.pid_file.write_text(f"{os.getpid()}\n")
    housekeeper = Housekeeper(log, config)
    service.metrics.watch_housekeeping(housekeeper)
    housekeeper.start()
    forwarder = None
    if forward:
        forwarder = ForwarderThread(log.path, config.replication, sidecar=config.checkpoint_path)
        service.metrics.watch_forwarder(forwarder.forwarder)
        service.forwarder = forwarder.forwarder
        forwarder.start()
    stop = threading.Event()
    runner = None
    if demo:
        sim = RiskEngineSimulator(bus)
        runner = threading.Thread(
            target=sim.run_forever, args=(demo_rate, stop.is_set), name="demo", daemon=True
        )
        runner.start()
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    typer.echo(
        f"riskaudit serving {log.path} on http{'s' if ssl_certfile else ''}://{shown}:{port}/"
    )
    try:
        run_server(
            server_config(
                create_app(service),
                config,
                host=host,
                port=port,
                ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
                ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
            )
        )
    finally:
        stop.set()
        if forwarder is not None:
            forwarder.stop()
        housekeeper.stop()
        if runner is not None:
            runner.join(timeout=5)
        log.close()
        if config.pid_file is not None:
            config.pid_file.unlink(missing_ok=True)


#: SIGUSR1 and SIGHUP reopen the log's path (logrotate's postrotate); SIGHUP also
#: re-reads the tokens file; SIGUSR2 rotates now. Each only sets a flag.
_ACTIONS: dict[int, Callable[[AuditLog], None]] = {
    signal.SIGUSR1: AuditLog.reopen,
    signal.SIGHUP: AuditLog.reopen,
    signal.SIGUSR2: AuditLog.rotate,
}


def _stopped(_signum: int, _frame: object) -> None:
    """SIGTERM is how a supervisor (docker stop, the kubelet, systemd) ends the service:
    uvicorn shuts down gracefully and re-raises it, the log drains and closes, and the
    exit is a success (0), not 128 + 15, which systemd would count as a failure."""
    raise SystemExit(0)


def _hold_signals() -> list[int]:
    """Until the log is open, keep these signals (their default action kills the
    process, and `riskaudit signal` may already find our pid in the lock file); the
    list they land in is replayed once the real handlers are in place."""
    held: list[int] = []
    for signum in _ACTIONS:
        signal.signal(signum, lambda s, _f: held.append(s))
    return held


def _install_signals(log: AuditLog, tokens: TokenStore | None) -> None:
    def handle(signum: int, _frame: object) -> None:
        _ACTIONS[signum](log)
        if signum == signal.SIGHUP and tokens is not None:
            tokens.request_reload()  # a revoked token stops working at once

    for signum in _ACTIONS:
        signal.signal(signum, handle)


token_app = typer.Typer(help="Bearer tokens for the HTTP API.", no_args_is_help=True)

FileOption = Annotated[
    Path | None,
    typer.Option("--file", help="The tokens file (default: RISK_AUDIT_TOKENS_FILE)."),
]


def _tokens_file(given: Path | None) -> Path:
    path = given or load_config().tokens_file
    if path is None:
        raise fail("no tokens file: pass --file or set RISK_AUDIT_TOKENS_FILE")
    return path


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="Who the token is for (no spaces).")],
    role: Annotated[str, typer.Option(help="writer, reader or admin.")],
    expires: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 90d or 12h (default: no expiry).")
    ] = None,
    actors: Annotated[
        str | None,
        typer.Option(help="Comma-separated actors the token may act as (default: any)."),
    ] = None,
) -> None:
    """Print a new random token (shown once) and the line for RISK_AUDIT_TOKENS_FILE."""
    try:
        token, line = create_token(name, role, expires_in=expires, actors=(actors or "").split(","))
    except AuditConfigError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"token: {token}")
    typer.echo(f"tokens-file line: {line}")


@token_app.command("list")
def token_list(
    file: FileOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """The tokens in the file: name, role, fingerprint, expiry and actors (no secret)."""
    path = _tokens_file(file)
    try:
        store = TokenStore.load(path)
    except AuditConfigError as exc:
        raise fail(str(exc), EXIT_INVALID) from exc
    now = time.time_ns()
    rows = [{**p.describe(), "expired": p.expired(now)} for p in store.tokens()]
    if as_json:
        typer.echo(orjson.dumps(rows).decode())
        return
    if not rows:
        typer.echo(f"no tokens in {path}")
    for row in rows:
        until = row["expires"] or "never"
        state = " (EXPIRED)" if row["expired"] else ""
        who = ",".join(row["actors"]) if row["actors"] is not None else "any"
        typer.echo(
            f"{row['name']:<20} {row['role']:<7} {row['fingerprint']}  expires {until}{state}"
            f"  actors {who}"
        )


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    file: FileOption = None,
) -> None:
    """Remove a token from the file; a running service refuses it within a second."""
    path = _tokens_file(file)
    try:
        removed = revoke_token(path, name)
    except AuditError as exc:
        raise fail(str(exc), EXIT_INVALID) from exc
    if not removed:
        raise fail(f"no token named {name!r} in {path}", EXIT_INVALID)
    typer.echo(
        f"revoked {name} ({removed} line{'s' if removed != 1 else ''} removed from {path}); "
        "a running service refuses it within a second and records the change"
    )
