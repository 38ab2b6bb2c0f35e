"""`verify` tells the truth: no false alarm on a clean log, no pass on a rewritten one.

The clean logs are written by the real writer (signed checkpoints, restarts, built-in
rotation, a crash repair, a compressed segment); the tampered ones are copies changed at
random positions (seeded), one change each, and must be INVALID naming the first
changed ``seq`` (or, for a re-chain, the first checkpoint that no longer verifies).
"""

from __future__ import annotations

import gzip
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from riskaudit import AuditConfig, AuditLog, verify_paths
from riskaudit.cli import app
from riskaudit.format import split_head
from riskaudit.integrity import PublicKey, generate, load_public_key
from riskaudit.integrity import VerifyReport as VerifyReportT
from riskaudit.log import line_hash
from riskaudit.settings import Rotation
from tests.helpers import event, synced_clock

runner = CliRunner()
LOG = "risk_audit.jsonl"


def write_real_log(root: Path, *, runs: int = 3, per_run: int = 90) -> tuple[Path, Path]:
    """A log directory as the writer leaves it: signed checkpoints, restarts, sealed
    segments (the oldest gzip-compressed), a torn tail repaired. (directory, public key)"""
    private, public, _ = generate(root / "keys")
    cfg = AuditConfig(
        log_path=root / "logs" / LOG,
        signing_key_file=private,
        checkpoint_records=25,
        rotation=Rotation(max_bytes=12_000),
        schema_policy="off",
        host="h",
    )
    for run in range(runs):
        with AuditLog(cfg, clock=synced_clock) as log:
            for i in range(per_run):
                log.append(event(run * 1000 + i))
            log.flush()
    with open(cfg.log_path, "ab") as fh:  # a crash mid-write: the next start repairs it
        fh.write(b'{"seq":99999,"prev":"ab')
    with AuditLog(cfg, clock=synced_clock) as log:
        log.append(event(9999))
    segments = sorted((root / "logs").glob("risk_audit.seg-*.jsonl"))
    assert len(segments) >= 3, segments
    oldest = segments[0]
    oldest.chmod(0o644)
    oldest.with_name(oldest.name + ".gz").write_bytes(gzip.compress(oldest.read_bytes()))
    oldest.unlink()
    return root / "logs", public


@pytest.fixture(scope="module")
def real_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_real_log(tmp_path_factory.mktemp("real"))


def keys_of(public: Path) -> list[PublicKey]:
    return [load_public_key(public)]


def copy_of(real: Path, tmp_path: Path) -> Path:
    target = tmp_path / "logs"
    shutil.copytree(real, target)
    for f in target.iterdir():
        f.chmod(0o644)
    return target


# -- no false alarm --------------------------------------------------------------------


def argument_forms(directory: Path) -> list[list[str]]:
    """The same files named in every way an operator does."""
    everything = sorted(str(p) for p in directory.iterdir())
    segments = [p for p in everything if ".jsonl" in p and ".torn-" not in p and ".lock" not in p]
    return [
        [str(directory)],
        [str(directory / "*")],
        everything,
        list(reversed(everything)),
        segments,
        list(reversed(segments)),
    ]


def test_a_clean_log_is_valid_however_its_files_are_named(real_log: tuple[Path, Path]) -> None:
    """The directory, `DIR/*` (sidecar, lock and torn files included), every file in any
    order: one verdict, VALID, with the key and exit 0 from the command."""
    directory, public = real_log
    assert any(".torn-" in p.name for p in directory.iterdir())
    for args in argument_forms(directory):
        report = verify_paths(args, keys=keys_of(public))
        assert report.valid, (args, report.findings, report.unanchored)
        assert report.first_seq == 1
        result = runner.invoke(app, ["verify", "--public-key", str(public), *args])
        assert result.exit_code == 0, result.output
    report = verify_paths([str(directory / "*")])
    assert any("not a segment" in w for w in report.warnings), report.warnings


