"""Every `riskaudit ...` command the README shows exists, with the options it shows, and
the README's one-shot commands run as written in a fresh shell.

The synopses are taken from the README's own text, so a renamed command or option, or a
documented one that was never built, fails here. Commands that need a live service, NATS
or S3 (serve, forward, collect, nats init, signal, backup) are checked against the app's
command tree only; their behaviour has its own tests (test_serve_signals, test_replication,
test_backup_s3_cli).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import typer.main

from riskaudit.cli import app
from tests.conftest import RISKAUDIT
from tests.helpers import ROOT, clean_env, run_captured

README = ROOT / "README.md"
INLINE = re.compile(r"`(riskaudit [^`]*)`")
#: Shell-shaped metavariables and placeholders in the synopses: not command words.
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_.]*$|^\[|^<")


def readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return sorted({m.group(1).replace("\\|", "|") for m in INLINE.finditer(text)})


def resolve(words: list[str]) -> tuple[Any, list[str], list[str], list[str]]:
    """The click command the words name, the words that named it, the rest, and the
    alternatives (`backup run|status|verify`) that name no command."""
    cmd: Any = typer.main.get_command(app)
    used: list[str] = []
    rest = list(words)
    missing: list[str] = []
    while rest and hasattr(cmd, "commands"):
        first, *alternatives = rest[0].split("|")  # the first stands for all
        if first not in cmd.commands:
            break
        missing += [" ".join([*used, a]) for a in alternatives if a not in cmd.commands]
        cmd = cmd.commands[first]
        used.append(first)
        rest.pop(0)
    return cmd, used, rest, missing


def options_of(cmd: Any) -> set[str]:
    found = {"--help"}
    for param in cmd.params:
        found.update(getattr(param, "opts", []))
        found.update(getattr(param, "secondary_opts", []))
    return found


def test_every_readme_command_and_option_exists() -> None:
    """Each `riskaudit ...` in the README names a real command (down to a leaf, or a
    group shown alone) and only options that command has."""
    shown = readme_commands()
    assert len(shown) >= 20, shown  # the README's CLI table is there and was found
    problems = []
    for line in shown:
        words = line.split()[1:]
        cmd, used, rest, missing = resolve(words)
        problems += [f"{line}: no command {name}" for name in missing]
        if not used and words and words[0].startswith("--"):
            cmd_opts = options_of(cmd) | {"--install-completion", "--show-completion"}
        else:
            cmd_opts = options_of(cmd)
            if rest and not rest[0].startswith(("-", "[")) and hasattr(cmd, "commands"):
                problems.append(f"{line}: no command {' '.join([*used, rest[0]])}")
                continue
        for word in rest:
            for opt in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", word):
                if opt not in cmd_opts:
                    problems.append(f"{line}: {' '.join(used) or 'riskaudit'} has no {opt}")
    assert not problems, "\n".join(problems)


def run(shell: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """One command line in a fresh `sh`, as a user types it (riskaudit on PATH)."""
    env = clean_env()
    env["PATH"] = f"{Path(RISKAUDIT).parent}{os.pathsep}{env.get('PATH', '')}"
    return run_captured(["sh", "-c", shell], cwd, env, timeout=120)


def test_the_readmes_one_shot_commands_run_as_written(tmp_path: Path) -> None:
    """The README's concrete commands — `--version`, `demo`, `verify logs`, `tail`,
    `keygen`, `token create`, `hash-value`, `retention plan`, `hold`, `export` and
    `verify-export` — run in a fresh shell on the log the demo wrote, with no traceback."""
    shown = set(readme_commands())
    for concrete in (
        "riskaudit --version",
        "riskaudit demo",
        "riskaudit verify logs",
        "riskaudit token create --name risk-ui --role writer",
    ):
        assert concrete in shown, f"the README no longer shows {concrete!r}"
    steps = [
        ("riskaudit --version", 0, r"\d+\.\d+\.\d+"),
        ("riskaudit demo --events 200 --rate 0 --log logs/risk_audit.jsonl", 0, "verify"),
        ("riskaudit verify logs", 0, "VALID"),
        ("riskaudit tail -n 3 logs", 0, "seq"),
        ("riskaudit keygen --out keys", 0, ""),
        ("riskaudit token create --name risk-ui --role writer", 0, "risk-ui"),
        ("head -c 32 /dev/urandom > hmac.key", 0, ""),
        ("riskaudit hash-value ACCT-1 --key-file hmac.key --json", 0, "hmac-sha256:"),
        ("RISK_AUDIT_LOG_PATH=logs/risk_audit.jsonl riskaudit retention plan", 0, ""),
        ("RISK_AUDIT_LOG_PATH=logs/risk_audit.jsonl riskaudit hold list", 0, ""),
        ("riskaudit export logs --out bundle --format csv", 0, ""),
        ("riskaudit verify-export bundle", 0, "VALID"),
    ]
    for line, code, expect in steps:
        got = run(line, tmp_path)
        output = got.stdout + got.stderr
        assert got.returncode == code, f"{line}: exit {got.returncode}\n{output[-3000:]}"
        assert "Traceback" not in output, f"{line}\n{output[-3000:]}"
        assert re.search(expect, output), f"{line}: no {expect!r} in\n{output[-3000:]}"
