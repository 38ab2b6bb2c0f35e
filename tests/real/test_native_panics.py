"""A panic in the Rust core never crosses into the host: it becomes AuditNativeError.

The core is built a second time with its test-only feature (``test-panics``), which
lets a test arm a one-shot panic in the hand-off, the chain (the writer's commit path)
or verify's scan. Each case runs in a fresh interpreter that loads that build as
``riskaudit._native``; the installed extension, which has no such hook, is untouched.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import ROOT, require

TARGET = ROOT / "native" / "target" / "test-panics"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def panicky() -> Path:
    """The core built with ``--features test-panics`` (cargo, --locked)."""
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    require(os.path.exists(cargo), "needs cargo to build the core with its test feature")
    built = subprocess.run(
        [
            cargo,
            "build",
            "--release",
            "--locked",
            "--manifest-path",
            str(ROOT / "native" / "Cargo.toml"),
            "--target-dir",
            str(TARGET),
            "--features",
            "pyo3/extension-module,test-panics",
        ],
        check=False,
        env={**os.environ, "PYO3_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return TARGET / "release" / "lib_native.so"


@dataclasses.dataclass
class Case:
    returncode: int
    stdout: str
    stderr: str
    #: What the case printed (its own lines, apart from the log's output).
    marks: str


def run_with(library: Path, body: str, tmp_path: Path) -> Case:
    """Run ``body`` in a fresh interpreter whose riskaudit._native is ``library``."""
    script = tmp_path / "case.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import importlib.util, sys
            spec = importlib.util.spec_from_file_location("riskaudit._native", {str(library)!r})
            module = importlib.util.module_from_spec(spec)
            sys.modules["riskaudit._native"] = module
            spec.loader.exec_module(module)
            assert module.TEST_PANICS
            # The case's own lines go to a file of their own: stdout carries the
            # AUDIT_EMERGENCY lines and stderr the dying writer's traceback, each written
            # by its own thread whenever it likes.
            import builtins, functools
            print = functools.partial(
                builtins.print, file=open({str(tmp_path / "marks.txt")!r}, "a"), flush=True
            )
            """
        )
        + textwrap.dedent(body)
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    marks = tmp_path / "marks.txt"
    text = marks.read_text() if marks.exists() else ""
    return Case(proc.returncode, proc.stdout, proc.stderr, text)


def emergency(out: Case) -> list[str]:
    """The AUDIT_EMERGENCY records on stdout (their own thread writes them, so one may
    follow another print on the same line)."""
    return [part.split("\n", 1)[0] for part in out.stdout.split("AUDIT_EMERGENCY ")[1:]]


