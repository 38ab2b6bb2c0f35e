"""Fault scenarios with real faults: run as ``python -m tests.faults._orchestrate NAME DIR``.

Scenarios that mount file systems run inside a private mount namespace (``unshare -m``,
started by the test), so a crashed run leaves nothing mounted. Each scenario drives a
real writer process (``_driver.py``), breaks its storage for real (a full tmpfs, a
read-only remount, a non-root writer losing permission, ``rm``), copies the resulting
log directory out of the namespace, and writes ``DIR/result.json`` for the test to
count: events produced = events in the log (after recovery), lost = 0, duplicates = 0.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from tests.helpers import clean_env

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


class Driver:
    """One writer process and its command channel."""

    def __init__(
        self,
        work: Path,
        env: dict[str, str],
        *,
        name: str = "driver",
        python: str = sys.executable,
        preexec: list[str] | None = None,
        extra_pythonpath: str | None = None,
    ) -> None:
        read_fd, write_fd = os.pipe()
        full_env = clean_env()
        full_env.update(env)
        full_env["PYTHONPATH"] = extra_pythonpath or f"{SRC}{os.pathsep}{ROOT}"
        self.stdout_path = work / f"{name}.stdout"
        self.stdout: BinaryIO = open(self.stdout_path, "ab")  # noqa: SIM115
        self.stderr: BinaryIO = open(work / f"{name}.stderr", "ab")  # noqa: SIM115
        script = str(Path(__file__).with_name("_driver.py"))
        if extra_pythonpath:
            script = str(Path(extra_pythonpath) / "_driver.py")
        self.proc = subprocess.Popen(
            [*(preexec or []), python, script, str(write_fd)],
            stdin=subprocess.PIPE,
            stdout=self.stdout,
            stderr=self.stderr,
            env=full_env,
            pass_fds=(write_fd,),
            cwd=str(work),
        )
        os.close(write_fd)
        self.answers = os.fdopen(read_fd, "rb")
        hello = self._read()
        if not hello.get("ok"):
            raise RuntimeError(f"driver failed to start: {hello}")

    def _read(self) -> dict[str, Any]:
        line = self.answers.readline()
        if not line:
            err = Path(self.stderr.name).read_text()[-3000:]
            raise RuntimeError(f"driver exited (rc={self.proc.poll()}): {err}")
        return dict(orjson.loads(line))

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(cmd) + b"\n")
        self.proc.stdin.flush()

    def cmd(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        while True:
            answer = self._read()
            if "confirmed" not in answer:
                return answer

    def close(self) -> None:
        self.cmd(op="close")
        self.proc.wait(timeout=30)
        self.stdout.close()
        self.stderr.close()


def sh(*args: str) -> None:
    subprocess.run(args, check=True)


def mount_tmpfs(directory: Path, size: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory))


def fill(directory: Path) -> Path:
    """Fill a file system to the last byte (a real ENOSPC for the next write)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    block = b"\0" * 4096
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                try:
                    os.write(fd, b"\0")  # the last partial block
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:08d}" for i in range(n)]


def base_env(primary: Path, spool: Path | None) -> dict[str, str]:
    env = {
        "RISK_AUDIT_LOG_PATH": str(primary / "risk_audit.jsonl"),
        "RISK_AUDIT_FLUSH_INTERVAL": "2ms",
        "RISK_AUDIT_RETRY_MAX": "0.2",
        "LOG_LEVEL": "INFO",
    }
    if spool is not None:
        env["RISK_AUDIT_SPOOL_DIR"] = str(spool)
    return env


def copy_out(work: Path, *dirs: Path) -> list[str]:
    out = []
    for d in dirs:
        target = work / "out" / d.name
        if d.exists():
            shutil.copytree(d, target, dirs_exist_ok=True)
        out.append(str(target))
    return out


# -- scenarios ----------------------------------------------------------------------


