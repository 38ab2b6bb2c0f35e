"""Rotation: built-in by size and by time, reopen after a rename, copytruncate, compression."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import orjson
import pytest

from riskaudit import AuditConfig, AuditLog, verify_paths
from riskaudit.format import compress, list_segments
from riskaudit.integrity import generate, load_public_key
from riskaudit.log import _writer
from riskaudit.settings import Rotation
from tests.helpers import event, synced_clock


def all_records(directory: Path) -> list[dict[str, object]]:
    """Every record of every log file in the directory, decompressed."""
    from riskaudit.integrity import expand, line_chunks

    out: list[dict[str, object]] = []
    for path in expand([str(directory)]):
        for lines, _ok in line_chunks(path):
            out.extend(orjson.loads(line) for line in lines)
    return out


def event_numbers(directory: Path) -> list[int]:
    """The ``i`` of every event in the directory's log files, sorted (duplicates kept)."""
    return sorted(r["data"]["i"] for r in all_records(directory) if "event_id" in r)  # type: ignore[index]


def append_flushed(log: AuditLog, numbers: range) -> None:
    """Append an event per number, then wait until all are durable."""
    for i in numbers:
        log.append(event(i))
    log.flush(5)


def wait_for(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public, _ = generate(tmp_path / "keys")
    return private, public


def test_size_rotation_seals_segments_and_the_chain_spans_them(
    log_path: Path, keys: tuple[Path, Path]
) -> None:
    """Rotating by size leaves sealed, correctly named segments; verify passes across them."""
    cfg = AuditConfig(
        log_path=log_path, rotation=Rotation(max_bytes=20_000), signing_key_file=keys[0]
    )
    with AuditLog(cfg, clock=synced_clock) as log:
        for i in range(600):
            log.append(event(i))
            if i % 50 == 49:
                log.flush(5)  # rotation happens between batches
    segs = list_segments(log_path)
    assert len(segs) >= 5
    for seg in segs:
        lines = seg.path.read_bytes().splitlines()
        first, last = orjson.loads(lines[0]), orjson.loads(lines[-1])
        assert (first["seq"], last["seq"]) == (seg.first_seq, seg.last_seq)
        assert last["kind"] == "checkpoint" and last["covers_seq"] == seg.last_seq - 1
        assert oct(seg.path.stat().st_mode & 0o777) == "0o440"
    for seg in segs[1:]:
        assert orjson.loads(seg.path.read_bytes().splitlines()[0])["kind"] == "segment"
    report = verify_paths([log_path.parent], keys=[load_public_key(keys[1])])
    assert report.valid, report.findings
    assert event_numbers(log_path.parent) == list(range(600))


def test_time_rotation_follows_utc_boundaries(log_path: Path) -> None:
    """With an hourly interval the writer rotates when the (seamed) clock crosses the hour."""
    cfg = AuditConfig(log_path=log_path, rotation=Rotation(interval=3600))
    fake = [1_795_680_000.0 + 3000]  # 50 minutes past an hour
    with AuditLog(cfg, clock=synced_clock) as log:
        log._writer.wall = lambda: fake[0]
        log.append(event(1))
        log.flush(5)
        time.sleep(0.7)  # the writer learns the next boundary
        assert list_segments(log_path) == []
        fake[0] += 700  # past the hour
        log.append(event(2))
        wait_for(lambda: len(list_segments(log_path)) == 1)
        log.append(event(3))
        log.flush(5)
    assert verify_paths([log_path.parent]).valid


def test_restart_after_rotation_continues_the_chain(log_path: Path) -> None:
    """A crash between the rename and the new file: the next start continues from the
    newest segment instead of starting a new stream."""
    cfg = AuditConfig(log_path=log_path)
    with AuditLog(cfg, clock=synced_clock) as log:
        log.append(event(1))
        stream = log.stream
    last = orjson.loads(log_path.read_bytes().splitlines()[-1])["seq"]
    os.rename(
        log_path,
        log_path.with_name(f"risk_audit.seg-{1:020d}-{last:020d}-20261126T000000Z.jsonl"),
    )
    with AuditLog(cfg, clock=synced_clock) as log:
        assert log.stream == stream
        log.append(event(2))
    report = verify_paths([log_path.parent])
    assert report.valid, report.findings
    assert sum(1 for r in all_records(log_path.parent) if r.get("kind") == "genesis") == 1


def test_reopen_after_rename_seals_the_old_file(log_path: Path) -> None:
    """logrotate's create mode: rename, reopen (SIGUSR1's action); nothing lost or doubled."""
    with AuditLog(AuditConfig(log_path=log_path), clock=synced_clock) as log:
        append_flushed(log, range(100))
        rotated = log_path.with_name(log_path.name + ".1")
        os.rename(log_path, rotated)
        for i in range(100, 150):
            log.append(event(i))  # still lands in the renamed file
        log.reopen()
        wait_for(log_path.exists)
        append_flushed(log, range(150, 200))
        assert log.counters.reopened == 1
    assert orjson.loads(rotated.read_bytes().splitlines()[-1])["kind"] == "checkpoint"
    assert orjson.loads(log_path.read_bytes().splitlines()[0])["kind"] == "segment"
    assert event_numbers(log_path.parent) == list(range(200))
    assert verify_paths([log_path.parent]).valid


def test_a_rotation_after_logrotate_renamed_the_file_seals_it_where_it_went(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A built-in rotation that comes before the writer noticed a logrotate rename
    leaves the renamed file where it went, sealed, and renames nothing else."""
    monkeypatch.setattr(_writer, "IDENTITY_EVERY", 3600.0)  # only the rotation looks
    with AuditLog(AuditConfig(log_path=log_path), clock=synced_clock) as log:
        append_flushed(log, range(100))
        rotated = log_path.with_name(log_path.name + ".1")
        os.rename(log_path, rotated)
        log.rotate()
        wait_for(log_path.exists)
        append_flushed(log, range(100, 150))
        assert (log.counters.reopened, log.counters.rotations) == (1, 0)
    assert list_segments(log_path) == []
    assert orjson.loads(rotated.read_bytes().splitlines()[-1])["kind"] == "checkpoint"
    assert event_numbers(log_path.parent) == list(range(150))
    assert verify_paths([log_path.parent]).valid


def test_a_rotation_after_the_file_was_deleted_rescues_it_first(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A built-in rotation that comes before the writer noticed an ``rm`` of the open
    file copies it back from the handle, then rotates it: nothing confirmed is lost."""
    monkeypatch.setattr(_writer, "IDENTITY_EVERY", 3600.0)  # only the rotation looks
    with AuditLog(AuditConfig(log_path=log_path), clock=synced_clock) as log:
        append_flushed(log, range(100))
        log_path.unlink()
        log.rotate()
        wait_for(lambda: list_segments(log_path))
        append_flushed(log, range(100, 150))
        assert (log.counters.rescued, log.counters.rotations) == (1, 1)
    assert event_numbers(log_path.parent) == list(range(150))
    assert verify_paths([log_path.parent]).valid


def test_reopen_without_rotation_changes_nothing(log_path: Path) -> None:
    """A stray SIGUSR1 with the file still in place neither seals nor starts a file."""
    with AuditLog(AuditConfig(log_path=log_path), clock=synced_clock) as log:
        log.append(event(1))
        log.flush(5)
        log.reopen()
        log.append(event(2))
        log.flush(5)
        assert log.counters.reopened == 0
    assert [p.name for p in log_path.parent.iterdir() if p.name.endswith(".jsonl")] == [
        log_path.name
    ]


def copytruncate(path: Path, copy: Path) -> None:
    shutil.copyfile(path, copy)
    with open(path, "r+b") as fh:
        fh.truncate(0)


def test_copytruncate_is_detected_and_the_window_rewritten(log_path: Path) -> None:
    """Records written between copy and truncate come back from the ring; verify passes."""
    with AuditLog(AuditConfig(log_path=log_path, truncate_ring=1000), clock=synced_clock) as log:
        for i in range(200):
            log.append(event(i))
        log.flush(5)
        copy = log_path.with_name(log_path.name + ".1")
        shutil.copyfile(log_path, copy)
        for i in range(200, 230):  # the window copytruncate loses
            log.append(event(i))
        log.flush(5)
        with open(log_path, "r+b") as fh:
            fh.truncate(0)
        for i in range(230, 260):
            log.append(event(i))
        log.flush(5)
        assert log.counters.truncations == 1
    recs = [orjson.loads(x) for x in log_path.read_bytes().splitlines()]
    assert any(r.get("kind") == "truncated" for r in recs)
    report = verify_paths([log_path.parent])
    assert report.valid, report.findings
    events = {r["event_id"]: r for r in all_records(log_path.parent) if "event_id" in r}
    assert sorted(r["data"]["i"] for r in events.values()) == list(range(260))  # type: ignore[index]


def test_copytruncate_with_a_small_ring_names_the_missing_range(log_path: Path) -> None:
    """When the ring is smaller than the lost window, verify names exactly what is missing."""
    with AuditLog(AuditConfig(log_path=log_path, truncate_ring=5), clock=synced_clock) as log:
        for i in range(50):
            log.append(event(i))
        log.flush(5)
        copy = log_path.with_name(log_path.name + ".1")
        shutil.copyfile(log_path, copy)
        copied_last = orjson.loads(copy.read_bytes().splitlines()[-1])["seq"]
        for i in range(50, 80):
            log.append(event(i))
            log.flush(5)  # one record per batch: the ring holds only the last 5
        with open(log_path, "r+b") as fh:
            fh.truncate(0)
        log.append(event(80))
        log.flush(5)
    first_new = orjson.loads(log_path.read_bytes().splitlines()[0])["seq"]
    assert first_new > copied_last + 1
    report = verify_paths([log_path.parent])
    assert not report.valid
    gap = [f for f in report.findings if f.kind == "seq gap"]
    assert gap and gap[0].seq == copied_last + 1
    assert f"seq {copied_last + 1}-{first_new - 1}" in gap[0].detail


def test_a_partial_cut_is_kept_aside_before_the_rewrite(log_path: Path) -> None:
    """A file cut to a shorter length (not emptied) is copied aside, never destroyed."""
    with AuditLog(AuditConfig(log_path=log_path, truncate_ring=10), clock=synced_clock) as log:
        for i in range(100):
            log.append(event(i))
            log.flush(5)
        size = log_path.stat().st_size
        with open(log_path, "r+b") as fh:
            fh.truncate(size // 2)
        log.append(event(100))
        log.flush(5)
    kept = list(log_path.parent.glob("risk_audit.truncated-*.jsonl"))
    assert len(kept) == 1
    assert kept[0].stat().st_size == size // 2


@pytest.mark.parametrize("method", ["gzip", "zstd"])
def test_compressed_segments_verify_with_plain_ones(
    log_path: Path, keys: tuple[Path, Path], method: str
) -> None:
    """Compressing sealed segments keeps every byte: verify reads plain and compressed."""
    cfg = AuditConfig(
        log_path=log_path, rotation=Rotation(max_bytes=10_000), signing_key_file=keys[0]
    )
    with AuditLog(cfg, clock=synced_clock) as log:
        for i in range(300):
            log.append(event(i))
            if i % 30 == 29:
                log.flush(5)
    segs = list_segments(log_path)
    assert len(segs) >= 4
    for seg in segs[: len(segs) // 2]:
        done = compress(seg, method)
        assert done.path.exists() and not seg.path.exists()
    names = [s.path.name for s in list_segments(log_path)]
    assert any(n.endswith(".gz" if method == "gzip" else ".zst") for n in names)
    pub = [load_public_key(keys[1])]
    assert verify_paths([log_path.parent], keys=pub).valid
    # A sealed segment alone is anchored by the checkpoint that sealed the one before it.
    later = list_segments(log_path)[2]
    alone = verify_paths([later.path], keys=pub)
    assert alone.valid, alone.findings
    assert any("anchored by checkpoint" in w for w in alone.warnings)


def test_export_and_query_read_compressed_segments(log_path: Path, tmp_path: Path) -> None:
    """export (and the query API's reader) see every event across .gz, .zst and plain."""
    from typer.testing import CliRunner

    from riskaudit.cli import app
    from riskaudit.ops._query import Query, run_query

    with AuditLog(
        AuditConfig(log_path=log_path, rotation=Rotation(max_bytes=8_000)), clock=synced_clock
    ) as log:
        for i in range(200):
            log.append(event(i))
            if i % 20 == 19:
                log.flush(5)
    segs = list_segments(log_path)
    compress(segs[0], "gzip")
    compress(segs[1], "zstd")
    out = tmp_path / "bundle"
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--out", str(out), str(log_path.parent)])
    assert result.exit_code == 0, result.output
    checked = runner.invoke(app, ["verify-export", str(out)])
    assert checked.exit_code == 0, checked.output
    exported = (out / "records.jsonl").read_bytes().splitlines()
    assert sum(1 for x in exported if b'"event_id"' in x) == 200
    records, _next = run_query(
        str(log_path.parent), Query(limit=1000, types=frozenset({"PRE_TRADE_CHECK"}))
    )
    assert len(records) == 200


def test_a_rotated_copy_cut_mid_record_is_fine_when_the_record_is_elsewhere(
    log_path: Path,
) -> None:
    """copytruncate can copy half a record; when the whole record is in the newer file,
    verify notes it, and a cut the stream cannot explain is still `torn`."""
    with AuditLog(AuditConfig(log_path=log_path, truncate_ring=1000), clock=synced_clock) as log:
        for i in range(50):
            log.append(event(i))
        log.flush(5)
        copy = log_path.with_name(log_path.name + ".1")
        data = log_path.read_bytes()
        cut = data.rfind(b"\n", 0, len(data) - 1) + 1 + 60  # 60 bytes into the last record
        copy.write_bytes(data[:cut])
        with open(log_path, "r+b") as fh:
            fh.truncate(0)
        log.append(event(50))
        log.flush(5)
    report = verify_paths([log_path.parent])
    assert report.valid, report.findings
    assert any("taken mid-write" in w for w in report.warnings)
    log_path.write_bytes(b"")  # now nothing holds the whole record
    broken = verify_paths([copy])
    assert [f.kind for f in broken.findings] == ["torn"]
