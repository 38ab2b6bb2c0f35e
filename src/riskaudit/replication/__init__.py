"""Replication through NATS JetStream: forward the local log, collect it centrally.

The local log stays the system of record; replication is asynchronous and verifiable:
the central copy holds the same bytes, so ``riskaudit verify`` checks it with the same
hashes and checkpoints.
"""

from riskaudit.replication._board import (
    Board,
    KvBoard,
    MemoryBoard,
    RepairRequest,
    Watermark,
    bucket_name,
)
from riskaudit.replication._collect import CentralLog, Collector, CollectStats, partition_of
from riskaudit.replication._follow import Chunk, LogFollower
from riskaudit.replication._forward import (
    Cursor,
    Forwarder,
    ForwarderThread,
    ForwardStats,
    connect_jetstream,
    cursor_path,
    jetstream_publisher,
    open_board,
)
from riskaudit.replication._setup import (
    SYNC_ALWAYS_FIX,
    StreamState,
    check_sync_always,
    ensure_stream,
    wanted_config,
    wanted_limits,
    weaknesses,
)

__all__ = [
    "SYNC_ALWAYS_FIX",
    "Board",
    "CentralLog",
    "Chunk",
    "CollectStats",
    "Collector",
    "Cursor",
    "ForwardStats",
    "Forwarder",
    "ForwarderThread",
    "KvBoard",
    "LogFollower",
    "MemoryBoard",
    "RepairRequest",
    "StreamState",
    "Watermark",
    "bucket_name",
    "check_sync_always",
    "connect_jetstream",
    "cursor_path",
    "ensure_stream",
    "jetstream_publisher",
    "open_board",
    "partition_of",
    "wanted_config",
    "wanted_limits",
    "weaknesses",
]
