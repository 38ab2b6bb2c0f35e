"""The writer-under-faults rules, one deterministic case each (each failed on 0.1.0).

The seeded suites in tests/faults/ find these by chance; here each is built on purpose:
files laid out exactly as a failed write, a torn write or a cut volume leaves them, or a
fault injected at the file boundary, then the rule checked.
"""

from __future__ import annotations

import errno
import io
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from riskaudit import AuditConfig, AuditDegradedError, AuditLog, verify_paths
from riskaudit.format import (
    control_line,
    encode_event_body,
    event_line,
    split_head,
    write_durably,
)
from riskaudit.log import AppendFile, line_hash
from riskaudit.log._emergency import EmergencyOutput
from riskaudit.log._writer import Writer
from riskaudit.recovery import recover
from tests.helpers import (
    build_log,
    event,
    records,
    stream_event_ids,
    stream_records,
    synced_clock,
    write_lines,
)


def cfg(tmp_path: Path, **kw: object) -> AuditConfig:
    base = AuditConfig(
        log_path=tmp_path / "primary" / "log.jsonl",
        spool_dir=tmp_path / "spool",
        flush_interval=0.001,
        retry_max=0.05,
        host="test-host",
        schema_policy="off",
    )
    return base.with_(**kw)


def seqs_by_file(directory: Path) -> dict[str, list[int]]:
    return {
        f.name: [r["seq"] for r in records(f, checkpoints=True)]
        for f in sorted(directory.iterdir())
        if f.name.endswith(".jsonl") and ".torn-" not in f.name
    }


