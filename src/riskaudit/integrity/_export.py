"""Verifiable exports: a selection of records a regulator can check on its own.

An export directory holds:

* ``records.jsonl`` — the selected event records, byte for byte as in the log;
* ``records.csv`` (``--format csv``) — the same records for spreadsheets, ``data.*`` and
  ``metadata.*`` flattened into columns; regenerated and compared by ``verify-export``;
* ``chain.jsonl`` — every record from the first selected one up to and including the
  first checkpoint that covers the last selected one: the chain that connects the
  selection to a signature (a linear hash chain needs every line in between);
* ``manifest.json`` — the selection, counts, ``seq`` and time ranges, the stream id,
  the covering checkpoint, and the SHA-256 of every file;
* ``SHA256SUMS`` — the same digests in ``sha256sum -c`` format.

Checking it (``riskaudit verify-export`` does all of this, and docs/format.md shows it
with standard tools): the digests match; ``chain.jsonl`` is consecutive and linked; its
last line is a checkpoint covering the line before it, signed by a trusted key over the
manifest's stream id; every line of ``records.jsonl`` is identical to the chain's line
with the same ``seq``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from riskaudit.errors import AuditFormatError
from riskaudit.format import atomic_write, format_ts, line_hash, parse_ts, parse_utc, split_head
from riskaudit.integrity._keys import PublicKey, check_signature, signed_text
from riskaudit.integrity._reuse import ReusedIds
from riskaudit.integrity._stream import expand, line_chunks, order

EXPORT_FORMAT = "riskaudit-export/1"
_FIXED = ("seq", "ts", "event_id", "event_type", "priority", "source", "timestamp_ns")

# What parse_time accepts, exactly: the same text is the OpenAPI ``pattern`` of the event
# API's ``since``/``until``, so the schema and the check cannot disagree. ASCII digits only,
# every date that exists (29 February in leap years alone), no leap second, no offset but Z.
_YEAR = "(?:19[7-9][0-9]|[2-9][0-9]{3})"
_LEAP_YEAR = (
    "(?:19(?:7[26]|8[048]|9[26])|[2-9][0-9](?:0[48]|[2468][048]|[13579][26])"
    "|(?:[2468][048]|[3579][26])00)"
)
_MONTH_DAY = (
    "(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
    "|(?:0[13578]|1[02])-31)"
)
_CLOCK = "T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?Z"
#: An ECMA-262 regular expression (JSON Schema's dialect) that Python reads the same way.
TIME_PATTERN = f"^(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)(?:{_CLOCK})?$"
#: The accepted forms in words, for messages and the API's parameter descriptions.
TIME_FORMS = (
    "a UTC date 1970-01-01 to 9999-12-31 (midnight), or a time like 2026-11-26T09:30:00Z "
    "with an optional fraction of 1 to 9 digits (2026-11-26T09:30:00.123Z)"
)
_TIME = re.compile(TIME_PATTERN)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which event records to export (all conditions must hold)."""

    since_ns: int | None = None
    until_ns: int | None = None
    types: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()

    def matches(self, rec: dict[str, Any]) -> bool:
        if "event_id" not in rec or "kind" in rec:
            return False
        if self.types and rec.get("event_type") not in self.types:
            return False
        if self.sources and rec.get("source") not in self.sources:
            return False
        if self.since_ns is not None or self.until_ns is not None:
            ts = parse_ts(rec["ts"])
            if self.since_ns is not None and ts < self.since_ns:
                return False
            if self.until_ns is not None and ts >= self.until_ns:
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": None if self.since_ns is None else format_ts(self.since_ns),
            "until": None if self.until_ns is None else format_ts(self.until_ns),
            "types": sorted(self.types),
            "sources": sorted(self.sources),
        }


def parse_time(text: str) -> int:
    """``2026-11-26``, ``2026-11-26T09:30:00Z`` or a full format-v1 ``ts``, to ns: exactly
    the text ``TIME_PATTERN`` matches (no spaces, no offset but ``Z``, no leap second)."""
    if _TIME.fullmatch(text) is None:
        raise AuditFormatError(f"{text!r} is not {TIME_FORMS}")
    try:
        return parse_utc(text)
    except ValueError as exc:  # unreachable while TIME_PATTERN is right
        raise AuditFormatError(f"{text!r} is not {TIME_FORMS}") from exc


