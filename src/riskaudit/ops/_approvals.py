"""Four eyes over HTTP: a limit increase or a kill-switch reset waits for a second token.

A client's own ``metadata.approved_by`` is only a claim, so the service does not take
one. A change that needs approval (the actor rules' ``approval_required``) is written
as an ``approval_request`` record naming the requesting principal, and held here. It
takes effect when another principal — a different token name, acting as a different
actor — approves it through ``POST /v1/approvals/{event_id}``: an ``approval`` record
(the approver's principal) is written, then the event itself, with
``metadata.approved_by`` set to the approver and ``metadata.approval_seq`` naming the
approval record. A rejection writes only the ``approval`` record.

Pending requests live in memory for the approval window: after a restart or past the
window the request stays in the log as asked-but-never-approved, and is posted again.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from riskaudit.events import RiskEvent


@dataclass(frozen=True, slots=True)
class PendingApproval:
    """A change waiting for its second pair of eyes."""

    event: RiskEvent
    shown: dict[str, Any]  # the event as the approval_request records it (redacted)
    principal: dict[str, Any]  # the requester, as recorded
    request_seq: int
    digest: str  # of the event as posted: a re-post is compared by content
    requested_at: float  # monotonic

    def describe(self, window: float, now: float) -> dict[str, Any]:
        return {
            "event_id": self.event.event_id,
            "event": self.shown,
            "requested_by": self.principal,
            "request_seq": self.request_seq,
            "expires_in": max(0.0, round(self.requested_at + window - now, 3)),
        }


class Approvals:
    """``event_id`` → pending request, for ``window`` seconds."""

    def __init__(self, window: float, capacity: int = 10_000, per_principal: int = 100) -> None:
        self.window = window
        self.capacity = capacity
        self.per_principal = per_principal  # one writer cannot crowd out the others
        self._pending: OrderedDict[str, PendingApproval] = OrderedDict()
        self._lock = threading.Lock()

    def add(
        self,
        event: RiskEvent,
        shown: dict[str, Any],
        principal: dict[str, Any],
        request_seq: int,
        digest: str,
    ) -> None:
        with self._lock:
            self._pending[event.event_id] = PendingApproval(
                event, shown, principal, request_seq, digest, time.monotonic()
            )
            while len(self._pending) > self.capacity:
                self._pending.popitem(last=False)

    def take(self, event_id: str) -> PendingApproval | None:
        """The pending request, removed (an approval or rejection is final)."""
        with self._lock:
            self._expire()
            return self._pending.pop(event_id, None)

    def get(self, event_id: str) -> PendingApproval | None:
        with self._lock:
            self._expire()
            return self._pending.get(event_id)

    def count_for(self, name: str) -> int:
        """How many changes ``name`` has waiting."""
        with self._lock:
            self._expire()
            return sum(1 for p in self._pending.values() if p.principal.get("name") == name)

    def put_back(self, pending: PendingApproval) -> None:
        with self._lock:
            self._pending[pending.event.event_id] = pending

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            self._expire()
            now = time.monotonic()
            return [p.describe(self.window, now) for p in self._pending.values()]

    def _expire(self) -> None:
        limit = time.monotonic() - self.window
        while self._pending:
            first = next(iter(self._pending.values()))
            if first.requested_at >= limit:
                break
            self._pending.popitem(last=False)
