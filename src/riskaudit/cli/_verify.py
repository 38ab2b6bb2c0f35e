"""``riskaudit verify PATH...``"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import orjson
import typer

from riskaudit.cli._common import EXIT_INVALID, EXIT_OK, fail, progress
from riskaudit.errors import AuditFormatError
from riskaudit.integrity import verify_paths
from riskaudit.integrity._keys import load_keyring, load_public_key


def verify(
    paths: Annotated[list[str], typer.Argument(help="Log files, globs or directories.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="PEM public key that signs checkpoints.")
    ] = None,
    keyring: Annotated[
        Path | None,
        typer.Option("--keyring", help="JSON list of keys with their validity periods."),
    ] = None,
    checkpoints: Annotated[
        list[Path] | None,
        typer.Option("--checkpoints", help="Checkpoint sidecar(s) (default: <log>.checkpoints)."),
    ] = None,
    checkpoint_interval: Annotated[
        float, typer.Option(help="The writer's checkpoint interval, s (unsealed-tail warning).")
    ] = 60.0,
) -> None:
    """Check the hash chain, seq and checkpoints of a log; exit 0 valid, 1 invalid, 2
    usage/I-O error."""
    started = time.perf_counter()
    try:
        keys = None
        if public_key is not None:
            keys = [load_public_key(public_key)]
        if keyring is not None:
            keys = [*(keys or []), *load_keyring(keyring)]
        with progress("verify", quiet=as_json) as step:
            report = verify_paths(
                paths,
                keys=keys,
                checkpoints=checkpoints,
                checkpoint_interval=checkpoint_interval,
                progress=step,
            )
    except AuditFormatError as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:
        raise fail(f"cannot read: {exc}") from exc
    elapsed = time.perf_counter() - started
    if as_json:
        out = report.to_dict()
        out["seconds"] = round(elapsed, 6)
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        span = f"seq {report.first_seq}-{report.last_seq}" if report.records else "no records"
        typer.echo(f"files: {len(report.files)}, checkpoints: {report.checkpoints}")
        typer.echo(f"records verified: {report.records} ({span})")
        if report.first_ts:
            typer.echo(f"time range: {report.first_ts} .. {report.last_ts}")
        typer.echo(
            f"requested: seq {report.first_seq or 1}-{report.requested_last_seq} "
            f"({report.first_ts} .. {report.requested_last_ts}); verified: "
            + (
                f"seq {report.first_seq}-{report.verified_last_seq}"
                if report.verified_last_seq
                else "nothing"
            )
        )
        for warning in report.warnings:
            typer.echo(warning if warning.startswith("WARNING") else f"WARNING: {warning}")
        for finding in report.findings:
            typer.echo(str(finding))
        verdict = "VALID" if report.valid else f"INVALID ({len(report.findings)} problems)"
        rate = report.records / elapsed if elapsed > 0 else 0.0
        typer.echo(f"{verdict} in {elapsed:.3f}s ({rate:,.0f} records/s)")
    raise typer.Exit(EXIT_OK if report.valid else EXIT_INVALID)
