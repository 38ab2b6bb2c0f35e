"""Power cuts and torn writes, on a file system of our own: nothing confirmed is lost.

PowerFS (``_powerfs.py``, FUSE) keeps what is not yet fsynced in memory and, at a crash,
drops it or tears it at 512-byte sectors (a multi-page write half on the platter: NUL
runs followed by complete lines), never touching fsynced bytes; un-fsynced creates,
renames and unlinks are undone unless their directory was fsynced. A real writer
process (``_power_worker.py``) runs on it and records each confirmation it got; the
file system crashes at a random moment inside one phase of the writer's work, the
writer is SIGKILLed, the file system "reboots", and the log is opened again (start-up
repair, spool replay). Then every confirmed event must be in the log exactly once, and
``verify`` must pass.

Phases, 40 crash points each (``make soak`` runs more): a batch (the log's writes and
syncs), a rotation (the seal's rename and directory sync, the new file's creation), a
spool replay (the primary coming back: its writes, the spool's unlink and directory
sync) and a checkpoint (the sidecar's create, write and sync).

This machine has ``/dev/fuse``: without it this suite is the one allowed skip under
``CI=true``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from riskaudit import AuditConfig, AuditLog, verify_paths
from tests.faults._orchestrate import ROOT, SRC
from tests.helpers import stream_event_ids, stream_records

TABLE: list[str] = []
POINTS = 40


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    #: (operation, path fragment under the run's directory, the last nth to pick)
    targets: tuple[tuple[str, str, int], ...]
    spec: dict[str, Any]
    spool_first: bool = False  # the primary fails at start; the crash comes in the replay


PHASES = (
    Phase(
        "batch",
        # pwritev2(RWF_DSYNC) is one write request carrying the sync (no FSYNC follows).
        (("write", "log/risk_audit.jsonl", 60),),
        {"confirm": "flush"},
    ),
    Phase(
        "rotation",
        (
            ("rename", "log/risk_audit", 4),  # the seal: the active file to its segment name
            ("fsyncdir", "log", 6),  # the rename made durable, the new file's entry
            ("create", "log/risk_audit.jsonl", 4),  # the new active file
        ),
        {"confirm": "flush", "rotate_bytes": 24 * 1024},
    ),
    Phase(
        "spool replay",
        (
            ("write", "log/risk_audit.jsonl", 1),  # the replay itself
            ("unlink", "spool/", 1),  # the spool file, once the replay read back right
            ("fsyncdir", "spool", 1),  # that unlink made durable
        ),
        {"confirm": "durable"},
        spool_first=True,
    ),
    Phase(
        "checkpoint",
        # The checkpoint record is durable in the log before its sidecar copy is written:
        # "before" crashes between the two, "after" right after the copy.
        (("write", "log/risk_audit.jsonl.checkpoints", 8),),
        {"confirm": "flush", "checkpoint_records": 60},
    ),
)


def _require_powerfs() -> Any:
    from tests.faults import _powerfs

    reason = _powerfs.unavailable_reason()
    if reason is not None:
        # The one allowed skip under CI=true (the issue names it): no /dev/fuse here.
        if os.environ.get("CI") == "true" and os.path.exists("/dev/fuse"):
            pytest.fail(f"power-loss suite cannot run: {reason}")
        pytest.skip(reason)
    return _powerfs


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def crash_point(fs: Any, phase: Phase, k: int, local: Path, seed: int) -> dict[str, Any]:
    """One crash inside ``phase``; the result of the check after the reboot."""
    rnd = random.Random(f"{seed}-{phase.name}-{k}")
    run = f"{phase.name.replace(' ', '-')}-{k}"
    base = fs.path(run)
    base.mkdir()
    _fsync_dir(fs.path())
    op, fragment, last_nth = rnd.choice(phase.targets)
    nth = rnd.randint(1, last_nth)
    when = rnd.choice(("before", "after"))
    mode = "tear" if k % 4 < 2 else "drop"
    # Every other point writes then fsyncs (a file system without RWF_DSYNC): a crash
    # between the two is what leaves un-synced pages to drop or tear, so a tearing point
    # of that kind crashes inside that window (after the write, or before its fsync).
    dsync = k % 2 == 1
    if not dsync and op == "write":
        op = rnd.choice(("write", "fsync"))
        if mode == "tear":
            when = "after" if op == "write" else "before"
    spec = {
        **phase.spec,
        "dsync": dsync,
        "log": str(base / "log" / "risk_audit.jsonl"),
        "spool": str(base / "spool"),
        "prefix": run,
    }
    confirmed_file = local / f"{run}.confirmed"
    stderr = open(local / f"{run}.stderr", "wb")  # noqa: SIM115
    if phase.spool_first:
        # The directories exist (durably); the log's files cannot be written, so the
        # writer starts on the spool (its lock falls back there too).
        for sub in ("log", "spool"):
            (base / sub).mkdir()
        _fsync_dir(base)
        fs.fail(f"{run}/log/risk_audit.jsonl", "ENOSPC")
    else:
        fs.arm(op, f"{run}/{fragment}", nth, when, mode=mode, seed=rnd.randrange(2**32))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.faults._power_worker",
            orjson.dumps(spec).decode(),
            str(confirmed_file),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{ROOT}"},
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )

    def confirmed() -> list[str]:
        try:
            lines = confirmed_file.read_bytes().decode().split("\n")
        except FileNotFoundError:
            return []
        return [x for x in lines[:-1] if x and not x.startswith("#")]

    def alive() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"worker died: {Path(stderr.name).read_text()[-2000:]}")

    fired_in_phase = True
    try:
        deadline = time.monotonic() + 10
        if phase.spool_first:
            while len(confirmed()) < 200:
                alive()
                assert time.monotonic() < deadline, "the spool took no records"
                time.sleep(0.01)
            fs.arm(op, f"{run}/{fragment}", nth, when, mode=mode, seed=rnd.randrange(2**32))
            fs.clear_fail()
        deadline = time.monotonic() + 10
        while not fs.stats()["crashed"] and time.monotonic() < deadline:
            alive()
            time.sleep(0.005)
        if not fs.stats()["crashed"]:
            fired_in_phase = False
            fs.crash(mode, rnd.randrange(2**32))
        last = fs.stats()["last_crash"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stderr.close()
        fs.disarm()
        fs.clear_fail()
    confirmed_ids = confirmed()
    fs.restart()
    cfg = AuditConfig(
        log_path=Path(spec["log"]),
        spool_dir=Path(spec["spool"]),
        flush_interval=0.001,
        host="power-host",
        schema_policy="off",
    )
    AuditLog(cfg).close()  # the reboot: start-up repair, replay, seal
    log_dir = cfg.log_path.parent
    report = verify_paths([log_dir])
    seen = Counter(stream_event_ids(log_dir))
    recs = stream_records(log_dir)
    kinds = Counter(r.get("kind") or "event" for r in recs)
    aside = Counter(r.get("reason") for r in recs if r.get("kind") == "segment")
    return {
        "phase": phase.name,
        "point": k,
        "dsync": dsync,
        "op": op,
        "nth": nth,
        "when": when,
        "mode": mode,
        "in_phase": fired_in_phase,
        "sectors": last,
        "confirmed": len(confirmed_ids),
        "lost": sorted(set(confirmed_ids) - set(seen))[:5],
        "lost_count": len(set(confirmed_ids) - set(seen)),
        "duplicates": sum(n - 1 for n in seen.values() if n > 1),
        "valid": report.valid,
        "findings": [str(f) for f in report.findings[:5]],
        "repairs": kinds["repair"],
        "set_aside": aside["untrusted"],
        "corrupt": aside["corrupt"] + aside["truncated"],
        "torn_files": len(list(log_dir.glob("*.torn-*"))),
    }


def run_phases(points: int, seed: int) -> None:
    powerfs = _require_powerfs()
    mnt = Path(tempfile.mkdtemp(prefix="riskaudit-powerfs-"))
    local = Path(tempfile.mkdtemp(prefix="riskaudit-powerfs-local-"))
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        with powerfs.PowerFS(mnt) as fs:
            for phase in PHASES:
                for k in range(points):
                    results.append(crash_point(fs, phase, k, local, seed))
    finally:
        shutil.rmtree(local, ignore_errors=True)
        with __import__("contextlib").suppress(OSError):
            mnt.rmdir()
    TABLE.append(f"### power loss and torn writes: seed {seed}, {time.monotonic() - started:.0f} s")
    TABLE.append(
        "| phase | crash points | in phase | drop / tear | confirmed | lost | duplicates "
        "| verify valid | torn tails cut | untrusted set aside | corrupt |"
    )
    TABLE.append("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    bad = []
    for phase in PHASES:
        rows = [r for r in results if r["phase"] == phase.name]
        modes = Counter(r["mode"] for r in rows)
        TABLE.append(
            f"| {phase.name} | {len(rows)} | {sum(r['in_phase'] for r in rows)} | "
            f"{modes['drop']} / {modes['tear']} | {sum(r['confirmed'] for r in rows)} | "
            f"{sum(r['lost_count'] for r in rows)} | {sum(r['duplicates'] for r in rows)} | "
            f"{sum(r['valid'] for r in rows)}/{len(rows)} | {sum(r['repairs'] for r in rows)} | "
            f"{sum(r['set_aside'] for r in rows)} | {sum(r['corrupt'] for r in rows)} |"
        )
        in_phase = sum(r["in_phase"] for r in rows)
        if in_phase < min(20, points):
            bad.append(f"{phase.name}: only {in_phase} crashes landed in the phase")
    for r in results:
        if r["lost_count"] or r["duplicates"] or not r["valid"] or r["corrupt"]:
            bad.append(
                f"{r['phase']} #{r['point']} ({r['op']} #{r['nth']} {r['when']}, {r['mode']}): "
                f"lost {r['lost_count']} {r['lost']}, duplicates {r['duplicates']}, "
                f"verify {r['findings']}"
            )
    torn = sum(r["repairs"] for r in results)
    if torn < 3:
        bad.append(f"only {torn} torn tails were cut: the tear path was hardly exercised")
    assert not bad, "\n".join(bad[:12])


def test_power_loss_and_torn_writes_in_every_phase() -> None:
    """40 crash points in each of four phases (batch, rotation, spool replay,
    checkpoint), dropped or torn at 512-byte sectors: after the reboot and a reopen,
    every confirmed event is in the log exactly once and verify passes."""
    run_phases(POINTS, seed=1)


@pytest.mark.soak
def test_power_loss_soak() -> None:
    """More crash points from a random seed (printed; RISKAUDIT_SOAK_SEED replays it)."""
    seed = int(os.environ.get("RISKAUDIT_SOAK_SEED") or random.randrange(10**9))
    print(f"soak: RISKAUDIT_SOAK_SEED={seed}")
    run_phases(int(os.environ.get("RISKAUDIT_SOAK_POINTS", "100")), seed)
