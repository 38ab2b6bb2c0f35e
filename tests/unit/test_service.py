"""The HTTP service: endpoints, the auth matrix, bad input (nothing written), batches."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from riskaudit import AuditConfig, AuditLog, EventPriority, EventType, RiskEventBus, verify_paths
from riskaudit.ops import Service, TokenStore, create_app, create_token
from tests.helpers import records, synced_clock

ROLES = ("writer", "reader", "admin")


class LogClient(TestClient):
    """The app's test client, holding the log its service writes to."""

    log: AuditLog


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    out = {}
    lines = []
    for role in ROLES:
        token, line = create_token(f"{role}-app", role)
        out[role] = token
        lines.append(line)
    (tmp_path / "tokens").write_text("# name role sha256\n" + "\n".join(lines) + "\n")
    return out


@pytest.fixture
def client(tmp_path: Path, tokens: dict[str, str]) -> Iterator[LogClient]:
    cfg = AuditConfig(
        log_path=tmp_path / "logs" / "log.jsonl",
        tokens_file=tmp_path / "tokens",
        max_body_bytes=20_000,
        max_batch=50,
    )
    log = AuditLog(cfg, clock=synced_clock)
    service = Service(
        log, cfg, bus=RiskEventBus(log), tokens=TokenStore.load(tmp_path / "tokens"), owns_log=True
    )
    with LogClient(create_app(service)) as c:
        c.log = log
        yield c


def auth(tokens: dict[str, str], role: str) -> dict[str, str]:
    return {"authorization": f"Bearer {tokens[role]}"}


def alert(msg: str = "hi", **extra: object) -> dict[str, object]:
    return {
        "event_type": "ALERT",
        "priority": "HIGH",
        "source": "ui",
        "data": {"message": msg},
        **extra,
    }


def event_count(c: LogClient) -> int:
    c.log.flush()
    return sum(1 for r in records(c.log.path) if "kind" not in r)


def test_health_ready_metrics_status_page_are_open(client: LogClient) -> None:
    """The ops endpoints answer without a token and report facts."""
    h = client.get("/health")
    assert h.status_code == 200 and h.json()["writer_alive"] is True
    assert client.get("/ready").json()["ready"] is True
    m = client.get("/metrics")
    assert m.status_code == 200 and "audit_durable_seq" in m.text
    assert 'audit_write_failures_total{reason="primary"} 0.0' in m.text
    st = client.get("/v1/status").json()
    assert st["destination"] == "primary" and st["last_seq"] >= 2
    page = client.get("/")
    assert page.status_code == 200 and f'id="chain-head" hidden>{st["last_seq"]}' in page.text
    assert client.get("/docs").status_code == 200
    assert "/v1/events" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("post", "/v1/events", {"writer", "admin"}), ("get", "/v1/events", {"reader", "admin"})],
)
def test_auth_matrix(
    client: LogClient, tokens: dict[str, str], method: str, path: str, allowed: set[str]
) -> None:
    """401 without or with a wrong token, 403 for the wrong role, 2xx for the right one."""
    kw = {"json": alert()} if method == "post" else {}
    assert getattr(client, method)(path, **kw).status_code == 401
    bad = {"authorization": "Bearer nope"}
    assert getattr(client, method)(path, headers=bad, **kw).status_code == 401
    for role in ROLES:
        code = getattr(client, method)(path, headers=auth(tokens, role), **kw).status_code
        assert (code < 300) == (role in allowed), (role, code)
        if role not in allowed:
            assert code == 403


def test_post_one_event_and_durable(client: LogClient, tokens: dict[str, str]) -> None:
    """202 with the seq; ?durable=true answers 200 after fsync."""
    r = client.post("/v1/events", json=alert(), headers=auth(tokens, "writer"))
    assert r.status_code == 202 and r.json()["first_seq"] == r.json()["last_seq"]
    d = client.post("/v1/events?durable=true", json=alert(), headers=auth(tokens, "writer"))
    assert d.status_code == 200 and d.json()["durable"] is True
    assert client.log.durable_seq >= d.json()["last_seq"]


