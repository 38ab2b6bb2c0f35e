"""``riskaudit verify PATH...``"""

from __future__ import annotations

import sys
import time
from typing import Annotated

import orjson
import typer

from riskaudit.cli._common import EXIT_INVALID, EXIT_OK, fail
from riskaudit.errors import AuditFormatError
from riskaudit.integrity import verify_paths


def verify(
    paths: Annotated[list[str], typer.Argument(help="Log files, globs or directories.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check the hash chain and seq of a log; exit 0 valid, 1 invalid, 2 usage/I-O error."""
    started = time.perf_counter()
    try:
        report = verify_paths(paths)
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
        typer.echo(f"files: {len(report.files)}")
        typer.echo(f"records verified: {report.records} ({span})")
        if report.first_ts:
            typer.echo(f"time range: {report.first_ts} .. {report.last_ts}")
        for finding in report.findings:
            typer.echo(str(finding))
        verdict = "VALID" if report.valid else f"INVALID ({len(report.findings)} problems)"
        rate = report.records / elapsed if elapsed > 0 else 0.0
        typer.echo(f"{verdict} in {elapsed:.3f}s ({rate:,.0f} records/s)")
    raise typer.Exit(EXIT_OK if report.valid else EXIT_INVALID)
