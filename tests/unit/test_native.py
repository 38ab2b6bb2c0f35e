"""The Rust core against the readable reference: the same bytes, the same reports.

The writer chains lines in ``riskaudit._native`` and verify scans them there; format v1
stays defined by the pure-Python code in ``riskaudit.format._codec`` and the Python walk of
``verify --engine=python``. These tests hold the two to each other: the conformance
vectors byte for byte, random records and timestamps, and identical verify reports on
the tamper corpus.
"""

from __future__ import annotations

import importlib.metadata
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import riskaudit
from riskaudit import EventPriority, EventType, RiskEvent, verify_paths
from riskaudit._native import NEEDS_CHECK, Batch, Queue, chain
from riskaudit._native import line_hash as native_line_hash
from riskaudit.format import (
    chain_batch,
    control_line,
    control_mid,
    encode_event_body,
    event_line,
    parse_ts,
)
from riskaudit.integrity import load_public_key
from riskaudit.log import ZERO_HASH, line_hash
from riskaudit.policy import (
    ACTOR_TYPE_NAMES,
    ENFORCEMENTS,
    Enforcement,
    native_checks,
    schema_problem,
)
from tests.helpers import ROOT, build_log, synced_clock, write_lines
from tests.unit.test_verify_truth import TAMPERS, copy_of, keys_of, write_real_log

VECTORS = ROOT / "tests" / "vectors" / "format-v1"
SETTINGS = settings(
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- the same bytes -------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=24),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
timestamps = st.integers(min_value=0, max_value=4_102_444_800 * 10**9 - 1)
field_names = st.text(max_size=10).filter(lambda k: k not in ("seq", "prev", "kind", "ts"))
controls = st.tuples(
    st.sampled_from(["start", "stop", "gap", "segment", "checkpoint", "clock", "x"]),
    st.dictionaries(field_names, json_values, max_size=5),
    st.booleans(),  # the fields carry their own ts (a checkpoint's signed one)
)
events = st.builds(
    lambda t, p, src, data, meta, eid, ts: RiskEvent(
        t, p, src, data, metadata=meta, event_id=eid, timestamp_ns=ts
    ),
    st.sampled_from(list(EventType)),
    st.sampled_from(list(EventPriority)),
    st.text(max_size=16),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    st.text(min_size=1, max_size=20),
    timestamps,
)


def reference(items: list[tuple[int, int, Any]]) -> tuple[bytes, bytes]:
    """The chained bytes and head hash, by the readable encoder."""
    prev = ZERO_HASH
    out = []
    for seq, ts, body in items:
        if isinstance(body, bytes):
            line = event_line(seq, prev, ts, body)
        else:
            line = control_line(seq, prev, body[0], body[1], ts)
        out.append(line + b"\n")
        prev = line_hash(line)
    return b"".join(out), prev


def native_batch(items: list[tuple[int, int, Any]]) -> list[Batch]:
    """The same items as native batches (events and controls may interleave)."""
    batches = []
    for seq, ts, body in items:
        if isinstance(body, bytes):
            batches.append(Batch.of_events([(seq, ts, body)]))
        else:
            batches.append(Batch.of_controls([(seq, ts, *control_mid(body[0], body[1]))]))
    return batches


@SETTINGS
@given(
    st.lists(st.tuples(st.one_of(events, controls), timestamps), min_size=1, max_size=30),
    st.integers(1, 4096),
)
def test_native_lines_are_the_reference_lines(
    records: list[tuple[Any, int]], chunk_bytes: int
) -> None:
    """Random events, control records (with and without their own ts) and timestamps
    from 1970 to 2099: the core's chained bytes and head hash equal the reference
    encoder's, byte for byte, in any chunking."""
    items: list[tuple[int, int, Any]] = []
    for seq, (record, ts) in enumerate(records, start=1):
        if isinstance(record, RiskEvent):
            items.append((seq, ts, encode_event_body(record)))
        else:
            kind, fields, own_ts = record
            if own_ts:
                fields = {**fields, "ts": "2026-12-03T10:00:00.000000000Z"}
            items.append((seq, ts, (kind, fields)))
    expected, expected_prev = reference(items)
    prev = ZERO_HASH
    data: list[bytes] = []
    for batch in native_batch(items):
        prev, chunks = chain(batch, prev, chunk_bytes)
        data.extend(c for _, c in chunks)
        assert all(len(c) < chunk_bytes + 4096 or c.count(b"\n") == 1 for _, c in chunks)
    assert b"".join(data) == expected
    assert prev == expected_prev
    # The Python writer loop of old (kept as the reference of the batch form) agrees too.
    ref_prev, ref_chunks = chain_batch(items, ZERO_HASH, chunk_bytes)
    assert b"".join(c for _, c in ref_chunks) == expected and ref_prev == prev


