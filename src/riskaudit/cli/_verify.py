"""``riskaudit verify PATH...``"""

from __future__ import annotations

import enum
import sys
import time
from pathlib import Path
from typing import Annotated

import orjson
import typer

from riskaudit.cli._common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_UNANCHORED,
    fail,
    plural,
    progress,
)
from riskaudit.errors import AuditFormatError, AuditNativeError
from riskaudit.integrity import (
    PublicKey,
    VerifyReport,
    VerifyStatus,
    load_keyring,
    load_public_key,
    stream_directories,
    verify_paths,
)


class Engine(enum.StrEnum):
    """verify --engine."""

    NATIVE = "native"
    PYTHON = "python"


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
    torn: Annotated[
        bool,
        typer.Option(
            "--torn", help="Read named .torn-* files too (bytes cut from torn tails: not records)."
        ),
    ] = False,
    engine: Annotated[
        Engine,
        typer.Option(
            help="Who scans the records: native (the Rust core, fast) or python (the "
            "readable reference in riskaudit/integrity/_verify.py; the same report)."
        ),
    ] = Engine.NATIVE,
) -> None:
    """Check the hash chain, seq and checkpoints of a log; exit 0 valid, 1 invalid, 2
    usage/I-O error, 3 unanchored (consistent, but the files start after seq 1 and no
    signed checkpoint that verifies proves their head: give --public-key)."""
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
                torn=torn,
                engine="python" if engine is Engine.PYTHON else "native",
            )
    except (AuditFormatError, AuditNativeError) as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:
        raise fail(f"cannot read: {exc}") from exc
    elapsed = time.perf_counter() - started
    if as_json:
        out = report.to_dict()
        out["seconds"] = round(elapsed, 6)
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for line in report_lines(report, elapsed):
            typer.echo(line)
    raise typer.Exit(exit_code(report))


def exit_code(report: VerifyReport) -> int:
    codes = {VerifyStatus.VALID: EXIT_OK, VerifyStatus.UNANCHORED: EXIT_UNANCHORED}
    return codes.get(report.status, EXIT_INVALID)


def verdict(report: VerifyReport) -> str:
    if report.status is VerifyStatus.INVALID:
        return f"INVALID ({plural(len(report.problem_lines()), 'problem')})"
    return report.status.upper()


def report_lines(report: VerifyReport, elapsed: float) -> list[str]:
    """The human report: what was read, what of it is proven, every warning and each
    problem once."""
    out = [
        f"files: {len(report.files)}, {plural(report.checkpoints, 'checkpoint')}",
        f"records read: {report.records:,}"
        + (f" (seq {report.first_seq}-{report.last_seq})" if report.records else ""),
    ]
    if report.first_ts:
        out.append(f"time range: {report.first_ts} .. {report.last_ts}")
    if report.requested_last_seq > (report.last_seq or 0):
        out.append(
            f"the checkpoints name records up to seq {report.requested_last_seq} "
            f"({report.requested_last_ts})"
        )
    if report.records:
        if report.verified_last_seq and report.verified_last_seq >= (report.first_seq or 1):
            proven = f"seq {report.first_seq}-{report.verified_last_seq}"
        else:
            proven = "nothing"
        out.append(f"verified without a problem: {proven}")
    for warning in report.warnings:
        out.append(warning if warning.startswith("WARNING") else f"WARNING: {warning}")
    if report.unanchored is not None:
        out.append(f"UNANCHORED: {report.unanchored}")
    out.extend(report.problem_lines())
    rate = report.records / elapsed if elapsed > 0 else 0.0
    out.append(f"{verdict(report)} in {elapsed:.3f}s ({rate:,.0f} records/s)")
    return out


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
            typer.echo(
                f"stream {name}: {plural(r.records, 'record')} (seq {r.first_seq}-{r.last_seq}), "
                f"{plural(r.checkpoints, 'checkpoint')}: {verdict(r)}"
            )
            if r.unanchored is not None:
                typer.echo(f"  UNANCHORED: {r.unanchored}")
            for line in r.problem_lines():
                typer.echo(f"  {line}")
        worst = max((exit_code(r) for r in reports.values()), default=EXIT_OK)
        overall = {EXIT_OK: "VALID", EXIT_UNANCHORED: "UNANCHORED"}.get(worst, "INVALID")
        typer.echo(f"{plural(len(reports), 'stream')}: {overall}")
    raise typer.Exit(max((exit_code(r) for r in reports.values()), default=EXIT_OK))
