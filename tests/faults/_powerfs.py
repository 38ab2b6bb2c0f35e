"""PowerFS: an in-memory FUSE file system that simulates power loss and torn writes.

Why the model is shaped like this (after LazyFS): a real disk keeps only what a sync
made durable, and a power cut may land in the middle of a multi-sector write. So every
file keeps two versions of itself: the *current* one (what reads see) and the *durable*
one (what the last ``fsync``/``fdatasync``, an ``O_DSYNC``/``O_SYNC`` write or a
``pwritev2(..., RWF_DSYNC)`` left on the platter). The durable version is stored as a
diff against the current bytes: a durable size plus, for each 512-byte sector that
changed since the last sync, the sector's durable content (copy-on-write, saved on the
first change), so a write costs O(its length) and a sync O(1) -- never a whole-file copy.

Directory entries are durable per directory, as POSIX promises and as ext4/xfs behave
without ``dirsync``: ``create``, ``mkdir``, ``rename``, ``unlink``, ``rmdir`` and
``link`` change the live namespace at once but reach the disk only when the *directory
containing the entry* is fsynced (FUSE ``fsyncdir``). A created, written and fsynced
file whose directory was never fsynced does not exist after a crash; an un-synced
rename is undone (the old name is back, with the inode's durable content). Metadata
such as mode, owner and times is not modelled (it is kept as it was live).

A crash (``crash``, or an ``arm``-ed trigger) freezes the machine: every later
operation fails with EIO until ``restart``. The post-crash state is computed at that
instant: mode ``drop`` keeps exactly the durable state; mode ``tear`` lets each
un-synced 512-byte sector independently reach the disk or not (seeded RNG), picks the
durable or the current size per file, and keeps or drops each un-synced directory
operation as a unit (names touched by one operation, e.g. both names of a rename,
share the decision, so a rename is never half-applied within a directory). Synced
bytes are never changed by a tear. ``restart`` makes the post-crash state live and
durable, as after a reboot.

The kernel must not cache what the model may drop: files are opened with direct I/O,
entry, attribute and negative timeouts are zero (every path walk is a LOOKUP, every
``stat`` a GETATTR), and handles opened before a restart fail with EIO afterwards.

Run as ``python -m tests.faults._powerfs --control-fd FD MOUNTPOINT`` (what the
:class:`PowerFS` controller does); commands arrive as JSON lines on the control socket.
mfusepy (ctypes over libfuse 3, or 2) is imported only in that child process.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes.util
import errno
import importlib
import importlib.util
import json
import logging
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Protocol, TypedDict, TypeVar, cast

SECTOR = 512
ROOT_INO = 1
_HIDDEN = ".fuse_hidden"  # libfuse renames an unlinked open file to .fuse_hiddenXXXX
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2
_REPO = Path(__file__).resolve().parents[2]

CrashMode = Literal["drop", "tear"]
When = Literal["before", "after"]
SnapshotState = Literal["live", "durable", "pending"]

#: Operations an ``arm`` trigger can count (``nth`` of these whose path matches).
ARMABLE = frozenset(
    {"write", "fsync", "fsyncdir", "rename", "unlink", "create", "truncate"}
    | {"mkdir", "rmdir", "link", "open"}
)
#: Operations a ``fail`` rule makes fail (a rename or link fails by its new name).
FAILABLE = frozenset(
    {"write", "create", "truncate", "fsync", "fsyncdir", "mkdir", "rename", "link"}
)

_T = TypeVar("_T")


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _ceil_sectors(size: int) -> int:
    return -(-size // SECTOR)


class ArmState(TypedDict):
    op: str
    match: str
    nth: int
    when: str
    mode: str
    seed: int
    seen: int


class CrashReport(TypedDict):
    mode: str
    seed: int
    trigger: str
    files: int
    sectors_lost: int
    sectors_kept: int
    sizes_reverted: int
    sizes_kept: int
    dir_ops_dropped: int
    dir_ops_kept: int


class Stats(TypedDict):
    ops: dict[str, int]
    crashes: int
    crashed: bool
    fired: bool
    armed: ArmState | None
    last_crash: CrashReport | None
    dsync_writes: int
    append_offset_fixups: int
    stale_handles: int
    internal_errors: int
    files: int
    dirs: int
    bytes: int
    unsynced_sectors: int
    dirty_dirs: int


class _Node:
    """An inode. ``data`` is the current content; the durable content is ``dsize``
    bytes: ``data[:dsize]`` except for the sectors in ``old``, which hold the durable
    content of each sector (``min(512, dsize - 512*s)`` bytes) changed since the last
    sync. Invariant: a sector below ``ceil(dsize/512)`` not in ``old`` is unchanged, and
    ``data`` covers it up to ``dsize``. Sectors at or beyond ``ceil(dsize/512)`` are
    new (un-synced) by definition. Directories keep ``entries`` (live), ``dentries``
    (durable) and ``touched`` (names changed since the last fsyncdir -> op group)."""

    __slots__ = (
        "atime",
        "ctime",
        "data",
        "dentries",
        "dlinks",
        "dsize",
        "entries",
        "gid",
        "ino",
        "is_dir",
        "links",
        "mode",
        "mtime",
        "old",
        "opens",
        "touched",
        "uid",
    )

    def __init__(self, ino: int, mode: int, uid: int, gid: int) -> None:
        now = time.time_ns()
        self.ino = ino
        self.is_dir = stat.S_ISDIR(mode)
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.atime = self.mtime = self.ctime = now
        self.data = bytearray()
        self.dsize = 0
        self.old: dict[int, bytes] = {}
        self.entries: dict[str, int] = {}
        self.dentries: dict[str, int] = {}
        self.touched: dict[str, int] = {}
        self.links = 0  # live directory entries naming it
        self.dlinks = 0  # durable directory entries naming it
        self.opens = 0

    def clone_meta(self, ino: int) -> _Node:
        node = _Node(ino, self.mode, self.uid, self.gid)
        node.atime, node.mtime, node.ctime = self.atime, self.mtime, self.ctime
        return node


class _Handle:
    __slots__ = ("flags", "ino", "path")

    def __init__(self, ino: int, flags: int, path: str) -> None:
        self.ino = ino
        self.flags = flags
        self.path = path


class PowerModel:
    """The file system state and every operation on it, independent of FUSE.

    Paths are absolute within the file system (``/a/b``). Errors are ``OSError`` with
    an errno, which the FUSE layer returns to the kernel as is. All methods take the
    one lock: the FUSE loop and the control thread call in concurrently.
    """

    def __init__(self, root_mode: int = 0o755, root_uid: int = 0, root_gid: int = 0) -> None:
        self._lock = threading.Lock()
        self._next_ino = ROOT_INO + 1
        self._next_fh = 1
        root = _Node(ROOT_INO, stat.S_IFDIR | (root_mode & 0o7777), root_uid, root_gid)
        root.links = root.dlinks = 1
        self._nodes: dict[int, _Node] = {ROOT_INO: root}
        self._handles: dict[int, _Handle] = {}
        # libfuse's hidden names for unlinked open files (path -> inode): no entry.
        self._hidden: dict[str, int] = {}
        # Union-find over directory-operation groups (see _touch); reset when clean.
        self._groups: dict[int, int] = {}
        self._next_group = 1
        self._dirty_dirs: set[int] = set()
        # Fault state.
        self._dead = False
        self._pending: dict[int, _Node] | None = None
        self._arm: ArmState | None = None
        self._fired = False
        self._fails: dict[str, int] = {}
        # Counters.
        self._ops: dict[str, int] = {}
        self._path_ops: dict[tuple[str, tuple[str, ...]], int] = {}
        self._crashes = 0
        self._last_crash: CrashReport | None = None
        self._dsync_writes = 0
        self._append_fixups = 0
        self._stale_handles = 0
        self.internal_errors = 0

    # ----------------------------------------------------------------- plumbing

    def _alive(self, kind: str) -> None:
        if self._dead:
            raise _oserror(errno.EIO)
        ops = self._ops
        ops[kind] = ops.get(kind, 0) + 1

    def _gated(self, kind: str, paths: tuple[str, ...], action: Callable[[], _T]) -> _T:
        """Run a mutating operation: count it, fire an armed crash before or after
        it, apply ``fail`` rules. Call with the lock held."""
        self._alive(kind)
        key = (kind, paths)
        self._path_ops[key] = self._path_ops.get(key, 0) + 1
        crash_after: ArmState | None = None
        arm = self._arm
        if arm is not None and arm["op"] == kind and any(arm["match"] in p for p in paths):
            arm["seen"] += 1
            if arm["seen"] == arm["nth"]:
                self._arm = None
                self._fired = True
                if arm["when"] == "before":
                    self._crash(cast(CrashMode, arm["mode"]), arm["seed"], f"before {kind}")
                    raise _oserror(errno.EIO)
                crash_after = arm
        try:
            if self._fails and kind in FAILABLE:
                target = paths[-1][1:]
                for prefix, code in self._fails.items():
                    if target.startswith(prefix):
                        raise _oserror(code)
            return action()
        finally:
            if crash_after is not None:
                self._crash(
                    cast(CrashMode, crash_after["mode"]), crash_after["seed"], f"after {kind}"
                )

    def _lookup(self, path: str) -> _Node:
        node = self._nodes[ROOT_INO]
        if path == "/":
            return node
        nodes = self._nodes
        if self._hidden and path in self._hidden:
            hidden = nodes.get(self._hidden[path])
            if hidden is None:
                raise _oserror(errno.ENOENT)
            return hidden
        for part in path[1:].split("/"):
            if not node.is_dir:
                raise _oserror(errno.ENOTDIR)
            ino = node.entries.get(part)
            if ino is None:
                raise _oserror(errno.ENOENT)
            node = nodes[ino]
        return node

    def _parent(self, path: str) -> tuple[_Node, str]:
        head, _, name = path.rpartition("/")
        parent = self._lookup(head or "/")
        if not parent.is_dir:
            raise _oserror(errno.ENOTDIR)
        if not name:
            raise _oserror(errno.EINVAL)
        return parent, name

    def _handle(self, fh: int) -> _Handle:
        handle = self._handles.get(fh)
        if handle is None:
            self._stale_handles += 1
            raise _oserror(errno.EIO)  # opened before a restart, or never
        return handle

    def _node_of(self, path: str | None, fh: int | None) -> tuple[_Node, str]:
        if fh is not None:
            handle = self._handle(fh)
            return self._nodes[handle.ino], path or handle.path
        if path is None:
            raise _oserror(errno.EIO)
        return self._lookup(path), path

    def _new_handle(self, node: _Node, flags: int, path: str) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = _Handle(node.ino, flags, path)
        node.opens += 1
        return fh

    def _new_node(self, mode: int, uid: int, gid: int) -> _Node:
        node = _Node(self._next_ino, mode, uid, gid)
        self._next_ino += 1
        self._nodes[node.ino] = node
        return node

    def _maybe_free(self, node: _Node) -> None:
        """Forget an inode nothing can reach any more: no live or durable entry, no
        open handle. A durable-only one is kept (a crash may bring its name back)."""
        if node.links or node.dlinks or node.opens or node.ino == ROOT_INO:
            return
        del self._nodes[node.ino]
        for ino in node.dentries.values():
            child = self._nodes.get(ino)
            if child is not None:
                child.dlinks -= 1
                self._maybe_free(child)

    def _find(self, group: int) -> int:
        groups = self._groups
        root = group
        while groups[root] != root:
            root = groups[root]
        while groups[group] != root:
            groups[group], group = root, groups[group]
        return root

    def _touch(self, names: Iterable[tuple[_Node, str]]) -> None:
        """Record one directory operation: the names it changed share a group, so a
        tear keeps or drops them together (and with earlier ops on the same names)."""
        group = self._next_group
        self._next_group += 1
        self._groups[group] = group
        for directory, name in names:
            prev = directory.touched.get(name)
            if prev is not None:
                self._groups[self._find(prev)] = group
            directory.touched[name] = group
            self._dirty_dirs.add(directory.ino)

    # ------------------------------------------------------------ data changes

    def _save(self, node: _Node, lo: int, hi: int) -> None:
        """Keep the durable content of the durable sectors overlapping [lo, hi)."""
        if hi <= lo:
            return
        dsize = node.dsize
        top = min((hi - 1) // SECTOR + 1, _ceil_sectors(dsize))
        old = node.old
        data = node.data
        for s in range(lo // SECTOR, top):
            if s not in old:
                base = s * SECTOR
                old[s] = bytes(data[base : min(base + SECTOR, dsize)])

    def _write(self, node: _Node, data: bytes, offset: int) -> None:
        buf = node.data
        end = offset + len(data)
        if offset < _ceil_sectors(node.dsize) * SECTOR:  # touches a durable sector
            self._save(node, offset, end)
        size = len(buf)
        if offset == size:
            buf += data
        else:
            if offset > size:
                buf.extend(bytes(offset - size))
            buf[offset:end] = data
        node.mtime = node.ctime = time.time_ns()

    def _truncate(self, node: _Node, length: int) -> None:
        size = len(node.data)
        if length < size:
            self._save(node, length, size)
            del node.data[length:]
        elif length > size:
            self._save(node, size, length)
            node.data.extend(bytes(length - size))
        node.mtime = node.ctime = time.time_ns()

    @staticmethod
    def _sync(node: _Node) -> None:
        if node.old:
            node.old = {}
        node.dsize = len(node.data)

    def _sync_dir(self, node: _Node) -> None:
        nodes = self._nodes
        for ino in node.entries.values():
            nodes[ino].dlinks += 1
        dropped = []
        for ino in node.dentries.values():
            child = nodes.get(ino)
            if child is not None:
                child.dlinks -= 1
                dropped.append(child)
        node.dentries = dict(node.entries)
        node.touched = {}
        for child in dropped:
            self._maybe_free(child)
        self._dirty_dirs.discard(node.ino)
        if not self._dirty_dirs:
            self._groups.clear()

    # --------------------------------------------------------- FUSE operations

    def getattr(self, path: str | None, fh: int | None) -> dict[str, int]:
        with self._lock:
            self._alive("getattr")
            node, _ = self._node_of(path, fh)
            size = len(node.data)
            if node.is_dir:
                nodes = self._nodes
                nlink = 2 + sum(1 for i in node.entries.values() if nodes[i].is_dir)
            else:
                nlink = node.links
            return {
                "st_ino": node.ino,
                "st_mode": node.mode,
                "st_nlink": nlink,
                "st_uid": node.uid,
                "st_gid": node.gid,
                "st_size": size,
                "st_blocks": _ceil_sectors(size),
                "st_blksize": 4096,
                "st_atime": node.atime,
                "st_mtime": node.mtime,
                "st_ctime": node.ctime,
            }

    def opendir(self, path: str) -> int:
        with self._lock:
            self._alive("opendir")
            node = self._lookup(path)
            if not node.is_dir:
                raise _oserror(errno.ENOTDIR)
            return self._new_handle(node, os.O_RDONLY, path)

    def readdir(self, path: str | None, fh: int) -> list[tuple[str, dict[str, int], int]]:
        """Entries with inode and type: with use_ino a bare name would reach the
        kernel as d_ino 0, which glibc's readdir skips."""
        with self._lock:
            self._alive("readdir")
            node, _ = self._node_of(path, fh)
            nodes = self._nodes
            out = [(".", {"st_ino": node.ino, "st_mode": node.mode}, 0)]
            out.append(("..", {"st_ino": node.ino, "st_mode": node.mode}, 0))
            for name, ino in node.entries.items():
                out.append((name, {"st_ino": ino, "st_mode": nodes[ino].mode}, 0))
            return out

    def releasedir(self, fh: int) -> None:
        self.release(fh)

    def mkdir(self, path: str, mode: int, uid: int, gid: int) -> None:
        with self._lock:

            def action() -> None:
                parent, name = self._parent(path)
                if name in parent.entries:
                    raise _oserror(errno.EEXIST)
                node = self._new_node(stat.S_IFDIR | (mode & 0o7777), uid, gid)
                node.links = 1
                parent.entries[name] = node.ino
                parent.mtime = parent.ctime = node.ctime
                self._touch([(parent, name)])

            self._gated("mkdir", (path,), action)

    def create(self, path: str, mode: int, flags: int, uid: int, gid: int) -> int:
        with self._lock:
            if self._dead:
                raise _oserror(errno.EIO)
            parent, name = self._parent(path)
            if name in parent.entries:  # raced with another creator: an open
                if flags & os.O_EXCL:
                    raise _oserror(errno.EEXIST)
                return self._open_locked(path, flags)

            def action() -> int:
                node = self._new_node(stat.S_IFREG | (mode & 0o7777), uid, gid)
                node.links = 1
                parent.entries[name] = node.ino
                parent.mtime = parent.ctime = node.ctime
                self._touch([(parent, name)])
                return self._new_handle(node, flags, path)

            return self._gated("create", (path,), action)

    def open(self, path: str, flags: int) -> int:
        with self._lock:
            return self._open_locked(path, flags)

    def _open_locked(self, path: str, flags: int) -> int:
        node = self._gated("open", (path,), lambda: self._lookup(path))
        if node.is_dir and flags & os.O_ACCMODE != os.O_RDONLY:
            raise _oserror(errno.EISDIR)
        if flags & os.O_TRUNC and not node.is_dir and flags & os.O_ACCMODE != os.O_RDONLY:
            self._gated("truncate", (path,), lambda: self._truncate(node, 0))
        return self._new_handle(node, flags, path)

    def read(self, fh: int, size: int, offset: int) -> bytes:
        with self._lock:
            self._alive("read")
            node = self._nodes[self._handle(fh).ino]
            return bytes(node.data[offset : offset + size])

    def write(self, path: str | None, fh: int, data: bytes, offset: int, flags: int) -> int:
        with self._lock:
            if self._dead:
                raise _oserror(errno.EIO)
            handle = self._handle(fh)
            node = self._nodes[handle.ino]
            flags |= handle.flags

            def action() -> int:
                nonlocal offset
                if flags & os.O_APPEND and offset != len(node.data):
                    self._append_fixups += 1  # the kernel's idea of EOF was stale
                    offset = len(node.data)
                self._write(node, data, offset)
                if flags & os.O_DSYNC:  # O_SYNC includes it; so does RWF_DSYNC
                    self._dsync_writes += 1
                    self._sync(node)
                return len(data)

            return self._gated("write", (path or handle.path,), action)

    def truncate(self, path: str | None, length: int, fh: int | None) -> None:
        with self._lock:
            if self._dead:
                raise _oserror(errno.EIO)
            node, where = self._node_of(path, fh)
            if node.is_dir:
                raise _oserror(errno.EISDIR)
            self._gated("truncate", (where,), lambda: self._truncate(node, length))

    def flush(self, fh: int) -> None:
        with self._lock:
            self._alive("flush")
            self._handle(fh)

    def release(self, fh: int) -> None:
        with self._lock:
            handle = self._handles.pop(fh, None)
            if handle is None:
                return
            node = self._nodes.get(handle.ino)
            if node is not None:
                node.opens -= 1
                self._maybe_free(node)

    def fsync(self, path: str | None, fh: int) -> None:
        with self._lock:
            if self._dead:
                raise _oserror(errno.EIO)
            handle = self._handle(fh)
            node = self._nodes[handle.ino]
            self._gated("fsync", (path or handle.path,), lambda: self._sync(node))

    def fsyncdir(self, path: str | None, fh: int) -> None:
        with self._lock:
            if self._dead:
                raise _oserror(errno.EIO)
            node, where = self._node_of(path, fh)
            self._gated("fsyncdir", (where,), lambda: self._sync_dir(node))

    def unlink(self, path: str) -> None:
        with self._lock:
            if path in self._hidden:  # libfuse's cleanup at the last close
                self._alive("unlink_hidden")
                del self._hidden[path]
                return
            if path.rpartition("/")[2].startswith(_HIDDEN):
                self._alive("unlink_hidden")
                return  # hidden before a restart: gone with the reboot

            def action() -> None:
                parent, name = self._parent(path)
                ino = parent.entries.get(name)
                if ino is None:
                    raise _oserror(errno.ENOENT)
                node = self._nodes[ino]
                if node.is_dir:
                    raise _oserror(errno.EISDIR)
                self._unlink_entry(parent, name, node)

            self._gated("unlink", (path,), action)

    def rmdir(self, path: str) -> None:
        with self._lock:

            def action() -> None:
                if path == "/":
                    raise _oserror(errno.EBUSY)
                parent, name = self._parent(path)
                ino = parent.entries.get(name)
                if ino is None:
                    raise _oserror(errno.ENOENT)
                node = self._nodes[ino]
                if not node.is_dir:
                    raise _oserror(errno.ENOTDIR)
                if node.entries:
                    raise _oserror(errno.ENOTEMPTY)
                self._unlink_entry(parent, name, node)

            self._gated("rmdir", (path,), action)

    def _unlink_entry(self, parent: _Node, name: str, node: _Node) -> None:
        del parent.entries[name]
        node.links -= 1
        parent.mtime = parent.ctime = node.ctime = time.time_ns()
        self._touch([(parent, name)])
        self._maybe_free(node)

    def rename(self, old: str, new: str, noreplace: bool = False) -> None:
        with self._lock:
            if new.rpartition("/")[2].startswith(_HIDDEN):
                self._hide(old, new)
                return

            def action() -> None:
                src_dir, src_name = self._parent(old)
                ino = src_dir.entries.get(src_name)
                if ino is None:
                    raise _oserror(errno.ENOENT)
                dst_dir, dst_name = self._parent(new)
                target_ino = dst_dir.entries.get(dst_name)
                if noreplace and target_ino is not None:
                    raise _oserror(errno.EEXIST)
                if target_ino == ino:
                    return  # two names of one inode: POSIX says do nothing
                node = self._nodes[ino]
                if node.is_dir and (new + "/").startswith(old + "/"):
                    raise _oserror(errno.EINVAL)
                target = None if target_ino is None else self._nodes[target_ino]
                if target is not None:
                    if target.is_dir and not node.is_dir:
                        raise _oserror(errno.EISDIR)
                    if node.is_dir and not target.is_dir:
                        raise _oserror(errno.ENOTDIR)
                    if target.is_dir and target.entries:
                        raise _oserror(errno.ENOTEMPTY)
                del src_dir.entries[src_name]
                dst_dir.entries[dst_name] = ino
                now = time.time_ns()
                src_dir.mtime = src_dir.ctime = dst_dir.mtime = dst_dir.ctime = now
                node.ctime = now
                self._touch([(src_dir, src_name), (dst_dir, dst_name)])
                if target is not None:
                    target.links -= 1
                    self._maybe_free(target)

            self._gated("rename", (old, new), action)

    def _hide(self, old: str, hidden: str) -> None:
        """libfuse's way to unlink an open file (the application's unlink, or the
        target of its rename): the name goes, as an un-synced directory operation;
        the inode stays reachable by the hidden path only, never listed, never
        durable (like an orphan inode, which a reboot frees)."""

        def action() -> None:
            parent, name = self._parent(old)
            ino = parent.entries.get(name)
            if ino is None:
                raise _oserror(errno.ENOENT)
            self._hidden[hidden] = ino
            self._unlink_entry(parent, name, self._nodes[ino])

        self._gated("unlink", (old,), action)

    def link(self, existing: str, new: str) -> None:
        with self._lock:

            def action() -> None:
                node = self._lookup(existing)
                if node.is_dir:
                    raise _oserror(errno.EPERM)
                parent, name = self._parent(new)
                if name in parent.entries:
                    raise _oserror(errno.EEXIST)
                parent.entries[name] = node.ino
                node.links += 1
                parent.mtime = parent.ctime = node.ctime = time.time_ns()
                self._touch([(parent, name)])

            self._gated("link", (existing, new), action)

    def chmod(self, path: str | None, mode: int) -> None:
        with self._lock:
            self._alive("chmod")
            node, _ = self._node_of(path, None)
            node.mode = stat.S_IFMT(node.mode) | (mode & 0o7777)
            node.ctime = time.time_ns()

    def chown(self, path: str | None, uid: int, gid: int) -> None:
        with self._lock:
            self._alive("chown")
            node, _ = self._node_of(path, None)
            if uid != -1:
                node.uid = uid
            if gid != -1:
                node.gid = gid
            node.ctime = time.time_ns()

    def utimens(
        self, path: str | None, times: tuple[tuple[int, int], tuple[int, int]] | None
    ) -> None:
        with self._lock:
            self._alive("utimens")
            node, _ = self._node_of(path, None)
            now = time.time_ns()
            if times is None:
                node.atime = node.mtime = now
            else:
                (a_sec, a_nsec), (m_sec, m_nsec) = times
                if a_nsec != _UTIME_OMIT:
                    node.atime = now if a_nsec == _UTIME_NOW else a_sec * 10**9 + a_nsec
                if m_nsec != _UTIME_OMIT:
                    node.mtime = now if m_nsec == _UTIME_NOW else m_sec * 10**9 + m_nsec
            node.ctime = now

    def statfs(self) -> dict[str, int]:
        with self._lock:
            self._alive("statfs")
            used = sum(_ceil_sectors(len(n.data)) for n in self._nodes.values()) // 8 + 1
            blocks = 1 << 24  # 64 GiB of 4 KiB blocks
            return {
                "f_bsize": 4096,
                "f_frsize": 4096,
                "f_blocks": blocks,
                "f_bfree": blocks - used,
                "f_bavail": blocks - used,
                "f_files": 1 << 20,
                "f_ffree": (1 << 20) - len(self._nodes),
                "f_favail": (1 << 20) - len(self._nodes),
                "f_namemax": 255,
            }

    # -------------------------------------------------------------- crashes

    def _crash(self, mode: CrashMode, seed: int, trigger: str) -> None:
        nodes, report = self._post_crash(mode, seed, trigger)
        self._dead = True
        self._arm = None  # a crash disarms
        self._pending = nodes
        self._crashes += 1
        self._last_crash = report

    def _post_crash(
        self, mode: CrashMode, seed: int, trigger: str
    ) -> tuple[dict[int, _Node], CrashReport]:
        """The state a crash now would leave (drop: the durable state; tear: a
        seeded mix of durable and current). Reads the model, changes nothing."""
        if mode not in ("drop", "tear"):
            raise ValueError(f"crash mode must be drop or tear, not {mode!r}")
        rng = random.Random(seed) if mode == "tear" else None
        nodes = self._nodes
        report = CrashReport(
            mode=mode,
            seed=seed,
            trigger=trigger,
            files=0,
            sectors_lost=0,
            sectors_kept=0,
            sizes_reverted=0,
            sizes_kept=0,
            dir_ops_dropped=0,
            dir_ops_kept=0,
        )
        keep: dict[int, bool] = {}
        for dino in sorted(self._dirty_dirs):
            directory = nodes[dino]
            for name in sorted(directory.touched):
                root = self._find(directory.touched[name])
                if root not in keep:
                    kept = rng is not None and rng.random() < 0.5
                    keep[root] = kept
                    report["dir_ops_kept" if kept else "dir_ops_dropped"] += 1

        entries_after: dict[int, dict[str, int]] = {}
        refs: dict[int, int] = {ROOT_INO: 1}
        queue = deque([ROOT_INO])
        while queue:
            dino = queue.popleft()
            directory = nodes[dino]
            entries = dict(directory.dentries)
            for name, group in directory.touched.items():
                if keep.get(self._find(group), False):
                    live = directory.entries.get(name)
                    if live is None:
                        entries.pop(name, None)
                    else:
                        entries[name] = live
            for name in sorted(entries):
                ino = entries[name]
                child = nodes.get(ino)
                if child is None or (child.is_dir and ino in refs):
                    del entries[name]  # a directory reached twice: keep the first
                    continue
                refs[ino] = refs.get(ino, 0) + 1
                if child.is_dir:
                    queue.append(ino)
            entries_after[dino] = entries

        after: dict[int, _Node] = {}
        for ino in sorted(refs):
            src = nodes[ino]
            node = src.clone_meta(ino)
            if src.is_dir:
                node.entries = entries_after[ino]
                node.dentries = dict(node.entries)
            else:
                report["files"] += 1
                node.data = self._crash_content(src, rng, report)
                node.dsize = len(node.data)
            node.links = node.dlinks = refs[ino]
            after[ino] = node
        return after, report

    @staticmethod
    def _crash_content(node: _Node, rng: random.Random | None, report: CrashReport) -> bytearray:
        data = node.data
        dsize = node.dsize
        size = len(data)
        image = bytearray(data[:dsize])
        if len(image) < dsize:
            image.extend(bytes(dsize - len(image)))
        for s, durable in node.old.items():
            image[s * SECTOR : s * SECTOR + len(durable)] = durable
        top = _ceil_sectors(dsize)
        if rng is None:
            report["sectors_lost"] += len(node.old) + max(0, _ceil_sectors(size) - top)
            if size != dsize:
                report["sizes_reverted"] += 1
            return image
        unsynced = sorted(node.old) + list(range(top, _ceil_sectors(size)))
        final = dsize
        if size != dsize:
            if rng.random() < 0.5:
                final = size
                report["sizes_kept"] += 1
            else:
                report["sizes_reverted"] += 1
        for s in unsynced:
            if rng.random() < 0.5:
                lo = s * SECTOR
                hi = lo + SECTOR
                if len(image) < hi:
                    image.extend(bytes(hi - len(image)))
                image[lo:hi] = data[lo:hi].ljust(SECTOR, b"\0")
                report["sectors_kept"] += 1
            else:
                report["sectors_lost"] += 1
        if len(image) > final:
            del image[final:]
        elif len(image) < final:
            image.extend(bytes(final - len(image)))
        return image

    # -------------------------------------------------------------- commands

    def crash(self, mode: CrashMode = "drop", seed: int = 0) -> CrashReport:
        with self._lock:
            if self._dead:
                raise RuntimeError("already crashed: restart() first")
            self._crash(mode, seed, "command")
            assert self._last_crash is not None
            return self._last_crash

    def restart(self) -> None:
        with self._lock:
            if not self._dead or self._pending is None:
                raise RuntimeError("restart() needs a crash first")
            self._nodes = self._pending
            self._pending = None
            self._handles = {}  # the kernel's old handles now get EIO
            self._hidden = {}
            self._groups = {}
            self._dirty_dirs = set()
            self._dead = False

    def arm(
        self, op: str, match: str, nth: int, when: str, mode: str = "drop", seed: int = 0
    ) -> None:
        if op not in ARMABLE:
            raise ValueError(f"cannot arm {op!r}: one of {sorted(ARMABLE)}")
        if nth < 1:
            raise ValueError("nth counts from 1")
        if when not in ("before", "after") or mode not in ("drop", "tear"):
            raise ValueError("when is before|after, mode is drop|tear")
        with self._lock:
            self._arm = ArmState(
                op=op, match=match, nth=nth, when=when, mode=mode, seed=seed, seen=0
            )
            self._fired = False

    def disarm(self) -> None:
        with self._lock:
            self._arm = None

    def count(self, op: str, match: str = "") -> int:
        with self._lock:
            return sum(
                n
                for (kind, paths), n in self._path_ops.items()
                if kind == op and any(match in p for p in paths)
            )

    def fail(self, prefix: str, errno_name: str = "ENOSPC") -> None:
        code = getattr(errno, errno_name, None)
        if not isinstance(code, int) or not errno_name.startswith("E"):
            raise ValueError(f"unknown errno name {errno_name!r}")
        with self._lock:
            self._fails[prefix.lstrip("/")] = code

    def clear_fail(self, prefix: str | None = None) -> None:
        with self._lock:
            if prefix is None:
                self._fails.clear()
            else:
                self._fails.pop(prefix.lstrip("/"), None)

    def stats(self) -> Stats:
        with self._lock:
            files = [n for n in self._nodes.values() if not n.is_dir]
            unsynced = sum(
                len(n.old) + max(0, _ceil_sectors(len(n.data)) - _ceil_sectors(n.dsize))
                for n in files
            )
            return Stats(
                ops=dict(self._ops),
                crashes=self._crashes,
                crashed=self._dead,
                fired=self._fired,
                armed=None if self._arm is None else self._arm.copy(),
                last_crash=self._last_crash,
                dsync_writes=self._dsync_writes,
                append_offset_fixups=self._append_fixups,
                stale_handles=self._stale_handles,
                internal_errors=self.internal_errors,
                files=len(files),
                dirs=len(self._nodes) - len(files),
                bytes=sum(len(n.data) for n in files),
                unsynced_sectors=unsynced,
                dirty_dirs=len(self._dirty_dirs),
            )

    def snapshot(self, state: SnapshotState = "live", dirs: bool = False) -> dict[str, bytes]:
        with self._lock:
            if state == "live":
                nodes = self._nodes
            elif state == "durable":
                nodes = self._post_crash("drop", 0, "snapshot")[0]
            elif state == "pending":
                if self._pending is None:
                    raise RuntimeError("no crash pending")
                nodes = self._pending
            else:
                raise ValueError(f"state must be live|durable|pending, not {state!r}")
            return _tree(nodes, dirs)

    def preview(self, mode: CrashMode, seed: int = 0, dirs: bool = False) -> dict[str, bytes]:
        with self._lock:
            return _tree(self._post_crash(mode, seed, "preview")[0], dirs)

    def command(self, cmd: str, args: dict[str, Any]) -> Any:
        """One control-channel request (JSON in, JSON-able out)."""
        if cmd == "ping":
            return "pong"
        if cmd in ("snapshot", "preview"):
            tree = self.snapshot(**args) if cmd == "snapshot" else self.preview(**args)
            return {k: base64.b64encode(v).decode() for k, v in tree.items()}
        if cmd in (
            "crash",
            "restart",
            "arm",
            "disarm",
            "count",
            "fail",
            "clear_fail",
            "stats",
        ):
            return getattr(self, cmd)(**args)
        raise ValueError(f"unknown command {cmd!r}")