def test_events_of_one_batch_chunk_at_the_size_asked() -> None:
    """A batch is cut into chunks of at least chunk_bytes (the last may be shorter),
    each ending on a line, each naming its last seq."""
    body = encode_event_body(
        RiskEvent(EventType.ALERT, EventPriority.LOW, "s", {"x": "y" * 100}, event_id="e")
    )
    batch = Batch.of_events([(seq, seq * 1000, body) for seq in range(1, 101)])
    _prev, chunks = chain(batch, ZERO_HASH, 1000)
    assert len(chunks) > 5
    assert all(c.endswith(b"\n") for _, c in chunks)
    assert all(len(c) >= 1000 for _, c in chunks[:-1])
    for last, c in chunks:
        assert c.rsplit(b"\n", 2)[-2].startswith(b'{"seq":%d,' % last)


def test_the_conformance_vectors_are_rebuilt_byte_for_byte() -> None:
    """Every record of the format-v1 vectors, taken apart (seq, prev, ts, body or
    fields) and rebuilt by the core, is the same line, and the hashes chain."""
    lines = (VECTORS / "valid.jsonl").read_bytes().split(b"\n")[:-1]
    prev = ZERO_HASH
    for line in lines:
        record = orjson.loads(line)
        assert record["prev"].encode() == prev
        if "kind" in record:
            fields = {k: v for k, v in record.items() if k not in ("seq", "prev", "kind")}
            ts = parse_ts(fields.pop("ts")) if list(record)[-1] == "ts" else 0
            batch = Batch.of_controls([(record["seq"], ts, *control_mid(record["kind"], fields))])
        else:
            found = re.match(rb'\{"seq":\d+,"prev":"[0-9a-f]{64}","ts":"([^"]+)",', line)
            assert found is not None
            body = line[found.end() :]
            batch = Batch.of_events([(record["seq"], parse_ts(found.group(1).decode()), body)])
        new_prev, chunks = chain(batch, prev, 1 << 20)
        assert chunks[0][1] == line + b"\n"
        assert new_prev == line_hash(line) == native_line_hash(line)
        prev = new_prev


# -- the same reports -----------------------------------------------------------------


def both(paths: list[Any], **kwargs: Any) -> dict[str, Any]:
    """Verify with both engines; assert the reports are identical; return one."""
    native = verify_paths(paths, engine="native", **kwargs).to_dict()
    python = verify_paths(paths, engine="python", **kwargs).to_dict()
    assert native == python
    return native


@pytest.mark.parametrize(
    "name", sorted(p.name for p in VECTORS.glob("*.jsonl")), ids=lambda n: n.removesuffix(".jsonl")
)
def test_engines_agree_on_the_vectors(name: str, tmp_path: Path) -> None:
    """Each conformance vector (valid and tampered), with the vectors' checkpoint
    sidecar and key, gets the same report from both: valid for valid.jsonl only."""
    target = tmp_path / "risk_audit.jsonl"
    target.write_bytes((VECTORS / name).read_bytes())
    sidecar = tmp_path / "risk_audit.jsonl.checkpoints"
    sidecar.write_bytes((VECTORS / "valid.jsonl.checkpoints").read_bytes())
    keys = [load_public_key(VECTORS / "test-signing-key.pub.pem")]
    report = both([target], keys=keys)
    assert (report["status"] == "valid") == (name == "valid.jsonl"), report
    both([target], keys=keys, checkpoints=[])


