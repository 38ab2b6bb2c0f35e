"""``riskaudit recover SOURCE... --into LOG``"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from riskaudit.cli._common import EXIT_INVALID, EXIT_OK, fail, load_config
from riskaudit.errors import AuditError
from riskaudit.recovery import recover as run_recover


def recover(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="Files holding AUDIT_EMERGENCY lines (plain, Docker json-file, "
            "Kubernetes CRI) or spool directories."
        ),
    ],
    into: Annotated[
        Path | None,
        typer.Option("--into", help="The log to recover into (default: RISK_AUDIT_LOG_PATH)."),
    ] = None,
) -> None:
    """Put emergency records back into the log; exit 0 when the log then verifies."""
    config = load_config()
    target = into if into is not None else config.log_path
    for src in sources:
        if not src.exists():
            raise fail(f"{src}: no such file or directory")
    try:
        report = run_recover(sources, target, config)
    except AuditError as exc:
        raise fail(str(exc), EXIT_INVALID) from exc
    except OSError as exc:
        raise fail(f"cannot read or write: {exc}") from exc
    typer.echo(
        f"found {report.found_sequenced} sequenced and {report.found_unsequenced} "
        f"unsequenced emergency records"
    )
    if not report.found_sequenced and not report.found_unsequenced:
        typer.echo(
            "WARNING: no AUDIT_EMERGENCY line in "
            + ", ".join(str(s) for s in sources)
            + ": is this the container's stdout log (or a spool directory)?"
        )
    for first, last in report.gaps:
        typer.echo(f"gap: seq {first}-{last}")
    for first, last, name in report.filled:
        typer.echo(f"filled: seq {first}-{last} -> {name}")
    for first, last in report.missing:
        typer.echo(f"STILL MISSING: seq {first}-{last} (no emergency line found for them)")
    typer.echo(
        f"appended {report.appended} recovered records; {report.already_present} "
        "were already in the log"
    )
    for conflict in report.conflicts:
        typer.echo(f"conflict: {conflict}")
    verdict = report.verify
    if verdict is None:
        raise fail(f"{target}: no log there to verify", EXIT_INVALID)
    for finding in verdict.findings:
        typer.echo(str(finding))
    typer.echo(
        f"verify: {'VALID' if verdict.valid else 'INVALID'} "
        f"({verdict.records} records, seq {verdict.first_seq}-{verdict.last_seq})"
    )
    raise typer.Exit(EXIT_OK if verdict.valid else EXIT_INVALID)
