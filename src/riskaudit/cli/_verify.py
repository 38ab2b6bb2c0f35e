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
from riskaudit.integrity import VerifyReport, stream_directories, verify_paths
from riskaudit.integrity._keys import PublicKey, load_keyring, load_public_key


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
        streams = stream_directories(paths[0]) if len(paths) == 1 else None
        if streams is not None:
            _verify_streams(streams, keys, checkpoint_interval, as_json)
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


def _verify_streams(
    streams: list[Path], keys: list[PublicKey] | None, interval: float, as_json: bool
) -> None:
    """A central directory: each stream verified on its own, with its checkpoints."""
    reports: dict[str, VerifyReport] = {}
    with progress("verify", quiet=as_json) as step:
        for i, directory in enumerate(streams):
            if step is not None:
                step(i, len(streams), directory.name)
            reports[directory.name] = verify_paths(
                [directory], keys=keys, checkpoint_interval=interval
            )
    valid = all(r.valid for r in reports.values())
    if as_json:
        out = {"valid": valid, "streams": {k: r.to_dict() for k, r in reports.items()}}
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for name, r in reports.items():
            verdict = "VALID" if r.valid else f"INVALID ({len(r.findings)} problems)"
            typer.echo(
                f"stream {name}: {r.records} records (seq {r.first_seq}-{r.last_seq}), "
                f"{r.checkpoints} checkpoints: {verdict}"
            )
            for finding in r.findings:
                typer.echo(f"  {finding}")
        typer.echo(f"{len(reports)} streams: {'VALID' if valid else 'INVALID'}")
    raise typer.Exit(EXIT_OK if valid else EXIT_INVALID)
