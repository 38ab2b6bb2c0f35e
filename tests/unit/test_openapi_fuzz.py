"""Schemathesis against the in-process ASGI app: no 5xx, responses as the OpenAPI says."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import settings

from riskaudit import AuditConfig, AuditLog, RiskEventBus, verify_paths
from riskaudit.ops import Service, TokenStore, create_app, create_token
from tests.helpers import synced_clock

if TYPE_CHECKING:
    from schemathesis.specs.openapi.schemas import OpenApiCase

pytestmark = pytest.mark.slow

# Every check schemathesis has runs on every response: not_a_server_error, status code,
# content type, headers and response schema conformance, unsupported methods and the 405's
# `Allow` header, and both data checks: schema-valid requests are accepted (ST202) and
# schema-violating ones refused (ST201) — the schema declares exactly what the app takes
# (`since`/`until` by pattern, `type`/`priority` by name, integers within 64 bits).

# Regression: schemathesis found that GET /v1/events?after=2**64 used to kill the writer thread
# (the access record logging the query could not be encoded). Query integers are now bounded
# to seq's 64-bit range (422 above it) and control records are encoded in the caller.
HUGE = 2**64

# The app is built at import time because schema.parametrize() needs the schema at collection
# (schemathesis.pytest.from_fixture fails under pytest 9: it sets request.node._nodeid).
_TMP = Path(tempfile.mkdtemp(prefix="riskaudit-fuzz-"))


def build_app(root: Path) -> tuple[Any, AuditLog, dict[str, str]]:
    """The service with an admin (writer + reader) token; the caller closes the log."""
    token, line = create_token("fuzz-admin", "admin")
    (root / "tokens").write_text(line + "\n")
    cfg = AuditConfig(log_path=root / "logs" / "log.jsonl", tokens_file=root / "tokens")
    log = AuditLog(cfg, clock=synced_clock)
    # owns_log=False: schemathesis ends the ASGI lifespan after every test item and starts it
    # again on the next request, so the lifespan must not close the log.
    service = Service(
        log, cfg, bus=RiskEventBus(log), tokens=TokenStore.load(root / "tokens"), owns_log=False
    )
    return create_app(service), log, {"authorization": f"Bearer {token}"}


APP, LOG, AUTH = build_app(_TMP)


@atexit.register
def _remove_tmp() -> None:
    LOG.close()  # idempotent; the module fixture closes it first unless its tests were deselected
    shutil.rmtree(_TMP, ignore_errors=True)


schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schemathesis.serializer("application/x-ndjson")
def ndjson_serializer(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """The schema's array is the stream: one JSON text a line (schemathesis has no NDJSON
    serializer; it sends what this returns as the body). A value that is not an array,
    which only a negative case draws, goes as one JSON text."""
    items = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(item) for item in items).encode()


@pytest.fixture(scope="module", autouse=True)
def fuzzed_log() -> Iterator[None]:
    """After the fuzzing the writer is alive and the hash chain still verifies."""
    yield
    status = LOG.status()
    LOG.close()
    assert status.writer_alive, status.health
    assert status.records.lost == 0, status.records
    report = verify_paths([LOG.path])
    assert report.valid, report


@schema.parametrize()
@settings(max_examples=30, deadline=None)
def test_api_conforms_and_never_answers_5xx(case: OpenApiCase) -> None:
    """Every operation, fuzzed with an admin token: no 5xx, responses match the schema."""
    case.call_and_validate(headers=AUTH)


def test_huge_query_integer_keeps_the_writer_alive(tmp_path: Path) -> None:
    """The input schemathesis found: a reader's after=2**64 must not stop the audit writer."""
    app, log, auth = build_app(tmp_path)
    try:
        get = schemathesis.openapi.from_asgi("/openapi.json", app)["/v1/events"]["GET"]
        first = get.Case(query={"after": HUGE}).call(headers=auth)
        assert first.status_code in (200, 422), first.text
        deadline = time.monotonic() + 10
        while log.status().writer_alive and log.durable_seq < log.last_seq:
            assert time.monotonic() < deadline, "the access record never became durable"
            time.sleep(0.02)
        later = get.Case(query={"after": 0}).call(headers=auth)
        assert log.status().writer_alive
        assert later.status_code == 200, later.text
    finally:
        log.close()
