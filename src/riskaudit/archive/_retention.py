"""Retention: hot, warm and cold tiers that never delete evidence too early.

The tiers follow the original policy, measured from a segment's end (its sealing
checkpoint):

* **hot** (default 90 days): plain files on the local volume, for investigations;
* **warm** (until 365 days): compressed on the local volume;
* **cold** (until 5 years): only in the archive. The local copy is removed once the
  archived copy has been read back and its SHA-256 matched, never before.

One rule governs the last copy: the **compliance minimum** (default 5 years, MiFID II
article 16(6) and SEC 17a-4 take five; some event types may be configured longer). No
archived copy is deleted before its segment's minimum, and with no archive the local
copy *is* the last copy and stays until then. A **legal hold** that covers a segment
blocks every deletion of it. Each action taken is written into the log itself as a
``retention`` control record, so the trail shows what was removed, when and why.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from riskaudit.archive._holds import Hold
from riskaudit.errors import AuditBackupError
from riskaudit.format import (
    Segment,
    compress,
    content_sha256,
    event_types,
    forward_cursor_path,
    fsync_dir,
    parse_segment_name,
    segment_end_ns,
)
from riskaudit.settings import DAY, RetentionPolicy

if TYPE_CHECKING:
    from riskaudit.archive._backup import Backup
    from riskaudit.archive._targets import ObjectInfo

logger = logging.getLogger("riskaudit.retention")


#: Where a segment is in its life (docs/operations.md, "Retention").
Tier = Literal["hot", "warm", "cold", "expired"]
#: What retention does to a local segment (the archive's copies expire apart).
Action = Literal["keep", "compress", "remove-local", "delete"]


@dataclass(slots=True)
class Decision:
    """What retention does with one segment, and why."""

    segment: Segment
    tier: Tier
    action: Action
    reason: str
    age_days: float
    minimum_days: float
    held_by: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "segment": self.segment.path.name,
            "first_seq": self.segment.first_seq,
            "last_seq": self.segment.last_seq,
            "tier": self.tier,
            "action": self.action,
            "reason": self.reason,
            "age_days": round(self.age_days, 2),
            "minimum_days": round(self.minimum_days, 2),
            "held_by": self.held_by,
        }


def _days(seconds: float) -> str:
    return f"{seconds / DAY:g} days"


def plan(
    segments: list[Segment],
    policy: RetentionPolicy,
    holds: list[Hold],
    *,
    now_ns: int | None = None,
    archived_keys: Mapping[str, Any] | None = None,
    facts: dict[str, tuple[int, set[str]]] | None = None,
    replicated_through: int | None = None,
) -> list[Decision]:
    """Decide for every local segment (nothing is touched).

    ``replicated_through`` is the collector's watermark when the log is replicated
    (None: it is not): a segment with records beyond it is not removed locally before
    the minimum — the central copy does not hold it yet — nor deleted after it unless
    ``policy.wait_for_replication`` is off.

    ``archived_keys`` is what the configured archive holds (base segment name → object
    info), listed once by the caller; None when no archive is configured. ``facts``
    caches each segment's end and event types between runs (sealed segments never
    change, and a compressed one would otherwise be decompressed every run).
    """
    now = time.time_ns() if now_ns is None else now_ns
    out: list[Decision] = []
    seen: set[str] = set()
    for seg in segments:
        if seg.key in seen:  # a plain and a compressed copy: decide once (compressed)
            continue
        seen.add(seg.key)
        known = facts.get(seg.key) if facts is not None else None
        if known is None:
            known = (segment_end_ns(seg), event_types(seg.path, list(policy.minimum_by_type)))
            if facts is not None:
                facts[seg.key] = known
        end, types = known
        age = (now - end) / 1e9
        minimum = policy.minimum_for(types)
        held = [h.name for h in holds if h.covers(seg.start_ns, end)]
        d = Decision(seg, "hot", "keep", "", age / DAY, minimum / DAY, held)
        keep_until = max(policy.cold, minimum)
        archived = archived_keys is not None and seg.key in archived_keys
        if age <= policy.hot:
            d.reason = f"hot tier (younger than {_days(policy.hot)})"
        elif age <= policy.warm:
            d.tier = "warm"
            if seg.compression is None:
                d.action, d.reason = "compress", f"older than {_days(policy.hot)}: warm tier"
            else:
                d.reason = "warm tier, compressed"
        elif age <= keep_until or held:
            d.tier = "cold"
            if held:
                d.reason = f"legal hold {', '.join(held)}: nothing is deleted"
                if seg.compression is None:
                    d.action = "compress"
            elif archived_keys is None:
                d.action = "compress" if seg.compression is None else "keep"
                d.reason = (
                    "no archive configured: the local copy is the last copy and stays until "
                    f"the minimum ({_days(minimum)})"
                )
            elif archived:
                d.action = "remove-local"
                d.reason = f"older than {_days(policy.warm)}: cold tier lives in the archive"
            else:
                d.action = "compress" if seg.compression is None else "keep"
                d.reason = "not archived yet: kept until a verified archive copy exists"
        else:
            d.tier = "expired"
            d.action = "delete"
            d.reason = (
                f"older than {_days(keep_until)} (cold tier and compliance minimum "
                f"{_days(minimum)} both passed)"
            )
        if replicated_through is not None and seg.last_seq > replicated_through:
            _wait_for_collector(d, seg, replicated_through, policy.wait_for_replication)
        out.append(d)
    return out


def replicated_through(log_path: Path) -> int | None:
    """The collector's watermark as the forwarder last saved it in ``<log>.forward.json``
    (None when the log is not forwarded: no cursor file). A cursor that cannot be read
    counts as nothing confirmed: retention errs on keeping."""
    path = forward_cursor_path(log_path)
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        logger.warning("%s unreadable (%s): no segment counts as replicated", path, exc)
        return 0
    seq = raw.get("replicated_seq", 0) if isinstance(raw, dict) else 0
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


def _wait_for_collector(d: Decision, seg: Segment, through: int, wait: bool) -> None:
    """A segment the collector has not fsynced whole: its local copy is the only one
    on a disk that riskaudit knows of."""
    missing = f"the collector has fsynced only through seq {through}, not {seg.last_seq}"
    if d.action == "remove-local":
        d.action = "keep"
        d.reason = f"{missing}: the local copy stays until it has"
    elif d.action == "delete" and wait:
        d.action = "keep"
        d.reason = f"past the minimum, but {missing} (RISK_AUDIT_RETENTION_WAIT_FOR_REPLICATION)"
    elif d.action == "delete":
        d.reason += f"; deleted although {missing} (RISK_AUDIT_RETENTION_WAIT_FOR_REPLICATION=0)"


def archive_expiry(
    archived: Mapping[str, Any],
    local_keys: set[str],
    policy: RetentionPolicy,
    holds: list[Hold],
    *,
    now_ns: int | None = None,
) -> list[tuple[str, str]]:
    """Archived segments (no longer local) whose retain-until date has passed, older
    than the cold tier, and not held: ``(base name, reason)``.

    An object's retain-until is its segment's end plus the segment's own minimum, so
    ``retain_until - minimum`` is never earlier than the end: the test errs late."""
    now = time.time_ns() if now_ns is None else now_ns
    out = []
    for base in sorted(archived):
        info = archived[base]
        if base in local_keys or info.retain_until is None:
            continue
        until = int(info.retain_until.timestamp() * 1e9)
        end_bound = until - int(policy.minimum * 1e9)
        parsed = parse_segment_name(base)
        start = parsed[2] if parsed else 0
        if now <= until or now <= end_bound + int(policy.cold * 1e9):
            continue
        if any(h.covers(start, end_bound) for h in holds):
            continue
        out.append((base, f"archived copy past its retain-until date {info.retain_until}"))
    return out


Recorder = Callable[[dict[str, Any]], None]


def apply_plan(
    decisions: list[Decision],
    *,
    record: Recorder,
    compression: str = "gzip",
    archive: Backup | None = None,
    archived: Mapping[str, ObjectInfo] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Carry out the decisions; ``record`` writes each action into the log.

    A local copy is removed only after its archived copy (from ``archived``, listed
    from the target this run) is read back and its SHA-256 matches, and its records'
    SHA-256 is the local one's (re-checked now, not trusted from the state file).
    """
    done: list[dict[str, Any]] = []
    for i, d in enumerate(decisions):
        if progress is not None:
            progress(i, len(decisions), d.segment.path.name)
        seg = d.segment
        base = {
            "action": d.action,
            "segment": seg.path.name,
            "first_seq": seg.first_seq,
            "last_seq": seg.last_seq,
            "reason": d.reason,
        }
        if d.action == "keep":
            continue
        if d.held_by and d.action in ("remove-local", "delete"):
            continue  # plan never does this; a hold placed since is honoured anyway
        try:
            if d.action == "compress":
                new = compress(seg, compression)
                fields = {**base, "compressed_to": new.path.name}
            elif d.action == "remove-local":
                assert archive is not None and archived is not None
                local = content_sha256(seg.path)
                info = archived.get(seg.key)
                if info is None or info.content_sha256 != local:
                    raise AuditBackupError(f"{seg.key}: no archived copy with the same records")
                archive.verify_object(info)
                os.unlink(seg.path)
                fsync_dir(seg.path.parent)
                fields = {**base, "archive": info.key, "content_sha256": local}
            elif d.action == "delete":
                sha = content_sha256(seg.path)
                os.unlink(seg.path)
                fsync_dir(seg.path.parent)
                fields = {**base, "content_sha256": sha}
            else:
                continue
        except (OSError, AuditBackupError) as exc:
            logger.error("retention: %s of %s not done: %s", d.action, seg.path.name, exc)
            done.append({**base, "error": str(exc)})
            continue
        record(fields)
        done.append(fields)
        logger.info("retention: %s %s (%s)", d.action, seg.path.name, d.reason)
    return done


def expire_archive(
    archive: Backup,
    archived: Mapping[str, ObjectInfo],
    expiries: list[tuple[str, str]],
    *,
    record: Recorder,
) -> list[dict[str, Any]]:
    """Delete archived copies past their date (Object Lock refuses anything early)."""
    done: list[dict[str, Any]] = []
    for base, reason in expiries:
        info = archived.get(base)
        if info is None:
            continue
        fields = {"action": "expire-archive", "segment": base, "archive": info.key}
        fields["reason"] = reason
        try:
            archive.target.delete(info.key)
        except AuditBackupError as exc:
            done.append({**fields, "error": str(exc)})
            continue
        record(fields)
        done.append(fields)
    return done
