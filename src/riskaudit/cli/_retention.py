"""``riskaudit retention plan|apply`` and ``riskaudit hold add|remove|list``."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from riskaudit.archive import (
    Hold,
    add_hold,
    holds_record,
    load_holds,
    plan,
    remove_hold,
    replicated_through,
)
from riskaudit.cli._common import EXIT_INVALID, fail, load_config, progress, setup
from riskaudit.config import AuditConfig
from riskaudit.errors import AuditError, AuditLockedError
from riskaudit.format import holds_path, list_segments, parse_utc
from riskaudit.log import AuditLog
from riskaudit.ops import open_backup, run_retention

retention_app = typer.Typer(help="Hot, warm and cold tiers of sealed segments.")
hold_app = typer.Typer(help="Legal holds: nothing they cover is deleted.")

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _holds_file(config: AuditConfig) -> Path:
    return config.holds_file or holds_path(config.log_path)


def _table(rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    for col in ("segment", "tier", "action", "age_days", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["segment"], r.get("tier", ""), r["action"], str(r.get("age_days", "")), r["reason"]
        )
    Console().print(table)


@retention_app.command("plan")
def retention_plan(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Decide as if at this UTC time (default: now)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show what retention would do with each sealed segment (nothing is changed)."""
    config = load_config()
    try:
        now_ns = parse_utc(as_of) if as_of else time.time_ns()
    except ValueError as exc:
        raise fail(f"--as-of: {exc}") from exc
    try:
        backup = open_backup(config, config.log_path)
        archived = backup.archived() if backup is not None else None
        decisions = plan(
            list_segments(config.log_path),
            config.retention,
            load_holds(_holds_file(config)),
            now_ns=now_ns,
            archived_keys=archived,
            replicated_through=replicated_through(config.log_path),
        )
    except AuditError as exc:
        raise fail(str(exc), EXIT_INVALID) from exc
    rows = [d.to_dict() for d in decisions]
    if as_json:
        typer.echo(orjson.dumps({"decisions": rows}, option=orjson.OPT_INDENT_2).decode())
    elif rows:
        _table(rows, f"retention plan for {config.log_path}")
    else:
        typer.echo(f"no sealed segments next to {config.log_path}")


@retention_app.command("apply")
def retention_apply(as_json: JsonOption = False) -> None:
    """Compress, archive-then-remove and delete as planned; each action is written to
    the log. Needs the writer's lock: a running service applies retention itself."""
    config = load_config()
    setup(config)
    try:
        log = AuditLog(config)
    except AuditLockedError as exc:
        raise fail(
            f"{exc}. The running service applies retention every "
            "RISK_AUDIT_RETENTION_INTERVAL; stop it to apply retention by hand.",
            EXIT_INVALID,
        ) from exc
    except AuditError as exc:
        raise fail(str(exc), EXIT_INVALID) from exc
    try:
        with progress("retention", quiet=as_json) as step:
            backup = open_backup(config, log.path)
            result = run_retention(config, log, backup=backup, progress=step)
    except AuditError as exc:
        raise fail(str(exc), EXIT_INVALID) from exc
    finally:
        log.close()
    errors = [d for d in result.done if "error" in d]
    if as_json:
        typer.echo(orjson.dumps({"actions": result.done}, option=orjson.OPT_INDENT_2).decode())
    else:
        for d in result.done:
            status = f"FAILED: {d['error']}" if "error" in d else "done"
            typer.echo(f"{d['action']:<15} {d['segment']}  {status}")
        typer.echo(f"{len(result.done) - len(errors)} actions done, {len(errors)} failed")
    if errors:
        raise typer.Exit(EXIT_INVALID)


@hold_app.command("add")
def hold_add(
    name: Annotated[str, typer.Argument(help="A unique name, e.g. a case number.")],
    reason: Annotated[str, typer.Option(help="Why (who asked, which matter).")],
    since: Annotated[str | None, typer.Option(help="Covers records from this UTC time.")] = None,
    until: Annotated[str | None, typer.Option(help="... up to this UTC time.")] = None,
) -> None:
    """Place a legal hold: no copy of the records it covers is deleted while it stands."""
    config = load_config()
    path = _holds_file(config)
    try:
        before = load_holds(path)
        hold = add_hold(path, name, reason, since, until)
    except AuditError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"hold {hold.name} placed ({hold.since or 'beginning'} to {hold.until or 'open'})")
    _record(config, before, load_holds(path))
    if config.backup.target:
        typer.echo(_ARCHIVE_FOLLOWS)


@hold_app.command("remove")
def hold_remove(name: Annotated[str, typer.Argument(help="The hold's name.")]) -> None:
    """Release a legal hold."""
    config = load_config()
    path = _holds_file(config)
    try:
        before = load_holds(path)
        remove_hold(path, name)
    except AuditError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"hold {name} released")
    _record(config, before, load_holds(path))
    if config.backup.target:
        typer.echo(_ARCHIVE_FOLLOWS)


def _record(config: AuditConfig, before: list[Hold], after: list[Hold]) -> None:
    """Chain the change as a ``holds`` record: by the running service, which notices
    the file within a second, or here when no service holds the log."""
    if not config.log_path.exists():
        typer.echo(f"no log at {config.log_path} yet: its first service run records the holds")
        return
    try:
        log = AuditLog(config)
    except AuditLockedError as exc:
        typer.echo(f"the service holding the log (pid {exc.pid}) records the change")
        return
    except AuditError as exc:
        typer.echo(f"riskaudit: warning: the change is not in the log yet: {exc}", err=True)
        return
    with log:
        seq = log.append_control("holds", {"reason": "cli", **holds_record(before, after)})
        log.flush()
    typer.echo(f"recorded as holds seq {seq} in {log.path}")


#: The service (or `backup run`) owns the backup state file: the archive's Object Lock
#: legal holds follow there, not from this command.
_ARCHIVE_FOLLOWS = (
    "the archive's legal holds follow at the next backup run (`riskaudit backup run` now)"
)


@hold_app.command("list")
def hold_list(as_json: JsonOption = False) -> None:
    """The legal holds in force."""
    config = load_config()
    try:
        holds = load_holds(_holds_file(config))
    except AuditError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        typer.echo(orjson.dumps([asdict(h) for h in holds]).decode())
        return
    if not holds:
        typer.echo("no legal holds")
    for h in holds:
        typer.echo(
            f"{h.name}: {h.since or 'beginning'} to {h.until or 'open'} — {h.reason} "
            f"(placed {h.created} by {h.by})"
        )