def test_a_set_starting_after_seq_1_is_anchored_only_by_a_verified_signature(
    real_log: tuple[Path, Path], tmp_path: Path
) -> None:
    """Older segments removed (logrotate's rotate count): VALID with the key (anchored by
    the signed checkpoint that sealed the segment before), UNANCHORED, exit 3, without."""
    directory, public = real_log
    logs = copy_of(directory, tmp_path)
    for old in sorted(logs.glob("risk_audit.seg-*"))[:2]:
        old.unlink()
    signed = verify_paths([logs], keys=keys_of(public))
    assert signed.valid and signed.first_seq is not None and signed.first_seq > 1, (
        signed.findings,
        signed.unanchored,
    )
    bare = verify_paths([logs])
    assert bare.status == "unanchored" and not bare.findings
    assert runner.invoke(app, ["verify", str(logs)]).exit_code == 3


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    runs=st.integers(1, 3),
    per_run=st.integers(1, 60),
    rotate=st.sampled_from([0, 6_000]),
    torn=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_no_untampered_log_fails(
    tmp_path_factory: pytest.TempPathFactory,
    runs: int,
    per_run: int,
    rotate: int,
    torn: bool,
    seed: int,
) -> None:
    """Restarts, crashes repaired at start, rotations, logrotate's renames: every form and
    ordering of the argument list verifies VALID with the key."""
    root = tmp_path_factory.mktemp("clean")
    private, public, _ = generate(root / "keys")
    cfg = AuditConfig(
        log_path=root / "logs" / LOG,
        signing_key_file=private,
        checkpoint_records=10,
        rotation=Rotation(max_bytes=rotate),
        schema_policy="off",
        host="h",
    )
    rnd = random.Random(seed)
    for run in range(runs):
        with AuditLog(cfg, clock=synced_clock) as log:
            for i in range(per_run):
                log.append(event(i))
            if rnd.random() < 0.3:  # logrotate's create mode, then the signal
                cfg.log_path.rename(cfg.log_path.with_name(f"{LOG}.{run + 1}"))
                log.reopen()
                log.append(event(-1))
            log.flush()
        if torn and (run == 0 or rnd.random() < 0.5):  # a crash mid-write, repaired next
            with open(cfg.log_path, "ab") as fh:
                fh.write(b'{"seq":1234,"prev":"' + b"\0" * rnd.randint(0, 300))
            with AuditLog(cfg, clock=synced_clock):
                pass
    for args in argument_forms(root / "logs"):
        report = verify_paths(args, keys=keys_of(public))
        assert report.valid, (args, report.findings, report.unanchored, report.warnings)


# -- no pass on a change ----------------------------------------------------------------


Tamper = Callable[[Path, random.Random], int]


def plain_files(logs: Path) -> list[Path]:
    """The stream's plain files, in seq order."""
    files = [p for p in logs.iterdir() if p.name.endswith(".jsonl")]
    return sorted(files, key=lambda p: split_head(p.read_bytes().split(b"\n", 1)[0])[0])  # type: ignore[index]


def pick(
    logs: Path, rnd: random.Random, *, events_only: bool = True
) -> tuple[Path, int, list[bytes]]:
    """A random file and a random line in it (an event record unless asked otherwise)."""
    files = plain_files(logs)
    path = rnd.choice(files)
    lines = path.read_bytes().split(b"\n")[:-1]
    choices = [i for i, line in enumerate(lines) if not events_only or b'"kind":' not in line[:120]]
    return path, rnd.choice(choices), lines


def seq_of(line: bytes) -> int:
    head = split_head(line)
    assert head is not None
    return head[0]


