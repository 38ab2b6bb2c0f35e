"""What the service shows beside the log's own status (``LogStatus``): typed, frozen
views that the JSON endpoints serialise and the status page reads by attribute."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReplicationStatus:
    """The forwarder's view, end to end: ``replicated_seq`` is the collector's watermark
    — fsynced centrally — and the only thing that counts as replicated; the broker's
    acknowledgement is shown beside it."""

    replicated_seq: int
    broker_acked_seq: int
    lag_records: int
    lag_seconds: float
    repairs: int
    errors: int
    last_error: str | None
