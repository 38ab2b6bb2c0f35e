"""``riskaudit demo``"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated

import typer

from riskaudit.bus import RiskEventBus
from riskaudit.cli._common import EXIT_INVALID, fail, load_config, setup
from riskaudit.demo import RiskEngineSimulator
from riskaudit.errors import AuditError
from riskaudit.log import AuditLog


def demo(
    events: Annotated[int, typer.Option(help="About how many events to publish.")] = 10_000,
    rate: Annotated[
        float, typer.Option(help="Events per second; 0 = as fast as possible.")
    ] = 2_000,
    log: Annotated[
        Path | None, typer.Option(help="Log path (default: RISK_AUDIT_LOG_PATH).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed, for a repeatable run.")] = None,
) -> None:
    """Run a simulated intraday risk engine that publishes through the audited bus."""
    config = load_config()
    if log is not None:
        config = config.with_(log_path=log)
    setup(config)
    started = time.monotonic()
    try:
        with AuditLog(config) as audit_log:
            bus = RiskEventBus(audit_log)
            stats = RiskEngineSimulator(bus, seed=seed).run(events, rate)
            audit_log.flush(timeout=30)
            path = audit_log.path
            durable = audit_log.durable_seq
    except AuditError as exc:
        raise fail(str(exc), EXIT_INVALID) from exc
    elapsed = time.monotonic() - started
    typer.echo(
        f"published {stats.events} events in {elapsed:.1f}s: {stats.accepted} orders accepted, "
        f"{stats.rejected} rejected, {stats.breaches} limit breaches, "
        f"kill switch: {' then '.join(stats.kill_switch) or 'never'}"
    )
    typer.echo(f"log: {path} (durable up to seq {durable})")
    shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
    typer.echo(f"verify it with: riskaudit verify {shlex.quote(str(shown))}")