def test_ndjson_batch_and_retry_dedupe(client: LogClient, tokens: dict[str, str]) -> None:
    """A batch gets a seq range; the same event_ids posted again are not written twice."""
    body = b"\n".join(orjson.dumps(alert(str(i), event_id=f"e-{i}")) for i in range(10))
    h = {**auth(tokens, "writer"), "content-type": "application/x-ndjson"}
    r = client.post("/v1/events", content=body, headers=h)
    assert r.status_code == 202 and r.json()["accepted"] == 10
    again = client.post("/v1/events", content=body, headers=h)
    assert again.json()["accepted"] == 0
    assert [d["seq"] for d in again.json()["duplicates"]] == r.json()["seqs"]
    assert event_count(client) == 10


@pytest.mark.parametrize(
    ("content", "ctype", "status", "field"),
    [
        (b"{not json", "application/json", 400, None),
        (orjson.dumps({"event_type": "NOPE"}), "application/json", 422, "event_type"),
        (orjson.dumps({"data": {}}), "application/json", 422, "event_type"),
        (orjson.dumps({**alert(), "colour": "red"}), "application/json", 422, "colour"),
        (orjson.dumps({**alert(), "priority": "URGENT"}), "application/json", 422, "priority"),
        (orjson.dumps({**alert(), "data": [1]}), "application/json", 422, "data"),
        (orjson.dumps(alert()), "text/plain", 415, "content-type"),
        (
            b'{"event_type":"ALERT","data":{"message":"' + b"x" * 30_000 + b'"}}',
            "application/json",
            413,
            None,
        ),
        (orjson.dumps(alert()) + b"\n{oops", "application/x-ndjson", 400, "line 2"),
        (
            orjson.dumps(alert()) + b"\n" + orjson.dumps({"event_type": "X"}),
            "application/x-ndjson",
            422,
            "[1].event_type",
        ),
        (b"\n".join([orjson.dumps(alert())] * 51), "application/x-ndjson", 413, None),
    ],
)
def test_bad_input_is_refused_and_nothing_written(
    client: LogClient,
    tokens: dict[str, str],
    content: bytes,
    ctype: str,
    status: int,
    field: str | None,
) -> None:
    """Each bad body gets a clear 4xx naming the field, and the log gains no event."""
    before = event_count(client)
    r = client.post(
        "/v1/events", content=content, headers={**auth(tokens, "writer"), "content-type": ctype}
    )
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and r.json()["error"]
    assert event_count(client) == before


def test_actor_rules_refuse_the_whole_batch(client: LogClient, tokens: dict[str, str]) -> None:
    """A batch with a limit change naming no actor: 403, nothing of it written, and
    the attempt recorded as policy_violation."""
    raise_limit = {
        "event_type": "CONFIG_UPDATE",
        "data": {"limit": "max_pos", "old": 9, "new": 1},
        "metadata": {},
    }
    body = orjson.dumps(alert()) + b"\n" + orjson.dumps(raise_limit)
    before = event_count(client)
    r = client.post(
        "/v1/events",
        content=body,
        headers={**auth(tokens, "writer"), "content-type": "application/x-ndjson"},
    )
    assert r.status_code == 403 and r.json()["rule"] == "actor_required"
    assert event_count(client) == before
    kinds = [x.get("kind") for x in records(client.log.path)]
    assert "policy_violation" in kinds


def test_query_filters_pages_and_records_the_access(
    client: LogClient, tokens: dict[str, str]
) -> None:
    """GET /v1/events filters and paginates; each read is an access record naming who."""
    h = {**auth(tokens, "writer"), "content-type": "application/x-ndjson"}
    body = b"\n".join(orjson.dumps(alert(str(i), source="a" if i % 2 else "b")) for i in range(30))
    client.post("/v1/events", content=body, headers=h)
    client.log.flush()
    r = client.get(
        "/v1/events", params={"source": "a", "limit": 10}, headers=auth(tokens, "reader")
    )
    page1 = r.json()
    assert len(page1["records"]) == 10 and all(x["source"] == "a" for x in page1["records"])
    r2 = client.get(
        "/v1/events",
        params={"source": "a", "limit": 10, "after": page1["next_after"]},
        headers=auth(tokens, "reader"),
    )
    assert len(r2.json()["records"]) == 5 and r2.json()["next_after"] is None
    client.log.flush()
    access = [x for x in records(client.log.path) if x.get("kind") == "access"]
    assert access[0]["who"] == "reader-app" and access[0]["count"] == 10
    assert access[0]["query"]["source"] == ["a"]
    assert verify_paths([client.log.path]).valid