def disk_full(work: Path) -> dict[str, Any]:
    """Primary on a small tmpfs, spool on another; fill one, then both, then free."""
    primary, spool = work / "mnt" / "primary", work / "mnt" / "spool"
    mount_tmpfs(primary, "1m")
    mount_tmpfs(spool, "512k")
    d = Driver(work, base_env(primary, spool))
    produced: list[str] = []
    d.cmd(op="produce", n=200, prefix="a", size=200)
    produced += ids("a", 200)
    assert d.cmd(op="flush")["ok"]
    filler_p = fill(primary)
    d.cmd(op="produce", n=300, prefix="b", size=200)
    produced += ids("b", 300)
    assert d.cmd(op="flush")["ok"], "spool should make them durable"
    spooled = d.cmd(op="health")
    filler_s = fill(spool)
    d.cmd(op="produce", n=150, prefix="c", size=200)
    produced += ids("c", 150)
    d.cmd(op="produce", n=2, prefix="big", size=40_000)  # > 16 KiB: split by runtimes
    produced += ids("big", 2)
    degraded = d.cmd(op="flush")
    stdout_health = d.cmd(op="health")
    filler_p.unlink()
    filler_s.unlink()
    back = d.cmd(op="wait", destination="primary", timeout=20)
    d.cmd(op="produce", n=100, prefix="d", size=200)
    produced += ids("d", 100)
    d.close()
    return {
        "produced": produced,
        "log_dirs": copy_out(work, primary),
        "stdout": [str(d.stdout_path)],
        "checks": {
            "spooled_status": spooled["status"],
            "stdout_status": stdout_health["status"],
            "flush_degraded": not degraded["ok"],
            "back_on_primary": back["ok"],
            "spool_left": sorted(p.name for p in spool.glob("*.spool-*")),
        },
    }


def read_only(work: Path) -> dict[str, Any]:
    """The primary's file system read-only when the writer opens, then rw again."""
    primary, spool = work / "mnt" / "primary", work / "spool"
    mount_tmpfs(primary, "4m")
    d = Driver(work, base_env(primary, spool), name="first")
    d.cmd(op="produce", n=100, prefix="a", size=100)
    d.close()
    produced = ids("a", 100)
    sh("mount", "-o", "remount,ro", str(primary))
    d = Driver(work, base_env(primary, spool), name="second")
    started_on = d.cmd(op="health")
    d.cmd(op="produce", n=200, prefix="b", size=100)
    produced += ids("b", 200)
    durable = d.cmd(op="flush")
    sh("mount", "-o", "remount,rw", str(primary))
    back = d.cmd(op="wait", destination="primary", timeout=20)
    d.cmd(op="produce", n=100, prefix="c", size=100)
    produced += ids("c", 100)
    d.close()
    return {
        "produced": produced,
        "log_dirs": copy_out(work, primary),
        "stdout": [str(work / "first.stdout"), str(work / "second.stdout")],
        "checks": {
            "started_on": started_on["destination"],
            "spool_durable": durable["ok"],
            "back_on_primary": back["ok"],
            "spool_left": sorted(p.name for p in spool.glob("*.spool-*")),
        },
    }


