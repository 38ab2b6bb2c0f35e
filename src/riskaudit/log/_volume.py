"""Storage checks: is the log somewhere that survives, with room, and writable?

The original deployment guide checked only for tmpfs and ``/tmp``. That misses the most
common loss in containers: no volume mounted at all, so the log lives in the
container's own overlay layer and disappears with it. The checks read facts —
``/proc/self/mountinfo``, ``statvfs``, a real write probe — rather than guessing from
configuration. They run at start and then every minute (the writer thread calls
:func:`check_storage`); ``RISK_AUDIT_REQUIRE_PERSISTENT=1`` makes a volatile location a
refusal to start instead of a warning.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from riskaudit.settings import Watermarks

VOLATILE_FS = frozenset({"tmpfs", "ramfs"})


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of ``/proc/self/mountinfo`` that matters here."""

    mount_point: str
    fstype: str
    source: str
    read_only: bool


class SpaceLevel(StrEnum):
    """Free space against the watermarks (``unknown``: statvfs failed)."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class StorageReport:
    """What the last check found about the log directory."""

    directory: str
    container: str | None
    mount: Mount | None
    volatile_reason: str | None
    free_bytes: int | None
    free_percent: float | None
    total_bytes: int | None
    space: SpaceLevel
    writable: bool
    probe_error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def persistent(self) -> bool:
        return self.volatile_reason is None


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 3 < len(text) and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of ``/proc/self/mountinfo`` (see proc(5)), in file order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 6 or len(fields) < sep + 3:
            continue
        options = fields[5].split(",")
        mounts.append(
            Mount(
                mount_point=_unescape(fields[4]),
                fstype=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
                read_only="ro" in options,
            )
        )
    return mounts


def existing_ancestor(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing parent (what to probe or
    stat for a directory the log will create)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def mount_of(path: Path, mounts: list[Mount]) -> Mount | None:
    """The mount that holds ``path``: the longest mount point that prefixes it (the
    last one listed wins when mounts are stacked on the same point)."""
    target = str(path)
    best: Mount | None = None
    for m in mounts:
        mp = m.mount_point
        inside = target == mp or target.startswith(mp.rstrip("/") + "/") or mp == "/"
        if inside and (best is None or len(mp) >= len(best.mount_point)):
            best = m
    return best


def detect_container(in_kubernetes: bool, root: Path = Path("/")) -> str | None:
    """``kubernetes``, ``docker``, ``podman`` or None, from the usual markers
    (``in_kubernetes``: the config saw ``KUBERNETES_SERVICE_HOST``, which the kubelet
    sets in every pod)."""
    if in_kubernetes:
        return "kubernetes"
    if (root / ".dockerenv").exists():
        return "docker"
    if (root / "run" / ".containerenv").exists():
        return "podman"
    return None


def volatile_reason(directory: Path, mount: Mount | None, container: str | None) -> str | None:
    """Why a log in ``directory`` would not survive a restart, or None."""
    if mount is not None and mount.fstype in VOLATILE_FS:
        return f"a {mount.fstype} file system (memory only)"
    if (
        container is not None
        and mount is not None
        and mount.mount_point == "/"
        and (mount.fstype == "overlay")
    ):
        return "the container's own overlay layer (no volume mounted)"
    if directory == Path("/tmp") or Path("/tmp") in directory.parents:
        return "a path under /tmp"
    return None


def risk_message(directory: Path, reason: str) -> str:
    """The operator-facing warning (its wording is grepped for: keep it stable)."""
    return (
        f"AUDIT LOG RISK: {directory} is on {reason}. Logs will be lost on container "
        f"restart! Mount a persistent volume to {directory}"
    )


def probe_write(directory: Path) -> str | None:
    """Create, write, fsync and unlink a probe file; the error text, or None if fine."""
    probe = directory / f".riskaudit-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"riskaudit write probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(probe)
        return f"{exc.strerror or exc} ({directory})"
    return None


def space_level(free: int, total: int, marks: Watermarks) -> tuple[SpaceLevel, float]:
    """The level and the free percent."""
    percent = 100.0 * free / total if total else 0.0
    if percent < marks.crit_percent or free < marks.crit_bytes:
        return SpaceLevel.CRITICAL, percent
    if percent < marks.warn_percent or free < marks.warn_bytes:
        return SpaceLevel.WARNING, percent
    return SpaceLevel.OK, percent


def check_storage(
    directory: Path,
    *,
    in_kubernetes: bool,
    marks: Watermarks = Watermarks(),
    mountinfo: str | None = None,
    probe: bool = True,
) -> StorageReport:
    """Every check on the log directory, as one report."""
    directory = Path(os.path.realpath(directory))
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            mountinfo = ""
    mount = mount_of(directory, parse_mountinfo(mountinfo))
    container = detect_container(in_kubernetes)
    reason = volatile_reason(directory, mount, container)
    warnings = [risk_message(directory, reason)] if reason else []
    free = percent = total = None
    level = SpaceLevel.UNKNOWN
    try:
        st = os.statvfs(directory)
        free = st.f_bavail * st.f_frsize
        total = st.f_blocks * st.f_frsize
        level, percent = space_level(free, st.f_blocks * st.f_frsize, marks)
        if level is not SpaceLevel.OK:
            warnings.append(
                f"audit log volume {directory}: free space {level}: {free} bytes "
                f"({percent:.1f}%) left"
            )
    except OSError as exc:
        warnings.append(f"cannot read free space of {directory}: {exc}")
    error = probe_write(directory) if probe else None
    if error:
        warnings.append(f"audit log directory is not writable: {error}")
    return StorageReport(
        directory=str(directory),
        container=container,
        mount=mount,
        volatile_reason=reason,
        free_bytes=free,
        free_percent=percent,
        total_bytes=total,
        space=level,
        writable=error is None,
        probe_error=error,
        warnings=warnings,
    )
