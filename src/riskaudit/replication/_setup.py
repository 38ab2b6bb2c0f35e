"""``riskaudit nats init``: the JetStream stream the forwarders publish to.

What riskaudit asks of it, and why: file storage (memory does not survive a restart),
three replicas (one node may die), ``max_age`` at least the retention minimum (the
central copy is evidence too), deny delete and deny purge (nobody trims evidence through
the API), and a duplicate window longer than the forwarder's retry horizon (a re-sent
chunk is dropped by the server). An existing stream that is weaker is refused unless
the caller says so.

NATS durability caveat: by default nats-server fsyncs its stream files only every two
minutes, so an acknowledged write can be lost if the machines lose power together (an
independent analysis showed it). Replicas on separate failure domains cover a single
machine; for power loss set ``sync_interval: always`` (nats-server 2.10 and later; the
2.9 series rejects it) — docs/operations.md.
"""

from __future__ import annotations

from typing import Any

from riskaudit.storage._settings import ReplicationSettings


def wanted_config(settings: ReplicationSettings) -> Any:
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig  # noqa: PLC0415

    return StreamConfig(
        name=settings.stream,
        description="riskaudit: audit records and checkpoints, one subject per stream",
        subjects=[f"{settings.subject_prefix}.>"],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.NEW,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        max_age=settings.max_age,
        duplicate_window=settings.duplicate_window,
        deny_delete=True,
        deny_purge=True,
    )


def weaknesses(config: Any, settings: ReplicationSettings) -> list[str]:
    """Why an existing stream is weaker than riskaudit needs (empty if it is not)."""
    from nats.js.api import StorageType  # noqa: PLC0415

    out = []
    if config.storage != StorageType.FILE:
        out.append(f"storage is {config.storage}, not file")
    if (config.num_replicas or 1) < settings.replicas:
        out.append(f"{config.num_replicas} replicas, fewer than {settings.replicas}")
    if config.max_age and config.max_age < settings.max_age:
        out.append(
            f"max_age {config.max_age / 86400:g} days, under the retention minimum "
            f"{settings.max_age / 86400:g} days"
        )
    if not config.deny_delete:
        out.append("messages can be deleted (deny_delete is off)")
    if not config.deny_purge:
        out.append("the stream can be purged (deny_purge is off)")
    if (config.duplicate_window or 0) < settings.duplicate_window:
        out.append(
            f"duplicate window {config.duplicate_window or 0:g}s, shorter than "
            f"{settings.duplicate_window:g}s"
        )
    wanted = f"{settings.subject_prefix}.>"
    if wanted not in (config.subjects or []):
        out.append(f"subjects {config.subjects} do not include {wanted}")
    return out


async def ensure_stream(
    js: Any, settings: ReplicationSettings, *, allow_weaker: bool = False
) -> tuple[str, list[str]]:
    """Create the stream, or check the existing one: ("created" | "ok" | "weaker",
    reasons). Raises ValueError for a weaker stream unless ``allow_weaker``."""
    from nats.js.errors import NotFoundError  # noqa: PLC0415

    try:
        info = await js.stream_info(settings.stream)
    except NotFoundError:
        await js.add_stream(wanted_config(settings))
        return "created", []
    problems = weaknesses(info.config, settings)
    if problems and not allow_weaker:
        raise ValueError(
            f"stream {settings.stream} is weaker than riskaudit needs: " + "; ".join(problems)
        )
    return ("weaker" if problems else "ok"), problems
