"""No command prints a traceback, whatever path it is given.

The command list comes from the typer app itself, so a new command is covered the day
it is added. Each runs with a directory, a missing path, an empty file and a binary file
— as its path argument, its ``--out``, or the configured log path — and must end with a
documented exit code (0 ok, 1 invalid or failed, 2 usage or I/O error, 3 unanchored) and
no ``Traceback`` in its output.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from riskaudit.cli import app
from tests.conftest import RISKAUDIT
from tests.helpers import synced_clock

#: Long-running by design (a server, a consumer, a simulator): not one-shot commands.
LONG_RUNNING = {
    "serve",
    "demo",
    "collect",
    "forward",
    "nats init",
    "signal reopen",
    "signal rotate",
}
#: Commands whose only inputs are not paths.
NOT_PATHS = {"token create"}
EXIT_CODES = {0, 1, 2, 3}


def commands() -> Iterator[tuple[str, Any]]:
    def walk(cmd: Any, prefix: list[str]) -> Iterator[tuple[str, Any]]:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*prefix, name])
        else:
            yield " ".join(prefix), cmd

    yield from walk(typer.main.get_command(app), [])


def invocation(name: str, cmd: Any, path: str) -> list[str]:
    """The command with ``path`` in every place that takes one."""
    argv = name.split()
    for param in cmd.params:
        kind = type(param).__name__
        if kind.endswith("Argument"):
            argv.append(path)
        elif kind.endswith("Option") and param.required:
            argv += [param.opts[0], "why" if param.name in ("reason", "name", "role") else path]
    return argv


CASES = [
    (name, cmd) for name, cmd in commands() if name not in LONG_RUNNING and name not in NOT_PATHS
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    (root / "dir").mkdir()
    (root / "empty").write_bytes(b"")
    (root / "binary").write_bytes(bytes(range(256)) * 16)
    return {
        "dir": root / "dir",
        "missing": root / "missing" / "nothing",
        "empty": root / "empty",
        "binary": root / "binary",
    }


@pytest.mark.parametrize("what", ["dir", "missing", "empty", "binary"])
@pytest.mark.parametrize(("name", "cmd"), CASES, ids=[n for n, _ in CASES])
def test_no_command_prints_a_traceback(
    name: str, cmd: Any, what: str, inputs: dict[str, Path], tmp_path: Path
) -> None:
    """`riskaudit <command>` given a directory, a missing path, an empty or a binary
    file: a documented exit code and one clear message, never a traceback."""
    path = inputs[what]
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "RISK_AUDIT_LOG_PATH": str(path),
        "RISK_AUDIT_PID_FILE": str(tmp_path / "pid"),
    }
    argv = invocation(name, cmd, str(path))
    done = subprocess.run(
        [RISKAUDIT, *argv], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output[-3000:]
    assert done.returncode in EXIT_CODES, (done.returncode, output[-2000:])


def test_tail_of_a_directory_shows_its_newest_records(tmp_path: Path) -> None:
    """`tail DIR` (a directory, as verify takes) prints the newest file's records."""
    from riskaudit import AuditConfig, AuditLog
    from tests.helpers import event

    with AuditLog(AuditConfig(log_path=tmp_path / "logs" / "log.jsonl"), clock=synced_clock) as log:
        log.append(event(1))
    done = subprocess.run(
        [RISKAUDIT, "tail", str(tmp_path / "logs")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "PRE_TRADE_CHECK" in done.stdout, done.stdout + done.stderr


def test_recover_of_a_file_without_emergency_lines_says_so(tmp_path: Path) -> None:
    """`recover` given a file with no AUDIT_EMERGENCY line warns instead of passing
    silently."""
    from riskaudit import AuditConfig, AuditLog
    from tests.helpers import event

    log_path = tmp_path / "logs" / "log.jsonl"
    with AuditLog(AuditConfig(log_path=log_path), clock=synced_clock) as log:
        log.append(event(1))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 8)
    done = subprocess.run(
        [RISKAUDIT, "recover", str(junk), "--into", str(log_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "no AUDIT_EMERGENCY line" in done.stdout, done.stdout + done.stderr


def test_backup_run_prints_one_line_per_copy(tmp_path: Path) -> None:
    """`backup run` names each copied segment once (it was once printed and logged)."""
    from riskaudit import AuditConfig, AuditLog
    from riskaudit.settings import Rotation
    from tests.helpers import event

    log_path = tmp_path / "logs" / "log.jsonl"
    with AuditLog(
        AuditConfig(log_path=log_path, rotation=Rotation(max_bytes=4_000)), clock=synced_clock
    ) as log:
        for i in range(60):
            log.append(event(i))
            if i % 10 == 9:
                log.flush()
    segments = sorted(p.name for p in log_path.parent.glob("log.seg-*"))
    assert segments
    env = {
        "PATH": os.environ["PATH"],
        "RISK_AUDIT_LOG_PATH": str(log_path),
        "RISK_AUDIT_BACKUP_TARGET": str(tmp_path / "archive"),
        "RISK_AUDIT_LOG_LEVEL": "INFO",
    }
    done = subprocess.run(
        [RISKAUDIT, "backup", "run"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in segments:
        assert (done.stdout + done.stderr).count(name) == 1, done.stdout + done.stderr
