"""PowerFS semantics, proven through a real FUSE mount: what survives a power cut.

Each test mounts a fresh PowerFS (``tests/faults/_powerfs.py``), does file operations
through the kernel exactly as a writer would, cuts the power, restarts, and reads back.
They need root, /dev/fuse and mfusepy; locally a missing one skips with the reason,
under CI (``CI=true``) it is a failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults._powerfs import (
    SECTOR,
    PowerFS,
    PowerModel,
    When,
    is_mounted,
    unavailable_reason,
)
from tests.helpers import require


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[PowerFS]:
    reason = unavailable_reason()
    require(reason is None, reason or "")
    with PowerFS(tmp_path / "mnt") as powerfs:
        yield powerfs
        assert powerfs.stats()["internal_errors"] == 0


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def put(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Create or replace ``path``'s content; fsync the file (not its directory)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def durable_file(fs: PowerFS, name: str, data: bytes) -> Path:
    """A file whose content and directory entry are both durable."""
    path = fs.path(name)
    put(path, data)
    fsync_dir(path.parent)
    return path


def durable_files(fs: PowerFS, files: dict[str, bytes]) -> None:
    """Files (in the mount root) whose content and names are all durable."""
    for name, data in files.items():
        put(fs.path(name), data)
    fsync_dir(fs.mountpoint)


def power_cut(fs: PowerFS) -> None:
    """crash(drop) and restart: only what was durable is left."""
    fs.crash("drop")
    fs.restart()


def assert_eio(call: Callable[..., object], *args: object) -> None:
    with pytest.raises(OSError) as failure:
        call(*args)
    assert failure.value.errno == errno.EIO


def test_unsynced_write_is_lost_and_fsynced_write_is_kept(fs: PowerFS) -> None:
    """A write not fsynced is gone after crash(drop)+restart; an fsynced one stays."""
    path = durable_file(fs, "data.bin", b"")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"A" * 1000)
    os.fsync(fd)
    os.write(fd, b"B" * 1000)
    os.close(fd)
    assert path.read_bytes() == b"A" * 1000 + b"B" * 1000
    power_cut(fs)
    assert path.read_bytes() == b"A" * 1000


def test_pwritev_rwf_dsync_is_durable(fs: PowerFS) -> None:
    """pwritev(..., RWF_DSYNC) on an O_APPEND fd (the writer's call) appends durably."""
    path = durable_file(fs, "log.jsonl", b"head\n")
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    written = os.pwritev(fd, [b"one\n", b"two\n"], 0, os.RWF_DSYNC)  # O_APPEND: at EOF
    assert written == 8
    os.write(fd, b"lost\n")
    os.close(fd)
    stats = fs.stats()
    # Under direct I/O the kernel sends no FUSE_FSYNC for RWF_DSYNC: the FUSE_WRITE
    # request carries O_DSYNC in its flags, and PowerFS syncs on it.
    assert stats["dsync_writes"] == 1
    assert stats["append_offset_fixups"] == 0  # the kernel sent the EOF offset itself
    power_cut(fs)
    assert path.read_bytes() == b"head\none\ntwo\n"


def test_o_dsync_file_writes_are_durable(fs: PowerFS) -> None:
    """Every write to a file opened O_DSYNC is durable without an fsync."""
    path = durable_file(fs, "sync.bin", b"")
    fd = os.open(path, os.O_WRONLY | os.O_DSYNC)
    os.write(fd, b"kept")
    os.close(fd)
    power_cut(fs)
    assert path.read_bytes() == b"kept"


def test_create_needs_a_directory_fsync(fs: PowerFS) -> None:
    """A created, written, fsynced file is gone after a crash unless its dir was fsynced."""
    os.mkdir(fs.path("d"))
    fsync_dir(fs.mountpoint)
    put(fs.path("d/named"), b"synced data")
    fsync_dir(fs.path("d"))
    put(fs.path("d/orphan"), b"synced data, but not its name")
    os.mkdir(fs.path("newdir"))  # its parent is never fsynced again
    put(fs.path("newdir/f"), b"x")
    fsync_dir(fs.path("newdir"))
    assert fs.snapshot("durable", dirs=True) == {"d/": b"", "d/named": b"synced data"}
    power_cut(fs)
    assert os.listdir(fs.path("d")) == ["named"]
    assert fs.path("d/named").read_bytes() == b"synced data"
    assert not fs.path("d/orphan").exists()
    assert not fs.path("newdir").exists()


def test_rename_needs_a_directory_fsync(fs: PowerFS) -> None:
    """A rename is undone by a crash (old name back, durable content) unless dir-fsynced."""
    durable_files(fs, {"tmp-1": b"one", "tmp-2": b"two", "final-2": b"old two"})
    with open(fs.path("tmp-1"), "ab") as f:
        f.write(b" plus unsynced")
    os.rename(fs.path("tmp-1"), fs.path("final-1"))
    power_cut(fs)
    assert fs.snapshot() == {"final-2": b"old two", "tmp-1": b"one", "tmp-2": b"two"}
    os.replace(fs.path("tmp-2"), fs.path("final-2"))
    fsync_dir(fs.mountpoint)
    os.rename(fs.path("final-2"), fs.path("undone"))
    power_cut(fs)
    assert fs.snapshot() == {"final-2": b"two", "tmp-1": b"one"}
    assert fs.path("final-2").read_bytes() == b"two"
    assert not fs.path("undone").exists()


def test_unlink_needs_a_directory_fsync(fs: PowerFS) -> None:
    """An unlinked file (or removed dir) comes back after a crash unless dir-fsynced."""
    os.mkdir(fs.path("emptied"))
    durable_files(fs, {"back": b"still here", "gone": b"removed for good"})
    os.unlink(fs.path("gone"))
    fsync_dir(fs.mountpoint)
    os.unlink(fs.path("back"))
    os.rmdir(fs.path("emptied"))
    assert os.listdir(fs.mountpoint) == []
    power_cut(fs)
    assert fs.snapshot(dirs=True) == {"back": b"still here", "emptied/": b""}
    assert fs.path("back").read_bytes() == b"still here"
    assert not fs.path("gone").exists()


def test_unlinking_an_open_file_is_an_unsynced_unlink(fs: PowerFS) -> None:
    """An open file's unlink: fstat says nlink 0, the fd works, a crash undoes the unlink."""
    path = durable_file(fs, "open.log", b"durable")
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    os.unlink(path)
    assert os.fstat(fd).st_nlink == 0
    os.write(fd, b" more")
    os.fsync(fd)
    assert os.pread(fd, 100, 0) == b"durable more"
    assert os.listdir(fs.mountpoint) == []
    power_cut(fs)
    assert path.read_bytes() == b"durable more"  # its name back, with the fsynced data
    again = os.open(path, os.O_RDONLY)
    os.unlink(path)
    fsync_dir(fs.mountpoint)
    power_cut(fs)
    assert os.listdir(fs.mountpoint) == []  # no name, hidden or not, survives
    for f in (fd, again):
        with contextlib.suppress(OSError):
            os.close(f)


def test_truncation_is_unsynced_data_like_a_write(fs: PowerFS) -> None:
    """truncate, ftruncate and O_TRUNC are undone by a crash unless the file was fsynced."""
    body = bytes(range(256)) * 8
    path = durable_file(fs, "t.bin", body)
    os.truncate(path, 100)
    assert path.stat().st_size == 100
    power_cut(fs)
    assert path.read_bytes() == body
    put(path, b"new", sync=False)  # O_TRUNC
    power_cut(fs)
    assert path.read_bytes() == body
    fd = os.open(path, os.O_WRONLY)
    os.ftruncate(fd, 700)
    os.fsync(fd)
    os.close(fd)
    power_cut(fs)
    assert path.read_bytes() == body[:700]


def _torn_file(fs: PowerFS) -> tuple[Path, bytes, bytes]:
    """A 1000-byte fsynced prefix, then eight un-fsynced 4 KiB pages."""
    prefix = b"p" * 1000
    pages = b"".join(bytes([0x41 + i]) * 4096 for i in range(8))
    path = durable_file(fs, "torn.log", prefix)
    with open(path, "ab") as f:
        f.write(pages)
    return path, prefix, prefix + pages


def test_tear_keeps_synced_bytes_and_mixes_unsynced_sectors(fs: PowerFS) -> None:
    """Tear: the fsynced prefix is intact; each later sector is new data or old/NULs."""
    _, prefix, current = _torn_file(fs)
    durable = prefix.ljust(len(current), b"\0")
    gap_then_data = []
    for seed in range(64):
        torn = fs.preview("tear", seed)["torn.log"]
        assert len(torn) in (len(prefix), len(current))
        assert torn[: len(prefix)] == prefix
        if len(torn) == len(prefix):
            continue
        sectors = [torn[lo : lo + SECTOR] for lo in range(0, len(current), SECTOR)]
        news = [current[lo : lo + SECTOR] for lo in range(0, len(current), SECTOR)]
        olds = [durable[lo : lo + SECTOR] for lo in range(0, len(current), SECTOR)]
        assert all(got in (new, old) for got, new, old in zip(sectors, news, olds, strict=True))
        nul = [i for i, got in enumerate(sectors) if got == b"\0" * SECTOR]
        if nul and any(sectors[j] == news[j] for j in range(nul[0] + 1, len(sectors))):
            gap_then_data.append(seed)  # a whole NUL sector, then later new data
    assert gap_then_data, "no seed tore a NUL hole before later data"
    seed = gap_then_data[0]
    expected = fs.preview("tear", seed)
    report = fs.crash("tear", seed)
    assert report["sectors_lost"] > 0 and report["sectors_kept"] > 0
    fs.restart()
    assert fs.path("torn.log").read_bytes() == expected["torn.log"]


def test_tear_is_deterministic_per_seed(tmp_path: Path) -> None:
    """The same operations and seed tear the same way, in one mount or a fresh one."""
    require(unavailable_reason() is None, unavailable_reason() or "")
    results = []
    for run in range(2):
        with PowerFS(tmp_path / f"mnt{run}") as fs:
            path, _, _ = _torn_file(fs)
            os.rename(durable_file(fs, "a", b"a"), fs.path("b"))
            assert fs.preview("tear", 7) == fs.preview("tear", 7)
            assert fs.preview("tear", 7) != fs.preview("tear", 8)
            predicted = fs.preview("tear", 7)
            fs.crash("tear", 7)
            assert fs.snapshot("pending") == predicted
            fs.restart()
            assert fs.snapshot() == predicted
            assert path.read_bytes() == predicted["torn.log"]
            results.append(predicted)
    assert results[0] == results[1]


def test_tear_keeps_each_directory_operation_whole(fs: PowerFS) -> None:
    """Tear keeps or drops an un-synced rename as a unit: exactly one name, never none."""
    durable_files(fs, {"new.tmp": b"new", "current": b"old", "a.tmp": b"a"})
    reader = os.open(fs.path("current"), os.O_RDONLY)  # libfuse hides an open target
    os.replace(fs.path("new.tmp"), fs.path("current"))
    assert os.pread(reader, 10, 0) == b"old"
    os.rename(fs.path("a.tmp"), fs.path("a"))
    outcomes = set()
    for seed in range(32):
        tree = fs.preview("tear", seed)
        assert tree.get("current") in (b"old", b"new")
        assert ("new.tmp" in tree) == (tree["current"] == b"old")
        assert ("a" in tree) != ("a.tmp" in tree)
        outcomes.add((tree["current"], "a" in tree))
    assert len(outcomes) == 4  # the two renames are decided independently
    os.close(reader)


def _arm_third_fsync(fs: PowerFS, when: When) -> tuple[Path, list[bytes], int, int]:
    """x.log and other.log, both open; four 700-byte chunks; the trigger armed."""
    path = durable_file(fs, "x.log", b"")
    durable_file(fs, "other.log", b"")
    chunks = [bytes([0x30 + i]) * 700 for i in range(1, 5)]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    other = os.open(fs.path("other.log"), os.O_WRONLY)
    assert fs.count("fsync", "x") == 1  # durable_file's
    fs.arm("fsync", "x", 3, when)
    return path, chunks, fd, other


def test_arm_before_the_third_fsync_loses_its_data(fs: PowerFS) -> None:
    """arm(fsync, "x", 3, before): the 3rd fsync fails with EIO, its data is not durable."""
    path, chunks, fd, other = _arm_third_fsync(fs, "before")
    os.fsync(other)  # does not match "x"
    for chunk in chunks[:2]:
        os.write(fd, chunk)
        os.fsync(fd)
    armed = fs.stats()["armed"]
    assert armed is not None and armed["seen"] == 2
    os.write(fd, chunks[2])
    assert_eio(os.fsync, fd)
    stats = fs.stats()
    assert stats["crashed"] and stats["fired"] and stats["armed"] is None
    assert fs.count("fsync", "x") == 1 + 3
    assert fs.count("fsync", "other") == 2
    assert_eio(os.write, fd, chunks[3])
    assert_eio(os.stat, path)
    assert_eio(os.listdir, fs.mountpoint)
    for f in (fd, other):
        with contextlib.suppress(OSError):
            os.close(f)
    fs.restart()
    assert path.read_bytes() == chunks[0] + chunks[1]


def test_arm_after_the_third_fsync_keeps_its_data(fs: PowerFS) -> None:
    """arm(fsync, "x", 3, after): the 3rd fsync succeeds and is durable; then EIO."""
    path, chunks, fd, other = _arm_third_fsync(fs, "after")
    for chunk in chunks[:3]:
        os.write(fd, chunk)
        os.fsync(fd)
    assert fs.stats()["crashed"]
    assert_eio(os.write, fd, chunks[3])
    assert_eio(os.fsync, other)
    for f in (fd, other):
        with contextlib.suppress(OSError):
            os.close(f)
    fs.restart()
    assert path.read_bytes() == b"".join(chunks[:3])
    assert not fs.stats()["crashed"]
    put(path, b"alive again")
    assert path.read_bytes() == b"alive again"


def test_fail_prefix_enospc_only_there(fs: PowerFS) -> None:
    """fail("logs/", "ENOSPC") fails writes, creates and fsyncs there; spool/ still works."""
    os.mkdir(fs.path("logs"))
    os.mkdir(fs.path("spool"))
    existing = fs.path("logs/current")
    put(existing, b"before")
    fd = os.open(existing, os.O_WRONLY | os.O_APPEND)
    fs.fail("logs/", "ENOSPC")
    attempts: list[tuple[Callable[..., object], tuple[object, ...]]] = [
        (os.write, (fd, b"more")),
        (os.fsync, (fd,)),
        (os.ftruncate, (fd, 0)),
        (put, (fs.path("logs/new"), b"x")),
        (os.mkdir, (fs.path("logs/sub"),)),
    ]
    for call, args in attempts:
        with pytest.raises(OSError) as failure:
            call(*args)
        assert failure.value.errno == errno.ENOSPC
    put(fs.path("spool/seg-1"), b"spooled")
    assert fs.path("spool/seg-1").read_bytes() == b"spooled"
    assert existing.read_bytes() == b"before"
    fs.clear_fail()
    os.write(fd, b" after")
    os.close(fd)
    assert existing.read_bytes() == b"before after"


def test_no_stale_kernel_cache_after_restart(fs: PowerFS) -> None:
    """After a dropped write, a new open of the same path reads the durable content."""
    path = durable_file(fs, "c.txt", b"durable")
    with open(path, "r+b") as f:
        f.write(b"VOLATILE, AND LONGER")
    assert path.read_bytes() == b"VOLATILE, AND LONGER"  # served, so any cache is warm
    assert path.stat().st_size == 20
    extra = fs.path("extra")
    put(extra, b"new file")
    assert extra.exists()
    held = os.open(path, os.O_RDONLY)
    assert os.pread(held, 8, 0) == b"VOLATILE"
    power_cut(fs)
    assert path.stat().st_size == 7
    assert path.read_bytes() == b"durable"
    assert not extra.exists()
    assert os.listdir(fs.mountpoint) == ["c.txt"]
    assert_eio(os.pread, held, 8, 0)  # a handle from before the reboot is dead
    with contextlib.suppress(OSError):
        os.close(held)


def test_leaving_the_block_unmounts_even_after_a_failure(tmp_path: Path) -> None:
    """PowerFS unmounts and stops its child on exit, with a crash and a busy file."""
    require(unavailable_reason() is None, unavailable_reason() or "")
    mountpoint = tmp_path / "mnt"
    held: list[int] = []

    def fail_inside() -> None:
        with PowerFS(mountpoint) as fs:
            held.append(os.open(fs.path("busy"), os.O_WRONLY | os.O_CREAT, 0o644))
            fs.crash()
            raise RuntimeError("test failed")

    with pytest.raises(RuntimeError, match="test failed"):
        fail_inside()
    assert not is_mounted(mountpoint.resolve())
    for fd in held:
        with contextlib.suppress(OSError):
            os.close(fd)


def test_append_and_fsync_throughput(
    fs: PowerFS, record_property: Callable[[str, object], None]
) -> None:
    """Small appends with an fsync per batch run at thousands of operations a second."""
    path = durable_file(fs, "bench.log", b"")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    sizes = [300, 1200, 64 * 1024, 500, 4096, 700, 2000, 900]
    appends = syncs = 0
    start = time.perf_counter()
    while time.perf_counter() - start < 1.0:
        for size in sizes:
            os.write(fd, b"r" * size)
            appends += 1
        os.fsync(fd)
        syncs += 1
    elapsed = time.perf_counter() - start
    dsync_batches = 0
    start = time.perf_counter()
    while time.perf_counter() - start < 0.5:
        os.pwritev(fd, [b"d" * 400] * 8, 0, os.RWF_DSYNC)
        dsync_batches += 1
    dsync_elapsed = time.perf_counter() - start
    os.close(fd)
    rate = (appends + syncs) / elapsed
    record_property("appends_fsyncs_per_s", round(rate))
    record_property("rwf_dsync_batches_per_s", round(dsync_batches / dsync_elapsed))
    print(
        f"\nPowerFS: {rate:.0f} appends+fsyncs/s ({appends} appends, {syncs} fsyncs), "
        f"{dsync_batches / dsync_elapsed:.0f} pwritev(RWF_DSYNC) batches/s"
    )
    assert rate > 500
    assert fs.stats()["unsynced_sectors"] == 0


def test_durable_state_matches_a_full_copy_model() -> None:
    """Random writes, truncates, fsyncs: the sector-diff durable state equals a full copy."""
    for seed in range(150):
        rng = random.Random(seed)
        model = PowerModel()
        fh = model.create("/f", 0o644, os.O_RDWR, 0, 0)
        model.fsyncdir("/", model.opendir("/"))
        current, durable = bytearray(), bytearray()
        for _ in range(rng.randint(1, 40)):
            roll = rng.random()
            if roll < 0.5:
                offset = rng.randint(0, len(current) + 1500)
                data = rng.randbytes(rng.randint(1, 3000))
                model.write("/f", fh, data, offset, os.O_RDWR)
                current.extend(bytes(max(0, offset - len(current))))
                current[offset : offset + len(data)] = data
            elif roll < 0.7:
                length = rng.randint(0, len(current) + 2000)
                model.truncate("/f", length, fh)
                del current[length:]
                current.extend(bytes(length - len(current)))
            else:
                model.fsync("/f", fh)
                durable = bytearray(current)
            assert model.snapshot()["f"] == current
            assert model.snapshot("durable")["f"] == durable
        torn = model.preview("tear", seed)["f"]
        assert len(torn) in (len(current), len(durable))
        for lo in range(0, len(torn), SECTOR):
            sector = torn[lo : lo + SECTOR]
            new = bytes(current[lo : lo + SECTOR]).ljust(SECTOR, b"\0")[: len(sector)]
            old = bytes(durable[lo : lo + SECTOR]).ljust(SECTOR, b"\0")[: len(sector)]
            assert sector in (new, old)