def test_without_a_tokens_file_the_event_api_is_closed(tmp_path: Path) -> None:
    """No RISK_AUDIT_TOKENS_FILE: ops endpoints open, the event API answers 401."""
    cfg = AuditConfig(log_path=tmp_path / "x.jsonl")
    with AuditLog(cfg, clock=synced_clock) as log, TestClient(create_app(Service(log, cfg))) as c:
        assert c.get("/health").status_code == 200
        r = c.post("/v1/events", json=alert())
        assert r.status_code == 401 and "RISK_AUDIT_TOKENS_FILE" in r.json()["error"]


def test_closed_ops_endpoints_need_a_token(tmp_path: Path, tokens: dict[str, str]) -> None:
    """RISK_AUDIT_OPEN_ENDPOINTS empty: even /metrics needs a token."""
    cfg = AuditConfig(
        log_path=tmp_path / "x.jsonl", tokens_file=tmp_path / "tokens", open_endpoints=()
    )
    with (
        AuditLog(cfg, clock=synced_clock) as log,
        TestClient(create_app(Service(log, cfg, tokens=TokenStore.load(tmp_path / "tokens")))) as c,
    ):
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=auth(tokens, "reader")).status_code == 200


def test_embedded_ops_endpoints_start_and_stop(tmp_path: Path) -> None:
    """One call serves /health, /ready and /metrics for an embedded log; stop() ends it;
    it writes no record of its own into the host's log."""
    import httpx

    from riskaudit.ops import start_ops_server

    with AuditLog(path=tmp_path / "e.jsonl", clock=synced_clock) as log:
        server = start_ops_server(log, port=0)
        try:
            base = f"http://127.0.0.1:{server.port}"
            assert httpx.get(f"{base}/health").json()["writer_alive"] is True
            assert httpx.get(f"{base}/ready").status_code == 200
            assert "audit_chain_seq" in httpx.get(f"{base}/metrics").text
        finally:
            server.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/health", timeout=1)
        log.flush()
        # A status port adds nothing to the host's log (the holds are the service's).
        assert not [r for r in records(log.path) if r.get("kind") == "holds"]


def test_embedded_ops_endpoints_close_a_request_that_never_finishes(tmp_path: Path) -> None:
    """The embedded endpoints have the service's header timeout: a connection that
    never finishes its headers is closed (with a 408) instead of held for ever."""
    import socket

    from riskaudit.ops import start_ops_server

    cfg = AuditConfig(log_path=tmp_path / "e.jsonl", http_header_timeout=0.5)
    with AuditLog(cfg, clock=synced_clock) as log, start_ops_server(log, port=0) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            assert time.monotonic() - started < 2.0
        assert answer.startswith(b"HTTP/1.1 408"), answer


def test_concurrent_batches_stay_contiguous(client: LogClient, tokens: dict[str, str]) -> None:
    """Batches posted from several threads at once: all 200 OK-ish, each batch's seqs are
    consecutive, nothing duplicated."""
    from concurrent.futures import ThreadPoolExecutor

    h = {**auth(tokens, "writer"), "content-type": "application/x-ndjson"}

    def post(k: int) -> list[int]:
        body = b"\n".join(orjson.dumps(alert(f"{k}-{i}", event_id=f"c{k}-{i}")) for i in range(20))
        r = client.post("/v1/events", content=body, headers=h)
        assert r.status_code == 202, r.text
        return list(r.json()["seqs"])

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(post, range(12)))
    for seqs in results:
        assert seqs == list(range(seqs[0], seqs[0] + 20))
    assert len({s for seqs in results for s in seqs}) == 240


def test_every_error_has_one_shape_and_401_says_bearer(
    client: LogClient, tokens: dict[str, str]
) -> None:
    """401, 403, 404, 405 and a bad query parameter (FastAPI's own validation) all
    answer {"error": ..., "field": ...}; a 401 carries WWW-Authenticate: Bearer."""
    unauth = client.get("/v1/events")
    assert unauth.status_code == 401
    assert unauth.headers["www-authenticate"].startswith("Bearer")
    answers = [
        unauth,
        client.get("/v1/events", headers=auth(tokens, "writer")),
        client.get("/no/such/route"),
        client.delete("/health"),
        client.get("/v1/events?after=minus-one", headers=auth(tokens, "reader")),
    ]
    assert [a.status_code for a in answers] == [401, 403, 404, 405, 422]
    for answer in answers:
        body = answer.json()
        assert set(body) == {"error", "field"} and isinstance(body["error"], str), body
    assert answers[-1].json()["field"] == "query.after"


