"""What checkpoints prove, checked after the chain walk.

The chain walk (``_verify``) records the hash of every ``seq`` a known checkpoint
covers, and every checkpoint record it meets in the log. This module then reports,
CloudTrail-style but without CloudTrail's blind spot (its validator quietly reports a
shorter range when the newest digests are gone):

* ``truncated``       the log ends before the newest checkpoint known (the sidecar
  remembers what the log no longer shows);
* ``checkpoint mismatch``  a checkpoint's hash is not the hash of the record it covers
  (the history was rewritten and re-chained);
* ``bad signature``   a signature that does not verify, an unknown key, a key used
  outside its validity, or an unsigned checkpoint when keys were given;
* ``WARNING: unsealed tail``  records after the newest checkpoint that are older than
  two checkpoint intervals (a writer that stopped sealing, or a cut sidecar).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from riskaudit.format import parse_ts, split_head
from riskaudit.integrity._keys import PublicKey, check_signature, signed_text
from riskaudit.integrity._report import FindingKind
from riskaudit.integrity._stream import line_chunks

#: What a checkpoint's signature covers (with the chain for seq, prev and kind).
_SIGNED_FIELDS = frozenset(
    ("seq", "prev", "kind", "stream", "covers_seq", "covers_hash", "ts", "key_id", "sig")
)


@dataclass(slots=True)
class Checkpoint:
    """One checkpoint, from the log or the sidecar."""

    seq: int
    covers_seq: int
    covers_hash: str
    ts: str
    key_id: str | None
    sig: str | None
    origin: str  # "log" or the sidecar's file name
    line: bytes = b""  # the record's exact bytes (kept for sidecar checkpoints)
    stream: str | None = None  # written by 0.2 on (covered by the signature)
    #: Fields outside what the signature covers (0.1 wrote ``clock`` there).
    unsigned: tuple[str, ...] = ()

    @classmethod
    def parse(cls, line: bytes, origin: str) -> Checkpoint | None:
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(rec, dict) or rec.get("kind") != "checkpoint":
            return None
        try:
            return cls(
                seq=int(rec["seq"]),
                covers_seq=int(rec["covers_seq"]),
                covers_hash=str(rec["covers_hash"]),
                ts=str(rec["ts"]),
                key_id=rec.get("key_id"),
                sig=rec.get("sig"),
                origin=origin,
                stream=rec["stream"] if isinstance(rec.get("stream"), str) else None,
                unsigned=tuple(k for k in rec if k not in _SIGNED_FIELDS),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(slots=True)
class SealInput:
    """What the verifier is told: keys, sidecars, the interval for the tail warning."""

    keys: list[PublicKey] | None = None
    sidecars: list[Path] = field(default_factory=list)
    interval: float = 60.0
    now_ns: int | None = None
    #: Only sealed segments were named (no directory, no active file): checkpoints past
    #: their end belong to segments not asked about, not to a cut-off tail.
    subset: bool = False


def read_sidecars(paths: list[Path]) -> tuple[list[Checkpoint], list[str]]:
    """Checkpoints of the sidecar files, and complaints about unreadable lines."""
    out: list[Checkpoint] = []
    problems: list[str] = []
    for path in paths:
        for lines, _complete in line_chunks(path):
            for n, line in enumerate(lines, start=1):
                cp = Checkpoint.parse(line, path.name)
                if cp is None:
                    problems.append(f"{path.name}:{n}: not a checkpoint record")
                else:
                    cp.line = line
                    out.append(cp)
    return out, problems


def first_unsealed_ts(files: list[str], after_seq: int) -> str | None:
    """The ``ts`` of the first record after ``after_seq`` (read from the newest files)."""
    for name in reversed(files):
        for lines, _complete in line_chunks(Path(name)):
            for line in lines:
                head = split_head(line)
                if head is not None and head[0] == after_seq + 1:
                    try:
                        ts = orjson.loads(line).get("ts")
                    except orjson.JSONDecodeError:
                        return None
                    return ts if isinstance(ts, str) else None
    return None


@dataclass(slots=True)
class SealReport:
    findings: list[tuple[int, FindingKind, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    newest_seq: int = 0
    newest_ts: str | None = None
    checkpoints: int = 0


def check_seals(
    *,
    stream: str | None,
    in_log: list[Checkpoint],
    sidecar: list[Checkpoint],
    covered: dict[int, bytes],
    last_seq: int,
    files: list[str],
    given: SealInput,
    first_seq: int = 0,
    stdout_only: list[tuple[int, int]] | None = None,
) -> SealReport:
    """Everything checkpoints can tell about a walked chain (``first_seq``..``last_seq``)."""
    rep = SealReport()
    keys = given.keys
    seen: set[tuple[Any, ...]] = set()
    log_lines = {cp.seq: cp.line for cp in in_log}
    unsigned_note = False
    stream_unknown = keys is not None and stream is None
    for cp in in_log + sidecar:
        key = _key(cp)
        if key in seen:  # the sidecar's copy of a checkpoint the log holds
            continue
        seen.add(key)
        rep.checkpoints += 1
        actual = covered.get(cp.covers_seq)
        if cp.seq > last_seq and given.subset:
            pass  # a later segment's checkpoint: reported once below
        elif cp.seq > last_seq:
            rep.findings.append(
                (
                    last_seq + 1,
                    FindingKind.TRUNCATED,
                    f"the log ends at seq {last_seq} but a checkpoint ({cp.origin}, {cp.ts}) "
                    f"seals seq {cp.covers_seq} at seq {cp.seq}: seq {last_seq + 1}-{cp.seq} "
                    "cut off",
                )
            )
        elif cp.origin != "log" and log_lines.get(cp.seq, cp.line) != cp.line:
            rep.findings.append(
                (
                    cp.seq,
                    FindingKind.CHECKPOINT_MISMATCH,
                    f"the checkpoint seq {cp.seq} in the log differs from its copy in "
                    f"{cp.origin}, byte for byte",
                )
            )
        elif (
            cp.seq not in log_lines
            and first_seq <= cp.seq
            and not any(a <= cp.seq <= b for a, b in stdout_only or ())
        ):
            # The sidecar copies a checkpoint only once the log holds it: it was removed
            # or replaced in the log.
            rep.findings.append(
                (
                    cp.seq,
                    FindingKind.CHECKPOINT_MISMATCH,
                    f"the checkpoint seq {cp.seq} that {cp.origin} holds ({cp.ts}) is not in "
                    "the log: removed or replaced",
                )
            )
        elif actual is not None and actual.decode() != cp.covers_hash:
            rep.findings.append(
                (
                    cp.covers_seq,
                    FindingKind.CHECKPOINT_MISMATCH,
                    f"checkpoint seq {cp.seq} ({cp.origin}) says seq {cp.covers_seq} has hash "
                    f"{cp.covers_hash[:16]}…, the log has {actual.decode()[:16]}…: history "
                    "rewritten",
                )
            )
        if cp.stream is not None and stream is not None and cp.stream != stream:
            rep.findings.append(
                (
                    cp.seq,
                    FindingKind.CHECKPOINT_MISMATCH,
                    f"checkpoint seq {cp.seq} ({cp.origin}) names stream {cp.stream}, "
                    f"the log's is {stream}",
                )
            )
        if cp.stream is not None and cp.unsigned:
            # The writer that names the stream in checkpoints writes nothing else there.
            rep.findings.append(
                (
                    cp.seq,
                    FindingKind.MODIFIED,
                    f"checkpoint seq {cp.seq} ({cp.origin}) carries {', '.join(cp.unsigned)}, "
                    "outside what its signature covers",
                )
            )
        if keys is None:
            unsigned_note = unsigned_note or bool(cp.sig)
        elif stream is None:
            if stream_unknown:
                rep.findings.append(
                    (
                        cp.seq,
                        FindingKind.BAD_SIGNATURE,
                        "no record and no checkpoint names the stream id, so no signature "
                        "can be checked, although keys were given",
                    )
                )
                stream_unknown = False
        else:
            ts_ns = _ns(cp.ts)
            why = (
                f"its ts {cp.ts!r} is not a format-v1 timestamp"
                if ts_ns is None
                else check_signature(
                    keys,
                    cp.key_id,
                    cp.sig,
                    signed_text(stream, cp.covers_seq, cp.covers_hash, cp.ts),
                    ts_ns,
                )
            )
            if why is not None:
                rep.findings.append(
                    (cp.seq, FindingKind.BAD_SIGNATURE, f"checkpoint ({cp.origin}): {why}")
                )
        if cp.covers_seq >= rep.newest_seq:
            rep.newest_seq, rep.newest_ts = cp.covers_seq, cp.ts
    if given.subset and rep.newest_seq > last_seq:
        rep.warnings.append(
            f"checkpoints go on to seq {rep.newest_seq}, past the files named (which end at "
            f"seq {last_seq}): verify the directory to check the whole stream"
        )
    if unsigned_note:
        rep.warnings.append("checkpoint signatures not checked: give --public-key or --keyring")
    newest = max(in_log, key=lambda cp: cp.seq, default=None)
    if newest is not None and newest.line and _canonical(newest.line) != newest.line:
        # No successor vouches for the newest checkpoint's bytes, and its signature
        # covers its values, not their spelling: it must be the writer's own encoding.
        rep.findings.append(
            (
                newest.seq,
                FindingKind.MODIFIED,
                "the newest checkpoint is not encoded as the writer encodes it (spaces, "
                "escapes): its bytes changed",
            )
        )
    if newest is not None and newest.unsigned and newest.stream is None:
        rep.warnings.append(
            f"checkpoint seq {newest.seq}: {', '.join(newest.unsigned)} "
            f"{'is' if len(newest.unsigned) == 1 else 'are'} outside what its signature covers "
            "and no later checkpoint covers it: unauthenticated, and no verdict rests on it"
        )
    # The unsealed tail: records after the newest checkpoint record in the log.
    sealed_up_to = max((cp.seq for cp in in_log), default=0)
    if last_seq > sealed_up_to:
        ts = first_unsealed_ts(files, sealed_up_to)
        now = given.now_ns if given.now_ns is not None else time.time_ns()
        oldest = _ns(ts) if ts is not None else None
        if oldest is not None and now - oldest > 2 * given.interval * 1e9:
            rep.warnings.append(
                f"WARNING: unsealed tail: seq {sealed_up_to + 1}-{last_seq} "
                f"({last_seq - sealed_up_to} records since {ts}) are covered by no checkpoint, "
                f"and the oldest is more than two checkpoint intervals "
                f"({2 * given.interval:g}s) old"
            )
    return rep


def _canonical(line: bytes) -> bytes:
    try:
        return orjson.dumps(orjson.loads(line))
    except orjson.JSONDecodeError:
        return b""


def _key(cp: Checkpoint) -> tuple[Any, ...]:
    return (cp.seq, cp.covers_seq, cp.covers_hash, cp.ts, cp.key_id, cp.sig)


def _ns(ts: str) -> int | None:
    try:
        return parse_ts(ts)
    except ValueError:
        return None
