"""What verify reports: each finding, by kind, and the verdict.

The kinds are the vocabulary of docs/format.md's "Verification" section and of the
CLI's ``INVALID: seq N: <kind>`` lines; a reader's tooling may match on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class FindingKind(StrEnum):
    """What is wrong at a ``seq`` (docs/format.md, "Verification", names each)."""

    MODIFIED = "modified"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    DUPLICATED = "duplicated"
    TORN = "torn"
    BAD_JSON = "bad json"
    SEQ_GAP = "seq gap"
    UNRECOVERED = "unrecovered"
    TRUNCATED = "truncated"
    CHECKPOINT_MISMATCH = "checkpoint mismatch"
    BAD_SIGNATURE = "bad signature"
    CORRUPT = "corrupt"


class VerifyStatus(StrEnum):
    """The verdict: ``invalid`` (findings), ``unanchored`` (consistent, but nothing
    proves its head was not cut and rewritten) or ``valid``."""

    VALID = "valid"
    INVALID = "invalid"
    UNANCHORED = "unanchored"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem, named by the first ``seq`` it concerns."""

    seq: int
    kind: FindingKind
    detail: str = ""
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else ""
        return f"INVALID: seq {self.seq}: {self.kind}" + (
            f" ({where}{self.detail})" if self.detail or where else ""
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "detail": self.detail,
            "file": self.file,
            "line": self.line,
        }


@dataclass(slots=True)
class VerifyReport:
    """What was verified and what was wrong with it."""

    files: list[str] = field(default_factory=list)
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    first_ts: str | None = None
    last_ts: str | None = None
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    requested_last_seq: int = 0
    requested_last_ts: str | None = None
    verified_last_seq: int | None = None
    checkpoints: int = 0
    #: Why nothing proves the files' head (they start after seq 1 and no signed
    #: checkpoint that verifies anchors them), or None when the head is proven.
    unanchored: str | None = None

    @property
    def status(self) -> VerifyStatus:
        if self.findings:
            return VerifyStatus.INVALID
        return VerifyStatus.UNANCHORED if self.unanchored is not None else VerifyStatus.VALID

    @property
    def valid(self) -> bool:
        return self.status is VerifyStatus.VALID

    def problem_lines(self) -> list[str]:
        """Each problem once: findings of one kind at consecutive ``seq`` values become
        one line with their range (a re-chained run is one problem, not one per record)."""
        runs: list[list[Finding]] = []
        open_run: dict[str, list[Finding]] = {}  # per kind, the run the next seq extends
        for f in self.findings:  # sorted by (seq, kind)
            run = open_run.get(f.kind)
            if run is not None and run[-1].seq + 1 == f.seq:
                run.append(f)
            else:
                open_run[f.kind] = run = [f]
                runs.append(run)
        out = []
        for run in sorted(runs, key=lambda r: r[0].seq):
            if len(run) == 1:
                out.append(str(run[0]))
            else:
                first = run[0]
                out.append(
                    f"INVALID: seq {first.seq}-{run[-1].seq}: {first.kind} "
                    f"({len(run)} records; the first: {str(first).split(': ', 2)[-1]})"
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "status": self.status,
            "unanchored": self.unanchored,
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "files": self.files,
            "problems": [f.to_dict() for f in self.findings],
            "warnings": self.warnings,
            "checkpoints": self.checkpoints,
            "requested": {
                "first_seq": self.first_seq,
                "last_seq": self.requested_last_seq,
                "first_ts": self.first_ts,
                "last_ts": self.requested_last_ts,
            },
            "verified": {"first_seq": self.first_seq, "last_seq": self.verified_last_seq},
        }