def test_the_api_documentation_works_offline(client: LogClient) -> None:
    """/docs uses only assets the service itself serves (packaged Swagger UI), never a
    CDN: a trading network has no internet."""
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    urls += re.findall(r"url: '([^']+)'", page.text)
    assert urls and all(u.startswith("/") for u in urls), urls
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert "cdn" not in page.text.lower()


def test_metrics_show_file_sizes_build_and_process(client: LogClient) -> None:
    """/metrics has the real on-disk size of the active file and of the sealed segments
    (after a rotation too), riskaudit_build_info with the running version, and the
    standard process_* series."""
    import riskaudit
    from riskaudit.format import list_segments

    log: AuditLog = client.log

    def sizes() -> dict[str, float]:
        text = client.get("/metrics").text
        found = re.findall(r'^audit_log_file_bytes\{file="(\w+)"\} (\S+)$', text, re.M)
        return {k: float(v) for k, v in found}

    log.flush()
    before = sizes()
    assert before == {"active": log.path.stat().st_size, "segments": 0.0}
    log.rotate()
    deadline = time.monotonic() + 10
    while log.counters.rotations == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    log.flush()
    after = sizes()
    segments = list_segments(log.path)
    assert segments, "the rotation sealed nothing"
    assert after["segments"] == sum(s.path.stat().st_size for s in segments) > 0
    assert after["active"] == log.path.stat().st_size

    text = client.get("/metrics").text
    assert f'riskaudit_build_info{{version="{riskaudit.__version__}"}} 1.0' in text
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total"):
        assert re.search(rf"^{name} \d", text, re.M), name