@pytest.fixture(scope="module")
def real_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_real_log(tmp_path_factory.mktemp("real"))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda t: t.__name__)
def test_engines_agree_on_the_tamper_corpus(
    real_log: tuple[Path, Path], tmp_path: Path, tamper: Any, seed: int
) -> None:
    """Every kind of change to a real log (rotated, signed, compressed, repaired): the
    native and the Python scan give the same report, with and without the key."""
    directory, public = real_log
    logs = copy_of(directory, tmp_path)
    tamper(logs, random.Random(seed))
    assert both([logs], keys=keys_of(public))["status"] == "invalid"
    both([logs])


def test_engines_agree_on_a_clean_real_log(real_log: tuple[Path, Path]) -> None:
    """The untampered real log: VALID from both, the same report."""
    directory, public = real_log
    assert both([directory], keys=keys_of(public))["status"] == "valid"


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=12)
)
logs = st.lists(
    st.dictionaries(st.text(min_size=1, max_size=6), json_scalars, max_size=3),
    min_size=2,
    max_size=40,
).map(build_log)


@SETTINGS
@given(logs, st.data())
def test_engines_agree_on_random_damage(lines: list[bytes], data: st.DataObject) -> None:
    """Random logs, then random damage (bytes changed, lines dropped, repeated, moved,
    event ids reused): the two engines report the same findings and warnings."""
    lines = list(lines)
    for _ in range(data.draw(st.integers(0, 3))):
        op = data.draw(st.sampled_from(["flip", "drop", "repeat", "move", "reuse", "bigseq"]))
        i = data.draw(st.integers(0, len(lines) - 1))
        if op == "flip" and lines[i]:
            k = data.draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:k] + bytes([lines[i][k] ^ 1]) + lines[i][k + 1 :]
        elif op == "drop" and len(lines) > 1:
            del lines[i]
        elif op == "repeat":
            lines.insert(data.draw(st.integers(0, len(lines))), lines[i])
        elif op == "move":
            lines.insert(data.draw(st.integers(0, len(lines))), lines.pop(i))
        elif op == "reuse":
            lines = _reuse_an_id(lines, i)
        elif op == "bigseq":
            big = data.draw(st.sampled_from([2**62, 2**63, 2**64, 10**21]))
            lines[i] = re.sub(rb'^\{"seq":\d+', b'{"seq":%d' % big, lines[i])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "risk_audit.jsonl"
        write_lines(path, lines)
        both([path])


def _reuse_an_id(lines: list[bytes], i: int) -> list[bytes]:
    """Give record i the event id of an earlier event and re-chain (a valid log that
    verify warns about)."""
    ids = [re.search(rb'"event_id":"([^"]*)"', line) for line in lines]
    earlier = [m.group(1) for m in ids[:i] if m is not None]
    reused = ids[i]
    if not earlier or reused is None:
        return lines
    out = list(lines[:i])
    prev = line_hash(out[-1]) if out else ZERO_HASH
    for k in range(i, len(lines)):
        line = lines[k]
        if k == i:
            line = line.replace(reused.group(0), b'"event_id":"' + earlier[0] + b'"', 1)
        line = re.sub(rb'"prev":"[0-9a-f]{64}"', b'"prev":"' + prev + b'"', line, count=1)
        out.append(line)
        prev = line_hash(line)
    return out


# -- the hand-off ---------------------------------------------------------------------


def test_the_queue_is_bounded_in_records_and_in_bytes() -> None:
    """push refuses (0) at the record limit and at the byte limit, hands out seqs in
    order, and a queued record costs its bytes plus at most 64."""
    q = Queue(5, 1)
    assert q.push(b"x" * 100, 3, 10_000) == 5
    assert q.push(b"x" * 100, 3, 10_000) == 6
    assert q.push(b"x" * 100, 2, 10_000) == 0  # two queued: the record limit
    assert q.push(b"x" * 100, 3, 250) == 0  # 200 + 100 bytes: the byte limit
    assert q.push(b"x" * 50, 3, 250) == 7
    assert (len(q), q.bytes) == (3, 250)
    assert Queue.item_overhead <= 64
    batch = q.take(0.0)
    assert (len(batch), batch.first_seq, batch.last_seq, len(q), q.bytes) == (3, 5, 7, 0, 0)
    q.shut()
    assert q.push(b"x", 3, 100) == -1


