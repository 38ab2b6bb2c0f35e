"""Verifiable exports: round trip, CSV view, and tampering caught."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from riskaudit import AuditConfig, AuditLog, EventPriority, EventType, RiskEvent
from riskaudit.cli import app
from riskaudit.integrity import Selection, export, generate, load_public_key, verify_export
from tests.helpers import synced_clock

runner = CliRunner()


@pytest.fixture
def signed_log(tmp_path: Path) -> tuple[Path, Path]:
    private, public, _ = generate(tmp_path / "keys")
    cfg = AuditConfig(
        log_path=tmp_path / "logs" / "log.jsonl", signing_key_file=private, checkpoint_records=25
    )
    with AuditLog(cfg, clock=synced_clock) as log:
        for i in range(100):
            kind = EventType.LIMIT_BREACH if i % 10 == 0 else EventType.PRE_TRADE_CHECK
            data = (
                {"limit": "max_pos", "limit_value": 100, "observed": 100 + i}
                if kind is EventType.LIMIT_BREACH
                else {"order_id": f"O-{i}", "outcome": "ACCEPT", "px": {"bid": 1.5}}
            )
            log.append(
                RiskEvent(
                    kind,
                    EventPriority.HIGH,
                    "desk-a" if i < 50 else "desk-b",
                    data,
                    {"strategy": "s1"},
                )
            )
    return cfg.log_path, public


def test_export_round_trip(signed_log: tuple[Path, Path], tmp_path: Path) -> None:
    """Selected records, the connecting chain and a signed checkpoint verify; the
    digests check with sha256sum alone."""
    log, public = signed_log
    out = tmp_path / "export"
    result = export([str(log.parent)], Selection(types=frozenset({"LIMIT_BREACH"})), out, "csv")
    assert result.manifest["records"]["count"] == 10 and not result.warnings
    check = verify_export(out, [load_public_key(public)])
    assert check.valid, check.problems
    sums = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True, check=False
    )
    assert sums.returncode == 0, sums.stdout + sums.stderr
    rows = list(csv.DictReader(io.StringIO((out / "records.csv").read_text())))
    assert len(rows) == 10 and rows[0]["data.limit"] == "max_pos"
    assert rows[0]["metadata.strategy"] == "s1" and rows[1]["data.observed"] == "110"


def test_export_cli_with_filters(signed_log: tuple[Path, Path], tmp_path: Path) -> None:
    """export --source --type --format, then verify-export exits 0."""
    log, public = signed_log
    out = tmp_path / "cli-export"
    res = runner.invoke(
        app,
        [
            "export",
            str(log.parent),
            "--out",
            str(out),
            "--source",
            "desk-b",
            "--type",
            "pre_trade_check",
            "--since",
            "2000-01-01",
        ],
    )
    assert res.exit_code == 0, res.output
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["records"]["count"] == 45
    ok = runner.invoke(app, ["verify-export", str(out), "--public-key", str(public)])
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("tamper", ["record", "chain", "csv", "checkpoint"])
def test_tampered_export_is_caught(
    signed_log: tuple[Path, Path], tmp_path: Path, tamper: str
) -> None:
    """Changing a record, a chain line, the CSV or the checkpoint is INVALID, even when
    the tamperer also fixes the digests in the manifest and SHA256SUMS."""
    log, public = signed_log
    out = tmp_path / "export"
    export([str(log.parent)], Selection(types=frozenset({"LIMIT_BREACH"})), out, "csv")
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    if tamper == "record":
        target = out / "records.jsonl"
        target.write_bytes(target.read_bytes().replace(b'"observed":120', b'"observed":99'))
    elif tamper == "chain":
        target = out / "chain.jsonl"
        target.write_bytes(target.read_bytes().replace(b'"O-15"', b'"O-16"'))
    elif tamper == "csv":
        target = out / "records.csv"
        target.write_bytes(target.read_bytes().replace(b"max_pos", b"max_neg", 1))
    else:
        target = out / "chain.jsonl"
        lines = target.read_bytes().splitlines(keepends=True)
        cp = orjson.loads(lines[-1])
        cp["sig"] = cp["sig"][:-4] + "AAA="
        lines[-1] = orjson.dumps(cp) + b"\n"
        target.write_bytes(b"".join(lines))
        manifest["chain"]["checkpoint"] = lines[-1].decode().rstrip("\n")
    import hashlib

    manifest["files"][target.name]["sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
    (out / "manifest.json").write_bytes(orjson.dumps(manifest))
    check = verify_export(out, [load_public_key(public)])
    assert not check.valid
    res = runner.invoke(app, ["verify-export", str(out), "--public-key", str(public)])
    assert res.exit_code == 1 and "INVALID" in res.output


def test_digest_mismatch_is_caught(signed_log: tuple[Path, Path], tmp_path: Path) -> None:
    """A file changed without fixing the manifest fails on its digest."""
    log, public = signed_log
    out = tmp_path / "export"
    export([str(log.parent)], Selection(), out)
    shutil.copy(out / "records.jsonl", tmp_path / "orig")
    (out / "records.jsonl").write_bytes(b"")
    check = verify_export(out, [load_public_key(public)])
    assert any("SHA-256 differs" in p for p in check.problems)


def test_export_refuses_a_non_empty_target_and_force_replaces_it_whole(
    signed_log: tuple[Path, Path], tmp_path: Path
) -> None:
    """Exporting into an existing bundle once replaced its manifest and left the older
    export's records.csv beside it: now it is refused (exit 2); --force replaces the
    directory whole, and the result verifies."""
    log, public = signed_log
    out = tmp_path / "bundle"
    first = ["export", str(log.parent), "--out", str(out), "--format", "csv"]
    assert runner.invoke(app, first).exit_code == 0
    again = ["export", str(log.parent), "--out", str(out), "--type", "limit_breach"]
    refused = runner.invoke(app, again)
    assert refused.exit_code == 2 and "not empty" in refused.output, refused.output
    assert (out / "records.csv").exists()
    forced = runner.invoke(app, [*again, "--force"])
    assert forced.exit_code == 0, forced.output
    assert not (out / "records.csv").exists()  # nothing of the older export is left
    ok = runner.invoke(app, ["verify-export", str(out), "--public-key", str(public)])
    assert ok.exit_code == 0, ok.output


def test_verify_export_fails_on_a_file_the_manifest_does_not_list(
    signed_log: tuple[Path, Path], tmp_path: Path
) -> None:
    """A file in the bundle that its manifest does not list makes it INVALID."""
    log, public = signed_log
    out = tmp_path / "bundle"
    export([str(log.parent)], Selection(), out)
    (out / "records.csv").write_text("seq,event_type\n1,FORGED\n")
    check = verify_export(out, [load_public_key(public)])
    assert not check.valid and any("records.csv" in p for p in check.problems), check.problems


def test_an_empty_selection_says_so(signed_log: tuple[Path, Path], tmp_path: Path) -> None:
    """Nothing matched: the command says so plainly (no `seq None-None`)."""
    log, _public = signed_log
    res = runner.invoke(
        app, ["export", str(log.parent), "--out", str(tmp_path / "e"), "--source", "nobody"]
    )
    assert res.exit_code == 0 and "nothing matched the selection" in res.output, res.output
    assert "None" not in res.output
