"""The core's commit turns (``riskaudit._native.commit_turns``): take, chain, write, mark.

While the primary takes every write the writer thread hands whole turns to the core and
comes back to Python only when something needs it. These tests hold the core to that
contract: what it writes is the chain, one call commits turn after turn, it stops at
each limit the writer gives it, and trouble comes back with the batch in hand (the
writer's own handling of it is tested through AuditLog in test_writer_faults.py,
test_fallback.py and the fault suites).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from riskaudit import AuditConfig, AuditLog, verify_paths
from riskaudit._native import (
    FAILED,
    PRIMARY,
    SHRUNK,
    Chunk,
    Queue,
    Watermark,
    commit_turns,
)
from riskaudit.format import encode_event_body
from riskaudit.log import ZERO_HASH, _writer, line_hash
from tests.helpers import event, records, synced_clock

CHUNK = 1 << 20


@pytest.fixture
def fd(tmp_path: Path) -> Iterator[int]:
    f = os.open(tmp_path / "log.jsonl", os.O_RDWR | os.O_CREAT, 0o600)
    yield f
    os.close(f)


# Every push here says may_yield=False: another test's writer thread waiting for the
# GIL would otherwise make a push step aside (-2) and queue nothing.


def body(i: int) -> bytes:
    return encode_event_body(event(i))


def turn(
    q: Queue, wm: Watermark, fd: int, offset: int = 0, prev: bytes = ZERO_HASH, **limits: Any
) -> tuple[bytes, int, list[Any], Any]:
    args: dict[str, Any] = {
        "wait": 0.0,
        "deadline": time.monotonic() + 10,
        "max_turns": 0,
        "max_records": 0,
        "until_offset": 0,
        "keep_records": 1 << 30,
    }
    args.update(limits)
    return commit_turns(
        q,
        wm,
        None,
        prev,
        CHUNK,
        fd,
        offset,
        args["wait"],
        args["deadline"],
        args["max_turns"],
        args["max_records"],
        args["until_offset"],
        True,
        args["keep_records"],
    )


def test_a_turn_writes_the_chain_and_marks_it_durable(fd: int) -> None:
    """One turn writes each record's line after the previous one's hash, returns the
    bytes it wrote and the new head, and marks the range durable in the primary."""
    q, wm = Queue(1, 1), Watermark(0)
    bodies = [body(i) for i in range(5)]
    for b in bodies:
        q.push(b, 100, 1 << 20, False)
    prev, offset, turns, pending = turn(q, wm, fd, max_turns=1)
    assert pending is None and len(turns) == 1
    first, last, first_ts, size, sync_ns, done_ns, chunks = turns[0]
    data = os.pread(fd, 1 << 20, 0)
    assert (first, last, size, offset) == (1, 5, len(data), len(data))
    assert b"".join(c for _seq, c in chunks) == data
    # Handed over without a copy, read-only: the writer's ring holds the core's bytes.
    assert all(type(c) is Chunk for _seq, c in chunks)
    view = memoryview(chunks[0][1])
    assert view.readonly and bytes(chunks[0][1]) == bytes(view) == data[: len(view)]
    with pytest.raises(TypeError):
        view[0] = 0
    assert sync_ns > 0 and done_ns >= first_ts > 0
    h = ZERO_HASH
    for i, line in enumerate(data.splitlines()):
        rec = orjson.loads(line)
        assert (rec["seq"], rec["prev"].encode()) == (i + 1, h)
        assert bodies[i] in line
        h = line_hash(line)
    assert prev == h
    assert (wm.durable, wm.ranges(PRIMARY, 1, 5)) == (5, [(1, 5)])


def test_one_call_commits_turn_after_turn_until_kicked(fd: int) -> None:
    """Without a limit the core keeps committing as records come (each burst its own
    durable turn, waiters woken at once), goes on after a flush's hurry, and returns
    when kicked."""
    q, wm = Queue(1, 1), Watermark(0)
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(turn(q, wm, fd, wait=5.0, keep_records=4)))
    t.start()
    for burst in range(3):
        for i in range(4):
            q.push(body(burst * 4 + i), 100, 1 << 20, False)
        assert wm.wait(burst * 4 + 4, 5.0)  # durable while the call goes on
        q.hurry()  # a flush: take now, but nothing for Python to do
    time.sleep(0.05)
    assert t.is_alive()
    q.kick()
    t.join(5.0)
    _prev, offset, turns, pending = out[0]
    assert pending is None and len(turns) >= 3
    assert [(t[0], t[1]) for t in turns][-1][1] == 12
    data = os.pread(fd, 1 << 20, 0)
    assert offset == len(data)
    # Only the newest 4 records' chunks come back (the writer's ring keeps no more):
    # older turns' bytes were freed as soon as newer turns held enough.
    kept = b"".join(c for t in turns for _seq, c in t[6])
    assert data.endswith(kept) and 4 <= kept.count(b"\n") < 12
    assert all(not t[6] for t in turns[:-1] if turns[-1][1] - turns[-1][0] + 1 >= 4)


@pytest.mark.parametrize(
    "limit", [{"max_turns": 1}, {"max_records": 3}, {"until_offset": 1}, {"deadline": 0.0}]
)
def test_the_core_returns_at_each_limit(fd: int, limit: dict[str, Any]) -> None:
    """One turn turns and the call returns at once when it reached the turn, record or
    byte limit, or the deadline (the writer's periodic checks), however long it may wait."""
    q, wm = Queue(1, 1), Watermark(0)
    for i in range(3):
        q.push(body(i), 100, 1 << 20, False)
    started = time.monotonic()
    _prev, _offset, turns, pending = turn(q, wm, fd, wait=2.0, **limit)
    assert time.monotonic() - started < 1.5
    assert pending is None and [(t[0], t[1]) for t in turns] == [(1, 3)]


def test_an_idle_window_returns_nothing(fd: int) -> None:
    """Nothing queued for a whole wait: back to Python with nothing done."""
    q, wm = Queue(1, 1), Watermark(0)
    prev, offset, turns, pending = turn(q, wm, fd, wait=0.05)
    assert (prev, offset, turns, pending) == (ZERO_HASH, 0, [], None)


def test_a_shrunk_file_comes_back_unwritten(fd: int) -> None:
    """A file cut below what was written (copytruncate) is not written past its end:
    the chained batch comes back as SHRUNK, for the writer's rewrite."""
    q, wm = Queue(1, 1), Watermark(0)
    q.push(body(0), 100, 1 << 20, False)
    prev, offset, _turns, _ = turn(q, wm, fd, max_turns=1)
    os.ftruncate(fd, 10)
    q.push(body(1), 100, 1 << 20, False)
    new_prev, new_offset, turns, pending = turn(q, wm, fd, offset, prev)
    assert turns == [] and new_offset == offset and os.fstat(fd).st_size == 10
    status, _errno, _text, first, _ts, last, chunks = pending
    assert (status, first, last, wm.durable) == (SHRUNK, 2, 2, 1)
    line = chunks[0][1].rstrip(b"\n")
    assert orjson.loads(line)["prev"].encode() == prev and new_prev == line_hash(line)


def test_a_failed_write_comes_back_with_its_errno(tmp_path: Path) -> None:
    """A write the kernel refuses comes back as FAILED with errno and text, the batch
    chained (the head moves on: the records go to the next destination) and unmarked."""
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"")
    ro = os.open(path, os.O_RDONLY)
    try:
        q, wm = Queue(1, 1), Watermark(0)
        q.push(body(0), 100, 1 << 20, False)
        prev, offset, turns, pending = turn(q, wm, ro)
    finally:
        os.close(ro)
    assert turns == [] and offset == 0 and wm.handled == 0
    status, err, text, first, _ts, last, chunks = pending
    assert (status, err, first, last) == (FAILED, 9, 1, 1)  # EBADF
    assert text == os.strerror(9)
    assert prev == line_hash(chunks[0][1].rstrip(b"\n"))


def test_the_writer_books_many_turns_per_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through AuditLog (default config, no on_durable hook) one core call commits
    several batches, and the log the turns wrote verifies."""
    calls: list[int] = []
    real = commit_turns

    def counted(*args: Any) -> Any:
        out = real(*args)
        calls.append(len(out[2]))
        return out

    monkeypatch.setattr(_writer, "commit_turns", counted)
    with AuditLog(AuditConfig(log_path=tmp_path / "log.jsonl"), clock=synced_clock) as log:
        for burst in range(5):
            for i in range(10):
                log.append(event(burst * 10 + i))
            time.sleep(0.05)
        log.flush()
    batches = log._writer.counters.batches  # read once the writer is joined
    # The start and stop records go the Python way; every turn of the core is a batch.
    assert max(calls) >= 2 and sum(calls) <= batches
    assert verify_paths([tmp_path / "log.jsonl"]).valid
    assert len([r for r in records(tmp_path / "log.jsonl") if "event_id" in r]) == 50
