"""``riskaudit nats init``: the JetStream stream the forwarders publish to.

What riskaudit asks of it, and why: file storage (memory does not survive a restart),
three replicas (one node may die), ``max_age`` at least the retention minimum (the
central copy is evidence too: ``RISK_AUDIT_NATS_MAX_AGE`` unset follows the longest of
``RISK_AUDIT_RETENTION_MIN`` and ``_MIN_BY_TYPE``, set shorter it is refused), deny
delete and deny purge (nobody trims evidence through the API), and a duplicate window
longer than the forwarder's retry horizon (:data:`RETRY_HORIZON`: a re-sent chunk is
dropped by the server). An existing stream that is weaker is refused unless the caller
says so.

NATS durability: by default nats-server fsyncs its stream files only every two minutes,
so an acknowledged write can be lost if the machines lose power together (an independent
analysis showed it). Replicas on separate failure domains cover a single machine; for
power loss the servers need ``sync_interval: always`` (nats-server 2.10 and later; the
project tests on 2.15), as deploy/nats/nats-server.conf has. The stream API cannot tell,
so :func:`check_sync_always` asks a server's monitoring endpoint
(``RISK_AUDIT_NATS_MONITOR_URL``) — docs/operations.md.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

from riskaudit.errors import AuditConfigError
from riskaudit.replication._board import KvBoard
from riskaudit.replication._forward import ACK_TIMEOUT, RETRY_MAX
from riskaudit.settings import DAY, ReplicationSettings, RetentionPolicy

#: The forwarder's retry horizon: the longest a chunk's next attempt can follow the
#: previous one while the cluster answers (an acknowledgement awaited in vain, then the
#: capped backoff). A chunk the server stored but whose acknowledgement was lost comes
#: back within it, so a duplicate window at least this long lets the server drop it
#: (``Nats-Msg-Id``). Re-sends after longer (an outage, a forwarder restarted later) may
#: be stored twice; the collector drops those by ``seq``. The default window, 10
#: minutes, also covers short outages and restarts.
RETRY_HORIZON = ACK_TIMEOUT + RETRY_MAX


logger = logging.getLogger("riskaudit.nats")

#: A JetStream management request that reaches the cluster while it has no metadata
#: leader (an election after a node's loss, or just after start) gets no answer at all:
#: measured on the 3-node test cluster, a stream created right after the leader was
#: killed waited out its whole timeout while the election took ~3 s. ``ensure_stream``
#: therefore gives each attempt :data:`SETUP_ATTEMPT` seconds and starts again (every
#: step is idempotent) until :data:`SETUP_DEADLINE`.
SETUP_ATTEMPT = 10.0
SETUP_DEADLINE = 60.0

#: What to add to the server's configuration when it does not sync every write.
SYNC_ALWAYS_FIX = "add `sync_interval: always` inside `jetstream { }` on every NATS server"


def check_sync_always(monitor_url: str | None, timeout: float = 5.0) -> tuple[bool | None, str]:
    """Every server named in ``monitor_url`` (comma-separated) fsyncs every write: True
    when all say so, False when one does not, None when one could not be asked (and
    none said no). The lines say each server's answer."""
    urls = [u.strip() for u in (monitor_url or "").split(",") if u.strip()]
    if len(urls) <= 1:
        return _check_one(urls[0] if urls else None, timeout)
    answers = [_check_one(u, timeout) for u in urls]
    verdicts = [ok for ok, _text in answers]
    verdict: bool | None = False if False in verdicts else None if None in verdicts else True
    return verdict, "; ".join(text for _ok, text in answers)


def _check_one(monitor_url: str | None, timeout: float) -> tuple[bool | None, str]:
    """Whether the NATS server at ``monitor_url`` (its monitoring endpoint, e.g.
    ``http://127.0.0.1:8222``) fsyncs every write: ``jetstream.config.sync_always`` in
    its ``/varz``. (True, what it saw), (False, why not) when the server answers without
    it, (None, "could not check: ...") when the URL is unset or the server does not
    answer with /varz JSON. One server speaks for itself only: the setting lists every
    node."""
    cannot = "could not check that NATS fsyncs every write (sync_interval: always)"
    if not monitor_url:
        return None, (
            f"{cannot}: RISK_AUDIT_NATS_MONITOR_URL is not set; set it to a NATS server's "
            "monitoring endpoint (its `http` port, e.g. http://127.0.0.1:8222) to check"
        )
    url = monitor_url.rstrip("/") + "/varz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (operator's URL)
            varz = json.loads(resp.read(4 << 20))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"{cannot}: {url} (RISK_AUDIT_NATS_MONITOR_URL): {reason}"
    if not isinstance(varz, dict):
        return None, f"{cannot}: {url} did not answer with a JSON object"
    name = varz.get("server_name") or varz.get("server_id") or monitor_url
    version = varz.get("version", "?")
    js = varz.get("jetstream")
    config = js.get("config") if isinstance(js, dict) else None
    if not isinstance(config, dict):
        return False, f"NATS server {name} ({version}) at {monitor_url} has JetStream disabled"
    if config.get("sync_always") is True:
        return True, (
            f"NATS server {name} ({version}) at {monitor_url} fsyncs every write "
            "(sync_interval: always)"
        )
    interval = config.get("sync_interval")
    every = f"every {interval / 1e9:g}s" if isinstance(interval, int | float) else "periodically"
    return False, (
        f"NATS server {name} ({version}) at {monitor_url} does not fsync every write: "
        f"/varz shows no jetstream.config.sync_always, so it syncs stream files only "
        f"{every} and an acknowledged write can be lost when the machines lose power"
    )