def _lines(paths: list[str]) -> Iterator[bytes]:
    for src in order(expand(paths)):
        for lines, complete in line_chunks(src.path):
            if complete:
                yield from lines


def flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    """``data.a.b`` columns; lists and scalars as JSON text (strings as they are)."""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}", v, out)
    elif isinstance(value, str):
        out[prefix] = value
    else:
        out[prefix] = orjson.dumps(value).decode()


def render_csv(lines: list[bytes]) -> bytes:
    """The CSV view of event record lines (deterministic: verify-export re-renders it)."""
    rows = []
    extra: set[str] = set()
    for line in lines:
        rec = orjson.loads(line)
        row = {k: str(rec.get(k, "")) for k in _FIXED}
        flat: dict[str, str] = {}
        flatten("data", rec.get("data", {}), flat)
        flatten("metadata", rec.get("metadata", {}), flat)
        row.update(flat)
        extra.update(flat)
        rows.append(row)
    columns = [*_FIXED, *sorted(extra)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


@dataclass(slots=True)
class ExportResult:
    directory: Path
    manifest: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def export(
    paths: list[str], selection: Selection, out: Path, fmt: str = "jsonl", *, force: bool = False
) -> ExportResult:
    """Write the export bundle for the selected records of the stream in ``paths``.

    ``out`` must be new or empty: a bundle is evidence, and writing one into another
    would mix two exports (``force`` replaces what is there, whole).
    """
    if fmt not in ("jsonl", "csv"):
        raise AuditFormatError(f"format {fmt!r}: use jsonl or csv")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise AuditFormatError(
                f"{out} exists and is not empty: refusing to write an export bundle over it "
                "(choose a new directory, or --force to replace it whole)"
            )
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    selected: list[bytes] = []
    stream = None
    checkpoints: list[tuple[int, int, bytes]] = []  # (seq, covers_seq, line)
    for line in _lines(paths):
        head = split_head(line)
        if head is None:
            continue
        if b'"kind":"' in line[:120]:
            rec = orjson.loads(line)
            if rec.get("kind") == "checkpoint":
                checkpoints.append((head[0], int(rec["covers_seq"]), line))
            elif stream is None and isinstance(rec.get("stream"), str):
                stream = rec["stream"]
            continue
        if selection.matches(orjson.loads(line)):
            selected.append(line)
    reuse = ReusedIds()
    for line in selected:
        head = split_head(line)
        if head is not None and b'"kind":"' not in line[:120]:
            reuse.see(head[0], line)
    warnings: list[str] = reuse.warnings()
    first = split_head(selected[0])[0] if selected else None  # type: ignore[index]
    last = split_head(selected[-1])[0] if selected else None  # type: ignore[index]
    cover = next((c for c in checkpoints if last is not None and c[1] >= last), None)
    chain: list[bytes] = []
    if first is not None:
        end = cover[0] if cover else None
        for line in _lines(paths):
            head = split_head(line)
            if head is None or head[0] < first or (end is not None and head[0] > end):
                continue
            if chain and head[0] != split_head(chain[-1])[0] + 1:  # type: ignore[index]
                continue  # a copy of a record (rotation) or a hole: keep the first run
            chain.append(line)
        if cover is None:
            warnings.append(
                f"no checkpoint covers seq {last} yet: the chain is included to the end of the "
                "log but no signature anchors it (export again after the next checkpoint)"
            )
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {
        "records.jsonl": b"".join(line + b"\n" for line in selected),
        "chain.jsonl": b"".join(line + b"\n" for line in chain),
    }
    if fmt == "csv":
        files["records.csv"] = render_csv(selected)
    for name, data in files.items():
        atomic_write(out / name, data)
    first_rec = orjson.loads(selected[0]) if selected else {}
    last_rec = orjson.loads(selected[-1]) if selected else {}
    manifest: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "created": format_ts(time.time_ns()),
        "stream": stream,
        "selection": selection.to_dict(),
        "records": {
            "count": len(selected),
            "first_seq": first,
            "last_seq": last,
            "first_ts": first_rec.get("ts"),
            "last_ts": last_rec.get("ts"),
        },
        "chain": {
            "first_seq": split_head(chain[0])[0] if chain else None,  # type: ignore[index]
            "last_seq": split_head(chain[-1])[0] if chain else None,  # type: ignore[index]
            "checkpoint": cover[2].decode() if cover else None,
        },
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            for name, data in files.items()
        },
        "warnings": warnings,
    }
    atomic_write(out / "manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    sums = "".join(f"{m['sha256']}  {name}\n" for name, m in manifest["files"].items())
    atomic_write(out / "SHA256SUMS", sums.encode())
    return ExportResult(out, manifest, warnings)


@dataclass(slots=True)
class ExportCheck:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    records: int = 0

    @property
    def valid(self) -> bool:
        return not self.problems


def verify_export(directory: Path, keys: list[PublicKey] | None) -> ExportCheck:
    """Check an export bundle (see the module docstring for what is checked)."""
    check = ExportCheck()
    try:
        manifest = orjson.loads((directory / "manifest.json").read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        check.problems.append(f"manifest.json: {exc}")
        return check
    if manifest.get("format") != EXPORT_FORMAT:
        check.problems.append(f"manifest.json: format is not {EXPORT_FORMAT}")
        return check
    listed = set(manifest.get("files", {}))
    for extra in sorted(p.name for p in directory.iterdir() if p.name not in listed):
        if extra not in ("manifest.json", "SHA256SUMS"):
            check.problems.append(f"{extra}: in the bundle but not listed in its manifest")
    contents: dict[str, bytes] = {}
    for name, meta in manifest.get("files", {}).items():
        try:
            data = (directory / name).read_bytes()
        except OSError as exc:
            check.problems.append(f"{name}: {exc}")
            continue
        contents[name] = data
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            check.problems.append(f"{name}: SHA-256 differs from the manifest (file changed)")
    chain = contents.get("chain.jsonl", b"").splitlines()
    by_seq: dict[int, bytes] = {}
    prev: bytes | None = None
    expect: int | None = None
    for line in chain:
        head = split_head(line)
        if head is None:
            check.problems.append("chain.jsonl: a line is not a format-v1 record")
            break
        if expect is not None and (head[0] != expect or head[1] != prev):
            check.problems.append(f"chain.jsonl: broken at seq {head[0]}")
            break
        by_seq[head[0]] = line
        prev, expect = line_hash(line), head[0] + 1
    cp_text = manifest.get("chain", {}).get("checkpoint")
    if cp_text is None:
        check.warnings.append("no checkpoint anchors this export (unsealed)")
    elif chain:
        if chain[-1] != cp_text.encode():
            check.problems.append("chain.jsonl does not end with the manifest's checkpoint")
        cp = orjson.loads(chain[-1])
        covered = by_seq.get(int(cp["covers_seq"]))
        if covered is None or line_hash(covered).decode() != cp["covers_hash"]:
            check.problems.append("the checkpoint does not cover the chain's last record")
        if keys is None:
            check.warnings.append("signature not checked: give --public-key or --keyring")
        else:
            why = check_signature(
                keys,
                cp.get("key_id"),
                cp.get("sig"),
                signed_text(
                    str(manifest.get("stream")), int(cp["covers_seq"]), cp["covers_hash"], cp["ts"]
                ),
                parse_ts(cp["ts"]),
            )
            if why is not None:
                check.problems.append(f"checkpoint: {why}")
    records = contents.get("records.jsonl", b"").splitlines()
    check.records = len(records)
    for line in records:
        head = split_head(line)
        if head is None or by_seq.get(head[0]) != line:
            seq = head[0] if head else "?"
            check.problems.append(f"records.jsonl: seq {seq} is not the chain's record")
    if len(records) != manifest.get("records", {}).get("count"):
        check.problems.append("records.jsonl: count differs from the manifest")
    if "records.csv" in contents and contents["records.csv"] != render_csv(records):
        check.problems.append("records.csv does not match records.jsonl")
    return check