def save(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def flip_byte(logs: Path, rnd: random.Random) -> int:
    path, i, lines = pick(logs, rnd)
    line = bytearray(lines[i])
    pos = rnd.randrange(line.index(b'"ts"'), len(line) - 1)
    line[pos] ^= 0x01
    lines[i] = bytes(line)
    save(path, lines)
    return seq_of(lines[i])


def change_value(logs: Path, rnd: random.Random) -> int:
    path, i, lines = pick(logs, rnd)
    lines[i] = lines[i].replace(b'"priority":"HIGH"', b'"priority":"LOW"', 1)
    save(path, lines)
    return seq_of(lines[i])


def delete_line(logs: Path, rnd: random.Random) -> int:
    path, i, lines = pick(logs, rnd)
    seq = seq_of(lines[i])
    del lines[i]
    save(path, lines)
    return seq


def duplicate_line(logs: Path, rnd: random.Random) -> int:
    path, i, lines = pick(logs, rnd)
    lines.insert(i, lines[i])
    save(path, lines)
    return seq_of(lines[i])


def swap_lines(logs: Path, rnd: random.Random) -> int:
    path, i, lines = pick(logs, rnd)
    j = i + 1 if i + 1 < len(lines) else i - 1
    lines[i], lines[j] = lines[j], lines[i]
    save(path, lines)
    return min(seq_of(lines[i]), seq_of(lines[j]))


def forged_insert(logs: Path, rnd: random.Random) -> int:
    path, i, lines = pick(logs, rnd)
    seq = seq_of(lines[i])
    forged = lines[i].replace(b'"i":', b'"i":7', 1)
    lines.insert(i + 1, forged)
    save(path, lines)
    return seq


def garbage_line(logs: Path, rnd: random.Random) -> int:
    path, i, lines = pick(logs, rnd)
    lines.insert(i, bytes(rnd.randrange(33, 126) for _ in range(rnd.randint(1, 200))))
    save(path, lines)
    return seq_of(lines[i + 1])


def nul_bytes(logs: Path, rnd: random.Random) -> int:
    path, i, lines = pick(logs, rnd)
    line = lines[i]
    pos = rnd.randrange(line.index(b'"ts"'), len(line) - 1)
    lines[i] = line[:pos] + b"\0" * rnd.randint(1, 40) + line[pos:]
    save(path, lines)
    return seq_of(line)


def invalid_utf8(logs: Path, rnd: random.Random) -> int:
    path, i, lines = pick(logs, rnd)
    lines[i] = lines[i].replace(b'"source":"test"', b'"source":"t\xff\xfet"', 1)
    save(path, lines)
    return seq_of(lines[i])


def overlong_line(logs: Path, rnd: random.Random) -> int:
    path, i, lines = pick(logs, rnd)
    lines[i] = lines[i][:-1] + b',"pad":"' + b"x" * 3_000_000 + b'"}'
    save(path, lines)
    return seq_of(lines[i])


def crlf_last_line(logs: Path, rnd: random.Random) -> int:
    active = logs / LOG
    lines = active.read_bytes().split(b"\n")[:-1]
    lines[-1] += rnd.choice([b"\r", b" ", b"  \t"])
    save(active, lines)
    return seq_of(lines[-1])


def drop_final_checkpoint(logs: Path, rnd: random.Random) -> int:
    active = logs / LOG
    lines = active.read_bytes().split(b"\n")[:-1]
    assert b'"kind":"checkpoint"' in lines[-1]
    seq = seq_of(lines[-1])
    save(active, lines[:-1])
    return seq


def tamper_compressed(logs: Path, rnd: random.Random) -> int:
    gz = next(logs.glob("*.jsonl.gz"))
    lines = gzip.decompress(gz.read_bytes()).split(b"\n")[:-1]
    i = rnd.choice([k for k, line in enumerate(lines) if b'"kind":' not in line[:120]])
    lines[i] = lines[i].replace(b'"priority":"HIGH"', b'"priority":"LOW"', 1)
    gz.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines)))
    return seq_of(lines[i])


def forged_checkpoint(logs: Path, rnd: random.Random) -> int:
    """A checkpoint whose signature is replaced with another checkpoint's."""
    path, _i, lines = pick(logs, rnd, events_only=False)
    cps = [k for k, line in enumerate(lines) if b'"kind":"checkpoint"' in line[:120]]
    k = rnd.choice(cps)
    rec = orjson.loads(lines[k])
    rec["sig"] = rec["sig"][::-1]
    lines[k] = orjson.dumps(rec)
    # re-chain the rest of this file and the sidecar copy, as a forger would
    rechain(path, lines, k)
    return seq_of(lines[k])


