"""Backups: sealed segments and every checkpoint, copied off the host and verified.

What is copied, and when:

* **sealed segments** — built-in rotation's ``*.seg-*.jsonl[.gz]`` and files rotated by
  logrotate (``risk_audit.jsonl.1``, ``...2.gz``) once their last record is the sealing
  checkpoint. A segment is stored under its canonical sealed name, whatever its local
  name, so logrotate's shifting numbers do not make copies of copies. Copies are
  idempotent (a segment whose object exists with the same content SHA-256 is skipped)
  and resumable (each object is put whole; the next run does what the last did not);
* **checkpoints** — each new line of the sidecar becomes its own small object within
  seconds (the service looks every ``SHIP_EVERY`` seconds): a checkpoint off the host is
  what makes a cut-off tail detectable, so it cannot wait for the next interval.

Every copy is read back and its SHA-256 compared before it counts. On S3 each object
carries Object Lock retention (COMPLIANCE) until the segment's end plus its compliance
minimum (``RetentionPolicy.minimum_for``). The local state file
``<log>.backup.json`` remembers what was copied, so a run looks only at what is new.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from riskaudit.archive._holds import Hold, load_holds
from riskaudit.archive._state import ArchivedSegment, BackupState, SeenFile, Span
from riskaudit.archive._targets import (
    BackupTarget,
    ObjectInfo,
    open_target,
)
from riskaudit.errors import AuditBackupError, AuditFormatError
from riskaudit.format import (
    LOG_SUFFIX,
    SUFFIXES,
    backup_state_path,
    content_sha256,
    end_line,
    event_types,
    file_sha256,
    holds_path,
    is_sidecar_name,
    list_segments,
    log_stem,
    log_stream,
    open_segment,
    parse_segment_name,
    parse_ts,
    rotated_files,
    segment_name,
    sha256_stream,
    sidecar_path,
    split_head,
    temp_path,
    uncompressed_name,
)
from riskaudit.integrity import VerifyReport, verify_paths
from riskaudit.settings import BackupSettings, RetentionPolicy

logger = logging.getLogger("riskaudit.backup")

SHIP_EVERY = 2.0
#: The shortest Object Lock an archived copy gets, however old its segment: S3 refuses
#: a retain-until in the past, and the upload itself takes a moment.
LOCK_FLOOR = 15.0


def _covers(checkpoint_key: str) -> int:
    """The ``covers_seq`` in a checkpoint's key (``<covers 20d>-<seq 20d>.json``)."""
    return int(checkpoint_key.rsplit("/", 1)[-1].split("-", 1)[0])


@dataclass(frozen=True, slots=True)
class Candidate:
    """A sealed local file and the canonical name it is stored under."""

    path: Path
    first_seq: int
    last_seq: int
    start_ns: int
    end_ns: int
    name: str  # canonical sealed-segment name, with the local compression suffix

    @property
    def span(self) -> Span:
        return Span(self.first_seq, self.last_seq, self.start_ns, self.end_ns)


@dataclass(slots=True)
class BackupReport:
    copied: list[str] = field(default_factory=list)
    skipped: int = 0
    checkpoints: int = 0
    errors: list[str] = field(default_factory=list)
    holds_on: list[str] = field(default_factory=list)
    holds_off: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "copied": self.copied,
            "skipped": self.skipped,
            "checkpoints": self.checkpoints,
            "legal_holds_set": self.holds_on,
            "legal_holds_released": self.holds_off,
            "errors": self.errors,
        }


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None


def _first_record(path: Path) -> dict[str, Any] | None:
    with open_segment(path) as fh:
        return _record(fh.readline(1 << 20).rstrip(b"\n"))


