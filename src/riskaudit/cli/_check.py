"""``riskaudit check``: the pre-deployment checklist."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import orjson
import typer

from riskaudit.cli._common import EXIT_INVALID, EXIT_OK, load_config
from riskaudit.ops import FAIL, SYMBOL, run_checks


def check(
    metrics_url: Annotated[
        str | None,
        typer.Option("--metrics-url", help="Also check this /metrics URL answers."),
    ] = None,
    logrotate: Annotated[
        Path | None,
        typer.Option(
            "--logrotate",
            help="logrotate file to check (default: RISK_AUDIT_LOGROTATE_FILE, else "
            "/etc/logrotate.d/riskaudit if present).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check this environment before deploying: volume, permissions, space, spool, key,
    backup, metrics, rotation, clock, container logs, and (when RISK_AUDIT_NATS_URL or
    RISK_AUDIT_NATS_MONITOR_URL is set) that NATS fsyncs every write. Exit 1 on any ✗."""
    config = load_config()
    nats = config.replication.monitor_url is not None or bool(
        os.environ.get("RISK_AUDIT_NATS_URL", "").strip()
    )
    checks = run_checks(
        config,
        metrics_url=metrics_url,
        logrotate_file=logrotate or config.logrotate_file,
        nats=nats,
    )
    failed = any(c.status == FAIL for c in checks)
    if as_json:
        out = {"ok": not failed, "checks": [c.to_dict() for c in checks]}
        typer.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(f"riskaudit check for {config.log_path}")
        for c in checks:
            typer.echo(f"{SYMBOL[c.status]} {c.name}: {c.detail}")
            if c.fix:
                typer.echo(f"    fix: {c.fix}")
        typer.echo("FAILED: fix every ✗ before deploying" if failed else "ready to deploy")
    raise typer.Exit(EXIT_INVALID if failed else EXIT_OK)