def rechain(path: Path, lines: list[bytes], start: int) -> None:
    """Re-link every line from ``start`` on and put the new checkpoint lines into the
    sidecar (what someone who can write the files does to hide a change)."""
    sidecar = path.parent / f"{LOG}.checkpoints"
    side = sidecar.read_bytes().split(b"\n")[:-1]
    by_seq = {seq_of(line): n for n, line in enumerate(side)}
    prev = line_hash(lines[start])
    for n in range(start + 1, len(lines)):
        rec = orjson.loads(lines[n])
        rec["prev"] = prev.decode()
        if rec.get("kind") == "checkpoint":
            rec["covers_hash"] = prev.decode()
        lines[n] = orjson.dumps(rec)
        prev = line_hash(lines[n])
    for n in range(start, len(lines)):
        if seq_of(lines[n]) in by_seq and b'"kind":"checkpoint"' in lines[n][:120]:
            side[by_seq[seq_of(lines[n])]] = lines[n]
    save(path, lines)
    save(sidecar, side)


def is_checkpoint(line: bytes) -> bool:
    return b'"kind":"checkpoint"' in line[:120]


def sealed_segment(logs: Path, rnd: random.Random) -> tuple[Path, list[bytes]]:
    """A random plain sealed segment (it ends with its sealing checkpoint)."""
    path = rnd.choice(sorted(logs.glob("risk_audit.seg-*.jsonl")))
    return path, path.read_bytes().split(b"\n")[:-1]


def rewrite_history(logs: Path, rnd: random.Random) -> int:
    """Change an event and re-chain everything after it in its file, old signatures
    kept: the first checkpoint after the change no longer verifies."""
    path, lines = sealed_segment(logs, rnd)
    events = [k for k, line in enumerate(lines) if b'"kind":' not in line[:120]]
    k = rnd.choice(events)
    lines[k] = lines[k].replace(b'"priority":"HIGH"', b'"priority":"LOW"', 1)
    rechain(path, lines, k)
    return next(seq_of(line) for line in lines[k:] if is_checkpoint(line))


def cut_head_and_rewrite(logs: Path, rnd: random.Random) -> int:
    """Delete every file before a sealed segment and the segment's start up to its first
    checkpoint, then change a record after it and re-chain: the set starts after seq 1,
    anchored by that checkpoint's sidecar copy, but a later checkpoint no longer
    verifies."""
    path, lines = sealed_segment(logs, rnd)
    first = seq_of(lines[0])
    for other in logs.iterdir():
        if other.name.startswith("risk_audit.seg-") and other != path:
            head = gzip.decompress(other.read_bytes()) if other.suffix == ".gz" else None
            line = (head or other.read_bytes()).split(b"\n", 1)[0]
            if seq_of(line) < first:
                other.unlink()
    cps = [k for k, line in enumerate(lines[:-1]) if is_checkpoint(line)]
    cut = cps[0] if cps else -1
    lines = lines[cut + 1 :]
    events = [k for k, line in enumerate(lines) if b'"kind":' not in line[:120]]
    k = rnd.choice(events)
    lines[k] = lines[k].replace(b'"priority":"HIGH"', b'"priority":"LOW"', 1)
    rechain(path, lines, k)
    return next(seq_of(line) for line in lines[k:] if is_checkpoint(line))


TAMPERS: list[Tamper] = [
    flip_byte,
    change_value,
    delete_line,
    duplicate_line,
    swap_lines,
    forged_insert,
    garbage_line,
    nul_bytes,
    invalid_utf8,
    overlong_line,
    crlf_last_line,
    drop_final_checkpoint,
    tamper_compressed,
    forged_checkpoint,
    rewrite_history,
    cut_head_and_rewrite,
]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda t: t.__name__)
def test_every_change_is_invalid_and_names_its_first_seq(
    real_log: tuple[Path, Path], tmp_path: Path, tamper: Tamper, seed: int
) -> None:
    """One change to a real log, at a seeded random position: INVALID (exit 1) with the
    key, naming the first changed seq (a re-chain: the first checkpoint that no longer
    verifies); and never VALID without the key either."""
    directory, public = real_log
    logs = copy_of(directory, tmp_path)
    expected = tamper(logs, random.Random(seed))
    report = verify_paths([logs], keys=keys_of(public))
    assert report.status == "invalid", (tamper.__name__, report.warnings, report.unanchored)
    first = min(f.seq for f in report.findings)
    assert first == expected, (tamper.__name__, expected, report.findings)
    assert verify_paths([logs]).status != "valid"
    result = runner.invoke(app, ["verify", "--public-key", str(public), str(logs)])
    assert result.exit_code == 1, result.output