def _tree(nodes: dict[int, _Node], dirs: bool) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    stack = [("", ROOT_INO)]
    while stack:
        prefix, ino = stack.pop()
        for name, child_ino in nodes[ino].entries.items():
            child = nodes[child_ino]
            rel = prefix + name
            if child.is_dir:
                if dirs:
                    out[rel + "/"] = b""
                stack.append((rel + "/", child_ino))
            else:
                out[rel] = bytes(child.data)
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- FUSE layer


class _FileInfo(Protocol):
    """The fields of libfuse's ``struct fuse_file_info`` used here (mfusepy, raw_fi)."""

    flags: int
    fh: int
    direct_io: int
    keep_cache: int


class _FuseOps:
    """mfusepy's operations object (raw_fi mode): translates to :class:`PowerModel`.
    Only the methods defined here are registered with libfuse."""

    use_ns = True

    def __init__(self, model: PowerModel, context: Callable[[], tuple[int, int, int]]) -> None:
        self.model = model
        self._context = context

    def getattr(self, path: str | None, fh: _FileInfo | None = None) -> dict[str, int]:
        return self.model.getattr(path, None if fh is None else fh.fh)

    def opendir(self, path: str) -> int:
        return self.model.opendir(path)

    def readdir(self, path: str | None, fh: int) -> list[tuple[str, dict[str, int], int]]:
        return self.model.readdir(path, fh)

    def releasedir(self, path: str | None, fh: int) -> int:
        self.model.releasedir(fh)
        return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        self.model.fsyncdir(path, fh)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        uid, gid, _ = self._context()
        self.model.mkdir(path, mode, uid, gid)
        return 0

    def rmdir(self, path: str) -> int:
        self.model.rmdir(path)
        return 0

    def unlink(self, path: str) -> int:
        self.model.unlink(path)
        return 0

    def rename(self, old: str, new: str, noreplace: bool = False) -> int:
        self.model.rename(old, new, noreplace)
        return 0

    def link(self, target: str, source: str) -> int:
        self.model.link(source, target)
        return 0

    def chmod(self, path: str | None, mode: int) -> int:
        self.model.chmod(path, mode)
        return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        self.model.chown(path, uid, gid)
        return 0

    def utimens(
        self, path: str | None, times: tuple[tuple[int, int], tuple[int, int]] | None = None
    ) -> int:
        self.model.utimens(path, times)
        return 0

    def truncate(self, path: str | None, length: int, fh: _FileInfo | None = None) -> int:
        self.model.truncate(path, length, None if fh is None else fh.fh)
        return 0

    def create(self, path: str, mode: int, fi: _FileInfo) -> int:
        uid, gid, _ = self._context()
        fi.fh = self.model.create(path, mode, fi.flags, uid, gid)
        fi.direct_io = 1
        fi.keep_cache = 0
        return 0

    def open(self, path: str, fi: _FileInfo) -> int:
        fi.fh = self.model.open(path, fi.flags)
        fi.direct_io = 1
        fi.keep_cache = 0
        return 0

    def read(self, path: str | None, size: int, offset: int, fi: _FileInfo) -> bytes:
        return self.model.read(fi.fh, size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fi: _FileInfo) -> int:
        # fi.flags is the FUSE_WRITE request's flags: the file's flags plus O_DSYNC
        # or O_SYNC for a pwritev2(RWF_DSYNC/RWF_SYNC) (the kernel's fuse_write_flags).
        return self.model.write(path, fi.fh, data, offset, fi.flags)

    def flush(self, path: str | None, fi: _FileInfo) -> int:
        self.model.flush(fi.fh)
        return 0

    def release(self, path: str | None, fi: _FileInfo) -> int:
        self.model.release(fi.fh)
        return 0

    def fsync(self, path: str | None, datasync: int, fi: _FileInfo) -> int:
        self.model.fsync(path, fi.fh)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return self.model.statfs()


