"""Redaction in the style of Vault's audit devices, for any value type.

Fields named in ``RISK_AUDIT_REDACT_FIELDS`` (dotted paths under ``data`` or
``metadata``, such as ``data.api_key`` or ``metadata.client.account``) are written as
``hmac-sha256:<hex>``, the HMAC-SHA256 under the key in ``RISK_AUDIT_HMAC_KEY_FILE`` of
the value's canonical bytes: a string's UTF-8 bytes, anything else its compact JSON
with sorted keys. Vault hashes only strings; a position, a price or a nested object
is as sensitive. An investigator who knows a value can find it with
``riskaudit hash-value VALUE`` (``--value-json`` for non-strings) — the key never leaves the
writer's secret mount. The producer's event is never modified: redaction works on
copies, along the redacted paths only.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import orjson

from riskaudit.errors import AuditConfigError

PREFIX = "hmac-sha256:"


def canonical(value: Any) -> bytes:
    """The bytes an HMAC is taken over."""
    if isinstance(value, str):
        return value.encode("utf-8")
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def load_key(path: Path) -> bytes:
    """The HMAC key: the file's bytes, exactly (``head -c 32 /dev/urandom > key``)."""
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise AuditConfigError("RISK_AUDIT_HMAC_KEY_FILE", f"cannot read {path}: {exc}") from exc
    if len(key) < 16:
        raise AuditConfigError("RISK_AUDIT_HMAC_KEY_FILE", f"{path}: a key needs at least 16 bytes")
    return key


def hash_value(key: bytes, value: Any) -> str:
    return PREFIX + hmac.new(key, canonical(value), hashlib.sha256).hexdigest()


class Redactor:
    """Applies the configured paths to an event's ``data`` and ``metadata``."""

    def __init__(self, key: bytes, fields: tuple[str, ...]) -> None:
        self.key = key
        self.paths: dict[str, list[list[str]]] = {"data": [], "metadata": []}
        for f in fields:
            top, _, rest = f.partition(".")
            if top not in self.paths or not rest:
                raise AuditConfigError(
                    "RISK_AUDIT_REDACT_FIELDS", f"{f!r}: paths start with data. or metadata."
                )
            self.paths[top].append(rest.split("."))

    def apply(self, top: str, obj: dict[str, Any]) -> dict[str, Any]:
        """``obj`` with the paths under ``top`` redacted (a copy if anything changed)."""
        out = obj
        for path in self.paths[top]:
            out = self._redact(out, path, out is obj)
        return out

    def _redact(self, obj: dict[str, Any], path: list[str], copy: bool) -> dict[str, Any]:
        head = path[0]
        if not isinstance(obj, dict) or head not in obj:
            return obj
        new = dict(obj) if copy else obj
        if len(path) == 1:
            new[head] = hash_value(self.key, obj[head])
        else:
            new[head] = self._redact(obj[head], path[1:], True)
        return new