def test_a_head_cut_and_rewritten_history_never_passes(tmp_path: Path) -> None:
    """The attack as reported: one file, its start deleted through the third
    checkpoint (genesis gone), seq N changed and everything after re-chained with
    matching covers_hash values (old signatures) in the log and the sidecar. With the
    key: INVALID at the first checkpoint after the change (the stream id comes from the
    records and checkpoints, so signatures are checked). Without: UNANCHORED, exit 3 —
    never VALID."""
    private, public, _ = generate(tmp_path / "keys")
    cfg = AuditConfig(
        log_path=tmp_path / "logs" / LOG,
        signing_key_file=private,
        checkpoint_records=20,
        schema_policy="off",
        host="h",
    )
    with AuditLog(cfg, clock=synced_clock) as log:
        for i in range(150):
            log.append(event(i))
            if i % 10 == 9:
                log.flush()
    lines = cfg.log_path.read_bytes().split(b"\n")[:-1]
    third = [k for k, line in enumerate(lines) if is_checkpoint(line)][2]
    lines = lines[third + 1 :]
    k = next(k for k, line in enumerate(lines) if b'"kind":' not in line[:120]) + 10
    lines[k] = lines[k].replace(b'"priority":"HIGH"', b'"priority":"LOW"', 1)
    rechain(cfg.log_path, lines, k)
    expected = next(seq_of(line) for line in lines[k:] if is_checkpoint(line))
    signed = verify_paths([cfg.log_path.parent], keys=keys_of(public))
    assert signed.status == "invalid"
    assert min(f.seq for f in signed.findings) == expected, signed.findings
    assert {f.kind for f in signed.findings} == {"bad signature"}, signed.findings
    bare = verify_paths([cfg.log_path.parent])
    assert bare.status == "unanchored", (bare.findings, bare.warnings)
    result = runner.invoke(app, ["verify", str(cfg.log_path.parent)])
    assert result.exit_code == 3 and "UNANCHORED" in result.output, result.output


def test_a_field_outside_the_signature_of_the_newest_checkpoint_never_passes(
    tmp_path: Path,
) -> None:
    """The newest checkpoint has no successor to vouch for it and its signature covers
    only stream, covers_seq, covers_hash and ts. A field added (in log and sidecar) to
    a checkpoint of this version, which names its stream and writes nothing else, is a
    change; in a 0.1 checkpoint (no stream field; 0.1 wrote `clock` there) such fields
    are reported unauthenticated. Respelling it (a space, an escape) is a change too."""
    private, public, _ = generate(tmp_path / "keys")
    cfg = AuditConfig(log_path=tmp_path / "logs" / LOG, signing_key_file=private, host="h")
    with AuditLog(cfg, clock=synced_clock) as log:
        log.append(event(1))
    original = cfg.log_path.read_bytes().split(b"\n")[:-1]
    assert all(b'"clock"' not in line for line in original if is_checkpoint(line))
    sidecar = cfg.log_path.with_name(f"{LOG}.checkpoints")

    def with_last(line: bytes, *, in_sidecar: bool = True) -> VerifyReportT:
        save(cfg.log_path, [*original[:-1], line])
        if in_sidecar:
            save(sidecar, [line])
        return verify_paths([cfg.log_path.parent], keys=keys_of(public))

    rec = orjson.loads(original[-1])
    added = with_last(orjson.dumps({**rec, "note": "approved by the risk desk"}))
    assert added.status == "invalid", added.warnings
    respelled = with_last(original[-1].replace(b'"ts":', b'"ts" :'))
    assert respelled.status == "invalid", respelled.warnings
    other_stream = with_last(orjson.dumps({**rec, "stream": "0" * 8 + rec["stream"][8:]}))
    assert other_stream.status == "invalid"
    save(sidecar, [original[-1]])
    log_only = with_last(original[-1].replace(b'"ts":', b'"ts" :'), in_sidecar=False)
    assert log_only.status == "invalid"
    legacy = {k: v for k, v in rec.items() if k != "stream"}
    old = with_last(orjson.dumps({**legacy, "clock": {"synchronised": True}}))
    assert old.valid, (old.findings, old.unanchored)
    assert any("clock is outside what its signature covers" in w for w in old.warnings)


