"""``riskaudit export`` and ``riskaudit verify-export``"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from riskaudit.cli._common import EXIT_INVALID, EXIT_OK, fail, load_config, plural
from riskaudit.errors import AuditFormatError
from riskaudit.integrity import (
    PublicKey,
    Selection,
    export,
    load_keyring,
    load_public_key,
    parse_time,
    verify_export,
)


def export_command(
    out: Annotated[Path, typer.Option("--out", help="Directory for the export bundle.")],
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="Log files or directories (default: RISK_AUDIT_LOG_PATH's directory)."),
    ] = None,
    since: Annotated[str | None, typer.Option(help="From this UTC time (inclusive).")] = None,
    until: Annotated[str | None, typer.Option(help="Until this UTC time (exclusive).")] = None,
    event_type: Annotated[
        list[str] | None, typer.Option("--type", help="Event type(s) to include.")
    ] = None,
    source: Annotated[list[str] | None, typer.Option(help="Source(s) to include.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    force: Annotated[
        bool, typer.Option("--force", help="Replace a non-empty --out directory whole.")
    ] = False,
) -> None:
    """Export selected records with the chain and checkpoint that prove them."""
    args = paths or [str(load_config().log_path.parent)]
    try:
        selection = Selection(
            since_ns=parse_time(since) if since else None,
            until_ns=parse_time(until) if until else None,
            types=frozenset(t.upper() for t in event_type or []),
            sources=frozenset(source or []),
        )
        result = export(args, selection, out, fmt, force=force)
    except AuditFormatError as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:
        raise fail(f"cannot read or write: {exc}") from exc
    rec = result.manifest["records"]
    if rec["count"]:
        span = f"seq {rec['first_seq']}-{rec['last_seq']}"
        typer.echo(f"exported {plural(rec['count'], 'record')} ({span}) to {out}")
    else:
        typer.echo(f"exported 0 records to {out}: nothing matched the selection")
    for warning in result.warnings:
        typer.echo(f"WARNING: {warning}")
    typer.echo(f"check it with: riskaudit verify-export {out} --public-key KEY.pub.pem")


def verify_export_command(
    directory: Annotated[Path, typer.Argument(help="The export bundle's directory.")],
    public_key: Annotated[Path | None, typer.Option("--public-key")] = None,
    keyring: Annotated[Path | None, typer.Option("--keyring")] = None,
) -> None:
    """Check an export bundle: digests, chain, checkpoint signature, records."""
    keys: list[PublicKey] | None = None
    try:
        if public_key is not None:
            keys = [load_public_key(public_key)]
        if keyring is not None:
            keys = [*(keys or []), *load_keyring(keyring)]
    except (AuditFormatError, OSError) as exc:
        raise fail(str(exc)) from exc
    check = verify_export(directory, keys)
    for warning in check.warnings:
        typer.echo(f"WARNING: {warning}")
    for problem in check.problems:
        typer.echo(f"INVALID: {problem}")
    typer.echo(f"{'VALID' if check.valid else 'INVALID'}: {plural(check.records, 'record')}")
    raise typer.Exit(EXIT_OK if check.valid else EXIT_INVALID)
