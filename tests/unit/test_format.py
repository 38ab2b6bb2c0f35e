"""Format v1 against the published conformance vectors (copied from the design folder)."""

from __future__ import annotations

import hashlib
import json

import orjson
import pytest

from riskaudit import RiskEvent, verify_paths
from riskaudit.format import control_line, encode_event_body, event_line
from riskaudit.log import ZERO_HASH, format_ts, line_hash, parse_ts, split_head
from tests.conftest import VECTORS

README = json.loads((VECTORS / "README.json").read_text())
VALID = (VECTORS / "valid.jsonl").read_bytes().splitlines()


def test_record_hashes_match_the_vectors() -> None:
    """sha256 of each line's bytes (without newline) is the published record hash."""
    for i, line in enumerate(VALID, start=1):
        assert line_hash(line).decode() == README["record_hashes"][str(i)]
        assert hashlib.sha256(line).hexdigest() == README["record_hashes"][str(i)]


def test_each_prev_names_the_previous_hash() -> None:
    """prev of seq 1 is 64 zeros; every other prev is the previous record's hash."""
    prev = ZERO_HASH
    for i, line in enumerate(VALID, start=1):
        head = split_head(line)
        assert head == (i, prev)
        prev = line_hash(line)


def test_encoder_reproduces_the_vector_bytes() -> None:
    """Our encoder writes the vectors' control and event lines byte for byte."""
    records = [orjson.loads(line) for line in VALID]
    genesis = records[0]
    line = control_line(
        1,
        ZERO_HASH,
        "genesis",
        {k: genesis[k] for k in ("stream", "format", "host")},
        parse_ts(genesis["ts"]),
    )
    assert line == VALID[0]
    start = records[1]
    line = control_line(
        2,
        line_hash(VALID[0]),
        "start",
        {k: start[k] for k in ("pid", "host", "version")},
        parse_ts(start["ts"]),
    )
    assert line == VALID[1]
    for i in (2, 3, 4):
        rec = records[i]
        body = encode_event_body(RiskEvent.from_dict(rec))
        line = event_line(rec["seq"], line_hash(VALID[i - 1]), parse_ts(rec["ts"]), body)
        assert line == VALID[i]


def test_seq_and_prev_are_the_first_two_keys() -> None:
    """Every vector line starts with seq then prev, so verifiers can take a fast path."""
    for line in VALID:
        assert list(orjson.loads(line))[:2] == ["seq", "prev"]


@pytest.mark.parametrize(
    "ns, text",
    [
        (0, "1970-01-01T00:00:00.000000000Z"),
        (1_795_683_600_000_153_201, "2026-11-26T09:00:00.000153201Z"),
        (1_795_683_600_999_999_999, "2026-11-26T09:00:00.999999999Z"),
    ],
)
def test_timestamps_are_rfc3339_utc_with_nanoseconds(ns: int, text: str) -> None:
    """ts has nine fractional digits and Z, and parses back to the same nanosecond."""
    assert format_ts(ns) == text
    assert parse_ts(text) == ns


@pytest.mark.parametrize(
    "name, seq, kind",
    [
        ("tampered-modified-seq3.jsonl", 3, "modified"),
        ("tampered-deleted-seq4.jsonl", 4, "deleted"),
        ("tampered-swapped-seq3-4.jsonl", 3, "reordered"),
        ("tampered-torn-tail.jsonl", 7, "torn"),
    ],
)
def test_tampered_vectors_give_the_expected_finding(name: str, seq: int, kind: str) -> None:
    """Each tampered vector is INVALID with the finding README.json names."""
    report = verify_paths([VECTORS / name])
    assert not report.valid
    assert [(f.seq, f.kind) for f in report.findings] == [(seq, kind)]


def test_valid_vector_verifies() -> None:
    """The valid vector verifies: 6 records, seq 1-6."""
    report = verify_paths([VECTORS / "valid.jsonl"])
    assert report.valid, report.findings
    assert (report.records, report.first_seq, report.last_seq) == (6, 1, 6)


def test_truncated_vector_chain_alone_looks_valid() -> None:
    """Without checkpoints a cut-off tail is invisible to the chain (issue 4 adds them)."""
    report = verify_paths([VECTORS / "tampered-truncated-after-seq3.jsonl"])
    assert report.valid and report.last_seq == 3


def test_an_unsequenced_line_is_json_whatever_the_log_path_and_reason() -> None:
    """The one builder of unsequenced emergency lines escapes the path and reason and
    splices the event body whole (the hand-off and the sink both use it)."""
    from riskaudit.format import unsequenced_line
    from tests.helpers import event

    body = encode_event_body(event(7, symbol="X"))
    odd = 'C:\\logs\\"quoted"\n.jsonl'
    line = unsequenced_line('queue "full"', 1_700_000_000_000_000_000, body=body, log=odd)
    parsed = orjson.loads(line)
    assert list(parsed) == ["kind", "ts", "reason", "log", "event"]
    assert parsed["log"] == odd and parsed["reason"] == 'queue "full"'
    assert parsed["event"] == orjson.loads(b"{" + body)
    broken = orjson.loads(unsequenced_line("bad", 0, event_repr="<RiskEvent ?>"))
    assert broken == {
        "kind": "unsequenced",
        "ts": "1970-01-01T00:00:00.000000000Z",
        "reason": "bad",
        "event_repr": "<RiskEvent ?>",
    }