def _decode(fuse: Any, path: bytes | None) -> str | None:
    return None if path is None else path.decode(fuse.encoding, fuse.errors)


def _truncate_fuse_3(fuse: Any, path: bytes | None, length: int, fip: Any) -> int:
    """mfusepy drops the file handle of a libfuse-3 ftruncate; pass it on."""
    fh = fip.contents if fip else None
    return cast(int, fuse.operations.truncate(_decode(fuse, path), length, fh))


def _rename_fuse_3(fuse: Any, old: bytes, new: bytes, flags: int) -> int:
    """mfusepy drops renameat2 flags: honour RENAME_NOREPLACE, refuse the others."""
    if flags & ~1:
        return -errno.EINVAL
    return cast(int, fuse.operations.rename(_decode(fuse, old), _decode(fuse, new), bool(flags)))


def _utimens_fuse_2(fuse: Any, path: bytes | None, buf: Any) -> int:
    """Pass raw (sec, nsec) pairs so UTIME_NOW / UTIME_OMIT survive."""
    times = None
    if buf:
        a, m = buf.contents.actime, buf.contents.modtime
        times = ((a.tv_sec, a.tv_nsec), (m.tv_sec, m.tv_nsec))
    return cast(int, fuse.operations.utimens(_decode(fuse, path), times))


