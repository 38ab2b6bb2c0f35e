"""Real faults, counted: produced = in the log (after recovery), lost = 0, duplicates = 0.

Each scenario runs in a private mount namespace (``unshare -m``) with real faults: a
full tmpfs, a read-only remount, a non-root writer losing permission, ``rm`` of the
open log or its directory, ``kill -9`` in a loop, a stalled writer with a full queue.
They need root (mounts, another user). Locally a non-root run skips them with the
reason; under CI (``CI=true``) a skip is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from riskaudit import AuditConfig, verify_paths
from riskaudit.recovery import recover
from tests.faults._orchestrate import ROOT, SRC
from tests.helpers import require

TABLE: list[tuple[str, int, int, int, int, int]] = []


def run_scenario(name: str, work: Path) -> dict[str, Any]:
    require(os.geteuid() == 0, "fault tests need root (mounts, another user)")
    require(shutil.which("unshare") is not None, "needs util-linux unshare")
    proc = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            sys.executable,
            "-m",
            "tests.faults._orchestrate",
            name,
            str(work),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{ROOT}"},
    )
    if proc.returncode != 0:
        logs = "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in work.glob("*.stderr"))
        pytest.fail(f"scenario {name} failed:\n{proc.stdout}\n{proc.stderr}{logs}")
    return dict(orjson.loads((work / "result.json").read_bytes()))


def events_in(directory: Path) -> tuple[list[str], list[str]]:
    """(event ids in event records, event ids in recovered records) of a log dir, each
    record read once and as verify reads it (sealed segments up to their named end)."""
    in_log: list[str] = []
    recovered: list[str] = []
    from riskaudit.integrity import expand, line_chunks, order

    seen: set[bytes] = set()
    for src in order(expand([str(directory)])):
        for lines, complete in line_chunks(src.path):
            if not complete:
                continue
            for line in lines:
                if line in seen:
                    continue  # the same record in two files is one record copied
                seen.add(line)
                rec = orjson.loads(line)
                if "event_id" in rec:
                    target = recovered if ".recovered-" in src.path.name else in_log
                    target.append(rec["event_id"])
                elif rec.get("kind") == "recovered":
                    ev = rec.get("event") or orjson.loads(rec.get("record", "{}"))
                    recovered.append(ev.get("event_id"))
    return in_log, recovered


def count(name: str, result: dict[str, Any], log_dir: Path, stdout: list[Path]) -> Counter[str]:
    """Recover from the stdout captures, verify, count; one row of the table."""
    log_path = log_dir / "risk_audit.jsonl"
    if stdout:
        rep = recover(stdout, log_path, AuditConfig(log_path=log_path))
        assert not rep.missing, rep.missing
    report = verify_paths([log_dir])
    assert report.valid, [str(f) for f in report.findings]
    in_log, recovered = events_in(log_dir)
    produced = set(result["produced"])
    seen = Counter(in_log + recovered)
    dups = sum(c - 1 for c in seen.values() if c > 1)
    lost = len(produced - set(seen))
    in_log_n = len(produced & set(in_log))
    rec_n = len(produced & set(recovered) - set(in_log))
    TABLE.append((name, len(produced), in_log_n, rec_n, lost, dups))
    assert lost == 0, sorted(produced - set(seen))[:10]
    assert dups == 0
    return seen


@pytest.fixture
def work() -> Any:
    # Not under pytest's 0700 tmp dir: the non-root writer must reach it.
    d = Path(tempfile.mkdtemp(prefix="riskaudit-fault-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def stdout_files(result: dict[str, Any]) -> list[Path]:
    return [Path(p) for p in result["stdout"] if Path(p).exists()]


def test_disk_full_primary_then_spool_then_freed(work: Path) -> None:
    """Primary tmpfs full → spool; spool full too → stdout; space freed → spool replayed,
    gap written; recover from the captured stdout puts everything back."""
    result = run_scenario("disk_full", work)
    checks = result["checks"]
    assert checks["spooled_status"] == "degraded"
    assert checks["stdout_status"] == "failing"
    assert checks["flush_degraded"] and checks["back_on_primary"]
    assert checks["spool_left"] == []
    log_dir = Path(result["log_dirs"][0])
    pristine = work / "pristine"
    shutil.copytree(log_dir, pristine)
    count("disk full (plain stdout)", result, log_dir, stdout_files(result))
    # The same stdout as Docker's json-file driver and the CRI format would keep it.
    raw = stdout_files(result)[0].read_bytes()
    for fmt, convert in (("docker json-file", to_docker), ("kubernetes CRI", to_cri)):
        copy = work / fmt.split()[0]
        shutil.copytree(pristine, copy)
        container_log = work / f"{fmt.split()[0]}.log"
        container_log.write_bytes(convert(raw))
        count(f"disk full ({fmt})", result, copy, [container_log])


def _pieces(line: bytes, size: int = 16 * 1024) -> list[bytes]:
    return [line[i : i + size] for i in range(0, len(line), size)] or [b""]


def to_docker(raw: bytes) -> bytes:
    """Docker json-file: one JSON object per 16 KiB piece; only the last ends in \\n."""
    out = []
    for line in raw.splitlines():
        pieces = _pieces(line)
        for i, piece in enumerate(pieces):
            text = piece.decode("utf-8", "surrogateescape")
            if i == len(pieces) - 1:
                text += "\n"
            out.append(
                orjson.dumps(
                    {"log": text, "stream": "stdout", "time": "2026-11-26T09:00:00.000000000Z"}
                )
            )
    return b"\n".join(out) + b"\n"


def to_cri(raw: bytes) -> bytes:
    """CRI: ``<time> stdout P|F <text>``, P for every piece but the last."""
    out = []
    for line in raw.splitlines():
        pieces = _pieces(line)
        for i, piece in enumerate(pieces):
            flag = b"F" if i == len(pieces) - 1 else b"P"
            out.append(b"2026-11-26T09:00:00.000000000Z stdout " + flag + b" " + piece)
    return b"\n".join(out) + b"\n"


def test_read_only_volume(work: Path) -> None:
    """The primary's file system read-only at start → spool; remounted rw → replayed."""
    result = run_scenario("read_only", work)
    checks = result["checks"]
    assert checks["started_on"] == "spool" and checks["spool_durable"]
    assert checks["back_on_primary"] and checks["spool_left"] == []
    count("read-only volume", result, Path(result["log_dirs"][0]), stdout_files(result))


