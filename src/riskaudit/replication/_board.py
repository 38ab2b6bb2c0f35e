"""What the collector tells the forwarders: how far each stream is fsynced centrally,
and which records it is missing.

"Replicated" must mean what the local log means by "durable": on a disk, synced. A
broker's acknowledgement is not that (JetStream may acknowledge writes it fsyncs later,
and can lose them in a coordinated power cut), so the chain of custody is closed end to
end: the collector, after each fsync of a stream's central copy, publishes that
stream's **watermark** — the highest ``seq`` up to which the central copy is complete
and synced — and the forwarder's notion of "replicated" (its state, its metrics, what
retention may delete locally) follows that watermark, not the broker's ack.

When the collector finds a hole (a message the broker acknowledged and lost, or a gap
an operator's purge left), it posts a **repair request** naming the range; the
forwarder of that stream re-sends it from the host's log, the system of record. Both
live in a JetStream key-value bucket (keys ``<host stream id>.replicated`` and
``<host stream id>.repair``: the stream id of a host's log, not the JetStream stream),
which survives either side's restart; :class:`MemoryBoard` is the
same in memory, for tests and for a collector without NATS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import orjson

from riskaudit.settings import ReplicationSettings


@dataclass(frozen=True, slots=True)
class Watermark:
    """The central copy of a stream is complete and fsynced through ``seq``."""

    seq: int
    hash: str | None  # the hash of record ``seq``: the forwarder checks it is its own
    at: float  # when the collector synced it (Unix seconds)


@dataclass(frozen=True, slots=True)
class RepairRequest:
    """Records ``first``..``last`` never reached the collector: send them again.
    ``number`` grows with each request, so a forwarder serves each once."""

    first: int
    last: int
    number: int
    at: float


class Board(Protocol):
    """Where watermarks and repair requests are kept (NATS key-value, or memory)."""

    async def confirm(self, stream: str, mark: Watermark) -> None: ...

    async def ask(self, stream: str, request: RepairRequest) -> None: ...

    async def read(self, stream: str) -> tuple[Watermark | None, RepairRequest | None]: ...


class MemoryBoard:
    """The board in memory: one process's collector and forwarders, and tests."""

    def __init__(self) -> None:
        self.marks: dict[str, Watermark] = {}
        self.requests: dict[str, RepairRequest] = {}

    async def confirm(self, stream: str, mark: Watermark) -> None:
        self.marks[stream] = mark

    async def ask(self, stream: str, request: RepairRequest) -> None:
        self.requests[stream] = request

    async def read(self, stream: str) -> tuple[Watermark | None, RepairRequest | None]:
        return self.marks.get(stream), self.requests.get(stream)


def bucket_name(settings: ReplicationSettings) -> str:
    """The key-value bucket beside the stream: ``AUDIT`` → ``AUDIT_REPLICATED``."""
    return f"{settings.stream}_REPLICATED"


class KvBoard:
    """The board in a JetStream key-value bucket (file storage, the stream's replicas,
    one value per key kept)."""

    def __init__(self, kv: Any) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: Any, settings: ReplicationSettings, *, create: bool) -> KvBoard:
        """The bucket; ``create`` (``nats init``, the collector) makes it if missing."""
        from nats.js.api import KeyValueConfig, StorageType  # noqa: PLC0415
        from nats.js.errors import BucketNotFoundError  # noqa: PLC0415

        name = bucket_name(settings)
        try:
            return cls(await js.key_value(name))
        except BucketNotFoundError:
            if not create:
                raise
        config = KeyValueConfig(
            bucket=name,
            description="riskaudit: central watermarks and repair requests per host stream",
            history=1,
            replicas=settings.replicas,
            storage=StorageType.FILE,
            direct=False,  # reads through $JS.API.STREAM.MSG.GET: one permission to grant
        )
        return cls(await js.create_key_value(config))

    @staticmethod
    async def weaknesses(js: Any, settings: ReplicationSettings) -> list[str]:
        """Why an existing bucket is weaker than riskaudit needs (empty if it is not):
        a watermark lost with a node would let a host count as replicated what is not,
        and direct reads need a permission the shipped forwarder user does not have."""
        from nats.js.api import StorageType  # noqa: PLC0415

        name = bucket_name(settings)
        config = (await js.stream_info(f"KV_{name}")).config
        out = []
        if config.storage != StorageType.FILE:
            out.append(f"bucket {name}: storage is not file")
        if (config.num_replicas or 1) < settings.replicas:
            out.append(
                f"bucket {name}: {config.num_replicas} replicas, fewer than {settings.replicas}"
            )
        if config.allow_direct:
            out.append(
                f"bucket {name}: direct reads on (the shipped forwarder permissions read "
                "through $JS.API.STREAM.MSG.GET)"
            )
        return out

    async def confirm(self, stream: str, mark: Watermark) -> None:
        await self.kv.put(f"{stream}.replicated", orjson.dumps(asdict(mark)))

    async def ask(self, stream: str, request: RepairRequest) -> None:
        await self.kv.put(f"{stream}.repair", orjson.dumps(asdict(request)))

    async def read(self, stream: str) -> tuple[Watermark | None, RepairRequest | None]:
        mark = await self._get(f"{stream}.replicated")
        want = await self._get(f"{stream}.repair")
        return (
            Watermark(**mark) if mark is not None else None,
            RepairRequest(**want) if want is not None else None,
        )

    async def _get(self, key: str) -> dict[str, Any] | None:
        from nats.js.errors import KeyNotFoundError  # noqa: PLC0415

        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        value: dict[str, Any] = orjson.loads(entry.value)
        return value
