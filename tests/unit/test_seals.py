"""Tamper evidence from signed checkpoints, over real logs written by the writer."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from hypothesis import given, settings
from hypothesis import strategies as st

from riskaudit import AuditConfig, AuditLog, verify_paths
from riskaudit.integrity import FindingKind, generate, load_keyring, load_public_key, load_signer
from riskaudit.integrity import signed_text as make_signed_text
from riskaudit.log import line_hash
from tests.conftest import VECTORS
from tests.helpers import event, synced_clock


def test_signature_checks_with_cryptography_alone() -> None:
    """The signed text as docs/format.md describes it verifies with `cryptography` only."""
    readme = orjson.loads((VECTORS / "README.json").read_bytes())
    cp = readme["checkpoint"]
    text = (
        "riskaudit-checkpoint/1\n"
        f"{readme['stream']}\n{cp['covers_seq']}\n{cp['covers_hash']}\n{cp['ts']}\n"
    ).encode()
    assert text == (VECTORS / "checkpoint-signed-text.txt").read_bytes()
    key = load_pem_public_key((VECTORS / "test-signing-key.pub.pem").read_bytes())
    assert isinstance(key, Ed25519PublicKey)
    key.verify(base64.b64decode(cp["sig_base64"]), text)


def test_writer_reproduces_the_vector_checkpoint() -> None:
    """Our signer and encoder produce the vector's checkpoint line byte for byte, but
    for the ``stream`` field this version adds first (the signature covers it: the same
    signed text, so the same ``sig``)."""
    from riskaudit.format import control_line, parse_ts
    from riskaudit.log._checkpoint import Checkpointer

    lines = (VECTORS / "valid.jsonl").read_bytes().splitlines()
    readme = orjson.loads((VECTORS / "README.json").read_bytes())
    cp = Checkpointer(
        stream=readme["stream"],
        signer=load_signer(VECTORS / "test-signing-key.pem"),
        sidecar=Path("/nonexistent/sidecar"),
        interval=60,
        every_records=0,
    )
    ts_ns = parse_ts(readme["checkpoint"]["ts"])
    fields = cp.fields(5, line_hash(lines[4]), ts_ns)
    assert fields.pop("stream") == readme["stream"]
    assert control_line(6, line_hash(lines[4]), "checkpoint", fields, ts_ns) == lines[5]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public, _ = generate(tmp_path / "keys")
    return private, public


def write_log(tmp_path: Path, private: Path, n: int = 50, **kw: object) -> AuditConfig:
    cfg = AuditConfig(
        log_path=tmp_path / "logs" / "log.jsonl",
        signing_key_file=private,
        checkpoint_interval=60,
        checkpoint_records=20,
    ).with_(**kw)
    with AuditLog(cfg, clock=synced_clock) as log:
        for i in range(n):
            log.append(event(i))
            if i % 10 == 9:
                log.flush()
    return cfg


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def kinds(path: Path) -> list[str]:
    return [orjson.loads(line).get("kind", "event") for line in lines_of(path)]


def test_checkpoints_every_n_records_and_at_close(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """Every N records and after the stop record; the sidecar holds the same lines;
    verify with the public key passes."""
    cfg = write_log(tmp_path, keys[0])
    ks = kinds(cfg.log_path)
    # 53 records, one due every 20: at least one before the stop (two when the stop
    # came after the second was written), and the one that seals the stop.
    assert ks[-2:] == ["stop", "checkpoint"] and ks[:-2].count("checkpoint") >= 1
    in_log = [line for line in lines_of(cfg.log_path) if b'"kind":"checkpoint"' in line]
    sidecar = lines_of(cfg.log_path.with_name("log.jsonl.checkpoints"))
    assert in_log == sidecar
    report = verify_paths([cfg.log_path], keys=[load_public_key(keys[1])])
    assert report.valid, report.findings
    assert report.checkpoints == len(sidecar) and not report.warnings


def test_a_close_whose_last_batch_is_due_a_checkpoint_seals_once(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    """The stop record comes in a batch that makes a checkpoint due by count: that
    checkpoint seals it, and the close adds no second one covering the first (the
    flake of the test above, made certain by a long flush window)."""
    cfg = AuditConfig(
        log_path=tmp_path / "l.jsonl",
        signing_key_file=keys[0],
        flush_interval=2.0,  # the writer takes everything, the stop included, at once
        checkpoint_records=20,
    )
    log = AuditLog(cfg, clock=synced_clock)
    for i in range(30):
        log.append(event(i))
    log.close()
    ks = kinds(cfg.log_path)
    assert ks[-2:] == ["stop", "checkpoint"] and ks[-3] == "event"
    report = verify_paths([cfg.log_path], keys=[load_public_key(keys[1])])
    assert report.valid and not report.warnings, report.findings


def test_idle_writer_still_checkpoints(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """With nothing to write, a checkpoint still comes every interval: silence is evidence."""
    cfg = AuditConfig(
        log_path=tmp_path / "idle.jsonl", signing_key_file=keys[0], checkpoint_interval=0.3
    )
    with AuditLog(cfg, clock=synced_clock):
        time.sleep(1.5)
    ks = kinds(cfg.log_path)
    assert ks[: ks.index("stop")].count("checkpoint") >= 2  # idle ones, before the close


def test_truncated_tail_after_a_checkpoint(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """Cut the log right after a checkpoint: the chain looks fine, the sidecar does not."""
    cfg = write_log(tmp_path, keys[0])
    lines = lines_of(cfg.log_path)
    # The checkpoint before the last: the sidecar holds a later one however the
    # writer's batches fell (under load the second checkpoint can be the last).
    cut = [i for i, line in enumerate(lines) if b'"kind":"checkpoint"' in line][-2] + 1
    cfg.log_path.write_bytes(b"".join(lines[:cut]))
    alone = verify_paths([cfg.log_path], checkpoints=[])
    assert alone.valid  # the chain alone cannot see it
    report = verify_paths([cfg.log_path], keys=[load_public_key(keys[1])])
    assert [f.kind for f in report.findings] == ["truncated"]
    assert report.requested_last_seq > report.verified_last_seq == cut  # type: ignore[operator]


def test_last_records_and_last_checkpoints_deleted_together(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    """Deleting the last N records and the last in-log checkpoints is still caught,
    from the sidecar."""
    cfg = write_log(tmp_path, keys[0])
    lines = lines_of(cfg.log_path)
    cfg.log_path.write_bytes(b"".join(lines[:-25]))
    report = verify_paths([cfg.log_path], keys=[load_public_key(keys[1])])
    assert "truncated" in [f.kind for f in report.findings]


def test_forged_checkpoint_is_rejected(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """A checkpoint signed with another key, or with a changed signature, is INVALID."""
    cfg = write_log(tmp_path, keys[0])
    other, _ = generate(tmp_path / "other")[:2]
    sidecar = cfg.log_path.with_name("log.jsonl.checkpoints")
    cps = [orjson.loads(line) for line in lines_of(sidecar)]
    stream = orjson.loads(lines_of(cfg.log_path)[0])["stream"]
    forger = load_signer(other)
    last = cps[-1]
    text = make_signed_text(stream, last["covers_seq"], last["covers_hash"], last["ts"])
    last["sig"] = forger.sign(text)
    cps[-2]["sig"] = cps[-2]["sig"][:-4] + "AAA="
    sidecar.write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in cps))
    report = verify_paths([cfg.log_path], keys=[load_public_key(keys[1])])
    assert [f.kind for f in report.findings].count(FindingKind.BAD_SIGNATURE) == 2


def test_rechained_rewrite_without_the_key(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """An attacker edits a record and re-chains everything after it (even the in-log
    checkpoints' covers_hash): the chain verifies, the signatures and sidecar do not."""
    cfg = write_log(tmp_path, keys[0])
    lines = [line.rstrip(b"\n") for line in lines_of(cfg.log_path)]
    target = next(i for i, line in enumerate(lines) if b'"i":5' in line)
    lines[target] = lines[target].replace(b'"i":5', b'"i":6')
    for i in range(target + 1, len(lines)):
        rec = orjson.loads(lines[i])
        rec["prev"] = line_hash(lines[i - 1]).decode()
        if rec.get("kind") == "checkpoint":
            rec["covers_hash"] = line_hash(lines[i - 1]).decode()
        lines[i] = orjson.dumps(rec)
    cfg.log_path.write_bytes(b"".join(line + b"\n" for line in lines))
    chain_only = verify_paths([cfg.log_path], checkpoints=[])
    assert chain_only.valid  # a perfect re-chain
    report = verify_paths([cfg.log_path], keys=[load_public_key(keys[1])])
    found = {f.kind for f in report.findings}
    assert {"bad signature", "checkpoint mismatch"} <= found


def test_key_rotation_and_resealing_the_past(tmp_path: Path) -> None:
    """Two keys, each valid in its period: both logs' checkpoints verify; an old
    checkpoint re-signed with the new key is rejected (the new key cannot re-seal last
    year)."""
    old_priv, old_pub, _ = generate(tmp_path / "old")
    new_priv, new_pub, _ = generate(tmp_path / "new")
    cfg = write_log(tmp_path, old_priv, n=30)
    time.sleep(0.05)
    switch = time.time_ns()
    time.sleep(0.05)
    with AuditLog(cfg.with_(signing_key_file=new_priv), clock=synced_clock) as log:
        for i in range(30):
            log.append(event(i))

    def rfc(ns: int) -> str:
        from riskaudit.log import format_ts

        return format_ts(ns)

    keyring = tmp_path / "keyring.json"
    keyring.write_bytes(
        orjson.dumps(
            [
                {
                    "public_key": old_pub.read_text(),
                    "not_before": "2020-01-01T00:00:00Z",
                    "not_after": rfc(switch),
                },
                {"public_key_file": str(new_pub), "not_before": rfc(switch)},
            ]
        )
    )
    ring = load_keyring(keyring)
    report = verify_paths([cfg.log_path], keys=ring)
    assert report.valid, report.findings
    # Re-seal an old checkpoint with the new key.
    sidecar = cfg.log_path.with_name("log.jsonl.checkpoints")
    cps = [orjson.loads(line) for line in lines_of(sidecar)]
    stream = orjson.loads(lines_of(cfg.log_path)[0])["stream"]
    signer = load_signer(new_priv)
    first = cps[0]
    first["key_id"] = signer.key_id
    first["sig"] = signer.sign(
        make_signed_text(stream, first["covers_seq"], first["covers_hash"], first["ts"])
    )
    sidecar.write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in cps))
    report = verify_paths([cfg.log_path], keys=ring)
    assert next(f.detail for f in report.findings if f.kind == "bad signature").endswith(
        "was not valid at the checkpoint's time"
    )


