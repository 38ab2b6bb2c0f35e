"""Who did what over HTTP: the recorded principal, re-used event ids, actor bindings,
four-eyes approvals, tokens revoked or expired while serving, holds and tokens as
chained records."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request
from typer.testing import CliRunner

from riskaudit import AuditConfig, AuditLog, verify_paths
from riskaudit.archive import add_hold, remove_hold
from riskaudit.cli import app
from riskaudit.errors import AuditConfigError
from riskaudit.events import EventType, RiskEvent
from riskaudit.format import holds_path
from riskaudit.integrity import Selection, export
from riskaudit.ops import Principal, Service, TokenStore, create_app, create_token
from riskaudit.ops._auth import parse_tokens
from tests.helpers import records, synced_clock

NDJSON = {"content-type": "application/x-ndjson"}
runner = CliRunner()


class Clock:
    """Nanoseconds that a test moves by hand (the token store's expiry seam)."""

    def __init__(self) -> None:
        self.now = time.time_ns()

    def __call__(self) -> int:
        return self.now


class Api:
    """A served log with tokens: writers bound to alice and bob, a reader, an admin."""

    def __init__(self, root: Path, **settings: Any) -> None:
        self.root = root
        self.tokens_file = root / "tokens"
        self.secret: dict[str, str] = {}
        lines = []
        for name, role, actors in (
            ("alice-desk", "writer", ["alice"]),
            ("bob-risk", "writer", ["bob"]),
            ("carol-any", "writer", []),
            ("risk-desk", "writer", ["dan", "erin"]),
            ("auditor", "reader", []),
        ):
            self.secret[name], line = create_token(name, role, actors=actors)
            lines.append(line)
        self.secret["short"], line = create_token("short", "writer", expires_in="1h")
        lines.append(line)
        self.tokens_file.write_text("\n".join(lines) + "\n")
        self.config = AuditConfig(
            log_path=root / "logs" / "log.jsonl", tokens_file=self.tokens_file, **settings
        )
        self.log = AuditLog(self.config, clock=synced_clock)
        self.clock = Clock()
        self.store = TokenStore.load(self.tokens_file, clock=self.clock)
        self.service = Service(self.log, self.config, tokens=self.store, owns_log=True)

    def headers(self, name: str, **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.secret[name]}", **extra}

    def records(self) -> list[dict[str, Any]]:
        self.log.flush()
        return records(self.log.path)

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("kind") == kind]

    def events(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if "kind" not in r]


@pytest.fixture
def api(tmp_path: Path) -> Api:
    return Api(tmp_path)


@pytest.fixture
def client(api: Api) -> Iterator[TestClient]:
    with TestClient(create_app(api.service)) as c:
        yield c


def alert(event_id: str, message: str = "hi") -> dict[str, Any]:
    return {
        "event_type": "ALERT",
        "priority": "HIGH",
        "source": "desk",
        "data": {"message": message},
        "event_id": event_id,
    }


def limit_change(event_id: str, old: int, new: int, actor: str) -> dict[str, Any]:
    return {
        "event_type": "CONFIG_UPDATE",
        "priority": "HIGH",
        "source": "risk-ui",
        "data": {"limit": "max_position", "old": old, "new": new},
        "metadata": {"actor": actor},
        "event_id": event_id,
    }


