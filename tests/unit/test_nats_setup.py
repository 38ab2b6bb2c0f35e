"""`nats init`'s stream set-up against a JetStream that drops requests (no cluster):
a request a leaderless cluster never answers is asked again, then given up clearly."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError

from riskaudit.replication import StreamState, bucket_name, ensure_stream
from riskaudit.settings import ReplicationSettings


class DroppingJetStream:
    """Streams in memory; the first ``drop`` requests get no answer at all, as a
    cluster electing its metadata leader does."""

    def __init__(self, drop: int) -> None:
        self.drop = drop
        self.streams: dict[str, StreamConfig] = {}
        self.requests = 0

    async def _maybe_drop(self) -> None:
        self.requests += 1
        if self.drop > 0:
            self.drop -= 1
            await asyncio.sleep(3600)

    async def stream_info(self, name: str) -> Any:
        await self._maybe_drop()
        if name not in self.streams:
            raise NotFoundError(code=404, err_code=10059, description="stream not found")
        return SimpleNamespace(config=self.streams[name])

    async def add_stream(self, config: StreamConfig) -> Any:
        await self._maybe_drop()
        assert config.name is not None
        self.streams.setdefault(config.name, config)
        return SimpleNamespace(config=config)

    async def key_value(self, bucket: str) -> Any:
        await self._maybe_drop()
        if f"KV_{bucket}" not in self.streams:
            raise BucketNotFoundError
        return SimpleNamespace(bucket=bucket)

    async def create_key_value(self, config: KeyValueConfig) -> Any:
        await self._maybe_drop()
        self.streams[f"KV_{config.bucket}"] = StreamConfig(
            name=f"KV_{config.bucket}",
            storage=config.storage or StorageType.FILE,
            num_replicas=config.replicas,
            allow_direct=config.direct,
        )
        return SimpleNamespace(bucket=config.bucket)


SETTINGS = ReplicationSettings(stream="DROPPED", subject_prefix="dropped")


def test_a_dropped_request_is_asked_again_and_the_stream_counts_as_created() -> None:
    """The first answer never comes; the next attempt finds or creates everything, and
    the stream this call created is reported as created."""
    js = DroppingJetStream(drop=1)
    state = asyncio.run(ensure_stream(js, SETTINGS, attempt=0.2, deadline=5))
    assert state == (StreamState.CREATED, [])
    assert set(js.streams) == {"DROPPED", f"KV_{bucket_name(SETTINGS)}"}


def test_a_cluster_that_never_answers_is_given_up_with_a_clear_error() -> None:
    """No answer at all: TimeoutError (an OSError, which the CLI prints and exits 1 on)
    naming what to look at, once another attempt would pass the deadline."""
    js = DroppingJetStream(drop=1_000)
    with pytest.raises(TimeoutError, match="metadata leader") as caught:
        asyncio.run(ensure_stream(js, SETTINGS, attempt=0.2, deadline=1.0))
    assert isinstance(caught.value, OSError)
    assert js.requests == 2  # at 0 s and 0.7 s; a third would end at 1.6 s