def push_event(q: Queue, *args: Any) -> int:
    """``q.push_event`` as ``append`` uses it: -2 (a writer of some other test still
    waits for the GIL) means step aside and push again."""
    from riskaudit._native import yield_to_writer

    pushed: int = q.push_event(*args)
    while pushed == -2:
        yield_to_writer(1.0)
        pushed = q.push_event(*args)
    return pushed


def test_push_event_queues_the_body_without_its_brace_when_the_checks_plainly_pass() -> None:
    """push_event queues ``encoded[1:]`` for a known type whose required keys are in a
    plain dict; it queues nothing and says NEEDS_CHECK before the checks are given, for
    a missing key, a data that is not a plain dict, and a type Python must look at."""
    q = Queue(1, 1)
    data = {"order_id": "o1", "outcome": "pass"}
    encoded = b'{"event_id":"a"}'
    assert push_event(q, encoded, EventType.PRE_TRADE_CHECK, data, 10, 1000) == NEEDS_CHECK
    assert q.set_checks(native_checks("warn", "enforce"))
    assert not q.set_checks(native_checks("off", "off"))  # given once
    assert push_event(q, encoded, EventType.PRE_TRADE_CHECK, data, 10, 1000) == 1
    assert q.take(0.0).event_bodies() == [b'"event_id":"a"}']

    class Sub(dict[str, Any]):
        pass

    for event_type, value in [
        (EventType.PRE_TRADE_CHECK, {"order_id": "o1"}),
        (EventType.PRE_TRADE_CHECK, Sub(data)),
        (EventType.PRE_TRADE_CHECK, [1, 2]),
        (EventType.KILL_SWITCH, {"action": "activate", "scope": "all"}),
        (EventType.CONFIG_UPDATE, {"old": 1, "new": 2, "limit": "x"}),
        ("PRE_TRADE_CHECK", data),
    ]:
        assert push_event(q, encoded, event_type, value, 10, 1000) == NEEDS_CHECK
    assert len(q) == 0


def test_push_event_with_schemas_off_takes_any_data() -> None:
    """Schemas off: the core looks at no data keys, and only the actor rules' types go
    back to Python."""
    q = Queue(1, 1)
    q.set_checks(native_checks("off", "enforce"))
    assert push_event(q, b"{}", EventType.PRE_TRADE_CHECK, [1], 10, 1000) == 1
    assert push_event(q, b"{}", EventType.KILL_SWITCH, {}, 10, 1000) == NEEDS_CHECK


def test_a_producer_steps_aside_in_a_writer_section_until_it_ends() -> None:
    """Inside a section the writer marked (its periodic checks), a push that may yield
    returns -2 once the section is 50 µs old and yield_to_writer returns when the
    section ends, well before the 5 ms window would end it; a native writer call
    inside the section needs no GIL, so nobody steps aside during it; past the window
    nobody steps aside any more."""
    import threading
    import time

    from riskaudit._native import begin_section, end_section, yield_to_writer

    q = Queue(1, 1)

    def section_with_a_step_aside() -> tuple[int, float]:
        """A section that is past 50 µs and inside its window when a push sees it
        (a loaded machine may overshoot: then try again)."""
        for _ in range(50):
            token = begin_section()
            began = time.monotonic()
            while time.monotonic() - began < 0.004:
                pushed = q.push(b"x", 1 << 20, 1 << 30)
                if pushed == -2:
                    return token, began
            end_section(token)
        raise AssertionError("no push stepped aside inside a section")

    token, began = section_with_a_step_aside()
    try:
        ended = threading.Timer(0.0005, end_section, args=(token,))
        started = time.monotonic()
        ended.start()
        yield_to_writer(1.0)
        returned = time.monotonic()
        ended.join()
        # The window would have ended the wait only 5 ms after the section began.
        if returned - began < 0.0049:
            assert returned - started >= 0.0004
        assert q.push(b"y", 1 << 20, 1 << 30) > 0

        token, began = section_with_a_step_aside()
        end_section(token)
        q.take(0.0)  # empty: the writer's take below waits its 20 ms
        token = begin_section()
        writer_busy = threading.Thread(target=q.take, args=(0.02,))  # native, no GIL
        writer_busy.start()
        time.sleep(0.002)
        assert q.push(b"z", 1 << 20, 1 << 30) > 0
        writer_busy.join()

        token = begin_section()
        time.sleep(0.006)  # past the window: the interpreter hands the GIL over anyway
        assert q.push(b"w", 1 << 20, 1 << 30) > 0
    finally:
        end_section(token)


