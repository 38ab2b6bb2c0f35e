"""``riskaudit backup run|status|verify|restore``"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Annotated

import orjson
import typer

from riskaudit.archive import Backup
from riskaudit.cli._common import EXIT_INVALID, EXIT_OK, fail, load_config, progress, setup
from riskaudit.errors import AuditError
from riskaudit.format import uncompressed_name
from riskaudit.ops import open_backup

backup_app = typer.Typer(help="Copies of sealed segments and checkpoints off the host.")

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _open(step: object = None) -> Backup:
    config = load_config()
    try:
        backup = open_backup(config, config.log_path, progress=step)
    except AuditError as exc:
        raise fail(str(exc), EXIT_INVALID) from exc
    if backup is None:
        raise fail("no backup target: set RISK_AUDIT_BACKUP_TARGET (a directory or s3://...)")
    return backup


def _when(ns: int | None) -> str:
    if not ns:
        return "never"
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="seconds")


@backup_app.command("run")
def backup_run(as_json: JsonOption = False) -> None:
    """Copy new sealed segments and checkpoints now, each verified by SHA-256."""
    setup(load_config())
    with progress("backup", quiet=as_json) as step:
        backup = _open(step)
        report = backup.run()
    if as_json:
        typer.echo(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        for name in report.copied:
            typer.echo(f"copied {name}")
        typer.echo(
            f"{len(report.copied)} segments copied, {report.skipped} already there, "
            f"{report.checkpoints} checkpoints shipped to {backup.target.description}"
        )
        for err in report.errors:
            typer.echo(f"ERROR: {err}", err=True)
    raise typer.Exit(EXIT_INVALID if report.errors else EXIT_OK)


@backup_app.command("status")
def backup_status(as_json: JsonOption = False) -> None:
    """What is archived, when the last run succeeded, and what waits to be copied."""
    backup = _open()
    try:
        archived = backup.state.archived
        pending = [c.name for c in backup.candidates() if uncompressed_name(c.name) not in archived]
    except AuditError as exc:
        raise fail(str(exc), EXIT_INVALID) from exc
    data = {
        "target": backup.target.description,
        "last_success": _when(backup.last_success_ns),
        "failures": backup.failures,
        "last_error": backup.state.last_error,
        "archived_segments": len(archived),
        "pending_segments": pending,
        "checkpoints_shipped_bytes": backup.state.checkpoints_offset,
        "legal_holds_on_archive": list(backup.state.legal_holds),
    }
    if as_json:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    for key, value in data.items():
        typer.echo(f"{key}: {value}")


@backup_app.command("verify")
def backup_verify(as_json: JsonOption = False) -> None:
    """Read every archived object back (SHA-256), restore the archive to a temporary
    directory and verify its chain with the archived checkpoints: a restore drill."""
    with progress("verify", quiet=as_json) as step:
        backup = _open(step)
        with tempfile.TemporaryDirectory(prefix="riskaudit-restore-") as tmp:
            try:
                problems, report = backup.verify(Path(tmp) / "restore")
            except AuditError as exc:
                raise fail(str(exc), EXIT_INVALID) from exc
    ok = not problems and report is not None and report.valid
    if as_json:
        out = {
            "valid": ok,
            "problems": problems,
            "verify": report.to_dict() if report is not None else None,
        }
        typer.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        for p in problems:
            typer.echo(f"INVALID: {p}")
        if report is None:
            typer.echo("no archived segments")
        else:
            for finding in report.findings:
                typer.echo(str(finding))
            for warning in report.warnings:
                typer.echo(warning)
            typer.echo(
                f"archive {backup.target.description}: {'VALID' if ok else 'INVALID'} "
                f"({report.records} records, seq {report.first_seq}-{report.last_seq}, "
                f"{report.checkpoints} checkpoints)"
            )
    raise typer.Exit(EXIT_OK if ok else EXIT_INVALID)


@backup_app.command("restore")
def backup_restore(
    out: Annotated[Path, typer.Option("--out", help="Directory to restore into.")],
    segment: Annotated[
        list[str] | None,
        typer.Option("--segment", help="Only segments whose name contains this (repeatable)."),
    ] = None,
) -> None:
    """Download archived segments and the checkpoints (each checked by SHA-256) into a
    directory; then `riskaudit verify DIR`."""
    with progress("restore", quiet=False) as step:
        backup = _open(step)
        try:
            files = backup.restore(out, only=segment)
        except AuditError as exc:
            raise fail(str(exc), EXIT_INVALID) from exc
    for f in files:
        typer.echo(f"restored {f}")
    if backup.left_out:
        typer.echo(
            f"the archive holds segments up to seq {backup.restored_through}; "
            f"{len(backup.left_out)} later checkpoints (of segments not restored, or of the "
            "active file, which is archived once sealed) were left out of the sidecar"
        )
    typer.echo(f"now: riskaudit verify {out} --public-key <the signing key's .pub.pem>")
