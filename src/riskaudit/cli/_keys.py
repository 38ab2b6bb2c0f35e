"""``riskaudit keygen --out DIR``"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from riskaudit.cli._common import fail
from riskaudit.errors import AuditConfigError
from riskaudit.integrity import generate


def keygen(
    out: Annotated[Path, typer.Option("--out", help="Directory for the two key files.")],
) -> None:
    """Write an Ed25519 signing key (mode 0600) and its public key (PEM)."""
    try:
        private, public, key_id = generate(out)
    except AuditConfigError as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:
        raise fail(f"cannot write keys: {exc}") from exc
    typer.echo(
        f"private key: {private} (mode 0600; mount it read-only as RISK_AUDIT_SIGNING_KEY_FILE)"
    )
    typer.echo(f"public key:  {public} (give it to verifiers: riskaudit verify --public-key)")
    typer.echo(f"key_id: {key_id}")
