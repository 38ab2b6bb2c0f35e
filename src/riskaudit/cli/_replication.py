"""``riskaudit forward``, ``riskaudit collect`` and ``riskaudit nats init``."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from prometheus_client import CollectorRegistry, start_http_server

from riskaudit.cli._common import EXIT_INVALID, fail, load_config, setup
from riskaudit.errors import AuditConfigError, AuditError
from riskaudit.ops import ForwardCollector, register_process_metrics
from riskaudit.replication import (
    SYNC_ALWAYS_FIX,
    Collector,
    Forwarder,
    StreamState,
    check_sync_always,
    connect_jetstream,
    ensure_stream,
    jetstream_publisher,
    open_board,
    wanted_limits,
)
from riskaudit.settings import DAY

T = TypeVar("T")

nats_app = typer.Typer(help="The NATS JetStream stream riskaudit replicates into.")


def _run(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; storage and connection errors exit 1 with a message."""
    try:
        return asyncio.run(main)
    except (AuditError, OSError) as exc:
        raise fail(str(exc), EXIT_INVALID) from exc


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def forward(
    once: Annotated[bool, typer.Option(help="Forward what is there now, then exit.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve audit_forward_* metrics on this port (127.0.0.1)."),
    ] = None,
) -> None:
    """Publish the local log (fsynced records only, across rotations) and its checkpoints
    to NATS JetStream; resumes from <log>.forward.json. Stops on SIGTERM."""
    config = load_config()
    setup(config)

    async def main() -> None:
        nc, js = await connect_jetstream(config.replication, bounded=once)
        forwarder = Forwarder(
            config.log_path.absolute(),
            config.replication,
            jetstream_publisher(js),
            sidecar=config.checkpoint_path,
            open_board=lambda: open_board(js, config.replication),
        )
        if metrics_port is not None:
            registry = CollectorRegistry()
            registry.register(ForwardCollector(forwarder))
            register_process_metrics(registry)
            start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
        stop = asyncio.Event()
        _stop_on_signals(stop)
        try:
            if once:
                await forwarder.catch_up()
            else:
                await forwarder.run(stop)
        finally:
            await nc.close()  # every publish was acknowledged before the cursor moved
        s = forwarder.stats
        typer.echo(
            f"forwarded {s.published_records} records in {s.published_messages} messages "
            f"and {s.checkpoints} checkpoints; up to seq "
            f"{forwarder.cursor.seq if forwarder.cursor else 0} (acknowledged by NATS; "
            f"fsynced centrally through {forwarder.replicated_seq}); {s.errors} errors"
        )

    _run(main())


def collect(
    out: Annotated[
        Path, typer.Option("--out", help="Central directory (one sub-directory per stream).")
    ],
    partition: Annotated[
        str, typer.Option(help="I/N: this collector takes the streams that hash to I of N.")
    ] = "0/1",
) -> None:
    """Consume the JetStream stream into central logs, byte for byte; acknowledge only
    after fsync. Stops on SIGTERM."""
    config = load_config()
    setup(config)
    try:
        index, parts = (int(x) for x in partition.split("/"))
        if not 0 <= index < parts:
            raise ValueError
    except ValueError as exc:
        raise fail(f"--partition {partition!r}: use I/N with 0 <= I < N") from exc

    async def main() -> None:
        nc, js = await connect_jetstream(config.replication)
        collector = Collector(
            out,
            config.replication,
            js,
            partition=(index, parts),
            board_opener=lambda: open_board(js, config.replication, create=True),
        )
        stop = asyncio.Event()
        _stop_on_signals(stop)
        try:
            await collector.run(stop)
        finally:
            collector.close()
            await nc.close()  # every message was acknowledged already: nothing to drain
        st = collector.stats
        typer.echo(
            f"collected {st.records} records ({st.duplicates} duplicates dropped, "
            f"{len(st.gaps)} gaps) and {st.checkpoints} checkpoints into {out}"
        )

    _run(main())


@nats_app.command("init")
def nats_init(
    replicas: Annotated[
        int | None, typer.Option(help="Default: RISK_AUDIT_NATS_REPLICAS (3).")
    ] = None,
    allow_weaker: Annotated[
        bool,
        typer.Option(
            help="Accept an existing stream weaker than recommended, or a NATS server "
            "that does not fsync every write."
        ),
    ] = False,
) -> None:
    """Create the JetStream stream (file storage, replicas, max_age >= the retention
    minimum, deny delete/purge, duplicate window), or check an existing one. With
    RISK_AUDIT_NATS_MONITOR_URL, first check that the server fsyncs every write
    (sync_interval: always) and refuse it if not."""
    config = load_config()
    settings = config.replication
    if replicas is not None:
        from dataclasses import replace  # noqa: PLC0415

        settings = replace(settings, replicas=replicas)
    try:  # before connecting: a bad setting is the operator's to fix, not the server's
        max_age, window = wanted_limits(settings, config.retention)
    except AuditConfigError as exc:
        raise fail(f"bad setting {exc}") from exc
    synced, detail = check_sync_always(settings.monitor_url, settings.connect_timeout)
    if synced is False and not allow_weaker:
        raise fail(
            f"{detail}; {SYNC_ALWAYS_FIX} (nats-server 2.10 or later) and restart it, or "
            f"--allow-weaker to accept it (checked through RISK_AUDIT_NATS_MONITOR_URL="
            f"{settings.monitor_url})",
            EXIT_INVALID,
        )
    typer.echo(detail if synced else f"WARNING: {detail}")

    async def main() -> tuple[StreamState, list[str]]:
        nc, js = await connect_jetstream(settings, bounded=True)
        try:
            return await ensure_stream(
                js, settings, retention=config.retention, allow_weaker=allow_weaker
            )
        finally:
            await nc.drain()

    try:
        state, problems = _run(main())
    except ValueError as exc:
        raise fail(f"{exc} (--allow-weaker to accept it)", EXIT_INVALID) from exc
    for p in problems:
        typer.echo(f"WARNING: {p}")
    age = f"{max_age / DAY:g} days" if max_age else "no limit"
    typer.echo(
        f"stream {settings.stream}: {state} (wanted: file storage, {settings.replicas} "
        f"replicas, max_age {age}, duplicate window {window:g}s, deny delete and purge)"
    )
