"""What every command shares: logging set-up, SIGTERM as a clean exit, error exits."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType

import typer

from riskaudit.config import AuditConfig
from riskaudit.errors import AuditConfigError

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_UNANCHORED = 0, 1, 2, 3


def plural(n: int, word: str) -> str:
    """``1 record``, ``2 records``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def setup(config: AuditConfig) -> None:
    """Log to stderr at the configured level; make SIGTERM drain the log like Ctrl-C."""
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds `with` blocks; atexit drains the rest

    signal.signal(signal.SIGTERM, on_term)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print an error to stderr and return the Exit to raise."""
    typer.echo(f"riskaudit: {message}", err=True)
    return typer.Exit(code)


@contextlib.contextmanager
def progress(label: str, *, quiet: bool) -> Iterator[Callable[[int, int, str], None] | None]:
    """A rich progress bar on a terminal; nothing in pipes or with ``--json``."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console  # noqa: PLC0415 (only on a terminal)
    from rich.progress import Progress  # noqa: PLC0415

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def step(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=f"{label} {name}")

        yield step


def load_config() -> AuditConfig:
    """The config from the environment, or a usage error naming the bad setting."""
    try:
        return AuditConfig.from_env()
    except AuditConfigError as exc:
        raise fail(f"bad setting {exc}") from exc
