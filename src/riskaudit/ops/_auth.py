"""Bearer tokens for the HTTP API, stored without the secret, revocable while serving.

``RISK_AUDIT_TOKENS_FILE`` holds one token per line (``#`` starts a comment)::

    <name> <role> <sha256 hex of the token> [expires=<RFC 3339 UTC>] [actors=<a>,<b>]

The file can be read by anyone who can read the configuration without giving away a
token; ``riskaudit token create`` prints a new random token once, and the line to add.
Roles: ``writer`` (post events), ``reader`` (query events and status), ``admin``
(everything). ``expires`` ends a token at that instant; ``actors`` binds it to the
people it may act as (``metadata.actor`` of the events it posts, and the approver it
approves as): without it the token may name any actor.

Revocation must take effect while the service runs, so the store re-reads the file when
it changes (checked at most every ``RECHECK`` seconds, on use and from the service's
watcher) and on SIGHUP. A file that stops parsing closes the API (every token is
refused, the error is logged) rather than keep a token its operator meant to remove.
Every load reports what changed, so the service can chain a ``tokens`` record.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from riskaudit.config import parse_duration
from riskaudit.errors import AuditConfigError
from riskaudit.format import atomic_write, file_signature, format_ts, parse_utc

logger = logging.getLogger("riskaudit.ops")

ROLES = ("writer", "reader", "admin")
#: Seconds between checks of the file for a change (so a revocation lands within one).
RECHECK = 0.5
_SETTING = "RISK_AUDIT_TOKENS_FILE"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: the token's name and role, never its secret."""

    name: str
    role: str
    actors: frozenset[str] | None = None  # None: may name any actor
    expires_ns: int | None = None
    fingerprint: str = ""  # first 12 hex digits of the token's SHA-256: tells tokens apart

    def may(self, role: str) -> bool:
        return self.role in (role, "admin")

    def may_act_as(self, actor: str) -> bool:
        return self.actors is None or actor in self.actors

    def expired(self, now_ns: int) -> bool:
        return self.expires_ns is not None and now_ns >= self.expires_ns

    def describe(self) -> dict[str, Any]:
        """The token as a ``tokens`` record and ``token list`` show it."""
        return {
            "name": self.name,
            "role": self.role,
            "fingerprint": self.fingerprint,
            "expires": format_ts(self.expires_ns) if self.expires_ns is not None else None,
            "actors": sorted(self.actors) if self.actors is not None else None,
        }


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_line(line: str, where: str) -> tuple[str, Principal]:
    """(digest, principal) of one non-empty tokens-file line."""
    parts = line.split()
    if len(parts) < 3 or parts[1] not in ROLES or len(parts[2]) != 64:
        raise AuditConfigError(
            _SETTING,
            f"{where}: expected '<name> <{'|'.join(ROLES)}> <sha256 hex> "
            "[expires=<RFC 3339>] [actors=<a>,<b>]'",
        )
    hexdigest = parts[2].lower()
    try:
        int(hexdigest, 16)
    except ValueError:
        raise AuditConfigError(_SETTING, f"{where}: {parts[2]!r} is not hex") from None
    expires: int | None = None
    actors: frozenset[str] | None = None
    for option in parts[3:]:
        key, sep, value = option.partition("=")
        if not sep or not value:
            raise AuditConfigError(_SETTING, f"{where}: {option!r} is not key=value")
        if key == "expires" and expires is None:
            try:
                expires = parse_utc(value)
            except ValueError as exc:
                raise AuditConfigError(_SETTING, f"{where}: expires: {exc}") from None
        elif key == "actors" and actors is None:
            names = frozenset(a for a in value.split(",") if a)
            if not names:
                raise AuditConfigError(_SETTING, f"{where}: actors= names nobody")
            actors = names
        else:
            raise AuditConfigError(
                _SETTING, f"{where}: unknown or repeated option {key!r} (expires, actors)"
            )
    return hexdigest, Principal(parts[0], parts[1], actors, expires, hexdigest[:12])


def parse_tokens(text: str, path: Path) -> dict[str, Principal]:
    """Digest → principal for a whole file; the first bad line is an error naming it."""
    entries: dict[str, Principal] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        hexdigest, principal = parse_line(line, f"{path}:{n}")
        if hexdigest in entries:
            raise AuditConfigError(_SETTING, f"{path}:{n}: the same token is listed twice")
        entries[hexdigest] = principal
    return entries