def test_unsealed_tail_warning(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """Records after the last checkpoint, older than two intervals: a WARNING, not INVALID."""
    cfg = write_log(tmp_path, keys[0])
    lines = lines_of(cfg.log_path)
    last_cp = max(i for i, line in enumerate(lines) if b'"kind":"checkpoint"' in line)
    cfg.log_path.write_bytes(b"".join(lines[:last_cp]))  # drop the final seal
    cfg.log_path.with_name("log.jsonl.checkpoints").write_bytes(
        b"".join(lines_of(cfg.log_path.with_name("log.jsonl.checkpoints"))[:-1])
    )
    later = time.time_ns() + 10 * 60 * 10**9
    report = verify_paths([cfg.log_path], keys=[load_public_key(keys[1])], now_ns=later)
    assert report.valid
    assert any(w.startswith("WARNING: unsealed tail") for w in report.warnings)


@settings(deadline=None, max_examples=60)
@given(st.integers(3, 40), st.data())
def test_any_cut_before_a_sealed_record_is_found(n: int, data: st.DataObject) -> None:
    """Property: for a signed log of n events with checkpoints, cutting the file at any
    record boundary before the newest sealed record is reported as truncated."""
    import tempfile

    from riskaudit.format import control_line
    from riskaudit.log._checkpoint import Checkpointer
    from tests.helpers import build_log

    lines = build_log([{"k": i} for i in range(n)])
    stream = orjson.loads(lines[0])["stream"]
    cp = Checkpointer(
        stream=stream,
        signer=load_signer(VECTORS / "test-signing-key.pem"),
        sidecar=Path("/nonexistent"),
        interval=60,
        every_records=0,
    )
    sealed: list[bytes] = []
    out: list[bytes] = []
    every = data.draw(st.integers(2, 10), label="checkpoint every")
    for original in lines:
        line = original
        if out:
            rec = orjson.loads(original)
            rec["seq"] = orjson.loads(out[-1])["seq"] + 1
            rec["prev"] = line_hash(out[-1]).decode()
            line = orjson.dumps(rec)
        out.append(line)
        if len(out) % every == 0:
            seq = orjson.loads(out[-1])["seq"]
            fields = cp.fields(seq, line_hash(out[-1]), 1_795_683_600_000_000_000 + seq)
            out.append(control_line(seq + 1, line_hash(out[-1]), "checkpoint", fields, 0))
            sealed.append(out[-1])
    if not sealed:
        return
    newest_cover = orjson.loads(sealed[-1])["covers_seq"]
    cut = data.draw(st.integers(1, newest_cover - 1), label="keep first records")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log.jsonl"
        log.write_bytes(b"".join(line + b"\n" for line in out[:cut]))
        side = Path(tmp) / "log.jsonl.checkpoints"
        side.write_bytes(b"".join(line + b"\n" for line in sealed))
        report = verify_paths([log], keys=[load_public_key(VECTORS / "test-signing-key.pub.pem")])
    assert "truncated" in [f.kind for f in report.findings]