def test_permission_denied_non_root_writer(work: Path) -> None:
    """A writer running as nobody loses permission to its directory (EACCES) → spool;
    permission back → the path is created again and the spool replayed."""
    result = run_scenario("permission_denied", work)
    checks = result["checks"]
    assert checks["denied_status"] == "degraded", checks
    assert checks["spool_durable"] and checks["back_on_primary"]
    count("permission denied", result, Path(result["log_dirs"][0]), stdout_files(result))


def test_directory_removed_while_writing(work: Path) -> None:
    """rm -r of the log directory: the writer restores the file from its open handle."""
    result = run_scenario("directory_removed", work)
    assert "rescued=1" in result["checks"]["counters"]
    reasons = result["checks"]["reasons"]
    assert not any("lock" in r for r in reasons), reasons  # the lock was taken again
    count("log directory removed", result, Path(result["log_dirs"][0]), stdout_files(result))


def test_file_unlinked_while_writing(work: Path) -> None:
    """rm of the open log: restored from the open handle, nothing lost."""
    result = run_scenario("file_unlinked", work)
    assert "rescued=1" in result["checks"]["counters"]
    count("log file unlinked", result, Path(result["log_dirs"][0]), stdout_files(result))


def test_crash_loop_kill_9(work: Path) -> None:
    """50 x kill -9 mid-stream: every flush()-confirmed event survives, the chain is
    valid, and every torn tail cut aside is named by a repair record."""
    result = run_scenario("crash_loop", work)
    log_dir = Path(result["log_dirs"][0])
    count("crash loop (50 x kill -9)", result, log_dir, [])
    repairs = [
        orjson.loads(line)
        for f in log_dir.glob("risk_audit.jsonl")
        for line in f.read_bytes().splitlines()
        if b'"kind":"repair"' in line
    ]
    torn = sorted(p.name for p in log_dir.glob("*.torn-*"))
    assert sorted(r["kept_at"] for r in repairs) == torn
    print(f"crash loop: {len(torn)} torn tails repaired")


def test_overflow_with_a_stalled_writer(work: Path) -> None:
    """Queue full: KILL_SWITCH appends return in under 10 ms; others after the append
    timeout, as unsequenced lines; every event is back after recovery."""
    result = run_scenario("overflow", work)
    checks = result["checks"]
    assert max(checks["kill_switch_seconds"]) < 0.010
    assert checks["other_unsequenced"] == 5
    assert all(0.045 <= s < 0.5 for s in checks["other_seconds"])
    count("overflow (stalled writer)", result, Path(result["log_dirs"][0]), stdout_files(result))