def nested(depth: int) -> dict[str, object]:
    """A JSON object ``depth`` levels deep: valid JSON, deeper than a record can hold."""
    value: dict[str, object] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def test_too_deep_data_is_a_422_and_a_batch_holding_it_writes_nothing(
    client: LogClient, tokens: dict[str, str]
) -> None:
    """`data` nested 300 levels deep is valid JSON a record cannot encode: one event gets
    422 naming `data`; an NDJSON batch [good, good, deep] gets 422 naming `[2].data`, and
    neither the good events nor the deep one are written (all or nothing)."""
    headers = {**auth(tokens, "writer")}
    deep = alert()
    deep["data"] = nested(300)
    before = event_count(client)
    one = client.post(
        "/v1/events",
        content=json.dumps(deep).encode(),
        headers={**headers, "content-type": "application/json"},
    )
    assert one.status_code == 422, one.text
    assert one.json()["field"] == "data" and "nested 300 levels" in one.json()["error"]
    batch = b"\n".join(json.dumps(e).encode() for e in (alert("a"), alert("b"), deep))
    r = client.post(
        "/v1/events", content=batch, headers={**headers, "content-type": "application/x-ndjson"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "[2].data"
    assert event_count(client) == before
    # Just under the limit is written: the check refuses only what cannot be encoded.
    ok = alert("fits")
    ok["data"] = nested(200)
    fits = client.post(
        "/v1/events",
        content=json.dumps(ok).encode(),
        headers={**headers, "content-type": "application/json"},
    )
    assert fits.status_code == 202, fits.text
    assert event_count(client) == before + 1


def test_nesting_a_record_could_only_hold_in_part_is_refused_whole(
    client: LogClient, tokens: dict[str, str]
) -> None:
    """Nesting orjson parses (1,000 deep) is a 422, not a 500 from a recursion limit; and
    a kill-switch reset 240 deep — which the event record holds but the approval request
    quoting it would not — is refused with the rest of its batch, nothing written."""
    h = {**auth(tokens, "writer"), "content-type": "application/json"}
    before = event_count(client)
    deep_text = '{"k":' * 999 + '{"leaf":1}' + "}" * 999  # the stdlib cannot dump it
    very = json.dumps({**alert(), "metadata": "HERE"}).replace('"HERE"', deep_text)
    r = client.post("/v1/events", content=very.encode(), headers=h)
    assert r.status_code == 422 and r.json()["field"] == "metadata", r.text
    reset = {
        "event_type": "KILL_SWITCH",
        "priority": "CRITICAL",
        "data": {"action": "reset", "scope": "desk", "why": nested(240)},
        "metadata": {"actor": "alice"},
    }
    batch = json.dumps(alert("a")).encode() + b"\n" + json.dumps(reset).encode()
    r2 = client.post(
        "/v1/events", content=batch, headers={**h, "content-type": "application/x-ndjson"}
    )
    assert r2.status_code == 422 and r2.json()["field"] == "[1].data", r2.text
    assert event_count(client) == before
    assert not [x for x in records(client.log.path) if x.get("kind") == "approval_request"]


def test_a_405_allows_every_method_the_path_serves(client: LogClient) -> None:
    """OPTIONS or DELETE on /v1/events answers 405 listing both GET and POST (two routes
    share the path), in the one error shape; /health lists GET alone."""
    for method in ("options", "delete"):
        r = getattr(client, method)("/v1/events")
        assert r.status_code == 405
        assert r.headers["allow"] == "GET, POST", r.headers
        assert set(r.json()) == {"error", "field"}
    assert client.delete("/health").headers["allow"] == "GET"


def test_integral_float_timestamp_is_the_integer_the_schema_allows(
    client: LogClient, tokens: dict[str, str]
) -> None:
    """`timestamp_ns: 481.0` is an integer to JSON Schema: accepted and written as 481.
    A fraction, or a float beyond 2**53 (digits already lost), is a 422 naming the field."""
    headers = {**auth(tokens, "writer"), "content-type": "application/json"}
    good = client.post(
        "/v1/events",
        content=b'{"event_type":"ALERT","source":"ui","data":{"message":"m"},"timestamp_ns":481.0}',
        headers=headers,
    )
    assert good.status_code == 202, good.text
    client.log.flush()
    written = [r for r in records(client.log.path) if r.get("seq") == good.json()["seqs"][0]]
    assert written[0]["timestamp_ns"] == 481 and isinstance(written[0]["timestamp_ns"], int)
    for bad in (b"481.5", b"1.7e18", b"-1.0"):
        r = client.post(
            "/v1/events",
            content=b'{"event_type":"ALERT","source":"ui",'
            b'"data":{"message":"m"},"timestamp_ns":' + bad + b"}",
            headers=headers,
        )
        assert r.status_code == 422 and r.json()["field"] == "timestamp_ns", (bad, r.text)


def test_a_bad_time_in_the_query_names_its_parameter(
    client: LogClient, tokens: dict[str, str]
) -> None:
    """`until=1/0` is a 422 in the one error shape, naming `query.until` (and `since` its own)."""
    for name in ("since", "until"):
        r = client.get(f"/v1/events?{name}=1/0", headers=auth(tokens, "reader"))
        assert r.status_code == 422
        assert r.json() == {"error": r.json()["error"], "field": f"query.{name}"}


def test_an_integer_beyond_64_bits_is_a_422_not_a_rounded_float(
    client: LogClient, tokens: dict[str, str]
) -> None:
    """`2**64` in `data` is refused with 422 naming the path, in one event and in an NDJSON
    batch (nothing written); 2**64-1 and -2**63 are written exactly; a float stays a float."""
    writer = auth(tokens, "writer")
    before = event_count(client)
    body = b'{"event_type":"ALERT","source":"ui","data":{"message":"m","n":{"v":%d}}}'
    one = client.post(
        "/v1/events", content=body % 2**64, headers={**writer, "content-type": "application/json"}
    )
    assert one.status_code == 422, one.text
    assert one.json()["field"] == "data.n.v" and "64 bits" in one.json()["error"]
    batch = b"\n".join([body % 1, body % -(2**63 + 1)])
    r = client.post(
        "/v1/events", content=batch, headers={**writer, "content-type": "application/x-ndjson"}
    )
    assert r.status_code == 422 and r.json()["field"] == "[1].data.n.v", r.text
    assert event_count(client) == before
    for value in (b"18446744073709551615", b"-9223372036854775808", b"1.5e18"):
        ok = client.post(
            "/v1/events",
            content=body.replace(b"%d", value),
            headers={**writer, "content-type": "application/json"},
        )
        assert ok.status_code == 202, (value, ok.text)
    client.log.flush()
    tail = [r["data"]["n"]["v"] for r in records(client.log.path) if r.get("source") == "ui"]
    assert tail[-3:] == [2**64 - 1, -(2**63), 1.5e18] and isinstance(tail[-1], float)


def query_schema(client: TestClient, name: str) -> dict[str, object]:
    """The OpenAPI schema of one GET /v1/events query parameter."""
    params = client.get("/openapi.json").json()["paths"]["/v1/events"]["get"]["parameters"]
    schema: dict[str, object] = next(p["schema"] for p in params if p["name"] == name)
    return schema


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("2026-11-26", True),
        ("2026-11-26T09:30:00Z", True),
        ("2024-02-29T23:59:59.123456789Z", True),
        ("2026-11-26t09:30:00Z", False),
        ("2026-11-26T09:30:60Z", False),
        (" 2026-11-26", False),
        ("2026-11-26T09:30:00.Z", False),
        ("2026-11-26T09:30:00.1234567891Z", False),
        ("2026-02-29", False),
        ("", False),
    ],
)
def test_since_and_until_take_exactly_their_declared_pattern(
    client: LogClient, tokens: dict[str, str], text: str, ok: bool
) -> None:
    """`since`/`until` are 200 exactly when the schema's pattern matches, else 422 naming them."""
    for name in ("since", "until"):
        r = client.get("/v1/events", params={name: text}, headers=auth(tokens, "reader"))
        assert r.status_code == (200 if ok else 422), (name, text, r.text)
        if not ok:
            assert r.json()["field"] == f"query.{name}", r.text
        pattern = str(query_schema(client, name)["pattern"])
        assert (re.fullmatch(pattern, text) is not None) is ok