@SETTINGS
@given(
    event_type=st.sampled_from(list(EventType)),
    data=st.one_of(
        st.dictionaries(
            st.sampled_from(
                [
                    "order_id",
                    "outcome",
                    "symbol",
                    "position",
                    "side",
                    "qty",
                    "metric",
                    "value",
                    "rule",
                    "result",
                    "limit",
                    "limit_value",
                    "observed",
                    "action",
                    "scope",
                    "message",
                    "old",
                    "new",
                    "setting",
                    "other",
                ]
            ),
            st.one_of(st.integers(), st.sampled_from(["activate", "reset", "x"])),
        ),
        st.lists(st.integers(), max_size=2),
    ),
    schema_policy=st.sampled_from(ENFORCEMENTS),
    actor_policy=st.sampled_from(ENFORCEMENTS),
)
def test_the_core_queues_exactly_what_the_python_rules_pass_unlooked(
    event_type: EventType, data: Any, schema_policy: Enforcement, actor_policy: Enforcement
) -> None:
    """The core's fast check agrees with the Python rules: it queues an event exactly
    when the schema passes (or is off) and no actor rule applies to its type, so it
    never lets through what Python would flag or refuse."""
    q = Queue(1, 1)
    q.set_checks(native_checks(schema_policy, actor_policy))
    event = RiskEvent(event_type=event_type, data=data, source="t")
    schema_ok = schema_policy == "off" or schema_problem(event) is None
    actor_looks = actor_policy != "off" and event_type.name in ACTOR_TYPE_NAMES
    one_of_or_kill = schema_policy != "off" and (
        event_type is EventType.KILL_SWITCH or event_type is EventType.CONFIG_UPDATE
    )
    queued = push_event(q, b"{}", event_type, data, 10, 1000) > 0
    assert queued == (schema_ok and not actor_looks and not one_of_or_kill)


def test_take_waits_without_the_gil_and_wakes_on_a_push() -> None:
    """The writer's take releases the GIL while it waits (a Python thread runs
    meanwhile) and returns as soon as a producer pushes."""
    import threading
    import time

    q = Queue(1, 1)
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(len(q.take(5.0))))
    t.start()
    spins = 0
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:  # this thread keeps the interpreter busy
        spins += 1
    started = time.monotonic()
    # Never step aside here: another test's writer thread may be waiting for the GIL.
    assert q.push(b"x", 10, 1000, False) == 1
    t.join(2.0)
    assert got == [1] and time.monotonic() - started < 1.0
    assert spins > 10_000


# -- one version ------------------------------------------------------------------------


def test_one_version_for_package_crate_and_wheel() -> None:
    """riskaudit.__version__ (from the crate) is the installed distribution's version
    and native/Cargo.toml's."""
    cargo = (ROOT / "native" / "Cargo.toml").read_text()
    found = re.search(r'^version = "([^"]+)"', cargo, re.M)
    assert found is not None
    assert riskaudit.__version__ == found.group(1) == importlib.metadata.version("riskaudit")


def test_the_writer_counts_events_by_kind_and_source_for_the_metrics(tmp_path: Path) -> None:
    """event_counts and last_by_source (read by /metrics) are counted by the writer in
    the native chain: by type and priority, the newest acceptance time per source, a
    source with quotes and non-ASCII decoded; control records are not counted."""
    from riskaudit import AuditLog

    sources = ["engine-1", 'desk "A"\\b', "Zürich-ü"]
    with AuditLog(path=tmp_path / "risk_audit.jsonl", clock=synced_clock) as log:
        for i in range(30):
            log.append(
                RiskEvent(
                    EventType.ALERT if i % 3 else EventType.LIMIT_BREACH,
                    EventPriority.HIGH if i % 2 else EventPriority.LOW,
                    sources[i % 3],
                    {"message": "m", "limit": 1, "value": 2, "scope": "s"},
                )
            )
        log.flush()
        counts = log.event_counts
        last = log.last_by_source
    assert sum(counts.values()) == 30
    assert counts[("LIMIT_BREACH", "LOW")] == 5 and counts[("ALERT", "HIGH")] == 10
    assert set(last) == set(sources)
    records = [
        orjson.loads(line)
        for line in (tmp_path / "risk_audit.jsonl").read_bytes().split(b"\n")[:-1]
    ]
    newest = {}
    for rec in records:
        if "source" in rec:
            newest[rec["source"]] = parse_ts(rec["ts"])
    assert last == newest