class Backup:
    """Copies a log's sealed segments and checkpoints to a target."""

    def __init__(
        self,
        log_path: Path,
        target: BackupTarget,
        policy: RetentionPolicy,
        *,
        sidecar: Path | None = None,
        holds_file: Path | None = None,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> None:
        self.log_path = log_path
        self.target = target
        self.policy = policy
        self.sidecar = sidecar or sidecar_path(log_path)
        self.holds_file = holds_file or holds_path(log_path)
        self.state_file = backup_state_path(log_path)
        self.progress = progress
        #: After a restore: the last seq restored, and the checkpoints left out.
        self.restored_through = 0
        self.left_out: list[str] = []
        self.state = BackupState.load(self.state_file)

    @classmethod
    def from_settings(
        cls, log_path: Path, settings: BackupSettings, policy: RetentionPolicy, **kw: Any
    ) -> Backup:
        if not settings.target:
            raise AuditBackupError("no backup target: set RISK_AUDIT_BACKUP_TARGET")
        target = open_target(
            settings.target, endpoint_url=settings.s3_endpoint, object_lock=settings.object_lock
        )
        return cls(log_path, target, policy, **kw)

    # -- state ------------------------------------------------------------------------

    def _save_state(self) -> None:
        self.state.save(self.state_file)

    @property
    def last_success_ns(self) -> int | None:
        return self.state.last_success_ns

    @property
    def failures(self) -> int:
        return self.state.failures

    # -- what to copy -----------------------------------------------------------------

    def candidates(self) -> list[Candidate]:
        """Sealed local files, oldest first."""
        out: list[Candidate] = []
        cache = dict(self.state.seen)
        paths = [s.path for s in list_segments(self.log_path)] + rotated_files(self.log_path)
        for path in paths:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            sig = (st.st_size, st.st_mtime_ns)
            hit = cache.get(path.name)
            if hit is not None and hit.size_mtime == sig:
                if hit.sealed and hit.span is not None and hit.name is not None:
                    out.append(Candidate(path, *hit.span, hit.name))
                continue
            cand = self._inspect(path)
            if cand is None:
                cache[path.name] = SeenFile(sig, False)
                continue
            cache[path.name] = SeenFile(sig, True, cand.span, cand.name)
            out.append(cand)
        present = {p.name for p in paths}
        for gone in [name for name in cache if name not in present]:
            del cache[gone]  # compressed, removed by retention, renumbered by logrotate
        self.state = replace(self.state, seen=cache)
        return sorted(out, key=lambda c: c.first_seq)

    def _inspect(self, path: Path) -> Candidate | None:
        try:
            first = _first_record(path)
            last = _record(end_line(path))
        except (OSError, EOFError, AuditFormatError) as exc:
            logger.warning("backup: cannot read %s: %s", path, exc)
            return None
        # Sealed: it ends with a checkpoint, or its name says where it ends (a file set
        # aside after a failed write ends at its last trusted record).
        sealed = last is not None and (
            last.get("kind") == "checkpoint" or parse_segment_name(path.name) is not None
        )
        if first is None or last is None or not sealed:
            return None  # not sealed (yet): the writer may still append to it
        try:
            start, end = parse_ts(first["ts"]), parse_ts(last["ts"])
            f_seq, l_seq = int(first["seq"]), int(last["seq"])
        except (KeyError, TypeError, ValueError):
            return None
        name = segment_name(self.log_path, f_seq, l_seq, start)
        for suffix in SUFFIXES.values():
            if path.name.endswith(suffix):
                name += suffix
        return Candidate(path, f_seq, l_seq, start, end, name)

    def _retain_until(self, end_ns: int, minimum: float) -> dt.datetime:
        """End + minimum, but never sooner than :data:`LOCK_FLOOR` from now: a segment
        already past its minimum (backups switched on late, a short minimum, a segment
        kept by a legal hold) would otherwise never be archived, and every checkpoint
        shipped after it would wait behind it. Past its minimum it may go by policy;
        the retention planner still keeps it while a hold names it."""
        until = max(end_ns / 1e9 + minimum, time.time() + LOCK_FLOOR)
        return dt.datetime.fromtimestamp(until, dt.UTC).replace(microsecond=0)

    # -- copying ----------------------------------------------------------------------

    def stream(self) -> str:
        stream = self.state.stream or log_stream(self.log_path)
        if not stream:
            raise AuditBackupError(f"{self.log_path}: no stream found to back up")
        self.state = replace(self.state, stream=stream)
        return stream

    def segment_key(self, name: str) -> str:
        return f"{self.stream()}/segments/{name}"

    def run(self) -> BackupReport:
        """Copy what is new (segments, then checkpoints); record success or failure."""
        report = BackupReport()
        try:
            cands = self.candidates()
            for i, cand in enumerate(cands):
                if self.progress is not None:
                    self.progress(i, len(cands), cand.name)
                try:
                    if self._copy_segment(cand):
                        report.copied.append(cand.name)
                    else:
                        report.skipped += 1
                except AuditBackupError as exc:
                    report.errors.append(str(exc))
            report.checkpoints = self.ship_checkpoints()
            report.holds_on, report.holds_off = self.sync_legal_holds()
        except AuditBackupError as exc:
            report.errors.append(str(exc))
        if report.errors:
            self.state = replace(
                self.state, failures=self.state.failures + 1, last_error=report.errors[-1]
            )
            logger.error("backup to %s failed: %s", self.target.description, report.errors[-1])
        else:
            self.state = replace(self.state, last_success_ns=time.time_ns(), last_error=None)
        self._save_state()
        return report

    def sync_legal_holds(self, holds: list[Hold] | None = None) -> tuple[list[str], list[str]]:
        """Mirror the legal holds (``<log>.holds.json``) onto the archived segments as
        Object Lock legal holds, so the archive itself refuses to delete held evidence
        after its retain-until date, not only riskaudit's retention. Only holds riskaudit
        set are released (the state file remembers them): one an operator set by hand
        on the bucket stays. Returns the keys set and released."""
        if holds is None:
            try:
                holds = load_holds(self.holds_file)
            except AuditFormatError as exc:  # copying went on; the run reports it failed
                raise AuditBackupError(f"legal holds not mirrored: {exc}") from exc
        spans = sorted(
            (span, base)
            for base in self.state.archived
            if (span := parse_segment_name(base)) is not None
        )
        known = {  # the end of each segment still on the host, from its last record
            uncompressed_name(v.name): v.span.end_ns
            for v in self.state.seen.values()
            if v.sealed and v.span is not None and v.name is not None
        }
        wanted: set[str] = set()
        for i, ((_first, _last, start), base) in enumerate(spans):
            # Gone from the host: it ended before the next one started (+1 s: names are
            # to the second). Too long a span only holds more, never less.
            end = known.get(base) or (
                spans[i + 1][0][2] + 1_000_000_000 if i + 1 < len(spans) else time.time_ns()
            )
            if any(h.covers(start, end) for h in holds):
                wanted.add(self.state.archived[base].key)
        mine = set(self.state.legal_holds)
        on, off = sorted(wanted - mine), sorted(mine - wanted)
        for key in on:
            self.target.set_legal_hold(key, True)
            mine.add(key)
            self.state = replace(self.state, legal_holds=tuple(sorted(mine)))
        for key in off:
            self.target.set_legal_hold(key, False)
            mine.discard(key)
            self.state = replace(self.state, legal_holds=tuple(sorted(mine)))
        if on or off:
            logger.info("legal holds on the archive: %d set, %d released", len(on), len(off))
        return on, off

    def _copy_segment(self, cand: Candidate) -> bool:
        base = uncompressed_name(cand.name)
        done = self.state.archived.get(base)
        if done is not None:
            return False  # this segment (plain or compressed) is archived and verified
        content = content_sha256(cand.path)
        existing = [self.target.head(self.segment_key(base + s)) for s in ("", *SUFFIXES.values())]
        for info in existing:
            if info is not None and info.content_sha256 == content:
                self._remember(base, info)
                return False
        types = event_types(cand.path, list(self.policy.minimum_by_type))
        minimum = self.policy.minimum_for(types)
        info = ObjectInfo(
            key=self.segment_key(cand.name),
            sha256=file_sha256(cand.path),
            content_sha256=content,
            retain_until=self._retain_until(cand.end_ns, minimum),
            size=cand.path.stat().st_size,
        )
        self.target.put(info.key, cand.path, info)
        self.verify_object(info)
        self._remember(base, info)
        logger.debug("backed up %s to %s", cand.name, self.target.description)
        return True

    def _remember(self, base: str, info: ObjectInfo) -> None:
        segment = ArchivedSegment(
            info.key,
            info.sha256,
            info.content_sha256,
            info.retain_until.isoformat() if info.retain_until else None,
            time.time_ns(),
        )
        self.state = replace(self.state, archived={**self.state.archived, base: segment})

    def verify_object(self, info: ObjectInfo) -> None:
        """Read the object back; its SHA-256 must be what we wrote."""
        got = sha256_stream(self.target.read(info.key))
        if got != info.sha256:
            raise AuditBackupError(
                f"{info.key} on {self.target.description}: SHA-256 {got[:16]}… read back, "
                f"{info.sha256[:16]}… written"
            )

    def ship_checkpoints(self) -> int:
        """Each sidecar line not yet shipped becomes an object; returns how many."""
        try:
            size = self.sidecar.stat().st_size
        except FileNotFoundError:
            return 0
        offset = self.state.checkpoints_offset
        if size < offset:
            logger.error("checkpoint sidecar %s shrank: shipping it again", self.sidecar)
            offset = 0
        if size == offset:
            return 0
        with open(self.sidecar, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size - offset)
        end = data.rfind(b"\n") + 1
        shipped = 0
        stream = self.stream()
        for line in data[:end].split(b"\n")[:-1]:
            rec = _record(line)
            head = split_head(line)
            if rec is None or head is None or "covers_seq" not in rec:
                logger.error("checkpoint sidecar: skipping a line that is no checkpoint")
                continue
            key = f"{stream}/checkpoints/{int(rec['covers_seq']):020d}-{head[0]:020d}.json"
            body = line + b"\n"
            digest = hashlib.sha256(body).hexdigest()
            info = ObjectInfo(
                key=key,
                sha256=digest,
                content_sha256=digest,
                retain_until=self._retain_until(parse_ts(rec["ts"]), self.policy.minimum),
                size=len(body),
            )
            existing = self.target.head(key)
            if existing is None or existing.sha256 != info.sha256:
                self.target.put(key, body, info)
                self.verify_object(info)
            shipped += 1
            self.state = replace(self.state, checkpoints_offset=offset + len(line) + 1)
            offset += len(line) + 1
        self._save_state()
        return shipped

    # -- reading back -----------------------------------------------------------------

    def archived(self) -> dict[str, ObjectInfo]:
        """Archived segments by base name (without compression suffix)."""
        out: dict[str, ObjectInfo] = {}
        prefix = f"{self.stream()}/segments/"
        for key in self.target.keys(prefix):
            info = self.target.head(key)
            if info is None:
                continue
            out[uncompressed_name(key[len(prefix) :])] = info
        return out

    def restore(
        self, out_dir: Path, *, only: list[str] | None = None, mismatches: list[str] | None = None
    ) -> list[Path]:
        """Download segments (all, or those whose name contains one of ``only``) and
        every checkpoint into ``out_dir``, each read once and checked against its SHA-256
        as it arrives; the checkpoints are joined into the sidecar ``verify`` reads. A
        copy that does not match raises, unless ``mismatches`` collects the problems."""
        out_dir.mkdir(parents=True, exist_ok=True)
        stream = self.stream()
        segments = self.target.keys(f"{stream}/segments/")
        checkpoints = self.target.keys(f"{stream}/checkpoints/")
        if only:
            segments = [k for k in segments if any(o in k for o in only)]
        # Only the checkpoints of what is restored: a later one (of a segment not asked
        # for, or of the active file, archived only once sealed) would make `verify` of
        # the directory read the missing rest as a cut-off tail.
        ends = [span[1] for k in segments if (span := parse_segment_name(k)) is not None]
        last = max(ends, default=0)
        self.restored_through = last
        self.left_out = [k for k in checkpoints if _covers(k) > last]
        checkpoints = [k for k in checkpoints if _covers(k) <= last]
        keys = segments + checkpoints
        written: list[Path] = []
        lines: list[bytes] = []
        for i, key in enumerate(keys):
            if self.progress is not None:
                self.progress(i, len(keys), key)
            info = self.target.head(key)
            if info is None:
                if mismatches is not None:
                    mismatches.append(f"{key}: no SHA-256 recorded")
                continue
            if i < len(segments):
                dest = out_dir / Path(key).name
                tmp = temp_path(dest)
                ok = False
                try:
                    ok = self._matches(key, self._fetch(key, tmp), info.sha256, mismatches)
                finally:
                    if ok:
                        os.replace(tmp, dest)
                        written.append(dest)
                    else:
                        tmp.unlink(missing_ok=True)
            else:
                data = b"".join(self.target.read(key))
                if self._matches(key, hashlib.sha256(data).hexdigest(), info.sha256, mismatches):
                    lines.append(data)
        side = sidecar_path(out_dir / (log_stem(self.log_path) + LOG_SUFFIX))
        side.write_bytes(b"".join(lines))
        written.append(side)
        return written

    def _fetch(self, key: str, path: Path) -> str:
        """Download an object into ``path``, hashing it on the way: its SHA-256."""
        digest = hashlib.sha256()
        with open(path, "wb") as fh:
            for block in self.target.read(key):
                digest.update(block)
                fh.write(block)
        return digest.hexdigest()

    @staticmethod
    def _matches(key: str, got: str, want: str, mismatches: list[str] | None) -> bool:
        if got == want:
            return True
        problem = f"{key}: SHA-256 {got[:16]}… does not match {want[:16]}…"
        if mismatches is None:
            raise AuditBackupError(problem)
        mismatches.append(problem)
        return False

    def verify(self, work_dir: Path) -> tuple[list[str], VerifyReport | None]:
        """A restore drill: every archived object read back against its SHA-256, then
        the archived chain verified with its checkpoints (restored into ``work_dir``).
        Returns (problems, VerifyReport or None when nothing is archived)."""
        problems: list[str] = []
        shutil.rmtree(work_dir, ignore_errors=True)
        restored = self.restore(work_dir, mismatches=problems)
        segs = [p for p in restored if not is_sidecar_name(p.name)]
        sides = [p for p in restored if is_sidecar_name(p.name)]
        report = verify_paths([str(p) for p in segs], checkpoints=sides) if segs else None
        return problems, report