class _CountErrors(logging.Handler):
    """mfusepy turns an unexpected exception into EINVAL and logs it: count those."""

    def __init__(self, model: PowerModel) -> None:
        super().__init__(logging.ERROR)
        self.model = model

    def emit(self, record: logging.LogRecord) -> None:
        self.model.internal_errors += 1


def _serve_control(
    model: PowerModel, sock: socket.socket, fuse_thread: int, stopping: threading.Event
) -> None:
    with sock.makefile("rb") as lines:
        for line in lines:
            request = json.loads(line)
            try:
                answer = {"ok": True, "result": model.command(request["cmd"], request["args"])}
            except Exception as exc:
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            sock.sendall(json.dumps(answer).encode() + b"\n")
    # The controller closed the channel (or died): unmount and exit. libfuse's
    # SIGTERM handler ends the loop; aim it at the thread blocked reading /dev/fuse.
    stopping.set()
    signal.pthread_kill(fuse_thread, signal.SIGTERM)


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults._powerfs")
    parser.add_argument("mountpoint")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--libfuse", choices=("auto", "3", "2"), default="auto")
    parser.add_argument("--root-mode", type=lambda s: int(s, 8), default=0o755)
    parser.add_argument("--root-uid", type=int, default=os.getuid())
    parser.add_argument("--root-gid", type=int, default=os.getgid())
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.control_fd)
    sock.set_inheritable(False)
    if args.libfuse != "auto":
        os.environ["FUSE_LIBRARY_NAME"] = "fuse3" if args.libfuse == "3" else "fuse"
    elif ctypes.util.find_library("fuse3"):
        os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")  # mfusepy prefers 2
    try:
        mfusepy: Any = importlib.import_module("mfusepy")
    except (ImportError, OSError) as exc:
        sock.sendall(json.dumps({"ok": False, "error": f"mfusepy: {exc}"}).encode() + b"\n")
        return 2
    version = f"{mfusepy.fuse_version_major}.{mfusepy.fuse_version_minor}"
    model = PowerModel(args.root_mode, args.root_uid, args.root_gid)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("fuse").addHandler(_CountErrors(model))
    hello = {"ok": True, "result": {"pid": os.getpid(), "libfuse": version}}
    sock.sendall(json.dumps(hello).encode() + b"\n")
    stopping = threading.Event()
    control = threading.Thread(
        target=_serve_control,
        args=(model, sock, threading.get_ident(), stopping),
        name="powerfs-control",
        daemon=True,
    )
    control.start()
    fuse_class = type(
        "PowerFUSE",
        (mfusepy.FUSE,),
        {
            "truncate_fuse_3": _truncate_fuse_3,
            "rename_fuse_3": _rename_fuse_3,
            "utimens_fuse_2": _utimens_fuse_2,
        },
    )
    try:
        _mount(fuse_class, model, mfusepy.fuse_get_context, args.mountpoint, args.debug)
    except RuntimeError:
        if not stopping.is_set():  # libfuse returns 8 after the SIGTERM we asked for
            raise
    return 0


