"""Verify a stream: every link of the hash chain, every ``seq``, across files.

The verifier streams: it keeps the chain head, a ring of recent records (to recognise
duplicates and insertions) and the few records that arrived out of place, so memory
does not grow with the log. Consecutive, linked records take a fast path that reads
only the fixed ``{"seq":N,"prev":"..."`` head and hashes the line: the next record's
``prev`` vouches for every other byte. Anything else takes the slow path, which looks
one line ahead to name what happened and to which ``seq``:

* ``modified``   a record's bytes changed (its successor no longer links to it, or its
  own ``seq``/``prev`` no longer fit);
* ``deleted``    records missing inside a file; ``seq gap`` when they are missing
  between files (a lost segment);
* ``inserted``   a record that belongs nowhere in the chain (a forgery, even one with a
  plausible ``seq`` and ``prev``);
* ``reordered``  a genuine record stored out of place;
* ``duplicated`` the same line twice in one file (the same record in two files is one
  record copied by rotation or recovery, and is fine);
* ``torn``       a last line without its ``\\n``; ``bad json`` a line that is not a record;
* ``unrecovered`` records that reached only stdout (a ``gap`` record names them) and
  that no recovered segment (``<log>.recovered-<first>-<last>.jsonl``) puts back.
  Recovered segments are spliced into the walk where the chain needs them, and their
  links are checked on both sides.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import orjson

from riskaudit._native import Ring, scan_block
from riskaudit.errors import AuditFormatError
from riskaudit.format import (
    LOG_GLOB,
    SIDECAR_GLOB,
    ZERO_HASH,
    gap_range,
    is_closed_name,
    parse_segment_name,
    recovered_range,
    sidecar_log_stem,
    sidecar_path,
    split_head,
)
from riskaudit.integrity._keys import PublicKey
from riskaudit.integrity._report import Finding, FindingKind, VerifyReport
from riskaudit.integrity._reuse import NativeReusedIds, ReusedIds
from riskaudit.integrity._seals import Checkpoint, SealInput, check_seals, read_sidecars
from riskaudit.integrity._stream import (
    Source,
    block_chunks,
    expand,
    line_chunks,
    name_files,
    open_binary,
    order,
)

_RING = 1 << 16
#: Seqs the core handles (it counts in 62 bits); a line claiming a larger one (only a
#: damaged or forged file has one) is judged by the Python walk alone.
_NATIVE_SEQS = 1 << 62
#: Who runs the scan of records that follow the chain (verify --engine).
Engine = Literal["native", "python"]
_RING_MASK = _RING - 1


def verify_paths(
    paths: Iterable[str | Path],
    *,
    keys: list[PublicKey] | None = None,
    checkpoints: list[Path] | None = None,
    checkpoint_interval: float = 60.0,
    now_ns: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    torn: bool = False,
    engine: Engine = "native",
) -> VerifyReport:
    """Verify the stream made of these files, globs or directories, and what its
    checkpoints prove (the sidecar next to the log and any sidecar named, unless
    ``checkpoints`` is given; signatures with ``keys``). ``torn``: read ``.torn-*``
    files too (bytes cut from torn tails: not records, so expect findings).
    ``engine``: ``"native"`` runs the scan of records that follow the chain in the
    Rust core; ``"python"`` runs it in this module's readable loop (the reference;
    both give the same report, which the tests check).

    Raises AuditFormatError if an argument names no file.
    """
    args = [str(p) for p in paths]
    named = name_files(args, torn=torn)
    if not named.segments:
        raise AuditFormatError(
            "no log segments among the files named: " + "; ".join(named.skipped or args)
        )
    if checkpoints is not None:
        sidecars = list(checkpoints)
    else:
        sidecars = default_sidecars(args)
        sidecars += [s for s in named.sidecars if s not in {x.resolve() for x in sidecars}]
    files = named.segments
    subset = not any(Path(a).is_dir() for a in args) and all(is_closed_name(f.name) for f in files)
    given = SealInput(
        keys=keys, sidecars=sidecars, interval=checkpoint_interval, now_ns=now_ns, subset=subset
    )
    report = _Verifier(progress, engine).run(order(files), given)
    report.warnings[:0] = named.skipped
    return report


def stream_directories(path: str | Path) -> list[Path] | None:
    """A central directory (``riskaudit collect --out``) holds one sub-directory per
    stream and no log of its own: those sub-directories, or None for anything else."""
    p = Path(path)
    if not p.is_dir():
        return None
    try:
        expand([str(p)])
    except AuditFormatError:
        subs = sorted(d for d in p.iterdir() if d.is_dir() and any(d.glob(LOG_GLOB)))
        return subs or None
    return None


def default_sidecars(args: list[str]) -> list[Path]:
    """``<log>.checkpoints`` next to each named file; every ``*.checkpoints`` of a
    named directory."""
    out: list[Path] = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            out.extend(sorted(p.glob(SIDECAR_GLOB)))
        else:
            side = sidecar_path(p)
            if side.exists():
                out.append(side)
            else:  # a rotated or sealed segment: the sidecar of the log it came from
                for cand in sorted(p.parent.glob(SIDECAR_GLOB)):
                    stem = sidecar_log_stem(cand)
                    if p.name.startswith(stem + ".") and cand not in out:
                        out.append(cand)
    return out


def _sha(line: bytes) -> bytes:
    return hashlib.sha256(line).hexdigest().encode("ascii")


def _field_of(line: bytes | None, name: str) -> str | None:
    if line is None:
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    value = record.get(name) if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


def _ts_of(line: bytes | None) -> str | None:
    return _field_of(line, "ts")


class _Verifier:
    """The chain walk. ``p*`` attributes describe the last accepted record."""

    def __init__(
        self,
        progress: Callable[[int, int, str], None] | None = None,
        engine: Engine = "native",
    ) -> None:
        if engine not in ("native", "python"):
            raise ValueError(f"no verify engine {engine!r}: native or python")
        self.progress = progress
        self.native = engine == "native"
        self.wanted_sorted: list[int] = []
        self.prev_seq = 0
        self.prev_hash = ZERO_HASH
        self.prev_line: bytes | None = None
        self.prev_checked = True
        self.suppress = False  # the head was reported modified: its successor won't link
        self.after_bad = False  # unreadable lines were reported: resync on the next record
        # A file that starts at or before the chain head repeats records (a rotated copy):
        # (file index, hash of its previous line, seqs taken on its own chain unchecked).
        self.overlap: tuple[int, bytes | None, list[int]] | None = None
        # The look-back ring: a list here, or the core's when it runs the scan.
        self.ring: list[tuple[int, bytes, bytes, int] | None] = (
            [] if self.native else [None] * _RING
        )
        self.native_ring = Ring()
        self.big_ring: dict[int, tuple[int, bytes, bytes, int]] = {}
        self.held: dict[int, tuple[bytes, bytes, int, int, int, bytes]] = {}
        self.missing: list[list[Any]] = []  # [first, last, kind, file, line]
        self.findings: dict[tuple[int, str], Finding] = {}
        self.files: list[str] = []
        self.recovered: dict[tuple[int, int], Path] = {}
        self.wanted: set[int] = set()  # seqs that a sidecar checkpoint covers
        self.covered: dict[int, bytes] = {}  # their hashes, as the walk found them
        self.in_log: list[Checkpoint] = []
        self.warnings: list[str] = []
        self.reuse: ReusedIds | NativeReusedIds = NativeReusedIds() if self.native else ReusedIds()
        self.torn_wanted: dict[int, tuple[bytes, str, tuple[int, int]]] = {}
        self.last_main = 0  # files before this index are not the last (newest) one
        self.count = 0
        self.first_seq: int | None = None
        self.first_line: bytes | None = None
        self.stream: str | None = None  # the first stream id a record names
        self.removed: list[tuple[int, int, int]] = []  # retention: (first, last, its seq)
        self.anchor_seq: int | None = None  # the sidecar checkpoint the files begin after
        self.unproven: str | None = None  # why the files' head cannot be anchored
        self.stdout_only: list[tuple[int, int]] = []  # ranges gap records name, unrecovered

    # -- driver ------------------------------------------------------------------

    def run(self, sources: list[Source], given: SealInput | None = None) -> VerifyReport:
        given = given or SealInput()
        sidecar, problems = read_sidecars(given.sidecars)
        self.wanted = {cp.covers_seq for cp in sidecar}
        self.wanted_sorted = sorted(self.wanted)
        # Recovered segments fill holes: they are spliced in where the chain needs them.
        main = []
        for src in sources:
            span = recovered_range(src.path.name)
            if span is not None:
                self.recovered[span] = src.path
            else:
                main.append(src)
        anchored = self._anchor(main, sidecar)
        self.last_main = len(main) - 1
        for i, src in enumerate(main):
            if self.progress is not None:
                self.progress(i, len(main), src.path.name)
            if self.count and src.first_seq is not None and src.first_seq <= self.prev_seq:
                self.overlap = (len(self.files), None, [])
            self._feed_file(src.path)
            self._end_overlap()
            named = parse_segment_name(src.path.name)
            if named is not None and self.count and self.prev_seq < named[1]:
                self._add(
                    self.prev_seq + 1,
                    FindingKind.TRUNCATED,
                    f"{src.path.name} ends at seq {self.prev_seq}, but its name says it ends at "
                    f"seq {named[1]}: seq {self.prev_seq + 1}-{named[1]} cut off",
                    None,
                )
        for span in sorted(self.recovered):
            self._feed_file(self.recovered.pop(span))
        self._finish()
        stream = _field_of(self.first_line, "stream") or self.stream
        if stream is None:  # checkpoints of this version name it; the sidecar's too
            stream = next((cp.stream for cp in sidecar if cp.stream), None)
        seals = check_seals(
            stream=stream,
            in_log=self.in_log,
            sidecar=sidecar,
            covered=self.covered,
            last_seq=self.prev_seq if self.count else 0,
            files=self.files,
            given=given,
            first_seq=self.first_seq or 0,
            stdout_only=self.stdout_only,
        )
        for seq, kind, detail in seals.findings:
            self._add(seq, kind, detail, None)
        unanchored = self._head_proof(anchored, given)
        warnings = [
            *problems,
            *anchored,
            *self.warnings,
            *seals.warnings,
            *self.reuse.warnings(),
        ]
        findings = sorted(self.findings.values(), key=lambda f: (f.seq, f.kind))
        last = self.prev_seq if self.count else None
        bad_from = min((f.seq for f in findings), default=None)
        return VerifyReport(
            files=self.files,
            records=self.count,
            first_seq=self.first_seq,
            last_seq=last,
            first_ts=_ts_of(self.first_line),
            last_ts=_ts_of(self.prev_line),
            findings=findings,
            warnings=warnings,
            requested_last_seq=max(last or 0, seals.newest_seq),
            requested_last_ts=max(
                filter(None, [_ts_of(self.prev_line), seals.newest_ts]), default=None
            ),
            verified_last_seq=(bad_from - 1) if bad_from is not None else last,
            checkpoints=seals.checkpoints,
            unanchored=unanchored,
        )

    def _head_proof(self, anchored: list[str], given: SealInput) -> str | None:
        """Files that start after seq 1 (logrotate's rotate count or retention removed
        the older ones, or somebody cut the head and re-chained the rest): only a signed
        checkpoint that verifies proves their head. Why it is not proven, or None.

        A removal that a ``retention`` record should name but does not is a finding."""
        first = self.first_seq
        if first is None or first <= 1:
            return None
        named = next((r for r in self.removed if r[0] <= first - 1 <= r[1]), None)
        if named is not None:
            anchored.append(
                f"seq {named[0]}-{named[1]} were removed by retention (retention record seq "
                f"{named[2]})"
            )
        elif self.removed and not given.subset:
            ranges = ", ".join(f"{a}-{b}" for a, b, _s in self.removed)
            self._add(
                first - 1,
                FindingKind.DELETED,
                f"the files start at seq {first}, but retention records name only seq "
                f"{ranges} as removed",
                None,
            )
        if self.unproven is not None:
            return self.unproven
        if self.anchor_seq is None:
            return (
                f"the files start at seq {first} and no checkpoint of the sidecar seals seq "
                f"{first - 1}: nothing proves that records before them were not cut and the "
                "rest re-chained"
            )
        if given.keys is None:
            return (
                f"the files start at seq {first}: the checkpoint that anchors them is not "
                "authenticated (give --public-key or --keyring): nothing proves that records "
                "before them were not cut and the rest re-chained"
            )
        return None

    def _anchor(self, main: list[Source], sidecar: list[Checkpoint]) -> list[str]:
        """Files that start after seq 1 (older segments removed by retention) begin
        right after the checkpoint that sealed the segment before them. The sidecar
        keeps that checkpoint's exact line, so its hash is the first record's ``prev``;
        its signature is checked with the others."""
        first = main[0].first_seq if main else None
        if first is None or first <= 1:
            return []
        anchor = next((cp for cp in sidecar if cp.seq == first - 1 and cp.line), None)
        if anchor is None:
            return []
        self.prev_seq, self.prev_hash = first - 1, _sha(anchor.line)
        with open_binary(main[0].path) as fh:
            opening = fh.readline(1 << 16)
        if b'"kind":"segment"' not in opening[:120]:
            # The writer begins every file after the first with a segment record right
            # after the checkpoint that sealed the one before: a set that begins with
            # anything else is a file whose head was cut at a checkpoint.
            self.unproven = (
                f"the files start at seq {first} with a record that does not begin a file "
                f"(a segment record): the head of a file was cut after checkpoint seq "
                f"{anchor.seq}, so nothing proves what came before"
            )
            return []
        self.anchor_seq = anchor.seq
        return [
            f"the files start at seq {first}: anchored by checkpoint seq {anchor.seq} "
            f"({anchor.origin}, {anchor.ts}), the seal of the segment before"
        ]

    def _feed_file(self, path: Path) -> None:
        """Walk one file's lines (the fast path is inlined: this loop is the verifier's
        throughput). One line of delay gives the slow path a one-line peek."""
        fidx = len(self.files)
        self.files.append(str(path))
        pending: bytes | None = None
        pending_at = (fidx, 0)
        lineno = 0
        sha = hashlib.sha256

        def past_end(extra: int) -> None:
            self.warnings.append(
                f"{path.name}: {extra} bytes after the record its name says it ends with are "
                "not part of the stream (what a failed write left before the file was set "
                "aside); not read as records"
            )

        if self.native:
            self._feed_blocks(path, fidx, past_end)
            return
        for lines, complete in line_chunks(path, past_end):
            if not complete:
                if pending is not None:
                    self._step(pending, pending_at, None)
                    pending = None
                lineno += 1
                detail = (
                    f"last line has no newline ({len(lines[0])} bytes after seq {self.prev_seq})"
                )
                head = split_head(lines[0])
                if fidx < self.last_main:
                    # A rotated file cut mid-record (copytruncate copies while the
                    # writer writes): fine if a later file holds the whole record,
                    # which starts with exactly these bytes.
                    seq = head[0] if head is not None else self.prev_seq + 1
                    self.torn_wanted[seq] = (lines[0], detail, (fidx, lineno))
                else:
                    self._add(self.prev_seq + 1, FindingKind.TORN, detail, (fidx, lineno))
                continue
            # Locals, not attributes, in the loop that carries the throughput; they are
            # written back before the slow path runs and after the loop.
            prev_seq, prev_hash, prev_line, ring = (
                self.prev_seq,
                self.prev_hash,
                self.prev_line,
                self.ring,
            )
            reuse = self.reuse.see
            wanted = self.wanted
            torn = self.torn_wanted
            accepted = 0
            fast = self.count > 0 and not self.after_bad and not self.held
            for line in lines:
                lineno += 1
                cur, cur_at = pending, pending_at
                pending, pending_at = line, (fidx, lineno)
                if cur is None:
                    continue
                if fast:
                    pfx = b'{"seq":%d,"prev":"%b"' % (prev_seq + 1, prev_hash)
                    if cur.startswith(pfx) and cur.endswith(b"}"):
                        prev_seq += 1
                        h = sha(cur).hexdigest().encode()
                        ring[prev_seq & _RING_MASK] = (prev_seq, h, prev_hash, fidx)
                        if prev_seq in wanted:
                            self.covered[prev_seq] = h
                        if torn and prev_seq in torn:
                            self._torn_resolved(prev_seq, cur)
                        if cur.startswith(b',"kind":"', len(pfx)):  # control records only
                            self._control_seen(prev_seq, cur, prev_hash, (fidx, lineno - 1))
                        else:
                            reuse(prev_seq, cur, len(pfx))
                        prev_hash, prev_line = h, cur
                        accepted += 1
                        continue
                self._sync(prev_seq, prev_hash, prev_line, accepted)
                accepted = 0
                self._step(cur, cur_at, line)
                prev_seq, prev_hash, prev_line = self.prev_seq, self.prev_hash, self.prev_line
                fast = self.count > 0 and not self.after_bad and not self.held
            self._sync(prev_seq, prev_hash, prev_line, accepted)
        if pending is not None:
            self._step(pending, pending_at, None)

    def _feed_blocks(self, path: Path, fidx: int, past_end: Callable[[int], None]) -> None:
        """The walk of :meth:`_feed_file` with its fast path in the core, over blocks of
        the file (``block_chunks``): the same lines, the same one line of delay, the
        same calls on the slow path, so the same report."""
        pending: bytes | None = None
        pending_at = (fidx, 0)
        lineno = 0
        for data, begin, end, complete in block_chunks(path, past_end):
            if not complete:
                # The torn last line: exactly what the Python walk does with it.
                self._feed_torn(data, fidx, lineno, pending, pending_at)
                return
            pending, pending_at = self._feed_block(
                data, begin, end, fidx, lineno, pending, pending_at
            )
            lineno = pending_at[1]
        if pending is not None:
            self._step(pending, pending_at, None)

    def _feed_torn(
        self,
        line: bytes,
        fidx: int,
        lineno: int,
        pending: bytes | None,
        pending_at: tuple[int, int],
    ) -> None:
        if pending is not None:
            self._step(pending, pending_at, None)
        lineno += 1
        detail = f"last line has no newline ({len(line)} bytes after seq {self.prev_seq})"
        head = split_head(line)
        if fidx < self.last_main:
            seq = head[0] if head is not None else self.prev_seq + 1
            self.torn_wanted[seq] = (line, detail, (fidx, lineno))
        else:
            self._add(self.prev_seq + 1, FindingKind.TORN, detail, (fidx, lineno))

    def _feed_block(
        self,
        data: bytes,
        begin: int,
        end: int,
        fidx: int,
        lineno: int,
        pending: bytes | None,
        pending_at: tuple[int, int],
    ) -> tuple[bytes, tuple[int, int]]:
        """``data[begin:end]``, whole lines numbered from ``lineno + 1``: the carried
        pending line first (the block's first line is its peek), then runs of records
        the core accepts, the slow path between them. Returns the block's last line,
        pending."""
        reuse = self.reuse
        assert isinstance(reuse, NativeReusedIds)
        if pending is not None:
            # The carried line, with this block's first line as its peek: a block of two.
            mini = pending + b"\n" + data[begin : data.index(b"\n", begin) + 1]
            self._feed_block(mini, 0, len(mini), fidx, pending_at[1] - 1, None, pending_at)
        last_start = max(begin, data.rfind(b"\n", begin, end - 1) + 1)
        pos, num = begin, lineno + 1  # the offset and number of the next line to judge
        while pos < last_start:
            if (
                self.count > 0
                and not self.after_bad
                and not self.held
                and self.prev_seq < _NATIVE_SEQS - 1
            ):
                nxt, taken, prev_seq, prev_hash, control, prev, start = scan_block(
                    data,
                    pos,
                    last_start,
                    self.prev_seq,
                    self.prev_hash,
                    self._next_stop(),
                    reuse.core,
                    self.native_ring,
                    fidx,
                )
                if taken:
                    line = data[start : nxt - 1]
                    if prev_seq in self.wanted:
                        self.covered[prev_seq] = prev_hash
                    if self.torn_wanted and prev_seq in self.torn_wanted:
                        self._torn_resolved(prev_seq, line)
                    if control:
                        self._control_seen(prev_seq, line, prev, (fidx, num + taken - 1))
                    self._sync(prev_seq, prev_hash, line, taken)
                    pos, num = nxt, num + taken
                    continue
            nl = data.index(b"\n", pos)
            peek_end = data.index(b"\n", nl + 1)
            self._step(data[pos:nl], (fidx, num), data[nl + 1 : peek_end])
            pos, num = nl + 1, num + 1
        return data[last_start : end - 1], (fidx, num)

    def _next_stop(self) -> int:
        """The next seq the walk must look at itself (a sidecar checkpoint covers it,
        or a torn copy waits for it); 0 for none."""
        wanted = self.wanted_sorted
        i = bisect.bisect_right(wanted, self.prev_seq)
        stop = wanted[i] if i < len(wanted) else 0
        for seq in self.torn_wanted:
            if seq > self.prev_seq and (stop == 0 or seq < stop):
                stop = seq
        return stop if stop < _NATIVE_SEQS else 0

    # -- bookkeeping -------------------------------------------------------------

    def _control_seen(self, seq: int, line: bytes, prev_hash: bytes, at: tuple[int, int]) -> None:
        """A record of the writer's own: checkpoints, set-asides, retention, and the
        stream id (learned from any record that names it, so signatures can be checked
        without the genesis record)."""
        head = line[:120]
        if b'"kind":"checkpoint"' in head:
            self._seal_seen(seq, line, prev_hash)
        elif b'"kind":"segment"' in head:
            self._segment_seen(seq, line, at[0], at[1])
        elif b'"kind":"retention"' in head:
            self._retention_seen(seq, line)
        if self.stream is None and b'"stream":"' in line:
            self.stream = _field_of(line, "stream")

    def _retention_seen(self, seq: int, line: bytes) -> None:
        """A ``retention`` record that removed a segment: the range is gone for a reason."""
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if not isinstance(rec, dict) or rec.get("action") not in ("delete", "remove-local"):
            return
        first, last = rec.get("first_seq"), rec.get("last_seq")
        if isinstance(first, int) and isinstance(last, int):
            self.removed.append((first, last, seq))

    def _seal_seen(self, seq: int, line: bytes, prev_hash: bytes) -> None:
        """A checkpoint record in the chain: it covers the record just before it."""
        cp = Checkpoint.parse(line, "log")
        if cp is None:
            return
        cp.line = line
        self.in_log.append(cp)
        if cp.covers_seq == seq - 1:
            self.covered[seq - 1] = prev_hash
        else:
            self._add(
                seq,
                FindingKind.CHECKPOINT_MISMATCH,
                f"covers seq {cp.covers_seq}, not the record before it",
                None,
            )

    def _segment_seen(self, seq: int, line: bytes, fidx: int, lineno: int) -> None:
        """A ``segment`` record: the writer set a file aside. After a failed write that
        is expected (a warning names it); a file found corrupt or truncated at start-up
        means confirmed records were damaged or lost: that is a finding."""
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        reason = rec.get("reason") if isinstance(rec, dict) else None
        if reason in ("corrupt", "truncated"):
            self._add(
                seq,
                FindingKind.CORRUPT,
                f"the writer found {rec.get('previous') or 'the log'} {reason} at start-up "
                f"(damage or a cut at or before the checkpoint its sidecar held, seq "
                f"{rec.get('missing_through') or rec.get('previous_last_seq')}); kept "
                "untouched, the chain continues here",
                (fidx, lineno),
            )
        elif reason == "untrusted":
            self.warnings.append(
                f"{rec.get('previous')} was set aside after a failed write or sync: trusted "
                f"up to byte {rec.get('previous_trusted_bytes')} (seq "
                f"{rec.get('previous_last_seq')}); the chain continues at seq {seq}"
            )

    def _sync(
        self, prev_seq: int, prev_hash: bytes, prev_line: bytes | None, accepted: int
    ) -> None:
        """Write the fast path's locals back (a no-op if it accepted nothing)."""
        if accepted:
            self.prev_seq, self.prev_hash, self.prev_line = prev_seq, prev_hash, prev_line
            self.prev_checked = self.suppress = False
            self.count += accepted

    def _add(self, seq: int, kind: FindingKind, detail: str, at: tuple[int, int] | None) -> None:
        key = (seq, kind)
        if key not in self.findings:
            file = Path(self.files[at[0]]).name if at is not None else None
            self.findings[key] = Finding(seq, kind, detail, file, at[1] if at else None)

    def _accept(self, seq: int, prev: bytes, h: bytes, line: bytes, at: tuple[int, int]) -> None:
        if self.held and seq in self.held:
            other = self.held.pop(seq)
            kind = FindingKind.DUPLICATED if other[1] == h else FindingKind.INSERTED
            self._add(seq, kind, "another record with this seq was stored earlier", None)
        self._ring_put(seq, h, prev, at[0])
        if seq in self.wanted:
            self.covered[seq] = h
        if self.torn_wanted and seq in self.torn_wanted:
            self._torn_resolved(seq, line)
        if b'"kind":"' in line[:120]:
            self._control_seen(seq, line, self.prev_hash, at)
        else:
            self.reuse.see(seq, line)
        self.prev_seq, self.prev_hash, self.prev_line = seq, h, line
        self.prev_checked = self.suppress = False
        self.count += 1
        if self.first_seq is None:
            self.first_seq, self.first_line = seq, line
        # A record held because it came too early fits now.
        while self.held and (self.prev_seq + 1) in self.held:
            hprev, hh, hf, hl, expected, hline = self.held[self.prev_seq + 1]
            if hprev != self.prev_hash:
                break
            del self.held[self.prev_seq + 1]
            self._add(
                expected,
                FindingKind.REORDERED,
                f"seq {self.prev_seq + 1} is stored before seq {expected}",
                (hf, hl),
            )
            self._accept(self.prev_seq + 1, hprev, hh, hline, (hf, hl))

    def _ring_put(self, seq: int, h: bytes, prev: bytes, fidx: int) -> None:
        if self.native and 0 <= seq < _NATIVE_SEQS:
            self.native_ring.put(seq, h, prev, fidx)
        elif self.native:
            self.big_ring[seq & _RING_MASK] = (seq, h, prev, fidx)
        else:
            self.ring[seq & _RING_MASK] = (seq, h, prev, fidx)

    def _ring_get(self, seq: int) -> tuple[int, bytes, bytes, int] | None:
        if not self.native:
            entry = self.ring[seq & _RING_MASK]
        elif 0 <= seq < _NATIVE_SEQS:
            entry = self.native_ring.get(seq)
        else:
            entry = self.big_ring.get(seq & _RING_MASK)
        return entry if entry is not None and entry[0] == seq else None

    def _take_missing(self, seq: int) -> bool:
        for rng in self.missing:
            if rng[0] <= seq <= rng[1]:
                if rng[0] == rng[1]:
                    self.missing.remove(rng)
                elif seq == rng[0]:
                    rng[0] += 1
                elif seq == rng[1]:
                    rng[1] -= 1
                else:
                    self.missing.append([seq + 1, rng[1], rng[2], rng[3], rng[4]])
                    rng[1] = seq - 1
                return True
        return False

    def _head_is_bad_json(self) -> bool:
        """On an anomaly, parse the head record fully once: a line merged with its
        neighbour or split in two has a valid-looking head but is not JSON."""
        if self.prev_checked or self.prev_line is None:
            return False
        self.prev_checked = True
        try:
            orjson.loads(self.prev_line)
        except orjson.JSONDecodeError:
            self._add(
                self.prev_seq, FindingKind.BAD_JSON, "the record's line is not valid JSON", None
            )
            return True
        return False

    @staticmethod
    def _peek(line: bytes | None) -> tuple[int, bytes, bytes] | None:
        if line is None:
            return None
        head = split_head(line)
        return None if head is None else (head[0], head[1], _sha(line))

    # -- the slow path -----------------------------------------------------------

    def _copy_of_seen(self, seq: int, prev: bytes, h: bytes, at: tuple[int, int]) -> bool:
        """In a file that repeats records: is this one the same record seen before?

        Records within the verifier's window are compared directly; older ones are
        accepted when they link to the file's previous line, because the copy's record
        at the chain head (or in the window) is compared and its hash vouches for the
        whole linked run before it."""
        ov = self.overlap
        if ov is None or ov[0] != at[0] or seq > self.prev_seq:
            return False
        fidx, last_h, unchecked = ov
        if last_h is not None and prev != last_h:
            return False
        entry = self._ring_get(seq)
        if seq == self.prev_seq:
            if h != self.prev_hash:
                return False
            unchecked.clear()
        elif entry is not None:
            if entry[1] != h:
                return False
            unchecked.clear()
        else:
            unchecked.append(seq)
        self.overlap = (fidx, h, unchecked)
        return True

    def _end_overlap(self) -> None:
        ov, self.overlap = self.overlap, None
        if ov is not None and ov[2]:
            # Linked among themselves is not proof: a forged copy of old records links too.
            self._add(
                ov[2][0],
                FindingKind.INSERTED,
                f"{Path(self.files[ov[0]]).name} repeats seq {ov[2][0]}-{ov[2][-1]}, older "
                "than the verifier's window, and reaches no record it can compare with the "
                "chain: not proven to be copies",
                None,
            )

    def _step(self, line: bytes, at: tuple[int, int], peek_line: bytes | None) -> None:
        if self._head_is_bad_json():
            self.after_bad = True
        head = split_head(line)
        if head is None:
            if not self.after_bad:
                self._add(
                    self.prev_seq + 1, FindingKind.BAD_JSON, "line is not a format-v1 record", at
                )
            self.after_bad = True
            return
        seq, prev = head
        if not line.endswith(b"}"):
            self._add(seq, FindingKind.MODIFIED, "bytes after the record's closing brace", at)
        h = _sha(line)
        exp = self.prev_seq + 1
        if self.after_bad:
            self.after_bad = False
            if seq > self.prev_seq:
                self._accept(seq, prev, h, line, at)
                return
        if seq == exp:
            if prev == self.prev_hash or self.suppress:
                self._accept(seq, prev, h, line, at)
                return
            pk = self._peek(peek_line)
            if pk is not None and pk[0] == seq and pk[1] == self.prev_hash:
                self._add(
                    seq, FindingKind.INSERTED, "a record that does not link into the chain", at
                )
                return
            if pk is None or pk[1] == h:
                self._add(
                    self.prev_seq,
                    FindingKind.MODIFIED,
                    f"its hash is not the prev of seq {seq}",
                    None,
                )
                self._accept(seq, prev, h, line, at)
            else:
                self._add(
                    seq,
                    FindingKind.MODIFIED,
                    f"its prev is not the hash of seq {self.prev_seq}",
                    at,
                )
                self._accept(seq, prev, h, line, at)
                self.suppress = True
            return
        if prev == self.prev_hash and seq != self.prev_seq:
            self._add(exp, FindingKind.MODIFIED, f"its seq field reads {seq}", at)
            self._accept(exp, prev, h, line, at)
            self.suppress = True
            return
        if seq <= self.prev_seq:
            if self._copy_of_seen(seq, prev, h, at):
                return
            self.overlap = None
            self._older(seq, prev, h, line, at, peek_line)
            return
        span = next((r for r in sorted(self.recovered) if r[0] <= exp <= r[1]), None)
        if span is not None:
            # Records of it that the chain already has are copies (fine); the rest
            # must link on both sides.
            self._feed_file(self.recovered.pop(span))
            self._step(line, at, peek_line)
            return
        gap = gap_range(line)
        if gap is not None and gap[0] <= exp and gap[1] == seq - 1:
            self.stdout_only.append((exp, seq - 1))
            self._add(
                exp,
                FindingKind.UNRECOVERED,
                f"seq {exp}-{seq - 1} reached only stdout (gap record seq {seq}); "
                "run `riskaudit recover` with the container's stdout log",
                at,
            )
            self._accept(seq, prev, h, line, at)
            return
        pk = self._peek(peek_line)
        if pk is not None and pk[0] < seq:
            self.held[seq] = (prev, h, at[0], at[1], exp, line)
            return
        kind = FindingKind.SEQ_GAP if at[1] == 1 and at[0] > 0 else FindingKind.DELETED
        self.missing.append([exp, seq - 1, kind, at[0], at[1]])
        self._accept(seq, prev, h, line, at)

    def _older(
        self,
        seq: int,
        prev: bytes,
        h: bytes,
        line: bytes,
        at: tuple[int, int],
        peek_line: bytes | None,
    ) -> None:
        """A record whose seq the chain has already passed."""
        entry = self._ring_get(seq)
        if entry is not None:
            if entry[1] == h:
                if entry[3] != at[0]:
                    return  # the same record in two files: one record copied
                self._add(seq, FindingKind.DUPLICATED, "the same line appears twice", at)
                return
            if seq == self.prev_seq:
                pk = self._peek(peek_line)
                if pk is not None and pk[1] == h:
                    # The chain continues from this one: the accepted head was the forgery.
                    self._add(seq, FindingKind.INSERTED, "two different records with this seq", at)
                    self.prev_seq -= 1
                    self.count -= 1
                    self.prev_hash = prev
                    self._accept(seq, prev, h, line, at)
                    return
            self._add(seq, FindingKind.INSERTED, "two different records with this seq", at)
            return
        if self._take_missing(seq):
            self._add(seq, FindingKind.REORDERED, f"stored after seq {self.prev_seq}", at)
            self._ring_put(seq, h, prev, at[0])
            return
        self._add(
            seq, FindingKind.INSERTED, "a record older than the chain head, not seen before", at
        )

    def _torn_resolved(self, seq: int, line: bytes) -> None:
        part, _detail, at = self.torn_wanted[seq]
        if line.startswith(part):
            del self.torn_wanted[seq]
            self.warnings.append(
                f"{Path(self.files[at[0]]).name} ends with the first {len(part)} bytes of "
                f"seq {seq}, whose whole record is in a later file (a copy taken mid-write)"
            )

    def _finish(self) -> None:
        for seq, (_part, detail, at) in sorted(self.torn_wanted.items()):
            self._add(seq, FindingKind.TORN, detail, at)
        if not self.prev_checked and self.prev_line is not None:
            self._head_is_bad_json()
        for seq, (_p, _h, hf, hl, _e, _l) in sorted(self.held.items()):
            self._add(seq, FindingKind.INSERTED, "a record that never fits the chain", (hf, hl))
        for first, last, kind, f, ln in self.missing:
            span = f"seq {first}-{last}, {last - first + 1} records" if last > first else ""
            self._add(first, kind, span or "1 record", (f, ln))