def test_files_beside_the_log_and_sub_directories_give_the_same_verdict(
    real_log: tuple[Path, Path], tmp_path: Path
) -> None:
    """The forwarder's cursor, any file not named like a log file, and a sub-directory
    (the spool) among the files `DIR/*` names are skipped with a note: VALID as for DIR."""
    directory, public = real_log
    logs = copy_of(directory, tmp_path)
    (logs / f"{LOG}.forward.json").write_text('{"seq": 12}')
    (logs / "notes.txt").write_text("rotated by hand on Tuesday")
    (logs / "spool").mkdir()
    for args in argument_forms(logs):
        report = verify_paths(args, keys=keys_of(public))
        assert report.valid, (args, report.findings)
    result = runner.invoke(app, ["verify", "--public-key", str(public), str(logs / "*")])
    assert result.exit_code == 0, result.output


def test_a_file_whose_head_was_cut_at_a_checkpoint_is_not_anchored(tmp_path: Path) -> None:
    """The active file cut at its fourth checkpoint, nothing rewritten: the first record
    left is not a segment record, so no file began there — UNANCHORED even with the
    key, never VALID."""
    private, public, _ = generate(tmp_path / "keys")
    cfg = AuditConfig(
        log_path=tmp_path / "logs" / LOG, signing_key_file=private, checkpoint_records=10
    )
    with AuditLog(cfg, clock=synced_clock) as log:
        for i in range(80):
            log.append(event(i))
            if i % 10 == 9:
                log.flush()
    lines = cfg.log_path.read_bytes().split(b"\n")[:-1]
    fourth = [k for k, line in enumerate(lines) if is_checkpoint(line)][3]
    save(cfg.log_path, lines[fourth + 1 :])
    report = verify_paths([cfg.log_path.parent], keys=keys_of(public))
    assert report.status == "unanchored", (report.findings, report.warnings)


def test_a_sealed_segment_cut_short_is_truncated_when_named_alone(
    real_log: tuple[Path, Path], tmp_path: Path
) -> None:
    """Only sealed segments named, the last one missing its end: its name says where it
    ends, so the cut is `truncated`, not a warning."""
    directory, public = real_log
    logs = copy_of(directory, tmp_path)
    segs = sorted(logs.glob("risk_audit.seg-*.jsonl"))
    lines = segs[-1].read_bytes().split(b"\n")[:-1]
    save(segs[-1], lines[:-5])
    report = verify_paths([str(s) for s in segs], keys=keys_of(public))
    assert report.status == "invalid" and "truncated" in {f.kind for f in report.findings}
    assert min(f.seq for f in report.findings) == seq_of(lines[-5])


def test_a_forged_copy_of_records_older_than_the_window_is_not_a_copy(tmp_path: Path) -> None:
    """A file that repeats old seqs (forged: they link among themselves but not to the
    chain) and reaches nothing the verifier can compare: INVALID, not a warning."""
    cfg = AuditConfig(log_path=tmp_path / "logs" / LOG, schema_policy="off", host="h")
    with AuditLog(cfg, clock=synced_clock) as log:
        for i in range(70_000):
            log.append(event(i))
    lines = cfg.log_path.read_bytes().split(b"\n")[:30]
    forged = [lines[1].replace(b'"kind":"start"', b'"kind":"start","forged":1', 1)]
    for line in lines[2:30]:
        rec = orjson.loads(line.replace(b'"priority":"HIGH"', b'"priority":"LOW"', 1))
        rec["prev"] = line_hash(forged[-1]).decode()
        forged.append(orjson.dumps(rec))
    save(cfg.log_path.with_name(f"{LOG}.3"), forged)
    report = verify_paths([cfg.log_path.parent])
    assert report.status == "invalid", report.warnings
