"""recover reads emergency lines from plain text, Docker json-file and CRI logs."""

from __future__ import annotations

from pathlib import Path

import orjson

from riskaudit.recovery import find_emergency_lines

RECORD = (
    b'{"seq":7,"prev":"'
    + b"a" * 64
    + b'","ts":"2026-11-26T09:00:00.000000000Z","x":"'
    + b"y" * 40_000
    + b'"}'
)


def test_plain_text_with_other_output_around(tmp_path: Path) -> None:
    """Emergency lines are found among other output, even after a prefix."""
    f = tmp_path / "out.txt"
    f.write_bytes(b"hello\n2026 INFO AUDIT_EMERGENCY " + RECORD + b"\nbye\n")
    found = list(find_emergency_lines(f))
    assert [x.payload for x in found] == [RECORD] and found[0].line == 2


def test_docker_json_file_lines_split_at_16k_are_joined(tmp_path: Path) -> None:
    """Docker splits long lines into 16 KiB entries; only the last ends in newline."""
    text = (b"AUDIT_EMERGENCY " + RECORD + b"\n").decode()
    pieces = [text[i : i + 16384] for i in range(0, len(text), 16384)]
    lines = [orjson.dumps({"log": "starting\n", "stream": "stderr", "time": "t"})]
    lines += [orjson.dumps({"log": p, "stream": "stdout", "time": "t"}) for p in pieces]
    f = tmp_path / "c-json.log"
    f.write_bytes(b"\n".join(lines) + b"\n")
    found = list(find_emergency_lines(f))
    assert len(pieces) >= 3
    assert [x.payload for x in found] == [RECORD] and found[0].line == 2


def test_cri_partial_lines_are_joined(tmp_path: Path) -> None:
    """CRI marks partial lines P and the last piece F; interleaved stderr is separate."""
    line = b"AUDIT_EMERGENCY " + RECORD
    pieces = [line[i : i + 16384] for i in range(0, len(line), 16384)]
    out = []
    for i, p in enumerate(pieces):
        flag = b"F" if i == len(pieces) - 1 else b"P"
        out.append(b"2026-11-26T09:00:00.1Z stdout " + flag + b" " + p)
        if i == 0:
            out.append(b"2026-11-26T09:00:00.1Z stderr F some warning")
    f = tmp_path / "0.log"
    f.write_bytes(b"\n".join(out) + b"\n")
    assert [x.payload for x in find_emergency_lines(f)] == [RECORD]
