"""Property tests: any single tampering before the last record is found, at its seq."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskaudit import verify_paths
from riskaudit.format import event_line
from riskaudit.log import line_hash
from tests.helpers import build_log, write_lines

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
event_data = st.dictionaries(st.text(min_size=1, max_size=8), json_scalars, max_size=4)
logs = st.lists(event_data, min_size=2, max_size=30).map(build_log)
SETTINGS = settings(
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def verify_lines(lines: list[bytes], raw: bytes | None = None) -> list[tuple[int, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.jsonl"
        if raw is not None:
            path.write_bytes(raw)
        else:
            write_lines(path, lines)
        return [(f.seq, f.kind) for f in verify_paths([path]).findings]


@SETTINGS
@given(logs)
def test_untouched_logs_verify(lines: list[bytes]) -> None:
    """A log nobody touched always verifies."""
    assert verify_lines(lines) == []


@SETTINGS
@given(logs, st.data())
def test_changed_byte_is_found_at_its_record(lines: list[bytes], data: st.DataObject) -> None:
    """One byte changed anywhere in a record before the last (its newline included)."""
    k = data.draw(st.integers(0, len(lines) - 2), label="line index")
    raw = bytearray(b"\n".join(lines) + b"\n")
    offset = sum(len(line) + 1 for line in lines[:k])
    pos = offset + data.draw(st.integers(0, len(lines[k])), label="offset in line")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]), label="new byte")
    raw[pos] = new
    findings = verify_lines(lines, bytes(raw))
    assert findings, "tampering not detected"
    assert findings[0][0] == k + 1, findings


@SETTINGS
@given(logs, st.data())
def test_deleted_line_is_named(lines: list[bytes], data: st.DataObject) -> None:
    """A deleted record is reported as deleted, with its seq."""
    k = data.draw(st.integers(0, len(lines) - 2))
    tampered = lines[:k] + lines[k + 1 :]
    assert verify_lines(tampered)[0] == (k + 1, "deleted")


@SETTINGS
@given(logs, st.data())
def test_duplicated_line_is_named(lines: list[bytes], data: st.DataObject) -> None:
    """A record copied to a later place in the same file is reported as duplicated."""
    k = data.draw(st.integers(0, len(lines) - 2))
    j = data.draw(st.integers(k + 1, len(lines) - 1), label="insert before index")
    tampered = [*lines[:j], lines[k], *lines[j:]]
    assert verify_lines(tampered)[0] == (k + 1, "duplicated")


@SETTINGS
@given(logs, st.data())
def test_swapped_lines_are_named(lines: list[bytes], data: st.DataObject) -> None:
    """Two records swapped are reported as reordered, naming the earlier seq."""
    i = data.draw(st.integers(0, len(lines) - 3))
    j = data.draw(st.integers(i + 1, len(lines) - 2))
    tampered = list(lines)
    tampered[i], tampered[j] = tampered[j], tampered[i]
    assert verify_lines(tampered)[0] == (i + 1, "reordered")


@SETTINGS
@given(logs, st.data())
def test_forged_line_is_named(lines: list[bytes], data: st.DataObject) -> None:
    """A forged record with valid JSON and a plausible seq and prev is reported as inserted."""
    k = data.draw(st.integers(1, len(lines) - 1), label="insert before index")
    # The record before the insertion point has seq k; a forger claims k or k+1.
    seq = data.draw(st.sampled_from([k, k + 1]), label="forged seq")
    linked = data.draw(st.booleans(), label="prev links")
    if linked:
        prev = line_hash(lines[seq - 2]) if seq >= 2 else b"0" * 64
    else:
        prev = bytes(data.draw(st.binary(min_size=32, max_size=32)).hex(), "ascii")
    body: dict[str, Any] = {"forged": True}
    import orjson

    forged = event_line(seq, prev, 1_795_683_600_000_000_000, orjson.dumps(body)[1:])
    tampered = [*lines[:k], forged, *lines[k:]]
    assert verify_lines(tampered)[0] == (seq, "inserted")
