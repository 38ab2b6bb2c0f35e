"""``riskaudit signal reopen|rotate``: for logrotate's postrotate and for operators."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from riskaudit.cli._common import EXIT_INVALID, fail, load_config
from riskaudit.format import lock_path_for

signal_app = typer.Typer(help="Signal the running writer.", no_args_is_help=True)

_SIGNALS = {"reopen": signal.SIGUSR1, "rotate": signal.SIGUSR2}


def writer_pid(pid_file: Path | None, log_path: Path) -> int:
    """The writer's pid: from RISK_AUDIT_PID_FILE, else from the log's lock file (the
    holder writes its pid there)."""
    source = pid_file if pid_file is not None else lock_path_for(log_path.absolute())
    try:
        text = source.read_text().split()
    except OSError as exc:
        raise fail(f"cannot read the writer's pid from {source}: {exc}", EXIT_INVALID) from exc
    if not text or not text[0].isdigit():
        raise fail(f"{source} holds no pid (is the writer running?)", EXIT_INVALID)
    return int(text[0])


def _send(what: str, pid_file: Path | None) -> None:
    config = load_config()
    pid = writer_pid(pid_file or config.pid_file, config.log_path)
    try:
        os.kill(pid, _SIGNALS[what])
    except ProcessLookupError as exc:
        raise fail(f"no process {pid} (stale pid file?)", EXIT_INVALID) from exc
    except PermissionError as exc:
        raise fail(f"not allowed to signal process {pid}: {exc}", EXIT_INVALID) from exc
    typer.echo(f"sent {_SIGNALS[what].name} ({what}) to {pid}")


PidOption = Annotated[
    Path | None,
    typer.Option("--pid-file", help="Default: RISK_AUDIT_PID_FILE, else the log's lock file."),
]


@signal_app.command("reopen")
def reopen(pid_file: PidOption = None) -> None:
    """SIGUSR1: seal the rotated-away file and continue in a new one (logrotate create)."""
    _send("reopen", pid_file)


@signal_app.command("rotate")
def rotate(pid_file: PidOption = None) -> None:
    """SIGUSR2: rotate now (built-in rotation: seal, rename to a segment, start anew)."""
    _send("rotate", pid_file)