def test_an_unknown_type_or_priority_name_in_the_query_is_a_422(
    client: LogClient, tokens: dict[str, str]
) -> None:
    """`type` and `priority` take only the names their schema lists; `source` takes any text."""
    reader = auth(tokens, "reader")
    for name, value in (("type", ["ALERT", "false"]), ("priority", "0"), ("priority", "high")):
        r = client.get("/v1/events", params={name: value}, headers=reader)
        assert r.status_code == 422 and r.json()["field"].startswith(f"query.{name}"), r.text
    good = {"type": ["ALERT", "HEARTBEAT"], "priority": "HIGH", "source": "false"}
    assert client.get("/v1/events", params=good, headers=reader).status_code == 200
    for name, enum in (("type", EventType), ("priority", EventPriority)):
        declared = query_schema(client, name)["anyOf"][0]["items"]["enum"]  # type: ignore[index]
        assert declared == [member.name for member in enum]


@pytest.mark.parametrize(
    "field", ["priority", "source", "data", "metadata", "event_id", "timestamp_ns"]
)
def test_null_for_an_optional_body_field_is_a_422_naming_it(
    client: LogClient, tokens: dict[str, str], field: str
) -> None:
    """`"timestamp_ns": null` (any optional field null) is refused, not read as "not given"."""
    before = event_count(client)
    r = client.post(
        "/v1/events",
        content=orjson.dumps({**alert(), field: None}),
        headers={**auth(tokens, "writer"), "content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert event_count(client) == before


def test_a_whole_number_beyond_64_bits_is_a_422_however_written(
    client: LogClient, tokens: dict[str, str]
) -> None:
    """`1e20` in `data` is the integer 10**20 to JSON and the schema: a 422 naming its path."""
    headers = {**auth(tokens, "writer"), "content-type": "application/json"}
    before = event_count(client)
    for value in (b"1e20", b"-1e19", b"1.7976931348623157e308"):
        r = client.post(
            "/v1/events",
            content=b'{"event_type":"ALERT","data":{"message":"m","n":[%s]}}' % value,
            headers=headers,
        )
        assert r.status_code == 422 and r.json()["field"] == "data.n[0]", (value, r.text)
    assert event_count(client) == before
    schema = client.get("/openapi.json").json()
    value_schema = schema["components"]["schemas"]["JsonValue"]
    assert {"type": "integer", "minimum": -(2**63), "maximum": 2**64 - 1} in value_schema["anyOf"]


def test_the_ndjson_body_is_declared_as_the_array_of_events_it_is(client: LogClient) -> None:
    """The NDJSON body's schema is an array of the JSON body's event schema, not any string."""
    content = client.get("/openapi.json").json()["paths"]["/v1/events"]["post"]["requestBody"]
    ndjson = content["content"]["application/x-ndjson"]["schema"]
    assert ndjson["type"] == "array" and ndjson["minItems"] == 1
    assert ndjson["items"] == content["content"]["application/json"]["schema"]