@pytest.mark.parametrize("block", [1, 7, 64, 4096])
def test_engines_agree_whatever_the_block_size(
    real_log: tuple[Path, Path], tmp_path: Path, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files read in blocks of 1, 7, 64 and 4096 bytes (a block boundary inside every
    kind of line, a pending line carried over, sealed ends in a later block): the native
    and the Python walk still give the same reports, clean and tampered."""
    from riskaudit.integrity import _stream

    monkeypatch.setattr(_stream, "_READ", block)
    directory, public = real_log
    assert both([directory], keys=keys_of(public))["status"] == "valid"
    for n, tamper in enumerate(TAMPERS[:8]):
        logs = copy_of(directory, tmp_path / f"t{n}")
        tamper(logs, random.Random(n))
        both([logs], keys=keys_of(public))


def test_a_seq_beyond_64_bits_is_judged_alike(tmp_path: Path) -> None:
    """A forged line claiming a seq the core cannot hold (beyond 2**64) is reported by
    the native engine as by the Python one, not an OverflowError."""
    lines = build_log([{"a": 1}, {"b": 2}, {"c": 3}])
    lines[1] = re.sub(rb'^\{"seq":\d+', b'{"seq":123456789012345678901', lines[1])
    path = tmp_path / "risk_audit.jsonl"
    write_lines(path, lines)
    assert both([path])["status"] == "invalid"
    lines[1] = re.sub(rb'^\{"seq":\d+', b'{"seq":4611686018427387904', lines[1])
    write_lines(path, lines)
    assert both([path])["status"] == "invalid"


def test_a_producer_steps_aside_for_a_writer_waiting_for_the_gil() -> None:
    """While a writer-side call (here take) waits for the GIL that this thread holds, a
    push that may yield returns -2 after 50 µs; one that may not (a risk-reducing
    event) is queued at once; yield_to_writer lets the writer in, and pushes go on."""
    import threading
    import time

    q = Queue(1, 1)
    returned = threading.Event()

    def writer() -> None:
        q.take(0.05)  # returns after 50 ms, then needs the GIL back
        returned.set()

    t = threading.Thread(target=writer)
    t.start()
    seen = set()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and -2 not in seen:
        seen.add(q.push(b"x", 1 << 20, 1 << 30))
        if -2 in seen:
            assert q.push(b"reserve", 1 << 20, 1 << 30, False) > 0  # never steps aside
    assert -2 in seen
    from riskaudit._native import yield_to_writer

    yield_to_writer(1.0)
    t.join(2.0)
    assert returned.is_set()
    assert q.push(b"y", 1 << 20, 1 << 30) > 0


@SETTINGS
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"x")), max_size=30),
    torn=st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"x")),
    block=st.integers(min_value=1, max_value=64),
)
def test_blocks_hold_every_byte_once_whatever_the_read_size(
    lines: list[bytes], torn: bytes, block: int
) -> None:
    """The verifier's blocks (a line across two reads comes as a small block of its
    own, no block copied) hold the file's whole lines in order, each byte once, and
    the torn last line alone at the end."""
    from riskaudit.integrity import _stream

    content = b"".join(line + b"\n" for line in lines) + torn
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.jsonl"
        path.write_bytes(content)
        old, _stream._READ = _stream._READ, block
        try:
            pieces = list(_stream.block_chunks(path))
        finally:
            _stream._READ = old
    whole = b"".join(d[b:e] for d, b, e, complete in pieces if complete)
    assert whole == content[: len(content) - len(torn)]
    assert all(d[b:e].endswith(b"\n") for d, b, e, complete in pieces if complete)
    tail = [d for d, _b, _e, complete in pieces if not complete]
    assert tail == ([torn] if torn else [])
