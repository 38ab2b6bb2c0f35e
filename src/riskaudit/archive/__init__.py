"""The archive: sealed segments and checkpoints copied off the host (to a directory or
S3 with Object Lock), retention of the local hot tier and of the archive, and legal
holds that stop both.

What goes where: ``_backup`` decides what is copied and verifies every copy, ``_targets``
puts objects (a directory, S3), ``_retention`` plans and applies deletion within the
compliance minimums, ``_holds`` keeps the legal holds file. The scheduler that runs
them beside a live log is the service's (:mod:`riskaudit.ops`).
"""

from riskaudit.archive._backup import LOCK_FLOOR, SHIP_EVERY, Backup, BackupReport
from riskaudit.archive._holds import (
    Hold,
    HoldsWatch,
    add_hold,
    holds_record,
    load_holds,
    remove_hold,
)
from riskaudit.archive._retention import (
    Action,
    Decision,
    Tier,
    apply_plan,
    archive_expiry,
    expire_archive,
    plan,
    replicated_through,
)
from riskaudit.archive._state import ArchivedSegment, BackupState, SeenFile, Span
from riskaudit.archive._targets import (
    BackupTarget,
    DirectoryTarget,
    ObjectInfo,
    S3Target,
    make_s3_client,
    open_target,
)

__all__ = [
    "LOCK_FLOOR",
    "SHIP_EVERY",
    "Action",
    "ArchivedSegment",
    "Backup",
    "BackupReport",
    "BackupState",
    "BackupTarget",
    "Decision",
    "DirectoryTarget",
    "Hold",
    "HoldsWatch",
    "ObjectInfo",
    "S3Target",
    "SeenFile",
    "Span",
    "Tier",
    "add_hold",
    "apply_plan",
    "archive_expiry",
    "expire_archive",
    "holds_record",
    "load_holds",
    "make_s3_client",
    "open_target",
    "plan",
    "remove_hold",
    "replicated_through",
]