def _mount(
    fuse_class: Any,
    model: PowerModel,
    context: Callable[[], tuple[int, int, int]],
    mountpoint: str,
    debug: bool,
) -> None:
    """Mount and serve until unmounted (libfuse's loop, single-threaded)."""
    fuse_class(
        _FuseOps(model, context),
        mountpoint,
        raw_fi=True,
        foreground=True,
        nothreads=True,
        debug=debug,
        fsname="powerfs",
        subtype="powerfs",
        allow_other=True,
        default_permissions=True,
        # Nothing the model may drop can be served from a kernel cache:
        direct_io=True,
        entry_timeout=0,
        attr_timeout=0,
        negative_timeout=0,
        # No hard_remove: libfuse hides an unlinked open file (see _hide), so that
        # fstat() of it works (st_nlink 0) instead of failing with ESTALE.
        use_ino=True,
    )


# ---------------------------------------------------------------- controller


class PowerFSError(RuntimeError):
    """The PowerFS child failed, or refused a command."""


def unavailable_reason() -> str | None:
    """Why PowerFS cannot run here (for a test skip), or None."""
    if os.geteuid() != 0:
        return "PowerFS needs root (FUSE mount with allow_other, as the fault tests run)"
    if not os.path.exists("/dev/fuse"):
        return "PowerFS needs /dev/fuse"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"PowerFS cannot open /dev/fuse: {exc}"
    if importlib.util.find_spec("mfusepy") is None:
        return "PowerFS needs the mfusepy package (pip install mfusepy)"
    if not (ctypes.util.find_library("fuse3") or ctypes.util.find_library("fuse")):
        return "PowerFS needs libfuse (Debian: apt-get install fuse3)"
    return None


