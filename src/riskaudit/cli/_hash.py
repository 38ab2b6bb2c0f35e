"""``riskaudit hash-value VALUE``"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from riskaudit.cli._common import fail, load_config
from riskaudit.errors import AuditConfigError
from riskaudit.redact import hash_value, load_key


def hash_value_command(
    value: Annotated[str, typer.Argument(help="The value to look for in redacted fields.")],
    value_json: Annotated[
        bool,
        typer.Option("--value-json", help="VALUE is JSON (a number, object, ...), not a string."),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable output, as for every command.")
    ] = False,
    key_file: Annotated[
        Path | None, typer.Option(help="HMAC key (default: RISK_AUDIT_HMAC_KEY_FILE).")
    ] = None,
) -> None:
    """Print the hmac-sha256:<hex> that redaction writes for VALUE, to search the log."""
    path = key_file or load_config().hmac_key_file
    if path is None:
        raise fail("give --key-file or set RISK_AUDIT_HMAC_KEY_FILE")
    parsed: Any = value
    if value_json:
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise fail(f"--value-json: {value!r} is not JSON: {exc}") from exc
    try:
        digest = hash_value(load_key(path), parsed)
    except AuditConfigError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        typer.echo(orjson.dumps({"value": parsed, "hash": digest}).decode())
    else:
        typer.echo(digest)