def test_a_panic_in_the_hand_off_is_an_audit_error_and_the_log_goes_on(
    panicky: Path, tmp_path: Path
) -> None:
    """append raises AuditNativeError (nothing queued, no seq spent); the next append
    and the log's close work, and verify finds it valid."""
    out = run_with(
        panicky,
        f"""
        from riskaudit import AuditLog, AuditNativeError, RiskEvent, EventType, EventPriority
        from riskaudit import verify_paths
        from riskaudit._native import _arm_panic
        ev = lambda i: RiskEvent(EventType.ALERT, EventPriority.LOW, "s", {{"message": str(i)}})
        with AuditLog(path={str(tmp_path / "logs" / "risk_audit.jsonl")!r}) as log:
            first = log.append(ev(1))
            _arm_panic("hand-off")
            try:
                log.append(ev(2))
            except AuditNativeError as exc:
                print("raised:", type(exc).__name__, "|", exc)
            third = log.append(ev(3))
            assert third == first + 1, (first, third)
            log.flush()
        print("status:", verify_paths([{str(tmp_path / "logs")!r}]).status)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "raised: AuditNativeError | riskaudit's native core failed" in out.marks
    assert "status: valid" in out.marks


def test_a_panic_in_the_chain_ends_the_writer_the_documented_way(
    panicky: Path, tmp_path: Path
) -> None:
    """A panic while the writer chains a batch: the writer dies (health failing, flush
    raises AuditStateError naming the AuditNativeError), the batch's events go out as
    unsequenced emergency lines, the process lives on, and what was durable before
    still verifies."""
    out = run_with(
        panicky,
        f"""
        import json
        from riskaudit import AuditLog, AuditStateError, RiskEvent, EventType, EventPriority
        from riskaudit import verify_paths
        from riskaudit._native import _arm_panic
        ev = lambda i: RiskEvent(EventType.ALERT, EventPriority.LOW, "s", {{"message": str(i)}},
                                 event_id=f"ev-{{i}}")
        log = AuditLog(path={str(tmp_path / "logs" / "risk_audit.jsonl")!r})
        log.append(ev(1))
        log.flush()
        _arm_panic("chain")
        log.append(ev(2))
        try:
            log.flush(timeout=10)
        except AuditStateError as exc:
            print("flush:", exc)
        print("health:", log.health().status)
        log.close()
        print("status:", verify_paths([{str(tmp_path / "logs")!r}]).status)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "flush: the writer of" in out.marks and "AuditNativeError" in out.marks
    assert "health: failing" in out.marks
    assert "status: valid" in out.marks
    assert any('"kind":"unsequenced"' in line and '"ev-2"' in line for line in emergency(out)), (
        out.stdout
    )


def test_a_panic_in_the_commit_sends_the_batch_to_stdout_and_ends_the_writer(
    panicky: Path, tmp_path: Path
) -> None:
    """A panic in the native write of a chained batch: its records go out as
    AUDIT_EMERGENCY lines (chained, so `recover` can put them back), the writer dies the
    documented way, and the next start finds a log that verifies."""
    out = run_with(
        panicky,
        f"""
        from riskaudit import AuditLog, AuditDegradedError, AuditStateError, RiskEvent
        from riskaudit import EventType, EventPriority, verify_paths
        from riskaudit._native import _arm_panic
        ev = lambda i: RiskEvent(EventType.ALERT, EventPriority.LOW, "s", {{"message": str(i)}},
                                 event_id=f"ev-{{i}}")
        path = {str(tmp_path / "logs" / "risk_audit.jsonl")!r}
        log = AuditLog(path=path)
        log.append(ev(1))
        log.flush()
        _arm_panic("commit")
        seq = log.append(ev(2))
        try:
            log.flush(timeout=10)
        except AuditDegradedError as exc:
            print("flush:", exc)
        import time
        deadline = time.monotonic() + 10
        while log.health().status != "failing" and time.monotonic() < deadline:
            time.sleep(0.01)  # the writer's death completes on its own thread
        try:
            log.append(ev(4))
        except AuditStateError as exc:
            print("append:", exc)
        print("health:", log.health().status)
        log.close()
        with AuditLog(path=path) as again:
            again.append(ev(3))
        print("status:", verify_paths([{str(tmp_path / "logs")!r}]).status)
        print("seq:", seq)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "reached only stdout" in out.marks
    assert "append: the writer of" in out.marks and "AuditNativeError" in out.marks
    assert "health: failing" in out.marks
    assert "status: valid" in out.marks
    seq = next(line.split()[1] for line in out.marks.splitlines() if line.startswith("seq:"))
    assert any(
        line.startswith(f'{{"seq":{seq},') and '"ev-2"' in line for line in emergency(out)
    ), out.stdout


def test_a_panic_in_the_verify_scan_is_a_clear_error(panicky: Path, tmp_path: Path) -> None:
    """verify_paths raises AuditNativeError; `riskaudit verify` says so in one line and
    exits 2, no traceback; --engine=python still verifies the log."""
    out = run_with(
        panicky,
        f"""
        import sys
        from typer.testing import CliRunner
        from riskaudit import AuditLog, AuditNativeError, RiskEvent, EventType, EventPriority
        from riskaudit import verify_paths
        from riskaudit._native import _arm_panic
        from riskaudit.cli import app
        logs = {str(tmp_path / "logs")!r}
        with AuditLog(path=logs + "/risk_audit.jsonl") as log:
            for i in range(50):
                log.append(RiskEvent(EventType.ALERT, EventPriority.LOW, "s", {{"message": "m"}}))
        _arm_panic("scan")
        try:
            verify_paths([logs])
        except AuditNativeError as exc:
            print("raised:", type(exc).__name__)
        _arm_panic("scan")
        result = CliRunner().invoke(app, ["verify", logs])
        print("exit:", result.exit_code)
        print("output:", result.output.strip().replace(chr(10), " / "))
        crashed = not isinstance(result.exception, (SystemExit, type(None)))
        print("traceback:", crashed)
        python = CliRunner().invoke(app, ["verify", "--engine", "python", logs])
        print("python exit:", python.exit_code)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "raised: AuditNativeError" in out.marks
    assert "exit: 2" in out.marks
    assert "riskaudit: riskaudit's native core failed" in out.marks
    assert "traceback: False" in out.marks
    assert "python exit: 0" in out.marks
