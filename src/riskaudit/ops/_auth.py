"""Bearer tokens for the HTTP API, stored without the secret.

``RISK_AUDIT_TOKENS_FILE`` holds one token per line: ``<name> <role> <sha256 hex of the
token>`` (``#`` starts a comment). The file can be read by anyone who can read the
configuration without giving away a token; ``riskaudit token create`` prints a new
random token once, and the line to add. Roles: ``writer`` (post events), ``reader``
(query events and status), ``admin`` (everything).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from riskaudit.errors import AuditConfigError

ROLES = ("writer", "reader", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str

    def may(self, role: str) -> bool:
        return self.role in (role, "admin")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The tokens file, loaded once."""

    def __init__(self, entries: dict[str, Principal]) -> None:
        self._by_digest = entries

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        try:
            text = path.read_text()
        except OSError as exc:
            raise AuditConfigError("RISK_AUDIT_TOKENS_FILE", f"cannot read {path}: {exc}") from exc
        entries: dict[str, Principal] = {}
        for n, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 3 or parts[1] not in ROLES or len(parts[2]) != 64:
                raise AuditConfigError(
                    "RISK_AUDIT_TOKENS_FILE",
                    f"{path}:{n}: expected '<name> <{'|'.join(ROLES)}> <sha256 hex>'",
                )
            entries[parts[2].lower()] = Principal(parts[0], parts[1])
        return cls(entries)

    def identify(self, token: str) -> Principal | None:
        wanted = digest(token)
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, wanted):
                return principal
        return None


def create_token(name: str, role: str) -> tuple[str, str]:
    """A new random token and the tokens-file line that admits it."""
    if role not in ROLES:
        raise AuditConfigError("--role", f"{role!r} is not one of {ROLES}")
    if not name or any(c.isspace() for c in name):
        raise AuditConfigError("--name", "a name without spaces is required")
    token = "ra_" + secrets.token_urlsafe(32)
    return token, f"{name} {role} {digest(token)}"
