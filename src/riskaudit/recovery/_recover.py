"""``riskaudit recover``: put emergency records back into the log, verifiably.

Two kinds of records come back:

* **Sequenced** records (complete chained lines printed while neither the primary nor
  the spool could take them) fill the hole that a ``gap`` record names. They are
  written verbatim, as the chain made them, into their own segment
  ``<log>.recovered-<first>-<last>.jsonl``; ``verify`` splices that segment into the
  walk and checks the links on both sides. Only a run that links to the record before
  the hole is written, so a forged line cannot be slipped in.
* **Unsequenced** events (the queue was full; they never had a ``seq``), and sequenced
  lines that fill no hole, are appended as new records of kind ``recovered`` that keep
  the original event (or line) and say where it was found.

Running it twice adds nothing: a hole already filled is skipped, and each appended
record carries the SHA-256 of its payload, which is checked first.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from riskaudit.clock import ClockReader
from riskaudit.config import AuditConfig
from riskaudit.format import (
    ZERO_HASH,
    atomic_write,
    line_hash,
    parse_segment,
    recovered_glob,
    recovered_path,
    recovered_range,
    split_head,
)
from riskaudit.integrity import VerifyReport, expand, line_chunks, verify_paths
from riskaudit.log import AuditLog
from riskaudit.recovery._find import Found, find_all


@dataclass(slots=True)
class RecoverReport:
    """What ``recover`` found and did."""

    found_sequenced: int = 0
    found_unsequenced: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)
    filled: list[tuple[int, int, str]] = field(default_factory=list)
    missing: list[tuple[int, int]] = field(default_factory=list)
    appended: int = 0
    already_present: int = 0
    conflicts: list[str] = field(default_factory=list)
    verify: VerifyReport | None = None


@dataclass(slots=True)
class _LogFacts:
    gaps: dict[int, tuple[int, int]] = field(default_factory=dict)  # gap seq -> range
    filled: list[tuple[int, int]] = field(default_factory=list)
    recovered_keys: set[str] = field(default_factory=set)
    hashes: dict[int, bytes] = field(default_factory=dict)


def _record_lines(log_path: Path) -> Iterator[bytes]:
    directory = log_path.parent
    if not directory.exists():
        return
    try:
        files = expand([str(directory)])
    except Exception:
        return
    for path in files:
        # The log's own files: itself, logrotate's copies and recovered segments
        # (``<log>.*``), and its sealed segments (``<stem>.seg-*``, maybe compressed),
        # where the gap record of an older outage usually is by now.
        if not path.name.startswith(log_path.name) and parse_segment(log_path, path) is None:
            continue
        for lines, complete in line_chunks(path):
            if complete:
                yield from lines


def _scan_log(log_path: Path, wanted: set[int]) -> _LogFacts:
    """Gap records, filled ranges, recovered payload keys, and hashes of ``wanted`` seqs."""
    facts = _LogFacts()
    for path in log_path.parent.glob(recovered_glob(log_path, compressed=True)):
        span = recovered_range(path.name)
        if span is not None:
            facts.filled.append(span)
    for line in _record_lines(log_path):
        head = split_head(line)
        if head is None:
            continue
        if head[0] in wanted:
            facts.hashes[head[0]] = line_hash(line)
        if b'"kind":"gap"' in line or b'"kind":"recovered"' in line:
            record = orjson.loads(line)
            if record.get("kind") == "gap":
                facts.gaps[head[0]] = (int(record["first_seq"]), int(record["last_seq"]))
            elif record.get("kind") == "recovered" and "payload_sha256" in record:
                facts.recovered_keys.add(str(record["payload_sha256"]))
    return facts


def recover(
    sources: list[Path],
    log_path: Path,
    config: AuditConfig | None = None,
    *,
    clock: ClockReader | None = None,
) -> RecoverReport:
    """Recover emergency records from ``sources`` into the log at ``log_path``.

    ``clock`` reads the kernel clock's state for the log opened to append (the
    ``AuditLog`` seam; the real reader by default)."""
    log_path = Path(os.path.abspath(log_path))
    report = RecoverReport()
    sequenced: dict[int, Found] = {}
    unsequenced: list[Found] = []
    for found in find_all(sources):
        if found.sequenced:
            head = split_head(found.payload)
            if head is None:
                report.conflicts.append(f"{found.source}:{found.line}: not a record")
                continue
            report.found_sequenced += 1
            seen = sequenced.get(head[0])
            if seen is None:
                sequenced[head[0]] = found
            elif seen.payload != found.payload:
                report.conflicts.append(
                    f"seq {head[0]}: different records in {seen.source}:{seen.line} "
                    f"and {found.source}:{found.line}; kept the first"
                )
        else:
            report.found_unsequenced += 1
            unsequenced.append(found)

    first_pass = _scan_log(log_path, set())
    wanted = {first - 1 for first, _last in first_pass.gaps.values()} | set(sequenced)
    facts = _scan_log(log_path, wanted)
    used: set[int] = set()
    for gap_seq, (first, last) in sorted(facts.gaps.items()):
        report.gaps.append((first, last))
        if any(a <= first and last <= b for a, b in facts.filled):
            continue
        # A stream whose first records reached only stdout links to the zero hash.
        expected = ZERO_HASH if first == 1 else facts.hashes.get(first - 1)
        run: list[bytes] = []
        seq = first
        while seq <= last and seq in sequenced and expected is not None:
            line = sequenced[seq].payload
            if split_head(line) != (seq, expected):
                report.conflicts.append(f"seq {seq}: does not link to seq {seq - 1}; not used")
                break
            run.append(line)
            expected = line_hash(line)
            seq += 1
        if run:
            end = first + len(run) - 1
            target = recovered_path(log_path, first, end)
            data = b"".join(line + b"\n" for line in run)
            if not target.exists() or target.read_bytes() != data:
                atomic_write(target, data)
            used.update(range(first, end + 1))
            report.filled.append((first, end, target.name))
            if end < last:
                report.missing.append((end + 1, last))
        else:
            report.missing.append((first, last))
        del gap_seq

    to_append: list[dict[str, Any]] = []
    for seq, found in sorted(sequenced.items()):
        if seq in used:
            continue
        if facts.hashes.get(seq) == line_hash(found.payload):
            report.already_present += 1
            continue
        to_append.append(_recovered_fields(found, "sequenced"))
    for found in unsequenced:
        to_append.append(_recovered_fields(found, "unsequenced"))
    fresh = []
    for fields in to_append:
        if fields["payload_sha256"] in facts.recovered_keys:
            report.already_present += 1
        else:
            facts.recovered_keys.add(fields["payload_sha256"])
            fresh.append(fields)
    if fresh:
        cfg = (config or AuditConfig()).with_(log_path=log_path)
        with AuditLog(cfg, clock=clock) as log:
            for fields in fresh:
                log.append_recovered(fields)
            log.flush(timeout=30)
        report.appended = len(fresh)
    report.verify = verify_paths([log_path.parent]) if log_path.parent.exists() else None
    return report


def _recovered_fields(found: Found, original: str) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "original": original,
        "found_in": found.source,
        "line": found.line,
        "payload_sha256": hashlib.sha256(found.payload).hexdigest(),
    }
    try:
        payload = orjson.loads(found.payload)
    except orjson.JSONDecodeError:
        fields["payload"] = found.payload.decode("utf-8", "replace")
        return fields
    if original == "unsequenced" and isinstance(payload, dict):
        fields["event"] = payload.get("event")
        fields["emergency_ts"] = payload.get("ts")
        fields["reason"] = payload.get("reason")
    else:
        fields["record"] = found.payload.decode("utf-8", "replace")
    return fields