def wanted_limits(
    settings: ReplicationSettings, retention: RetentionPolicy | None = None
) -> tuple[float, float]:
    """The stream's ``(max_age, duplicate_window)``, in seconds; AuditConfigError naming
    the setting if either would be unsafe. ``retention`` defaults to the default policy
    (a 5-year minimum)."""
    max_age = settings.stream_max_age(retention or RetentionPolicy())
    if settings.duplicate_window < RETRY_HORIZON:
        raise AuditConfigError(
            "RISK_AUDIT_NATS_DUPLICATE_WINDOW",
            f"{settings.duplicate_window:g}s is shorter than the forwarder's retry horizon "
            f"{RETRY_HORIZON:g}s (a {ACK_TIMEOUT:g}s acknowledgement timeout, then up to "
            f"{RETRY_MAX:g}s backoff): a chunk re-sent after a lost acknowledgement would "
            "be stored twice",
        )
    return max_age, settings.duplicate_window


def wanted_config(settings: ReplicationSettings, retention: RetentionPolicy | None = None) -> Any:
    from nats.js.api import DiscardPolicy, StorageType, StreamConfig  # noqa: PLC0415
    from nats.js.api import RetentionPolicy as Kept  # noqa: PLC0415

    max_age, duplicate_window = wanted_limits(settings, retention)
    return StreamConfig(
        name=settings.stream,
        description="riskaudit: audit records and checkpoints, one subject per stream",
        subjects=[f"{settings.subject_prefix}.>"],
        retention=Kept.LIMITS,
        discard=DiscardPolicy.NEW,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        max_age=max_age,
        duplicate_window=duplicate_window,
        deny_delete=True,
        deny_purge=True,
    )


def weaknesses(
    config: Any, settings: ReplicationSettings, retention: RetentionPolicy | None = None
) -> list[str]:
    """Why an existing stream is weaker than riskaudit needs (empty if it is not)."""
    from nats.js.api import StorageType  # noqa: PLC0415

    max_age, duplicate_window = wanted_limits(settings, retention)
    out = []
    if config.storage != StorageType.FILE:
        out.append(f"storage is {getattr(config.storage, 'value', config.storage)}, not file")
    if (config.num_replicas or 1) < settings.replicas:
        out.append(f"{config.num_replicas} replicas, fewer than {settings.replicas}")
    have = config.max_age or 0.0  # 0: no limit
    if have and (not max_age or have < max_age):
        minimum = (retention or RetentionPolicy()).longest_minimum
        want = f"shorter than {max_age / DAY:g} days" if max_age else "where no limit is set"
        out.append(
            f"max_age {have / DAY:g} days, {want} (the retention minimum is {minimum / DAY:g} days)"
        )
    if not config.deny_delete:
        out.append("messages can be deleted (deny_delete is off)")
    if not config.deny_purge:
        out.append("the stream can be purged (deny_purge is off)")
    if (config.duplicate_window or 0) < duplicate_window:
        out.append(
            f"duplicate window {config.duplicate_window or 0:g}s, shorter than "
            f"{duplicate_window:g}s"
        )
    wanted = f"{settings.subject_prefix}.>"
    if wanted not in (config.subjects or []):
        out.append(f"subjects {config.subjects} do not include {wanted}")
    return out


class StreamState(enum.StrEnum):
    """What ``ensure_stream`` found: the stream made by this call, an existing one as
    strict as wanted, or an existing weaker one accepted with ``allow_weaker``."""

    CREATED = "created"
    OK = "ok"
    WEAKER = "weaker"


async def ensure_stream(
    js: Any,
    settings: ReplicationSettings,
    *,
    retention: RetentionPolicy | None = None,
    allow_weaker: bool = False,
    attempt: float = SETUP_ATTEMPT,
    deadline: float = SETUP_DEADLINE,
) -> tuple[StreamState, list[str]]:
    """Create the stream, or check the existing one: its ``StreamState`` and the
    reasons it is weaker than wanted. Raises AuditConfigError for unsafe settings
    (before touching the server) and ValueError for a weaker stream unless
    ``allow_weaker``. A cluster that does not answer (electing a leader) is asked again
    until ``deadline``; then TimeoutError."""
    from nats.errors import NoRespondersError  # noqa: PLC0415
    from nats.js.errors import NotFoundError, ServiceUnavailableError  # noqa: PLC0415

    wanted = wanted_config(settings, retention)
    created = False  # by this call, in whichever attempt

    async def once() -> tuple[StreamState, list[str]]:
        nonlocal created
        # The collector's board (watermarks, repair requests) lives beside the stream.
        try:
            info = await js.stream_info(settings.stream)
        except NotFoundError:
            created = True
            await js.add_stream(wanted)
            problems = []
        else:
            problems = weaknesses(info.config, settings, retention)
        await KvBoard.open(js, settings, create=True)
        problems += await KvBoard.weaknesses(js, settings)
        if problems and not allow_weaker:
            raise ValueError(
                f"stream {settings.stream} is weaker than riskaudit needs: " + "; ".join(problems)
            )
        if created:
            return StreamState.CREATED, problems
        return (StreamState.WEAKER if problems else StreamState.OK), problems

    start = time.monotonic()
    while True:
        try:
            return await asyncio.wait_for(once(), attempt)
        except (TimeoutError, NoRespondersError, ServiceUnavailableError) as exc:
            waited = time.monotonic() - start
            if waited + attempt > deadline:  # another attempt would end past the deadline
                raise TimeoutError(
                    f"JetStream did not answer in {waited:.0f}s of asking (is the cluster "
                    "short of nodes, or unable to elect a metadata leader?)"
                ) from exc
            logger.warning("JetStream did not answer (%r); asking again", exc)
            await asyncio.sleep(0.5)
