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

import pytest

from riskaudit import AuditConfig, AuditDegradedError, AuditLog, verify_paths
from riskaudit.log import line_hash
from riskaudit.log._codec import control_line, event_line, split_head
from riskaudit.log._destinations import AppendFile
from riskaudit.log._emergency import EmergencyOutput
from riskaudit.recovery import recover
from tests.helpers import build_log, event, records, stream_records, write_lines


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
    with AuditLog(config) as log:
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
    real = _destinations.write_durably
    state = {"fail": 0}

    def all_then_eio(fd: int, chunks: list[bytes], offset: int) -> None:
        real(fd, chunks, offset)
        if state["fail"] and "/primary/" in os.readlink(f"/proc/self/fd/{fd}"):
            state["fail"] -= 1
            raise OSError(errno.EIO, "injected: data out, sync lost")

    monkeypatch.setattr(_destinations, "write_durably", all_then_eio)
    monkeypatch.setattr(
        _destinations.os, "ftruncate", lambda fd, n: (_ for _ in ()).throw(OSError(errno.EIO, "x"))
    )
    with AuditLog(config) as log:
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
    with AuditLog(config) as log:
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
    with AuditLog(config):
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
    with AuditLog(config) as log:
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
    with AuditLog(config) as log:
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
    with AuditLog(config, emergency=EmergencyOutput(stream=out)) as log:
        log.append(event(0))
        log.flush()
        broken.dirs |= {config.log_path.parent, config.spool_dir}  # type: ignore[arg-type]
        lost = log.append(event(1))
        assert lost is not None
        with pytest.raises(AuditDegradedError):
            log.flush()
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
    with AuditLog(config, emergency=EmergencyOutput(stream=out)) as log:
        log.append(event(0))
        log.flush()
        broken.dirs |= {config.log_path.parent, config.spool_dir}  # type: ignore[arg-type]
        log.append(event(1))
        with pytest.raises(AuditDegradedError):
            log.flush()
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
    rep = recover([capture], config.log_path, config)
    assert rep.verify is not None and rep.verify.valid, rep.verify.findings


def test_recover_rebuilds_a_stream_whose_genesis_reached_only_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Primary and spool failing from the first write: genesis and start reach only
    stdout; recover links seq 1 to the zero hash and verify passes."""
    broken = Broken(monkeypatch)
    config = cfg(tmp_path)
    broken.dirs |= {config.log_path.parent, config.spool_dir}  # type: ignore[arg-type]
    out = io.BytesIO()
    with AuditLog(config, emergency=EmergencyOutput(stream=out)) as log:
        log.append(event(0))
        broken.dirs.clear()
        wait_primary(log)
        log.append(event(1))
    assert out.getvalue().startswith(b'AUDIT_EMERGENCY {"seq":1,')
    capture = tmp_path / "stdout.log"
    capture.write_bytes(out.getvalue())
    rep = recover([capture], config.log_path, config)
    assert not rep.missing, rep.missing
    assert rep.verify is not None and rep.verify.valid, rep.verify.findings


# -- the sidecar ------------------------------------------------------------------------


def test_a_half_written_sidecar_line_is_cut_before_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint copy half-written to the sidecar (the truncate back failing too):
    the next checkpoint starts on a clean line, so no sidecar line is corrupt."""
    from riskaudit.integrity._seals import read_sidecars
    from riskaudit.log import _destinations

    config = cfg(tmp_path, spool_dir=None, checkpoint_records=5)
    real = _destinations.write_durably
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
    monkeypatch.setattr(_destinations.os, "ftruncate", truncate_fails_once)
    with AuditLog(config) as log:
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