def _unprivileged_python(work: Path) -> tuple[str, str]:
    """A python and a PYTHONPATH that user ``nobody`` can reach (the venv may live
    under /root): a copy of riskaudit, orjson and the driver in a 0755 directory."""
    candidates = [p for p in ("/usr/bin/python3.11", "/usr/bin/python3") if os.path.exists(p)]
    if not candidates:
        raise RuntimeError("no system python3.11 for the unprivileged writer")
    lib = work / "lib"
    lib.mkdir(mode=0o755)
    shutil.copytree(SRC / "riskaudit", lib / "riskaudit")
    import orjson as orjson_module

    site = Path(orjson_module.__file__).resolve().parent
    shutil.copytree(site, lib / "orjson")
    shutil.copy(Path(__file__).with_name("_driver.py"), lib / "_driver.py")
    for p in [work, *work.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return candidates[0], str(lib)


def permission_denied(work: Path) -> dict[str, Any]:
    """A non-root writer; its directory made unwritable under it and the file rotated
    away, so it cannot create the log again (EACCES), then permission restored."""
    work.chmod(0o755)
    python, lib = _unprivileged_python(work)
    primary, spool = work / "primary", work / "spool"
    for directory in (primary, spool):
        directory.mkdir(mode=0o755)
        os.chown(directory, 65534, 65534)
    d = Driver(
        work,
        base_env(primary, spool),
        python=python,
        extra_pythonpath=lib,
        preexec=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
    )
    d.cmd(op="produce", n=100, prefix="a", size=100)
    assert d.cmd(op="flush")["ok"]
    primary.chmod(0o555)
    (primary / "risk_audit.jsonl").rename(primary / "risk_audit.jsonl.1")
    d.cmd(op="produce", n=200, prefix="b", size=100)
    durable = d.cmd(op="flush")
    denied = d.cmd(op="health")
    primary.chmod(0o755)
    back = d.cmd(op="wait", destination="primary", timeout=20)
    d.cmd(op="produce", n=100, prefix="c", size=100)
    d.close()
    return {
        "produced": ids("a", 100) + ids("b", 200) + ids("c", 100),
        "log_dirs": copy_out(work, primary),
        "stdout": [str(d.stdout_path)],
        "checks": {
            "denied_status": denied["status"],
            "denied_reasons": denied["reasons"],
            "spool_durable": durable["ok"],
            "back_on_primary": back["ok"],
        },
    }


def _removed(work: Path, remove: Callable[[Path], None]) -> dict[str, Any]:
    primary, spool = work / "logs", work / "spool"
    d = Driver(work, base_env(primary, spool))
    d.cmd(op="produce", n=300, prefix="a", size=100)
    assert d.cmd(op="flush")["ok"]
    remove(primary)
    d.send(op="produce", n=300, prefix="b", size=100)  # keeps writing while it happens
    d._read()
    time.sleep(1.2)  # the writer looks every 0.5 s
    d.cmd(op="produce", n=100, prefix="c", size=100)
    health = d.cmd(op="health")
    d.close()
    return {
        "produced": ids("a", 300) + ids("b", 300) + ids("c", 100),
        "log_dirs": copy_out(work, primary),
        "stdout": [str(d.stdout_path)],
        "checks": {
            "status": health["status"],
            "reasons": health["reasons"],
            "counters": health["counters"],
        },
    }


def directory_removed(work: Path) -> dict[str, Any]:
    """``rm -r`` of the log directory while the writer writes."""
    return _removed(work, lambda d: sh("rm", "-r", str(d)))


def file_unlinked(work: Path) -> dict[str, Any]:
    """``rm`` of the open log file (logrotate without a signal, or a mistake)."""
    return _removed(work, lambda d: (d / "risk_audit.jsonl").unlink())


def crash_loop(work: Path, iterations: int = 50) -> dict[str, Any]:
    """kill -9 at a random moment, many times; flush() every 100 events."""
    import threading

    primary = work / "logs"
    rng = random.Random(int(os.environ.get("FAULT_SEED", "1")))
    confirmed: list[str] = []
    for it in range(iterations):
        d = Driver(work, base_env(primary, None), name="crash")
        last = [0]

        def read(driver: Driver = d, box: list[int] = last) -> None:
            for line in driver.answers:
                box[0] = max(box[0], int(orjson.loads(line).get("confirmed", 0)))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        d.send(
            op="produce",
            n=1_000_000,
            prefix=f"k{it:03d}",
            size=rng.choice([50, 500, 3000]),
            flush_every=100,
        )
        time.sleep(rng.uniform(0.05, 0.4))
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        reader.join(timeout=5)
        d.stdout.close()
        d.stderr.close()
        confirmed += ids(f"k{it:03d}", last[0])
    d = Driver(work, base_env(primary, None), name="final")
    d.close()
    return {
        "produced": confirmed,
        "confirmed_only": True,
        "log_dirs": copy_out(work, primary),
        "stdout": [],
        "checks": {"iterations": iterations, "torn_files": len(list(primary.glob("*.torn-*")))},
    }


def overflow(work: Path) -> dict[str, Any]:
    """A stalled writer and a full queue: kill switches never wait; the others wait
    the append timeout and go out as unsequenced lines."""
    primary = work / "logs"
    env = base_env(primary, None) | {
        "RISK_AUDIT_QUEUE_SIZE": "64",
        "RISK_AUDIT_RESERVE": "8",
        "RISK_AUDIT_BACKLOG_LIMIT": "0",
        "RISK_AUDIT_APPEND_TIMEOUT": "50ms",
    }
    d = Driver(work, env)
    d.cmd(op="stall")
    d.cmd(op="produce", n=56, prefix="q", size=50)  # fills the ordinary part
    timings_ks = [d.cmd(op="kill_switch", event_id=f"ks-{i:08d}") for i in range(10)]
    timings_other = [d.cmd(op="timed", event_id=f"o-{i:08d}") for i in range(5)]
    d.cmd(op="unstall")
    d.close()
    return {
        "produced": ids("q", 56)
        + [f"ks-{i:08d}" for i in range(10)]
        + [f"o-{i:08d}" for i in range(5)],
        "log_dirs": copy_out(work, primary),
        "stdout": [str(d.stdout_path)],
        "checks": {
            "kill_switch_seconds": [t["seconds"] for t in timings_ks],
            "kill_switch_unsequenced": sum(1 for t in timings_ks if t["seq"] is None),
            "other_seconds": [t["seconds"] for t in timings_other],
            "other_unsequenced": sum(1 for t in timings_other if t["seq"] is None),
        },
    }


SCENARIOS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "disk_full": disk_full,
    "read_only": read_only,
    "permission_denied": permission_denied,
    "directory_removed": directory_removed,
    "file_unlinked": file_unlinked,
    "crash_loop": crash_loop,
    "overflow": overflow,
}


def main() -> None:
    name, work = sys.argv[1], Path(sys.argv[2])
    result = SCENARIOS[name](work)
    (work / "result.json").write_bytes(orjson.dumps(result))


if __name__ == "__main__":
    main()