@dataclass(frozen=True, slots=True)
class TokenChange:
    """What one load of the file changed: names added, removed or modified."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    modified: tuple[str, ...]
    tokens: tuple[Principal, ...]  # every token now in force (expired ones included)
    error: str | None = None  # the file stopped parsing: nobody is admitted

    def record(self, reason: str) -> dict[str, Any]:
        """The fields of the ``tokens`` control record (no secret, no full digest)."""
        return {
            "reason": reason,
            "added": list(self.added),
            "removed": list(self.removed),
            "modified": list(self.modified),
            "tokens": [p.describe() for p in self.tokens],
            "error": self.error,
        }


def _diff(
    old: dict[str, Principal], new: dict[str, Principal], error: str | None = None
) -> TokenChange:
    before = {p.fingerprint: p for p in old.values()}
    after = {p.fingerprint: p for p in new.values()}
    return TokenChange(
        added=tuple(sorted(after[f].name for f in after.keys() - before.keys())),
        removed=tuple(sorted(before[f].name for f in before.keys() - after.keys())),
        modified=tuple(
            sorted(after[f].name for f in after.keys() & before.keys() if after[f] != before[f])
        ),
        tokens=tuple(sorted(new.values(), key=lambda p: (p.name, p.fingerprint))),
        error=error,
    )


class TokenStore:
    """The tokens file, re-read when it changes; ``identify`` refuses expired tokens.

    ``clock`` (nanoseconds) is the seam tests use to move past an expiry.
    """

    def __init__(
        self,
        entries: dict[str, Principal],
        path: Path | None = None,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._by_digest = entries
        self.path = path
        self.clock = clock
        self.on_change: Callable[[TokenChange, str], None] | None = None
        self.error: str | None = None
        self._signature = file_signature(path) if path is not None else None
        self._checked = time.monotonic()
        self._forced = False
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, *, clock: Callable[[], int] = time.time_ns) -> TokenStore:
        """Read the file; a bad line stops start-up with an error naming it."""
        return cls(parse_tokens(_read(path), path), path, clock=clock)

    def tokens(self) -> tuple[Principal, ...]:
        return _diff({}, self._by_digest).tokens

    def snapshot(self) -> TokenChange:
        """Everything in force, as a change from nothing (the record written at start)."""
        return _diff({}, self._by_digest, self.error)

    def reload(self, reason: str = "signal") -> TokenChange | None:
        """Re-read the file now; the change, or None when nothing changed."""
        if self.path is None:
            return None
        with self._lock:
            self._checked = time.monotonic()
            self._signature = file_signature(self.path)
            old = self._by_digest
            try:
                new = parse_tokens(_read(self.path), self.path)
            except AuditConfigError as exc:
                if self.error == str(exc):
                    return None
                logger.error("tokens file no longer valid, every token refused: %s", exc)
                self.error = str(exc)
                self._by_digest = {}
                change = _diff(old, {}, self.error)
            else:
                was_error = self.error
                self.error = None
                self._by_digest = new
                change = _diff(old, new)
                if not (change.added or change.removed or change.modified or was_error):
                    return None
                logger.warning(
                    "tokens file re-read (%s): added %s, removed %s, modified %s",
                    reason,
                    list(change.added),
                    list(change.removed),
                    list(change.modified),
                )
            if self.on_change is not None:  # under the lock: records chain in load order
                self.on_change(change, reason)
        return change

    def request_reload(self) -> None:
        """Re-read at the next look, changed or not (SIGHUP: safe in a signal handler)."""
        self._forced = True

    def poll(self) -> TokenChange | None:
        """Reload if the file changed since the last look (cheap: one ``stat``)."""
        if self._forced:
            self._forced = False
            return self.reload("SIGHUP")
        if self.path is None or file_signature(self.path) == self._signature:
            with self._lock:
                self._checked = time.monotonic()
            return None
        return self.reload("changed")

    def identify(self, token: str) -> Principal | None:
        if self.path is not None and time.monotonic() - self._checked >= RECHECK:
            self.poll()
        wanted = digest(token)
        found = None
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, wanted):
                found = principal
        if found is None or found.expired(self.clock()):
            return None
        return found


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditConfigError(_SETTING, f"cannot read {path}: {exc}") from exc


def create_token(
    name: str,
    role: str,
    *,
    expires_in: str | None = None,
    actors: Iterable[str] = (),
    now_ns: int | None = None,
) -> tuple[str, str]:
    """A new random token and the tokens-file line that admits it."""
    if role not in ROLES:
        raise AuditConfigError("--role", f"{role!r} is not one of {ROLES}")
    if not name or any(c.isspace() or c == "#" for c in name):
        raise AuditConfigError("--name", "a name without spaces or '#' is required")
    options = []
    if expires_in is not None:
        seconds = parse_duration("--expires", expires_in)
        if seconds <= 0:
            raise AuditConfigError("--expires", "must be positive")
        now = time.time_ns() if now_ns is None else now_ns
        until = time.gmtime((now + int(seconds * 1e9)) // 10**9)
        options.append(f"expires={time.strftime('%Y-%m-%dT%H:%M:%SZ', until)}")
    names = sorted({a.strip() for a in actors if a.strip()})
    if any(c.isspace() or c in ",#" for a in names for c in a):
        raise AuditConfigError("--actors", "actor names have no spaces, commas or '#'")
    if names:
        options.append("actors=" + ",".join(names))
    token = "ra_" + secrets.token_urlsafe(32)
    return token, " ".join([name, role, digest(token), *options])


def revoke_token(path: Path, name: str) -> int:
    """Remove every line of the token(s) named ``name``; how many went.

    The file is replaced atomically (temporary file, fsync, rename, fsync of the
    directory), so a reader never sees half a file.
    """
    lines = _read(path).splitlines(keepends=True)
    keep = []
    removed = 0
    for raw in lines:
        body = raw.split("#", 1)[0].split()
        if body and body[0] == name:
            removed += 1
            continue
        keep.append(raw)
    if removed:
        st = os.stat(path)
        # The new file keeps the old one's mode and owner from its first byte: run by
        # root on a file the service owns (0640), it must stay readable to the service.
        atomic_write(path, "".join(keep).encode(), mode=st.st_mode & 0o777, owner=st)
    return removed
