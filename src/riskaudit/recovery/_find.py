"""Where emergency lines can be found, and how to read them back.

``AUDIT_EMERGENCY`` lines reach whatever keeps the process's stdout:

* plain text (a terminal capture, ``journalctl`` output, a file);
* Docker's json-file driver: one JSON object per line, ``{"log": "...", "stream":
  "stdout", "time": ...}``; Docker splits lines longer than 16 KiB into several entries,
  and only the last one ends in ``\\n``: they are joined;
* the Kubernetes CRI format: ``<time> <stream> <P|F> <text>``, where ``P`` marks a
  partial line continued by the next entry of the same stream, up to an ``F``;
* a spool directory (records that were durable there but never replayed).

Each found payload keeps where it was found (file and line), which ``recover`` records.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from riskaudit.format import EMERGENCY_PREFIX, SPOOL_GLOB
from riskaudit.integrity import open_binary

_PREFIX = EMERGENCY_PREFIX.encode()
_CRI = re.compile(rb"^(\S+) (stdout|stderr) ([PF]) ?(.*)$")


@dataclass(frozen=True, slots=True)
class Found:
    """One emergency payload (the bytes after the prefix) and where it was found."""

    payload: bytes
    source: str
    line: int

    @property
    def sequenced(self) -> bool:
        return self.payload.startswith(b'{"seq":')


def _logical_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(first physical line number, joined text) for plain, Docker and CRI files."""
    partial: dict[bytes, tuple[int, list[bytes]]] = {}
    with open_binary(path) as fh:
        for number, physical in enumerate(fh, start=1):
            raw = physical.rstrip(b"\n")
            if raw.startswith(b'{"log":'):
                try:
                    entry = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    yield number, raw
                    continue
                stream = str(entry.get("stream", "")).encode()
                text = str(entry.get("log", "")).encode("utf-8", "surrogatepass")
                start, parts = partial.pop(stream, (number, []))
                parts.append(text)
                if text.endswith(b"\n"):
                    yield start, b"".join(parts)[:-1]
                else:
                    partial[stream] = (start, parts)
                continue
            m = _CRI.match(raw)
            if m is not None:
                stream, flag, text = m.group(2), m.group(3), m.group(4)
                start, parts = partial.pop(stream, (number, []))
                parts.append(text)
                if flag == b"F":
                    yield start, b"".join(parts)
                else:
                    partial[stream] = (start, parts)
                continue
            yield number, raw
    for start, parts in partial.values():  # an unterminated partial line at the end
        yield start, b"".join(parts)


def find_emergency_lines(path: Path) -> Iterator[Found]:
    """Every AUDIT_EMERGENCY payload in a file of any supported format."""
    for number, text in _logical_lines(path):
        at = text.find(_PREFIX)
        if at >= 0:
            yield Found(text[at + len(_PREFIX) :].rstrip(b"\r"), str(path), number)


def spool_records(directory: Path) -> Iterator[Found]:
    """Record lines of every ``*.spool-*.jsonl`` file in a spool directory."""
    for path in sorted(directory.glob(SPOOL_GLOB)):
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if raw.endswith(b"\n") and raw.startswith(b'{"seq":'):
                    yield Found(raw[:-1], str(path), number)


def find_all(sources: list[Path]) -> Iterator[Found]:
    """Payloads from files and spool directories."""
    for src in sources:
        if src.is_dir():
            yield from spool_records(src)
        else:
            yield from find_emergency_lines(src)