def wait_for(condition: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# -- the recorded principal ------------------------------------------------------------


def test_every_event_records_the_principal_not_the_secret(api: Api, client: TestClient) -> None:
    """An event posted over HTTP carries the token's name, role and fingerprint, the peer
    and the request id the answer names — and never the token itself."""
    r = client.post("/v1/events", json=alert("e-1"), headers=api.headers("carol-any"))
    assert r.status_code == 202, r.text
    (event,) = api.events()
    p = event["principal"]
    assert p["name"] == "carol-any" and p["role"] == "writer"
    assert p["request_id"] == r.headers["x-request-id"]
    assert p["peer"] == "testclient" and len(p["token"]) == 12
    assert api.secret["carol-any"] not in api.log.path.read_text()
    assert verify_paths([api.log.path]).valid
    read = client.get("/v1/events", headers=api.headers("auditor"))
    (access,) = api.kind("access")
    assert access["principal"]["name"] == "auditor"
    assert access["principal"]["request_id"] == read.headers["x-request-id"]


def test_a_client_cannot_send_its_own_principal(api: Api, client: TestClient) -> None:
    """``principal`` in the body is a 422 naming it; nothing is written."""
    body = {**alert("e-2"), "principal": {"name": "ceo", "role": "admin"}}
    r = client.post("/v1/events", json=body, headers=api.headers("carol-any"))
    assert r.status_code == 422 and r.json()["field"] == "principal"
    assert api.events() == []


def _request(client: tuple[str, int], forwarded: str | None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    scope = {"type": "http", "client": client, "headers": headers, "method": "POST", "path": "/"}
    return Request(scope)


def test_forwarded_for_is_believed_only_from_trusted_proxies(tmp_path: Path) -> None:
    """Behind a trusted proxy the peer is the first untrusted hop of X-Forwarded-For;
    from anyone else the header is ignored."""
    cfg = AuditConfig(log_path=tmp_path / "log.jsonl", trusted_proxies=("10.0.0.0/8", "192.0.2.7"))
    with AuditLog(cfg, clock=synced_clock) as log:
        service = Service(log, cfg)
        who = Principal("w", "writer")
        via_proxy = service.principal(
            who, _request(("10.1.2.3", 4000), "198.51.100.9, 192.0.2.7"), "r1"
        )
        assert via_proxy["peer"] == "198.51.100.9"
        assert via_proxy["via"] == ["10.1.2.3", "192.0.2.7"]
        spoofed = service.principal(who, _request(("203.0.113.5", 4000), "10.9.9.9"), "r2")
        assert spoofed["peer"] == "203.0.113.5" and "via" not in spoofed
    with pytest.raises(AuditConfigError, match="RISK_AUDIT_TRUSTED_PROXIES"):
        AuditConfig(trusted_proxies=("not-an-address",))


# -- re-used event ids -----------------------------------------------------------------


def test_a_retry_is_idempotent_and_a_changed_story_is_a_recorded_conflict(
    api: Api, client: TestClient
) -> None:
    """Same id, same content: the original seq. Same id, other content: 409, a
    ``conflict`` record naming both, and the new content is not written as an event."""
    first = client.post("/v1/events", json=alert("dup", "v1"), headers=api.headers("carol-any"))
    seq = first.json()["seqs"][0]
    again = client.post("/v1/events", json=alert("dup", "v1"), headers=api.headers("carol-any"))
    assert again.status_code == 202 and again.json()["duplicates"] == [
        {"event_id": "dup", "seq": seq}
    ]
    changed = client.post("/v1/events", json=alert("dup", "v2"), headers=api.headers("carol-any"))
    assert changed.status_code == 409, changed.text
    body = changed.json()
    assert body["field"] == "event_id" and body["original_seq"] == seq
    (conflict,) = api.kind("conflict")
    assert conflict["seq"] == body["conflict_seq"] and conflict["original_seq"] == seq
    assert conflict["event"]["data"] == {"message": "v2"}
    assert conflict["principal"]["name"] == "carol-any"
    assert [e["data"]["message"] for e in api.events()] == ["v1"]


def test_a_batch_holding_a_conflict_is_refused_whole(api: Api, client: TestClient) -> None:
    """A batch with a good new event and a changed re-post writes no event at all, and a
    batch naming one id twice with different content is a conflict too."""
    client.post("/v1/events", json=alert("known", "v1"), headers=api.headers("carol-any"))
    body = orjson.dumps(alert("new-1")) + b"\n" + orjson.dumps(alert("known", "v2"))
    r = client.post("/v1/events", content=body, headers=api.headers("carol-any", **NDJSON))
    assert r.status_code == 409 and r.json()["field"] == "[1].event_id"
    inner = orjson.dumps(alert("twin", "a")) + b"\n" + orjson.dumps(alert("twin", "b"))
    r2 = client.post("/v1/events", content=inner, headers=api.headers("carol-any", **NDJSON))
    assert r2.status_code == 409 and r2.json()["original_seq"] is None
    assert [e["event_id"] for e in api.events()] == ["known"]
    assert len(api.kind("conflict")) == 2


# -- actors bound to tokens and four eyes ----------------------------------------------


def test_a_token_acts_only_as_its_actors(api: Api, client: TestClient) -> None:
    """alice's token naming bob as the actor: 403, recorded as policy_violation with the
    principal, nothing written."""
    r = client.post(
        "/v1/events",
        json=limit_change("c-1", 100, 50, actor="bob"),
        headers=api.headers("alice-desk"),
    )
    assert r.status_code == 403 and r.json()["rule"] == "actor_binding"
    (violation,) = api.kind("policy_violation")
    assert violation["principal"]["name"] == "alice-desk"
    assert api.events() == []
    ok = client.post(
        "/v1/events",
        json=limit_change("c-2", 100, 50, actor="alice"),
        headers=api.headers("alice-desk"),
    )
    assert ok.status_code == 202 and ok.json()["accepted"] == 1  # a decrease needs no approval


def test_a_client_cannot_claim_an_approval(api: Api, client: TestClient) -> None:
    """``metadata.approved_by`` in the body is refused: approvals come through a token."""
    body = limit_change("c-3", 100, 500, actor="alice")
    body["metadata"]["approved_by"] = "bob"
    r = client.post("/v1/events", json=body, headers=api.headers("alice-desk"))
    assert r.status_code == 422 and r.json()["field"] == "metadata.approved_by"
    assert api.events() == []


def test_a_limit_increase_takes_effect_only_when_another_principal_approves(
    api: Api, client: TestClient
) -> None:
    """Four eyes: the increase is an ``approval_request``; the requester cannot approve
    it; bob's token can, and then the event is written approved by bob, naming the
    ``approval`` record, with alice's principal."""
    r = client.post(
        "/v1/events",
        json=limit_change("up-1", 100, 500, actor="alice"),
        headers=api.headers("alice-desk"),
    )
    assert r.status_code == 202 and r.json()["accepted"] == 0, r.text
    (pending,) = r.json()["pending_approval"]
    assert api.events() == []
    listed = client.get("/v1/approvals", headers=api.headers("auditor")).json()["pending"]
    assert [p["event_id"] for p in listed] == ["up-1"]
    self_ok = client.post("/v1/approvals/up-1", headers=api.headers("alice-desk"))
    assert self_ok.status_code == 403 and self_ok.json()["rule"] == "four_eyes"
    as_other = client.post(
        "/v1/approvals/up-1", json={"actor": "alice"}, headers=api.headers("bob-risk")
    )
    assert as_other.status_code == 403 and as_other.json()["rule"] == "actor_binding"
    ok = client.post(
        "/v1/approvals/up-1", json={"comment": "desk is flat"}, headers=api.headers("bob-risk")
    )
    assert ok.status_code == 200, ok.text
    (event,) = api.events()
    assert event["seq"] == ok.json()["seq"]
    assert event["metadata"]["approved_by"] == "bob"
    assert event["metadata"]["approval_seq"] == ok.json()["approval_seq"]
    assert event["principal"]["name"] == "alice-desk"
    (request,) = api.kind("approval_request")
    assert request["seq"] == pending["request_seq"] and request["principal"]["name"] == "alice-desk"
    (approval,) = api.kind("approval")
    assert approval["principal"]["name"] == "bob-risk" and approval["approver"] == "bob"
    assert client.post("/v1/approvals/up-1", headers=api.headers("bob-risk")).status_code == 404
    assert verify_paths([api.log.path]).valid


def test_a_rejected_reset_is_recorded_and_never_written(api: Api, client: TestClient) -> None:
    """A kill-switch reset rejected by another principal: an ``approval`` record with the
    decision, and no KILL_SWITCH event."""
    reset = {
        "event_type": "KILL_SWITCH",
        "priority": "CRITICAL",
        "data": {"action": "reset", "scope": "desk-1"},
        "metadata": {"actor": "alice"},
        "event_id": "ks-1",
    }
    r = client.post("/v1/events", json=reset, headers=api.headers("alice-desk"))
    assert r.json()["pending_approval"][0]["event_id"] == "ks-1"
    no = client.post(
        "/v1/approvals/ks-1", json={"decision": "reject"}, headers=api.headers("bob-risk")
    )
    assert no.status_code == 200 and no.json()["seq"] is None
    assert api.kind("approval")[0]["decision"] == "reject"
    assert api.events() == []


# -- tokens: revocation, expiry, the file format, the record of changes ----------------


def test_a_revoked_token_is_refused_within_a_second(api: Api, client: TestClient) -> None:
    """Removing a token's line while serving: 401 within a second, and a ``tokens``
    record names the removal (the start-up snapshot lists every token, no secret)."""
    h = api.headers("carol-any")
    assert client.post("/v1/events", json=alert("t-1"), headers=h).status_code == 202
    lines = api.tokens_file.read_text().splitlines()
    api.tokens_file.write_text("\n".join(x for x in lines if not x.startswith("carol-any")) + "\n")
    started = time.monotonic()
    wait_for(lambda: client.post("/v1/events", json=alert("t-2"), headers=h).status_code == 401)
    assert time.monotonic() - started < 1.0
    snapshot, change = api.kind("tokens")
    assert snapshot["reason"] == "start" and len(snapshot["tokens"]) == 6
    assert change["removed"] == ["carol-any"] and change["reason"] == "changed"
    assert api.secret["carol-any"] not in api.log.path.read_text()


def test_sighup_reload_and_a_broken_file_closes_the_api(api: Api, client: TestClient) -> None:
    """A requested reload (SIGHUP) re-reads the file even if its stat did not change; a
    file that no longer parses refuses every token rather than keep a revoked one."""
    h = api.headers("carol-any")
    api.tokens_file.write_text("carol-any writer nothex\n")
    api.store.request_reload()
    wait_for(lambda: client.post("/v1/events", json=alert("b-1"), headers=h).status_code == 401)
    assert api.store.error is not None
    assert api.kind("tokens")[-1]["error"]


def test_an_expired_token_is_refused(api: Api, client: TestClient) -> None:
    """A token with ``expires=`` works until then and gets 401 after."""
    h = api.headers("short")
    assert client.post("/v1/events", json=alert("x-1"), headers=h).status_code == 202
    api.clock.now += 2 * 3600 * 10**9
    r = client.post("/v1/events", json=alert("x-2"), headers=h)
    assert r.status_code == 401


def test_tokens_file_lines(tmp_path: Path) -> None:
    """Three-field lines stay valid; options are parsed; a bad option names its line."""
    _t, line = create_token("ops", "admin", expires_in="90d", actors=["b", "a"])
    assert " expires=" in line and line.endswith(" actors=a,b")
    entries = parse_tokens(f"# comment\nold reader {'a' * 64}\n{line}\n", tmp_path / "t")
    by_name = {p.name: p for p in entries.values()}
    assert by_name["old"].actors is None and by_name["old"].expires_ns is None
    assert by_name["ops"].actors == frozenset({"a", "b"})
    assert by_name["ops"].expires_ns is not None
    with pytest.raises(AuditConfigError, match=r"t:1: unknown or repeated option 'colour'"):
        parse_tokens(f"x writer {'b' * 64} colour=red\n", tmp_path / "t")
    with pytest.raises(AuditConfigError, match="expires"):
        parse_tokens(f"x writer {'b' * 64} expires=tomorrow\n", tmp_path / "t")


# -- holds as chained records ----------------------------------------------------------


def test_hold_changes_while_serving_are_chained(api: Api, client: TestClient) -> None:
    """Placing and lifting a legal hold while the service runs gives ``holds`` records
    with the full list after each change."""
    path = holds_path(api.config.log_path)
    add_hold(path, "case-7", "SEC inquiry")
    wait_for(lambda: len(api.kind("holds")) == 2)
    remove_hold(path, "case-7")
    wait_for(lambda: len(api.kind("holds")) == 3)
    start, placed, lifted = api.kind("holds")
    assert start["reason"] == "start" and start["holds"] == []
    assert placed["added"] == ["case-7"] and placed["holds"][0]["reason"] == "SEC inquiry"
    assert lifted["removed"] == ["case-7"] and lifted["holds"] == []


# -- the command line ------------------------------------------------------------------


def test_token_create_list_revoke(tmp_path: Path) -> None:
    """``token create --expires --actors`` prints a line ``token list`` reads back;
    ``token revoke`` removes it (the file keeps its mode); an unknown name exits 1."""
    file = tmp_path / "tokens"
    made = runner.invoke(
        app,
        [
            "token",
            "create",
            "--name",
            "ops",
            "--role",
            "writer",
            "--expires",
            "90d",
            "--actors",
            "alice,bob",
        ],
    )
    assert made.exit_code == 0, made.output
    line = made.output.split("tokens-file line: ", 1)[1].strip()
    file.write_text(f"keep reader {'c' * 64}\n{line}\n")
    file.chmod(0o600)
    listed = runner.invoke(app, ["token", "list", "--file", str(file), "--json"])
    rows = {r["name"]: r for r in orjson.loads(listed.stdout)}
    assert rows["ops"]["actors"] == ["alice", "bob"] and rows["ops"]["expired"] is False
    assert rows["ops"]["expires"].startswith(
        time.strftime("%Y", time.gmtime(time.time() + 90 * 86400))
    )
    gone = runner.invoke(app, ["token", "revoke", "ops", "--file", str(file)])
    assert gone.exit_code == 0, gone.output
    assert file.read_text() == f"keep reader {'c' * 64}\n"
    assert file.stat().st_mode & 0o777 == 0o600
    again = runner.invoke(app, ["token", "revoke", "ops", "--file", str(file)])
    assert again.exit_code == 1 and "no token named 'ops'" in again.output


def test_hold_cli_records_the_change_when_no_service_runs(tmp_path: Path) -> None:
    """``hold add`` with the log free chains a ``holds`` record itself."""
    log_path = tmp_path / "logs" / "log.jsonl"
    AuditLog(AuditConfig(log_path=log_path), clock=synced_clock).close()
    env = {"RISK_AUDIT_LOG_PATH": str(log_path)}
    added = runner.invoke(app, ["hold", "add", "CASE-9", "--reason", "FCA request"], env=env)
    assert added.exit_code == 0 and "recorded as holds seq" in added.output, added.output
    (record,) = [r for r in records(log_path) if r.get("kind") == "holds"]
    assert record["added"] == ["CASE-9"] and record["reason"] == "cli"


# -- beyond the dedupe window: verify and export ---------------------------------------


def test_verify_and_export_name_an_id_reused_for_other_content(tmp_path: Path) -> None:
    """An event id written twice with different content (past the service's window) is
    a warning naming both seqs, while the log stays valid; the same content re-sent
    by another request (another principal) and a rotated copy are not reported."""
    log_path = tmp_path / "logs" / "log.jsonl"
    with AuditLog(AuditConfig(log_path=log_path), clock=synced_clock) as log:
        first = log.append(RiskEvent(EventType.ALERT, data={"message": "a"}, event_id="id-1"))
        ev = RiskEvent(EventType.ALERT, data={"message": "b"}, event_id="id-2", timestamp_ns=7)
        log.append(ev, principal={"name": "w", "request_id": "r1"})
        log.rotate()
        log.append(ev, principal={"name": "w", "request_id": "r2"})
        later = log.append(RiskEvent(EventType.ALERT, data={"message": "A"}, event_id="id-1"))
    report = verify_paths([log_path.parent])
    assert report.valid, report.problem_lines()
    reused = [w for w in report.warnings if "reused" in w]
    assert reused == [
        f"event_id 'id-1' reused with different content: seq {first} and seq {later} "
        "(past the service's dedupe window, or from a library caller)"
    ]
    result = export([str(log_path.parent)], Selection(), tmp_path / "out")
    assert [w for w in result.warnings if "reused" in w] == reused


def test_a_pending_change_cannot_be_swapped_under_its_approver(tmp_path: Path) -> None:
    """Past the dedupe window a pending change's id still refuses other content (409),
    and an approver naming the request it read gets 409 if another is waiting."""
    api = Api(tmp_path, dedupe_window=0.01)
    with TestClient(create_app(api.service)) as client:
        first = client.post(
            "/v1/events",
            json=limit_change("up-9", 100, 500, actor="alice"),
            headers=api.headers("alice-desk"),
        )
        request_seq = first.json()["pending_approval"][0]["request_seq"]
        time.sleep(0.05)
        swapped = client.post(
            "/v1/events",
            json=limit_change("up-9", 100, 5000, actor="alice"),
            headers=api.headers("alice-desk"),
        )
        assert swapped.status_code == 409 and swapped.json()["original_seq"] == request_seq
        wrong = client.post(
            "/v1/approvals/up-9",
            json={"request_seq": request_seq + 100},
            headers=api.headers("bob-risk"),
        )
        assert wrong.status_code == 409 and wrong.json()["field"] == "request_seq"
        wrong_float = client.post(
            "/v1/approvals/up-9",
            json={"request_seq": float(request_seq + 100)},
            headers=api.headers("bob-risk"),
        )
        assert wrong_float.status_code == 409, wrong_float.text  # JSON Schema's integer
        # The request it read, written as 359.0: an integer to JSON Schema, so approved.
        ok = client.post(
            "/v1/approvals/up-9",
            json={"request_seq": float(request_seq)},
            headers=api.headers("bob-risk"),
        )
        assert ok.status_code == 200, ok.text
        (event,) = api.events()
        assert event["data"]["new"] == 500


def test_every_answer_names_its_request(api: Api, client: TestClient) -> None:
    """401s, 413s and reads carry X-Request-ID too; listing the pending approvals is an
    ``access`` record like any read of event content."""
    assert len(client.post("/v1/events", json=alert("n-1")).headers["x-request-id"]) == 32
    big = client.post(
        "/v1/events", content=b"x" * (2 << 20), headers=api.headers("carol-any", **NDJSON)
    )
    assert big.status_code == 413 and big.headers["x-request-id"]
    listed = client.get("/v1/approvals", headers=api.headers("auditor"))
    (access,) = api.kind("access")
    assert access["endpoint"] == "GET /v1/approvals"
    assert access["principal"]["request_id"] == listed.headers["x-request-id"]


def test_four_eyes_over_http_whatever_the_library_policy(tmp_path: Path) -> None:
    """Under RISK_AUDIT_ACTOR_POLICY=warn (the library writes and flags) an increase over
    HTTP still waits for approval; a client's own approval_seq is refused; a token bound
    to several actors must name the one it approves as; one principal's pending
    changes are capped (429)."""
    api = Api(tmp_path, actor_policy="warn")
    api.service.approvals.per_principal = 2
    with TestClient(create_app(api.service)) as client:
        r = client.post(
            "/v1/events",
            json=limit_change("w-1", 1, 2, actor="alice"),
            headers=api.headers("alice-desk"),
        )
        assert r.json()["pending_approval"] and api.events() == []
        claim = limit_change("w-2", 2, 1, actor="alice")
        claim["metadata"]["approval_seq"] = 3
        bad = client.post("/v1/events", json=claim, headers=api.headers("alice-desk"))
        assert bad.status_code == 422 and bad.json()["field"] == "metadata.approval_seq"
        second = limit_change("w-3", 1, 3, actor="alice")
        assert client.post("/v1/events", json=second, headers=api.headers("alice-desk")).json()[
            "pending_approval"
        ]
        third = client.post(
            "/v1/events",
            json=limit_change("w-4", 1, 4, actor="alice"),
            headers=api.headers("alice-desk"),
        )
        assert third.status_code == 429, third.text
        several = client.post("/v1/approvals/w-1", headers=api.headers("risk-desk"))
        assert several.status_code == 422 and several.json()["field"] == "actor"
        ok = client.post(
            "/v1/approvals/w-1", json={"actor": "erin"}, headers=api.headers("risk-desk")
        )
        assert ok.status_code == 200 and api.events()[0]["metadata"]["approved_by"] == "erin"


def test_forwarded_for_from_loopback_is_not_believed_by_the_real_server(api: Api) -> None:
    """Through the real server (uvicorn with riskaudit's settings), a loopback client
    claiming X-Forwarded-For: 6.6.6.6 is recorded as itself: only the trusted proxies of
    the config are believed, not uvicorn's default of 127.0.0.1."""
    import threading

    import httpx
    import uvicorn

    from riskaudit.ops import server_config

    server = uvicorn.Server(
        server_config(create_app(api.service), api.config, host="127.0.0.1", port=0)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/events",
            json=alert("xff-1"),
            headers=api.headers("carol-any", **{"x-forwarded-for": "6.6.6.6"}),
        )
        assert r.status_code == 202, r.text
    finally:
        server.should_exit = True
        thread.join(10)
    (event,) = api.events()
    assert event["principal"]["peer"] == "127.0.0.1" and "via" not in event["principal"]


def test_token_revoke_keeps_the_files_owner_and_mode(tmp_path: Path) -> None:
    """Run as root on a file the service's user owns (0640), ``token revoke`` leaves it
    owned by that user with that mode, so the service can still read it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to own a file as another user")
    file = tmp_path / "tokens"
    file.write_text(f"a writer {'a' * 64}\nb reader {'b' * 64}\n")
    os.chown(file, 65534, 65534)
    file.chmod(0o640)
    assert runner.invoke(app, ["token", "revoke", "a", "--file", str(file)]).exit_code == 0
    st = file.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o640)
    assert file.read_text() == f"b reader {'b' * 64}\n"


def test_quotes_of_an_event_are_redacted_like_its_record(tmp_path: Path) -> None:
    """A redacted field stays redacted where a control record quotes the event (a
    conflict, an approval request) and in the approvals listing."""
    key = tmp_path / "hmac.key"
    key.write_bytes(b"k" * 32)
    api = Api(tmp_path, redact_fields=("data.secret",), hmac_key_file=key)
    with TestClient(create_app(api.service)) as client:
        client.post("/v1/events", json=alert("r-1"), headers=api.headers("carol-any"))
        changed = {**alert("r-1"), "data": {"message": "x", "secret": "hunter2"}}
        assert (
            client.post("/v1/events", json=changed, headers=api.headers("carol-any")).status_code
            == 409
        )
        up = limit_change("r-2", 1, 2, actor="alice")
        up["data"]["secret"] = "hunter2"
        client.post("/v1/events", json=up, headers=api.headers("alice-desk"))
        listing = client.get("/v1/approvals", headers=api.headers("auditor")).text
    assert "hunter2" not in api.log.path.read_text() and "hunter2" not in listing
    assert api.kind("conflict")[0]["event"]["data"]["secret"].startswith("hmac-sha256:")