def wait_primary(log: AuditLog, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while log.health().destination != "primary":
        assert time.monotonic() < deadline, log.health()
        time.sleep(0.01)


def read_only_primary(monkeypatch: pytest.MonkeyPatch, path: Path) -> dict[str, bool]:
    """Opening the primary for writing fails with EROFS while ``state["read_only"]``
    (a volume mounted read-only at start, remounted read-write later)."""
    real_open = AppendFile.open
    state = {"read_only": True}

    def open_(f: AppendFile, *, create: bool = True) -> bool:
        if state["read_only"] and f.path == path:
            raise OSError(errno.EROFS, "injected: read-only file system")
        return real_open(f, create=create)

    monkeypatch.setattr(AppendFile, "open", open_)
    return state


def failing_spool_unlink(monkeypatch: pytest.MonkeyPatch, err: int) -> dict[str, bool]:
    """Unlinking a spool file fails with ``err`` while ``state["fail"]``."""
    real_unlink = os.unlink
    state = {"fail": True}

    def unlink(path: object, *args: object, **kw: object) -> None:
        if state["fail"] and ".spool-" in str(path):
            raise OSError(err, "injected")
        real_unlink(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "unlink", unlink)  # the os module _destinations unlinks with
    return state


class Broken:
    """Writes through AppendFile fail under chosen directories (or for chosen lines)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.dirs: set[Path] = set()
        self.when_line_has: bytes | None = None
        self.fired = 0
        real = AppendFile.write

        def write(f: AppendFile, chunks: list[bytes]) -> None:
            data = b"".join(chunks)
            if any(d in f.path.parents for d in self.dirs) or (
                self.when_line_has is not None and self.when_line_has in data
            ):
                self.fired += 1
                raise OSError(errno.EIO, "injected")
            real(f, chunks)

        monkeypatch.setattr(AppendFile, "write", write)
        # Every write through the patched Python path, none in the core's turns.
        monkeypatch.setattr(Writer, "native_commit", False)

    def spool_one(self, log: AuditLog, config: AuditConfig) -> None:
        """One record confirmed in the primary, the next durable in the spool while the
        primary fails, then the primary back (its spool replayed)."""
        log.append(event(0))
        log.flush()
        self.dirs.add(config.log_path.parent)
        log.append(event(1))
        log.flush()
        self.dirs.clear()
        wait_primary(log, timeout=5)

    def strand_on_stdout(self, log: AuditLog, config: AuditConfig) -> int:
        """One record confirmed, then primary and spool fail and the next reaches only
        stdout (flush raises); that record's seq. The faults stay on."""
        log.append(event(0))
        log.flush()
        self.dirs |= {config.log_path.parent, config.spool_dir}  # type: ignore[arg-type]
        lost = log.append(event(1))
        assert lost is not None
        with pytest.raises(AuditDegradedError):
            log.flush()
        return lost


# -- 1. bytes whose write or sync failed are never the chain head ---------------------


def test_primary_copy_of_spooled_records_is_set_aside_and_the_spool_replayed(
    tmp_path: Path,
) -> None:
    """A failed write left complete lines in the primary (the truncate back failed too)
    and the batch went to the spool; the process died. Start-up must not take those
    lines as the head: the file is set aside untouched, trusted up to the record before
    the spool's first, and the spool's copy is replayed into a new file before the
    spool is deleted."""
    config = cfg(tmp_path)
    lines = build_log([{"i": i} for i in range(10)])  # seq 1-12
    write_lines(config.log_path, lines)  # 9-12 are the failed batch's bytes
    spool = config.spool_dir
    assert spool is not None
    write_lines(spool / "log.jsonl.spool-00000000000000000009.jsonl", lines[8:])
    with AuditLog(config, clock=synced_clock) as log:
        assert log.health().untrusted, log.health()
        log.append(event(99))
    files = seqs_by_file(config.log_path.parent)
    aside = next(n for n in files if n.startswith("log.seg-"))
    assert aside.startswith("log.seg-00000000000000000001-00000000000000000008-")
    assert files["log.jsonl"][:4] == [9, 10, 11, 12]  # written again, from the spool
    segment = next(r for r in records(config.log_path) if r.get("kind") == "segment")
    assert segment["reason"] == "untrusted" and segment["previous"] == aside
    assert segment["previous_last_seq"] == 8
    assert not list(spool.iterdir())
    report = verify_paths([config.log_path.parent])
    assert report.valid, report.findings
    assert any("not part of the stream" in w for w in report.warnings)


def test_a_failed_primary_write_is_never_appended_to_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that reached the disk whole but reported an error, with the truncate back
    failing: the writer never appends to that file again (a stale offset there once cut
    confirmed records); the next file carries on and every event is there once."""
    from riskaudit.log import _destinations

    config = cfg(tmp_path)
    real = write_durably
    state = {"fail": 0}

    def all_then_eio(fd: int, chunks: list[bytes], offset: int) -> None:
        real(fd, chunks, offset)
        if state["fail"] and "/primary/" in os.readlink(f"/proc/self/fd/{fd}"):
            state["fail"] -= 1
            raise OSError(errno.EIO, "injected: data out, sync lost")

    monkeypatch.setattr(_destinations, "write_durably", all_then_eio)
    # Every write through the patched Python path, none in the core's turns.
    monkeypatch.setattr(Writer, "native_commit", False)
    monkeypatch.setattr(
        os, "ftruncate", lambda fd, n: (_ for _ in ()).throw(OSError(errno.EIO, "x"))
    )
    with AuditLog(config, clock=synced_clock) as log:
        for i in range(5):
            log.append(event(i))
        log.flush()
        size = config.log_path.stat().st_size
        state["fail"] = 1
        for i in range(5, 10):
            log.append(event(i))
        log.flush()  # durable in the spool
        wait_primary(log)
        for i in range(10, 15):
            log.append(event(i))
        log.flush()
    aside = next(config.log_path.parent.glob("log.seg-*.jsonl"))
    assert aside.stat().st_size > size  # the failed batch's bytes are still in it
    ids = [r["event_id"] for r in stream_records(config.log_path.parent) if "event_id" in r]
    assert len(ids) == len(set(ids)) == 15
    assert verify_paths([config.log_path.parent]).valid


# -- 2. a torn write: NULs then complete lines -------------------------------------------


def test_nul_run_followed_by_complete_lines_is_cut_as_a_torn_tail(tmp_path: Path) -> None:
    """A crash mid multi-page write: a run of NULs, then complete lines. The valid
    prefix ends before the NULs; everything from there on is copied aside, cut, and
    named by a repair record; verify passes (0.1.0 took the last parseable line as the
    head and verify failed for ever with bad json)."""
    config = cfg(tmp_path, spool_dir=None)
    lines = build_log([{"i": i} for i in range(10)])
    write_lines(config.log_path, lines[:8])
    with open(config.log_path, "ab") as f:
        f.write(b"\0" * 700 + b"\n".join(lines[9:]) + b"\n")
    with AuditLog(config, clock=synced_clock) as log:
        assert log.last_seq == 10  # 8 kept, then repair and start
    recs = records(config.log_path)
    repair = next(r for r in recs if r.get("kind") == "repair")
    kept = (config.log_path.parent / repair["kept_at"]).read_bytes()
    assert kept.startswith(b"\0" * 700) and kept.endswith(lines[-1] + b"\n")
    assert [r["seq"] for r in recs][:9] == list(range(1, 10))  # seq 9 on: new records
    report = verify_paths([config.log_path.parent])
    assert report.valid, report.findings


def test_torn_bytes_over_seqs_the_spool_holds_keep_the_file_untouched(tmp_path: Path) -> None:
    """The same torn write, but the spool holds those seqs (the batch failed over to
    it): the damage is not cut — the file is kept as it is and a new file replays the
    spool, so the confirmed copy is the one that counts."""
    config = cfg(tmp_path)
    lines = build_log([{"i": i} for i in range(10)])
    write_lines(config.log_path, lines[:8])
    with open(config.log_path, "ab") as f:
        f.write(b"\0" * 700 + b"\n".join(lines[9:]) + b"\n")
    before = config.log_path.read_bytes()
    assert config.spool_dir is not None
    write_lines(config.spool_dir / "log.jsonl.spool-00000000000000000009.jsonl", lines[8:])
    with AuditLog(config, clock=synced_clock):
        pass
    aside = next(config.log_path.parent.glob("log.seg-*.jsonl"))
    assert aside.read_bytes() == before
    assert [r["seq"] for r in records(config.log_path)][:4] == [9, 10, 11, 12]
    assert verify_paths([config.log_path.parent]).valid


# -- damage before the newest checkpoint, truncation ------------------------------------


def _log_with_checkpoint(config: AuditConfig, n: int = 20) -> list[bytes]:
    """A log of ``n`` records whose newest checkpoint (seq 16, covering 15) is in the
    sidecar, as the writer leaves it."""
    lines = build_log([{"i": i} for i in range(n - 3)])[: n - 1]
    cp = control_line(
        16,
        line_hash(lines[14]),
        "checkpoint",
        {
            "covers_seq": 15,
            "covers_hash": line_hash(lines[14]).decode(),
            "ts": "2026-11-26T09:00:00.000000000Z",
        },
        0,
    )
    rest = build_log([{"i": i} for i in range(n)])  # re-chain 17.. after the checkpoint
    out = [*lines[:15], cp]
    prev = line_hash(cp)
    for line in rest[16:n]:
        head = split_head(line)
        assert head is not None
        body = line[line.index(b',"event_id"') + 1 :]
        ts = 1_795_683_600_000_000_000
        new = event_line(head[0], prev, ts, body)
        out.append(new)
        prev = line_hash(new)
    write_lines(config.log_path, out)
    sidecar = config.log_path.with_name(config.log_path.name + ".checkpoints")
    sidecar.write_bytes(cp + b"\n")
    return out


def test_damage_before_the_sidecar_checkpoint_is_corruption_not_a_torn_tail(
    tmp_path: Path,
) -> None:
    """NULs over records the sidecar's checkpoint already covers: not cut as a torn
    tail. The file is kept untouched, a new file starts after the highest seq anything
    claims (none reused), health says corrupt, and verify fails."""
    config = cfg(tmp_path, spool_dir=None)
    out = _log_with_checkpoint(config)
    data = bytearray(config.log_path.read_bytes())
    start = data.index(out[14])  # seq 15, the checkpoint (16) and seq 17 lost
    end = data.index(out[17])
    data[start:end] = b"\0" * (end - start)
    config.log_path.write_bytes(bytes(data))
    with AuditLog(config, clock=synced_clock) as log:
        health = log.health()
        assert health.status == "failing" and health.corrupt, health
        assert log.last_seq > 20
    aside = next(config.log_path.parent.glob("log.seg-*.jsonl"))
    assert aside.read_bytes() == bytes(data)
    segment = next(r for r in records(config.log_path) if r.get("kind") == "segment")
    assert segment["reason"] == "corrupt"
    assert segment["seq"] > 20
    assert not verify_paths([config.log_path.parent]).valid


def test_a_log_that_ends_before_the_sidecar_checkpoint_is_truncation(tmp_path: Path) -> None:
    """The file cut back before the newest checkpoint the sidecar holds: truncation —
    kept as it is, the chain continues after the checkpoint, health says corrupt."""
    config = cfg(tmp_path, spool_dir=None)
    out = _log_with_checkpoint(config)
    write_lines(config.log_path, out[:12])
    with AuditLog(config, clock=synced_clock) as log:
        assert log.health().corrupt
        assert log.last_seq > 16
    segment = next(r for r in records(config.log_path) if r.get("kind") == "segment")
    assert segment["reason"] == "truncated" and segment["missing_through"] == 16
    assert segment["prev"] == line_hash(out[15]).decode()  # continues from the checkpoint


# -- 3. durability per caller ---------------------------------------------------------------


def test_flush_raises_for_stdout_records_every_time_from_any_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record that reached only stdout: flush raises, the gap record is written, and a
    flush from a second thread still raises — for the life of the process (0.1.0 let
    the second waiter through). durable=True judges only its own seq."""
    broken = Broken(monkeypatch)
    config = cfg(tmp_path)
    out = io.BytesIO()
    with AuditLog(config, emergency=EmergencyOutput(stream=out), clock=synced_clock) as log:
        lost = broken.strand_on_stdout(log, config)
        broken.dirs.clear()
        wait_primary(log)
        deadline = time.monotonic() + 5
        while not any(r.get("kind") == "gap" for r in records(config.log_path)):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        caught: list[BaseException] = []

        def second() -> None:
            try:
                log.flush()
            except AuditDegradedError as exc:
                caught.append(exc)

        t = threading.Thread(target=second)
        t.start()
        t.join()
        assert len(caught) == 1 and caught[0].first_seq == lost  # type: ignore[attr-defined]
        with pytest.raises(AuditDegradedError):
            log.flush()
        with pytest.raises(AuditDegradedError):
            log.wait_durable(lost)
        fresh = log.append(event(2))
        assert fresh is not None
        log.wait_durable(fresh)  # its own seq is durable: no error


# -- 4. every stdout-only range named; recover rebuilds a stream from seq 1 ----------------


def test_a_gap_record_that_fails_is_folded_into_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first gap record itself reaches only stdout: the next gap record names the
    whole range, the failed gap record included, so nothing is named nowhere."""
    broken = Broken(monkeypatch)
    config = cfg(tmp_path)
    out = io.BytesIO()
    with AuditLog(config, emergency=EmergencyOutput(stream=out), clock=synced_clock) as log:
        broken.strand_on_stdout(log, config)
        broken.dirs.clear()
        broken.when_line_has = b'"kind":"gap"'  # the first gap record fails everywhere
        deadline = time.monotonic() + 5
        while broken.fired < 4:
            assert time.monotonic() < deadline, broken.fired
            time.sleep(0.01)
        broken.when_line_has = None
        wait_primary(log)
        log.append(event(2))
    on_stdout = [int(line.split(b",")[0].split(b":")[1]) for line in out.getvalue().splitlines()]
    gaps = [r for r in stream_records(config.log_path.parent) if r.get("kind") == "gap"]
    assert len(gaps) == 1
    assert (gaps[0]["first_seq"], gaps[0]["last_seq"]) == (on_stdout[0], on_stdout[-1])
    assert on_stdout == list(range(on_stdout[0], on_stdout[-1] + 1))
    assert b'"kind":"gap"' in out.getvalue()  # the failed one is among them
    capture = tmp_path / "stdout.log"
    capture.write_bytes(out.getvalue())
    rep = recover([capture], config.log_path, config, clock=synced_clock)
    assert rep.verify is not None
    assert rep.verify.valid, rep.verify.findings


def test_recover_rebuilds_a_stream_whose_genesis_reached_only_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Primary and spool failing from the first write: genesis and start reach only
    stdout; recover links seq 1 to the zero hash and verify passes."""
    broken = Broken(monkeypatch)
    config = cfg(tmp_path)
    broken.dirs |= {config.log_path.parent, config.spool_dir}  # type: ignore[arg-type]
    out = io.BytesIO()
    with AuditLog(config, emergency=EmergencyOutput(stream=out), clock=synced_clock) as log:
        log.append(event(0))
        broken.dirs.clear()
        wait_primary(log)
        log.append(event(1))
    assert out.getvalue().startswith(b'AUDIT_EMERGENCY {"seq":1,')
    capture = tmp_path / "stdout.log"
    capture.write_bytes(out.getvalue())
    rep = recover([capture], config.log_path, config, clock=synced_clock)
    assert not rep.missing, rep.missing
    assert rep.verify is not None
    assert rep.verify.valid, rep.verify.findings


# -- the sidecar ------------------------------------------------------------------------


def test_a_half_written_sidecar_line_is_cut_before_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint copy half-written to the sidecar (the truncate back failing too):
    the next checkpoint starts on a clean line, so no sidecar line is corrupt."""
    from riskaudit.integrity._seals import read_sidecars
    from riskaudit.log import _destinations

    config = cfg(tmp_path, spool_dir=None, checkpoint_records=5)
    real = write_durably
    state = {"fail": False}

    def half(fd: int, chunks: list[bytes], offset: int) -> None:
        if state["fail"] and os.readlink(f"/proc/self/fd/{fd}").endswith(".checkpoints"):
            state["fail"] = False
            data = b"".join(chunks)
            os.pwrite(fd, data[: len(data) // 2], offset)
            raise OSError(errno.ENOSPC, "injected")
        real(fd, chunks, offset)

    real_truncate = os.ftruncate

    def truncate_fails_once(fd: int, length: int) -> None:
        sidecar = os.readlink(f"/proc/self/fd/{fd}").endswith(".checkpoints")
        if state["truncate_fails"] and sidecar:
            state["truncate_fails"] = False
            raise OSError(errno.EIO, "injected")
        real_truncate(fd, length)

    state["truncate_fails"] = True
    monkeypatch.setattr(_destinations, "write_durably", half)
    # Every write through the patched Python path, none in the core's turns.
    monkeypatch.setattr(Writer, "native_commit", False)
    monkeypatch.setattr(os, "ftruncate", truncate_fails_once)
    with AuditLog(config, clock=synced_clock) as log:
        for i in range(4):
            log.append(event(i))
        log.flush()
        state["fail"] = True
        for i in range(4, 30):
            log.append(event(i))
            log.flush()
    sidecar = config.log_path.with_name("log.jsonl.checkpoints")
    checkpoints, problems = read_sidecars([sidecar])
    assert not problems and len(checkpoints) >= 3
    assert list(sidecar.parent.glob("log.jsonl.checkpoints.torn-*"))
    assert verify_paths([config.log_path.parent]).valid


# -- the edges an independent review found ----------------------------------------------


def _segment_of(path: Path, lines: list[bytes], last_trusted: int) -> Path:
    """``lines`` written to ``path`` and sealed as a segment ending at ``last_trusted``
    (what set_aside leaves: the untrusted bytes after it stay in the file)."""
    from riskaudit.format import seal_as_segment

    write_lines(path, lines)
    first = split_head(lines[0])
    assert first is not None
    return seal_as_segment(path, first[0], last_trusted, 1_795_683_600_000_000_000)


def test_a_set_aside_segment_is_read_only_up_to_its_named_end_at_start(tmp_path: Path) -> None:
    """A crash right after a poisoned primary was set aside (no new file yet): the
    chain continues from the record the segment's name ends at, not from its untrusted
    last line, so the spool's copy of those seqs is replayed, not deleted."""
    config = cfg(tmp_path)
    lines = build_log([{"i": i} for i in range(10)])  # seq 1-12; 9-12 failed
    _segment_of(config.log_path, lines, 8)
    assert config.spool_dir is not None
    write_lines(config.spool_dir / "log.jsonl.spool-00000000000000000009.jsonl", lines[8:])
    with AuditLog(config, clock=synced_clock):
        pass
    assert [r["seq"] for r in records(config.log_path)][:4] == [9, 10, 11, 12]
    assert not list(config.spool_dir.iterdir())
    report = verify_paths([config.log_path.parent])
    assert report.valid, report.findings


def test_a_read_only_primary_with_a_torn_tail_is_repaired_before_the_writer_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary was read-only at start and ends in a torn write, and records went to
    the spool meanwhile: when it becomes writable the writer validates it before the
    first append — never after the garbage."""
    config = cfg(tmp_path)
    lines = build_log([{"i": i} for i in range(10)])
    write_lines(config.log_path, lines[:8])
    with open(config.log_path, "ab") as f:
        f.write(b"\0" * 700 + b'{"seq":11,"prev":"' + b"0" * 30)
    before = config.log_path.read_bytes()
    state = read_only_primary(monkeypatch, config.log_path)
    with AuditLog(config, clock=synced_clock) as log:
        assert log.health().destination == "spool"
        log.append(event(1))
        log.flush()
        state["read_only"] = False
        wait_primary(log)
        log.append(event(2))
    # The spool holds the seqs after the head start-up read: the torn bytes over them
    # are a failed batch's, so the file is set aside untouched, never appended to.
    aside = next(config.log_path.parent.glob("log.seg-*"))
    assert aside.read_bytes() == before
    segment = next(r for r in records(config.log_path) if r.get("kind") == "segment")
    assert segment["reason"] == "untrusted" and segment["previous"] == aside.name
    report = verify_paths([config.log_path.parent])
    assert report.valid, report.findings


def test_a_read_only_primary_with_a_torn_tail_and_no_spool_is_repaired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same without a spool (records went to stdout meanwhile): the torn tail is cut
    aside with a repair record before the first append."""
    config = cfg(tmp_path, spool_dir=None)
    lines = build_log([{"i": i} for i in range(10)])
    write_lines(config.log_path, lines[:8])
    with open(config.log_path, "ab") as f:
        f.write(b"\0" * 700 + b'{"seq":11,"prev":"' + b"0" * 30)
    state = read_only_primary(monkeypatch, config.log_path)
    with AuditLog(
        config, emergency=EmergencyOutput(stream=io.BytesIO()), clock=synced_clock
    ) as log:
        state["read_only"] = False
        wait_primary(log)
        log.append(event(2))
    recs = records(config.log_path)
    assert "repair" in [r.get("kind") for r in recs]
    assert [r["seq"] for r in recs][:8] == list(range(1, 9))
    report = verify_paths([config.log_path.parent])
    assert {f.kind for f in report.findings} <= {"unrecovered"}, report.findings


def test_a_spool_left_over_after_a_replay_does_not_cost_later_records(tmp_path: Path) -> None:
    """A replay reached the primary and was synced, but the spool's unlink was lost
    (crash before the directory sync); records confirmed after the replay follow in the
    primary. The overlap matches byte for byte and the primary goes on past the spool:
    the primary is trusted, nothing is set aside, every record stays in the chain."""
    config = cfg(tmp_path)
    lines = build_log([{"i": i} for i in range(18)])  # seq 1-20
    write_lines(config.log_path, lines)
    assert config.spool_dir is not None
    write_lines(config.spool_dir / "log.jsonl.spool-00000000000000000009.jsonl", lines[8:12])
    with AuditLog(config, clock=synced_clock) as log:
        assert not log.health().untrusted, log.health()
        assert log.last_seq > 20
    assert not list(config.log_path.parent.glob("log.seg-*"))
    assert [r["seq"] for r in records(config.log_path)][:20] == list(range(1, 21))
    assert not list(config.spool_dir.iterdir())
    report = verify_paths([config.log_path.parent])
    assert report.valid, report.findings


def test_a_spool_copy_that_differs_from_the_primary_makes_it_untrusted(tmp_path: Path) -> None:
    """The primary goes on past the spool but its copy of the spool's seqs differs
    (not what a replay writes): the spool's durable copy wins and the primary is set
    aside, trusted up to the record before the first spool file that differs."""
    config = cfg(tmp_path)
    lines = build_log([{"i": i} for i in range(18)])
    write_lines(config.log_path, lines)
    other = build_log([{"i": i, "other": True} for i in range(18)])
    assert config.spool_dir is not None
    write_lines(config.spool_dir / "log.jsonl.spool-00000000000000000009.jsonl", lines[8:9])
    write_lines(config.spool_dir / "log.jsonl.spool-00000000000000000010.jsonl", other[9:12])
    with AuditLog(config, clock=synced_clock) as log:
        assert log.health().untrusted, log.health()
    # The first spool file matches and the primary goes on past it: a leftover, removed.
    # The second differs: the primary is trusted only up to the record before it.
    assert next(config.log_path.parent.glob("log.seg-00000000000000000001-00000000000000000009-*"))


def test_the_segment_record_naming_an_untrusted_file_is_never_only_on_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Primary and spool fail, records go to stdout; when the primary is back the
    poisoned file is set aside and the segment record naming it is written to the new
    file right after the gap record (the gap must follow the hole it names) — never to
    stdout with the records queued meanwhile."""
    broken = Broken(monkeypatch)
    config = cfg(tmp_path)
    out = io.BytesIO()
    with AuditLog(config, emergency=EmergencyOutput(stream=out), clock=synced_clock) as log:
        broken.strand_on_stdout(log, config)
        stop = threading.Event()

        def produce() -> None:  # records queued while the writer comes back
            while not stop.is_set():
                log.append(event(2))
                time.sleep(0.0005)

        t = threading.Thread(target=produce)
        t.start()
        broken.dirs.clear()
        wait_primary(log)
        time.sleep(0.05)
        stop.set()
        t.join()
    assert b'"kind":"segment"' not in out.getvalue()
    kinds = [r.get("kind") for r in records(config.log_path)]
    segment = kinds.index("segment")
    assert kinds[segment - 1] == "gap", kinds[: segment + 1]
    seg = records(config.log_path)[segment]
    assert seg["reason"] == "untrusted" and seg["previous"].startswith("log.seg-")


def test_a_poisoned_primary_deleted_meanwhile_keeps_its_confirmed_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary fails (records go to the spool) and is then deleted while the writer
    still holds it: its trusted bytes, confirmed records, are kept from the open handle
    as a sealed segment when the primary is back, and named by a segment record."""
    broken = Broken(monkeypatch)
    config = cfg(tmp_path)
    with AuditLog(config, clock=synced_clock) as log:
        confirmed = [log.append(event(i)) for i in range(20)]
        log.flush()
        broken.dirs.add(config.log_path.parent)
        log.append(event(20))
        log.flush()  # durable in the spool
        os.unlink(config.log_path)
        broken.dirs.clear()
        wait_primary(log)
        log.append(event(21))
    seqs = [r["seq"] for r in stream_records(config.log_path.parent)]
    assert all(s in seqs for s in confirmed)
    assert len(seqs) == len(set(seqs))
    segment = next(r for r in records(config.log_path) if r.get("kind") == "segment")
    assert segment["reason"] == "untrusted"
    assert (config.log_path.parent / segment["previous"]).exists()
    report = verify_paths([config.log_path.parent])
    assert report.valid, report.findings


def test_a_poisoned_primary_renamed_meanwhile_is_sealed_where_it_went(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poisoned primary renamed away (logrotate's create mode) while the writer was
    on the spool: the renamed file is still sealed under a segment name that ends at
    its last trusted record, so its untrusted bytes are never read as records."""
    from riskaudit.log import _destinations

    config = cfg(tmp_path)
    real = write_durably
    real_truncate = os.ftruncate
    state = {"fail": False}

    def lands_then_fails(fd: int, chunks: list[bytes], offset: int) -> None:
        if state["fail"] and os.readlink(f"/proc/self/fd/{fd}").endswith("log.jsonl"):
            data = b"".join(chunks)
            os.pwrite(fd, data[: len(data) // 2], offset)  # a torn line left behind
            raise OSError(errno.EIO, "injected")
        real(fd, chunks, offset)

    def truncate(fd: int, length: int) -> None:
        if state["fail"]:
            raise OSError(errno.EIO, "injected")
        real_truncate(fd, length)

    monkeypatch.setattr(_destinations, "write_durably", lands_then_fails)
    # Every write through the patched Python path, none in the core's turns.
    monkeypatch.setattr(Writer, "native_commit", False)
    monkeypatch.setattr(os, "ftruncate", truncate)
    with AuditLog(config, clock=synced_clock) as log:
        for i in range(10):
            log.append(event(i))
        log.flush()
        state["fail"] = True
        log.append(event(10, pad="x" * 300))
        log.flush()
        rotated = config.log_path.with_name("log.jsonl.1")
        os.rename(config.log_path, rotated)
        state["fail"] = False
        wait_primary(log)
        log.append(event(11))
    assert not rotated.exists()
    segment = next(r for r in records(config.log_path) if r.get("kind") == "segment")
    assert segment["reason"] == "untrusted" and segment["previous"].startswith("log.seg-")
    report = verify_paths([config.log_path.parent])
    assert report.valid, report.findings
    ids = stream_event_ids(config.log_path.parent)
    assert len(ids) == len(set(ids)) == 12


def test_a_spool_that_cannot_be_deleted_does_not_keep_the_writer_off_the_primary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replayed spool files whose unlink fails (EROFS): the writer is back on the
    primary all the same; the leftover spool is cleaned up on a later start, where its
    copy matches the primary byte for byte and nothing is duplicated."""
    broken = Broken(monkeypatch)
    config = cfg(tmp_path)
    state = failing_spool_unlink(monkeypatch, errno.EROFS)
    with AuditLog(config, clock=synced_clock) as log:
        broken.spool_one(log, config)
        assert config.spool_dir is not None and list(config.spool_dir.iterdir())
        log.append(event(2))
        log.flush()
    state["fail"] = False
    with AuditLog(config, clock=synced_clock) as log:
        assert not log.health().untrusted
    assert not list(config.spool_dir.iterdir())
    ids = stream_event_ids(config.log_path.parent)
    assert len(ids) == len(set(ids)) == 3
    report = verify_paths([config.log_path.parent])
    assert report.valid, report.findings


def _legacy_log(config: AuditConfig, version: str) -> tuple[list[bytes], bytes]:
    """A log of seq 1-15 whose ``start`` names ``version``, and a checkpoint line at seq
    18 (covering 17) that is in the sidecar but not in the log."""
    lines = build_log([{"i": i} for i in range(16)])
    start = control_line(
        2, line_hash(lines[0]), "start", {"pid": 1, "host": "h", "version": version}, 0
    )
    out = [lines[0], start]
    prev = line_hash(start)
    for line in lines[2:17]:
        head = split_head(line)
        assert head is not None
        new = event_line(
            head[0], prev, 1_795_683_600_000_000_000, line[line.index(b',"event_id"') + 1 :]
        )
        out.append(new)
        prev = line_hash(new)
    cp = control_line(
        18,
        prev,
        "checkpoint",
        {"covers_seq": 17, "covers_hash": prev.decode(), "ts": "2026-11-26T09:00:01.000000000Z"},
        0,
    )
    write_lines(config.log_path, out[:15])
    config.log_path.with_name(config.log_path.name + ".checkpoints").write_bytes(cp + b"\n")
    return out, cp


def test_a_0_1_sidecar_ahead_of_the_log_names_a_stdout_gap_not_truncation(
    tmp_path: Path,
) -> None:
    """0.1.x copied every checkpoint to the sidecar, even one that reached only stdout;
    a log that such a writer left ending before its sidecar is not called truncated:
    the seqs in between are named by a gap record (unrecovered until recovered)."""
    config = cfg(tmp_path, spool_dir=None)
    out, cp = _legacy_log(config, "0.1.0")
    with AuditLog(config, clock=synced_clock) as log:
        assert not log.health().corrupt, log.health()
        assert log.last_seq > 18
    gap = next(r for r in records(config.log_path) if r.get("kind") == "gap")
    assert (gap["first_seq"], gap["last_seq"]) == (16, 18)
    assert gap["prev"] == line_hash(cp).decode()
    report = verify_paths([config.log_path.parent])
    assert {f.kind for f in report.findings} == {"unrecovered"}, report.findings
    capture = tmp_path / "stdout.log"
    capture.write_bytes(b"".join(b"AUDIT_EMERGENCY " + line + b"\n" for line in [*out[15:], cp]))
    rep = recover([capture], config.log_path, config, clock=synced_clock)
    assert rep.verify is not None
    assert rep.verify.valid, rep.verify.findings


def test_a_sidecar_of_an_older_stream_is_not_this_log_s_anchor(tmp_path: Path) -> None:
    """A sidecar left from a stream that began before this log's genesis (the log was
    replaced, the sidecar kept): its checkpoint is not this log's anchor, so the log is
    not called truncated nor set aside (verify still reports the earlier stream's
    records missing: the sidecar names them)."""
    config = cfg(tmp_path, spool_dir=None)
    write_lines(config.log_path, build_log([{"i": i} for i in range(5)]))
    old = control_line(
        100,
        b"a" * 64,
        "checkpoint",
        {"covers_seq": 99, "covers_hash": "a" * 64, "ts": "2026-11-01T09:00:00.000000000Z"},
        0,
    )
    config.log_path.with_name("log.jsonl.checkpoints").write_bytes(old + b"\n")
    with AuditLog(config, clock=synced_clock) as log:
        assert not log.health().corrupt, log.health()
        assert log.last_seq < 100
    assert not list(config.log_path.parent.glob("log.seg-*"))  # nothing set aside
    report = verify_paths([config.log_path.parent])
    # The earlier stream's records are missing, and verify says so; this log's are not.
    assert all(f.seq >= 11 for f in report.findings), report.findings


def test_a_sidecar_of_this_version_ahead_of_the_log_is_still_truncation(
    tmp_path: Path,
) -> None:
    """Only 0.1.x sidecars get the benefit of the doubt: this writer copies a checkpoint
    to the sidecar only once it is durable, so a log it wrote that ends before its
    sidecar was truncated."""
    from riskaudit import __version__

    config = cfg(tmp_path, spool_dir=None)
    _legacy_log(config, __version__)
    with AuditLog(config, clock=synced_clock) as log:
        assert log.health().corrupt, log.health()
    segment = next(r for r in records(config.log_path) if r.get("kind") == "segment")
    assert segment["reason"] == "truncated" and segment["missing_through"] == 18


# -- a second review: leftovers, read-only starts, streams, 0.1 upgrades ------------------


def test_a_leftover_spool_whose_copy_was_rotated_away_costs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replayed spool file whose unlink failed stays behind; the writer rotates, so
    the spool's records are in a sealed segment, not the active file. The next start
    finds them there byte for byte: the leftover is removed, the active file trusted."""
    broken = Broken(monkeypatch)
    config = cfg(tmp_path)
    state = failing_spool_unlink(monkeypatch, errno.EIO)
    with AuditLog(config, clock=synced_clock) as log:
        broken.spool_one(log, config)
        log.rotate()
        time.sleep(0.3)
        for i in range(2, 6):
            log.append(event(i))
        log.flush()
    state["fail"] = False
    with AuditLog(config, clock=synced_clock) as log:
        assert not log.health().untrusted, log.health()
    assert config.spool_dir is not None and not list(config.spool_dir.iterdir())
    assert len(stream_event_ids(config.log_path.parent)) == 6
    report = verify_paths([config.log_path.parent])
    assert report.valid, report.findings


def test_a_read_only_primary_is_judged_against_the_spool_when_it_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start-up read the head of a read-only primary whose last batch (seq 9-12) had
    failed over to the spool; after the remount the file holds only 1-8. The writer
    takes the file as it is now and judges it against the spool: 9-12 are replayed
    from the spool, never skipped."""
    config = cfg(tmp_path)
    lines = build_log([{"i": i} for i in range(10)])
    write_lines(config.log_path, lines)
    assert config.spool_dir is not None
    write_lines(config.spool_dir / "log.jsonl.spool-00000000000000000009.jsonl", lines[8:])
    state = read_only_primary(monkeypatch, config.log_path)
    with AuditLog(config, clock=synced_clock) as log:
        write_lines(config.log_path, lines[:8])  # what the remounted volume holds
        state["read_only"] = False
        wait_primary(log)
        log.append(event(99))
        log.flush()
    assert not list(config.spool_dir.iterdir())
    assert len(stream_event_ids(config.log_path.parent)) == 11
    report = verify_paths([config.log_path.parent])
    assert report.valid, report.findings


def test_a_checkpoint_naming_this_stream_anchors_even_if_the_clock_stepped_back(
    tmp_path: Path,
) -> None:
    """The genesis was written with the clock an hour ahead; the checkpoint (which names
    its stream) is older by ts but of the same stream: a log cut before it is truncated,
    and the seqs it covers are never reused."""
    config = cfg(tmp_path, spool_dir=None)
    stream = "3f6c1b2e-8d4a-4f7e-9c21-5a0b7d9e1c44"
    t0, hour = 1_795_683_600_000_000_000, 3600 * 10**9
    lines: list[bytes] = []
    prev = b"0" * 64

    def add(kind: str, fields: dict[str, object], ts: int) -> None:
        nonlocal prev
        lines.append(control_line(len(lines) + 1, prev, kind, fields, ts))
        prev = line_hash(lines[-1])

    add("genesis", {"stream": stream, "format": "riskaudit/1", "host": "h"}, t0 + hour)
    add("start", {"pid": 1, "host": "h", "version": "0.2.0", "stream": stream}, t0 + hour)
    for i in range(5):
        add("clock", {"synchronised": True, "state": "TIME_OK"}, t0 + i)
    cp_fields = {"stream": stream, "covers_seq": 7, "covers_hash": prev.decode()}
    add("checkpoint", {**cp_fields, "ts": "2026-11-26T09:00:00.000000010Z"}, t0 + 10)
    write_lines(config.log_path, lines[:5])
    config.log_path.with_name("log.jsonl.checkpoints").write_bytes(lines[-1] + b"\n")
    with AuditLog(config, clock=synced_clock) as log:
        assert log.health().corrupt, log.health()
    assert min(r["seq"] for r in records(config.log_path, checkpoints=True)) > 8


def test_a_0_1_gap_at_start_that_reaches_only_stdout_is_named_by_the_next_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gap record for a 0.1 sidecar ahead of the log reaches only stdout at start:
    the next gap record names that range too, so recover can make the log whole."""
    broken = Broken(monkeypatch)
    config = cfg(tmp_path, spool_dir=None)
    out, cp = _legacy_log(config, "0.1.0")
    broken.dirs.add(config.log_path.parent)
    emergency = io.BytesIO()
    with AuditLog(config, emergency=EmergencyOutput(stream=emergency), clock=synced_clock) as log:
        broken.dirs.clear()
        wait_primary(log)
        log.append(event(1))
    gaps = [r for r in records(config.log_path) if r.get("kind") == "gap"]
    assert gaps and gaps[0]["first_seq"] == 16, gaps
    capture = tmp_path / "stdout.log"
    capture.write_bytes(
        b"".join(b"AUDIT_EMERGENCY " + line + b"\n" for line in [*out[15:], cp])
        + emergency.getvalue()
    )
    rep = recover([capture], config.log_path, config, clock=synced_clock)
    assert rep.verify is not None
    assert rep.verify.valid, rep.verify.findings


def test_a_poisoned_primary_deleted_with_its_directory_is_copied_and_the_writer_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log's directory removed while its poisoned primary was open: the directory
    is made again, the trusted bytes copied into it as a sealed segment, and the writer
    is back on the primary."""
    import shutil

    broken = Broken(monkeypatch)
    config = cfg(tmp_path, log_path=tmp_path / "primary" / "sub" / "log.jsonl")
    with AuditLog(config, clock=synced_clock) as log:
        for i in range(5):
            log.append(event(i))
        log.flush()
        broken.dirs.add(config.log_path.parent)
        log.append(event(5))
        log.flush()
        shutil.rmtree(config.log_path.parent)
        broken.dirs.clear()
        wait_primary(log, timeout=5)
    assert len(stream_event_ids(config.log_path.parent)) == 6
    report = verify_paths([config.log_path.parent])
    assert report.valid, report.findings


def test_a_0_1_log_is_recognised_after_rotation_and_despite_a_payload(tmp_path: Path) -> None:
    """The 0.1 writer is found from the newest sealed segment when the active file has
    no start record, and an event whose payload reads like a start record is not one."""
    from riskaudit.format import segment_name

    stream = "3f6c1b2e-8d4a-4f7e-9c21-5a0b7d9e1c44"
    Spec = tuple[str, dict[str, Any]]  # a record to write: its kind ("e": an event), its fields
    genesis: Spec = ("genesis", {"stream": stream, "format": "riskaudit/1", "host": "h"})
    start: Spec = ("start", {"pid": 1, "host": "h", "version": "0.1.0", "stream": stream})
    rotated = [
        *[genesis, start, ("e", {"n": 1}), ("e", {"n": 2}), ("e", {"n": 3}), ("checkpoint", {})],
        ("segment", {"stream": stream, "reason": "rotate", "previous": "x"}),
        *[("e", {"n": 4}), ("e", {"n": 5}), ("e", {"n": 6}), ("e", {"n": 7}), ("checkpoint", {})],
    ]
    payload = [genesis, start, ("e", {"n": 1}), ("e", {"kind": "start"}), ("e", {"n": 3})]
    payload += [("e", {"n": 4}), ("checkpoint", {})]
    for name, specs, split_at, in_log in (("a", rotated, 6, 10), ("b", payload, 0, 5)):
        config = cfg(tmp_path / name, spool_dir=None)
        lines: list[bytes] = []
        prev = b"0" * 64
        for seq, (kind, fields) in enumerate(specs, 1):
            ts = 1_795_683_600_000_000_000 + seq * 1000
            if kind == "e":
                body = encode_event_body(event(seq, **fields))
                lines.append(event_line(seq, prev, ts, body))
            elif kind == "checkpoint":
                cp = {
                    "covers_seq": seq - 1,
                    "covers_hash": prev.decode(),
                    "ts": "2026-11-26T09:00:01.000000000Z",
                }
                lines.append(control_line(seq, prev, kind, cp, ts))
            else:
                lines.append(control_line(seq, prev, kind, fields, ts))
            prev = line_hash(lines[-1])
        if split_at:
            seg = config.log_path.with_name(segment_name(config.log_path, 1, split_at, 0))
            write_lines(seg, lines[:split_at])
        write_lines(config.log_path, lines[split_at:in_log])
        config.log_path.with_name("log.jsonl.checkpoints").write_bytes(lines[-1] + b"\n")
        with AuditLog(config, clock=synced_clock) as log:
            assert not log.health().corrupt, (name, log.health())