def _unescape_mountinfo(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (a resolved path) is a mount point in this mount namespace."""
    target = os.path.abspath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        return any(
            _unescape_mountinfo(line.split()[4]) == target for line in mountinfo if line.strip()
        )


class PowerFS:
    """Start PowerFS at ``mountpoint`` (a context manager) and drive it.

    The file system runs in a child process; this object talks to it over a Unix
    socket pair (JSON lines). Leaving the ``with`` block unmounts it and stops the
    child, whatever happened inside.
    """

    def __init__(
        self,
        mountpoint: str | os.PathLike[str],
        *,
        libfuse: Literal["auto", "3", "2"] = "auto",
        root_mode: int = 0o755,
        root_uid: int | None = None,
        root_gid: int | None = None,
        debug: bool = False,
        timeout: float = 15.0,
    ) -> None:
        self.mountpoint = Path(mountpoint)
        self._libfuse = libfuse
        self._root = (
            root_mode,
            os.getuid() if root_uid is None else root_uid,
            os.getgid() if root_gid is None else root_gid,
        )
        self._debug = debug
        self._timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lines: IO[bytes] | None = None
        self._call_lock = threading.Lock()
        self.log_path: Path | None = None
        self.libfuse_version = ""
        self.pid = 0

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> PowerFS:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Mount; return once the file system answers."""
        if self._proc is not None:
            raise PowerFSError("already started")
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.mountpoint = self.mountpoint.resolve()
        ours, theirs = socket.socketpair()
        fd, log_name = tempfile.mkstemp(prefix="powerfs-", suffix=".log")
        self.log_path = Path(log_name)
        mode, uid, gid = self._root
        cmd = [
            sys.executable,
            "-m",
            "tests.faults._powerfs",
            "--control-fd",
            str(theirs.fileno()),
            "--libfuse",
            self._libfuse,
            "--root-mode",
            oct(mode)[2:],
            "--root-uid",
            str(uid),
            "--root-gid",
            str(gid),
            *(["--debug"] if self._debug else []),
            str(self.mountpoint),
        ]
        try:
            self._proc = subprocess.Popen(
                cmd,
                cwd=_REPO,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                pass_fds=(theirs.fileno(),),
            )
        finally:
            os.close(fd)
            theirs.close()
        self._sock = ours
        ours.settimeout(self._timeout)
        self._lines = ours.makefile("rb")
        try:
            hello = cast(dict[str, Any], self._receive())
            self.pid = int(hello["pid"])
            self.libfuse_version = str(hello["libfuse"])
            deadline = time.monotonic() + self._timeout
            while not is_mounted(self.mountpoint):
                if self._proc.poll() is not None:
                    raise PowerFSError(f"PowerFS exited before mounting: {self._log_tail()}")
                if time.monotonic() > deadline:
                    raise PowerFSError(f"PowerFS did not mount: {self._log_tail()}")
                time.sleep(0.01)
            os.stat(self.mountpoint)  # waits for FUSE_INIT to be answered
            self._call("ping")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Unmount and stop the child; afterwards nothing is mounted at the mount point."""
        proc, self._proc = self._proc, None
        if self._lines is not None:
            self._lines.close()
            self._lines = None
        if self._sock is not None:
            self._sock.close()  # the child unmounts and exits on EOF
            self._sock = None
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if is_mounted(self.mountpoint):
            for umount in (["umount", "-l"], ["fusermount3", "-uz"], ["fusermount", "-uz"]):
                if shutil.which(umount[0]) is None:
                    continue
                subprocess.run([*umount, str(self.mountpoint)], check=False, capture_output=True)
                if not is_mounted(self.mountpoint):
                    break
        if is_mounted(self.mountpoint):
            raise PowerFSError(f"could not unmount {self.mountpoint}")
        if proc is not None and proc.returncode == 0 and self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    # ------------------------------------------------------------ channel

    def _log_tail(self) -> str:
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def _receive(self) -> Any:
        assert self._lines is not None
        try:
            line = self._lines.readline()
        except OSError as exc:
            raise PowerFSError(f"PowerFS control channel: {exc}; {self._log_tail()}") from exc
        if not line:
            raise PowerFSError(f"PowerFS exited: {self._log_tail()}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise PowerFSError(answer["error"])
        return answer["result"]

    def _call(self, cmd: str, **args: Any) -> Any:
        with self._call_lock:
            if self._sock is None:
                raise PowerFSError("PowerFS is not running")
            self._sock.sendall(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
            return self._receive()

    # ------------------------------------------------------------ commands

    def path(self, relative: str = "") -> Path:
        """A path inside the mount."""
        return self.mountpoint / relative

    def crash(self, mode: CrashMode = "drop", seed: int = 0) -> CrashReport:
        """Cut the power now: every later operation fails with EIO until restart()."""
        return cast(CrashReport, self._call("crash", mode=mode, seed=seed))

    def restart(self) -> None:
        """Reboot: the post-crash state becomes the live (and durable) state."""
        self._call("restart")

    def arm(
        self,
        op: str,
        match: str = "",
        nth: int = 1,
        when: When = "before",
        *,
        mode: CrashMode = "drop",
        seed: int = 0,
    ) -> None:
        """Crash at the ``nth`` (from 1, counted from now) ``op`` whose path (``/a/b``;
        either path of a rename or link) contains ``match``: ``before`` it happens (it
        fails with EIO) or ``after`` it (it succeeds; the next operation gets EIO)."""
        self._call("arm", op=op, match=match, nth=nth, when=when, mode=mode, seed=seed)

    def disarm(self) -> None:
        self._call("disarm")

    def count(self, op: str, match: str = "") -> int:
        """How many ``op`` operations whose path contains ``match`` were attempted
        since the mount (to pick ``nth`` within a phase)."""
        return int(self._call("count", op=op, match=match))

    def fail(self, prefix: str, errno_name: str = "ENOSPC") -> None:
        """Make writes, creates, mkdirs, truncates, fsyncs, fsyncdirs, renames and links
        whose (new) path relative to the mount root starts with ``prefix`` fail with
        ``errno_name`` until cleared (``"logs/"`` for everything under ``logs``)."""
        self._call("fail", prefix=prefix, errno_name=errno_name)

    def clear_fail(self, prefix: str | None = None) -> None:
        self._call("clear_fail", prefix=prefix)

    def stats(self) -> Stats:
        return cast(Stats, self._call("stats"))

    def snapshot(self, state: SnapshotState = "live", *, dirs: bool = False) -> dict[str, bytes]:
        """The tree as {relative path: content}: ``live``, ``durable`` (what a drop
        crash now would leave) or ``pending`` (the post-crash state, before restart).
        With ``dirs``, directories appear as ``"name/": b""``."""
        tree = cast(dict[str, str], self._call("snapshot", state=state, dirs=dirs))
        return {k: base64.b64decode(v) for k, v in tree.items()}

    def preview(self, mode: CrashMode, seed: int = 0, *, dirs: bool = False) -> dict[str, bytes]:
        """What ``crash(mode, seed)`` would leave right now, without crashing."""
        tree = cast(dict[str, str], self._call("preview", mode=mode, seed=seed, dirs=dirs))
        return {k: base64.b64decode(v) for k, v in tree.items()}


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
