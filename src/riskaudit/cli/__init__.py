"""The ``riskaudit`` command line: thin typer shells over the library.

Exit codes, for every command: 0 success (a valid log), 1 an invalid log or a failed
operation, 2 a usage or I/O error; ``verify`` adds 3, unanchored.
"""

from __future__ import annotations

from typing import Annotated

import typer

from riskaudit._version import __version__
from riskaudit.cli import (
    _backup,
    _check,
    _demo,
    _export,
    _hash,
    _keys,
    _recover,
    _replication,
    _retention,
    _serve,
    _signal,
    _tail,
    _verify,
)

app = typer.Typer(
    name="riskaudit",
    help="Hash-chained audit trail of a trading risk engine.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"riskaudit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Hash-chained audit trail of a trading risk engine."""


app.command("verify")(_verify.verify)
app.command("tail")(_tail.tail)
app.command("demo")(_demo.demo)
app.command("recover")(_recover.recover)
app.command("keygen")(_keys.keygen)
app.command("hash-value")(_hash.hash_value_command)
app.command("export")(_export.export_command)
app.command("verify-export")(_export.verify_export_command)
app.command("serve")(_serve.serve)
app.command("check")(_check.check)
app.command("forward")(_replication.forward)
app.command("collect")(_replication.collect)
app.add_typer(_replication.nats_app, name="nats")
app.add_typer(_serve.token_app, name="token")
app.add_typer(_signal.signal_app, name="signal")
app.add_typer(_retention.retention_app, name="retention")
app.add_typer(_retention.hold_app, name="hold")
app.add_typer(_backup.backup_app, name="backup")


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
