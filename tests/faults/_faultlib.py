"""Python side of ``faultinject.c``: build it, preload it into a child, steer it in-process.

Why: the audit log's promises (nothing acknowledged is lost, a broken disk degrades
loudly) are only worth something if they hold when ``write``, ``pwritev2``, ``fsync``,
``ftruncate``, ``rename`` or ``open`` fail the way a real disk makes them fail: EIO,
ENOSPC, EROFS, half a record written, data out but the sync lost. The C library wraps
those libc entry points via ``LD_PRELOAD`` and fails them deterministically (a seed and
the index of the call decide), only for files under the configured directories, so a
test can break the log directory while stdout, pipes and the venv keep working.

Typical use::

    spec = Spec(rate=0.2, seed=7, errnos=("EIO",), prefixes=(str(log_dir),))
    subprocess.run([sys.executable, "-c", code], env=preload_env(spec.render()), ...)

and, inside the preloaded process, ``FaultControl()`` to reconfigure, enable, disable
and read the counters of injected faults at run time.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "faultinject.c"
BUILD_DIR = HERE / ".build"

#: Call groups, in the order the library reports them.
GROUPS: tuple[str, ...] = (
    "write",
    "pwrite",
    "pwritev",
    "pwritev2",
    "fsync",
    "fdatasync",
    "ftruncate",
    "rename",
    "openat",
)
#: Errno names the library can inject.
ERRNOS: tuple[str, ...] = ("EIO", "ENOSPC", "EROFS", "EDQUOT", "EACCES", "EOPNOTSUPP")
#: What a failed write-family call leaves behind.
MODES: tuple[str, ...] = ("none", "part", "all")
#: Every wrapped libc symbol and its call group.
SYMBOLS: dict[str, str] = {
    "write": "write",
    "pwrite": "pwrite",
    "pwrite64": "pwrite",
    "pwritev": "pwritev",
    "pwritev64": "pwritev",
    "pwritev2": "pwritev2",
    "pwritev64v2": "pwritev2",
    "fsync": "fsync",
    "fdatasync": "fdatasync",
    "ftruncate": "ftruncate",
    "ftruncate64": "ftruncate",
    "rename": "rename",
    "renameat": "rename",
    "renameat2": "rename",
    "open": "openat",
    "open64": "openat",
    "openat": "openat",
    "openat64": "openat",
}

_GCC_TIMEOUT = 120


def library_path() -> Path:
    """The compiled library, built on first use into ``tests/faults/.build`` (git-ignored).

    The file name carries a hash of the source, so an edited ``faultinject.c`` is rebuilt
    and stale builds are never picked up. The build writes a temporary name and renames
    it, so concurrent test processes never load a half-written ``.so``.
    """
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:12]
    target = BUILD_DIR / f"faultinject-{digest}.so"
    if target.exists():
        return target
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("cannot build the fault-injection library: gcc is not on PATH")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    ignore = BUILD_DIR / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    fd, tmp_name = tempfile.mkstemp(prefix=f".faultinject-{digest}-", suffix=".so", dir=BUILD_DIR)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        proc = subprocess.run(
            [gcc, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(SOURCE), "-ldl", "-lpthread"],
            capture_output=True,
            text=True,
            timeout=_GCC_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"gcc failed to build {SOURCE.name} (exit {proc.returncode}):\n{proc.stderr}"
            )
        tmp.chmod(0o755)
        tmp.replace(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    # Builds of older sources: unlinking is safe even if a process still maps one.
    for stale in BUILD_DIR.glob("faultinject-*.so"):
        if stale != target:
            with contextlib.suppress(OSError):
                stale.unlink()
    return target


@dataclass(frozen=True)
class Spec:
    """A fault spec; ``render()`` gives the string ``RAFAULT_SPEC`` and ``configure`` take.

    Every field is rendered explicitly, so the library's own defaults never matter.
    ``max=None`` means unlimited.
    """

    seed: int = 0
    rate: float = 1.0
    burst: int = 0
    after: int = 0
    max: int | None = None
    calls: tuple[str, ...] = GROUPS
    errnos: tuple[str, ...] = ("EIO", "ENOSPC", "EROFS")
    modes: tuple[str, ...] = MODES
    prefixes: tuple[str, ...] = ()
    enabled: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must fit in 64 bits unsigned: {self.seed}")
        if not (math.isfinite(self.rate) and 0.0 <= self.rate <= 1.0):
            raise ValueError(f"rate must be within [0, 1]: {self.rate}")
        if self.burst < 0 or self.after < 0 or (self.max is not None and self.max < 0):
            raise ValueError("burst, after and max must not be negative")
        for name, given, known in (
            ("calls", self.calls, GROUPS),
            ("errnos", self.errnos, ERRNOS),
            ("modes", self.modes, MODES),
        ):
            if isinstance(given, str):
                raise TypeError(f"{name} must be a tuple of names, not a string")
            unknown = [g for g in given if g not in known]
            if unknown or not given:
                raise ValueError(f"{name} must be a non-empty subset of {known}: {given}")
        if isinstance(self.prefixes, str):
            raise TypeError("prefixes must be a tuple of directories, not a string")
        for prefix in self.prefixes:
            if not os.path.isabs(prefix) or any(c in prefix for c in ":;"):
                raise ValueError(f"a prefix must be absolute, without ':' or ';': {prefix!r}")

    def render(self) -> str:
        """The spec string, e.g. ``seed=1;rate=0.5;...;prefixes=/a:/b;enabled=1``."""
        parts = [
            f"seed={self.seed}",
            f"rate={self.rate!r}",
            f"burst={self.burst}",
            f"after={self.after}",
            f"max={-1 if self.max is None else self.max}",
            f"calls={','.join(self.calls)}",
            f"errnos={','.join(self.errnos)}",
            f"modes={','.join(self.modes)}",
            f"prefixes={':'.join(self.prefixes)}",
            f"enabled={int(self.enabled)}",
        ]
        return ";".join(parts)


def preload_env(spec: str | Spec, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) that preloads the library with ``spec``.

    The library is prepended to any ``LD_PRELOAD`` already there.
    """
    out = dict(os.environ if env is None else env)
    lib = str(library_path())
    existing = out.get("LD_PRELOAD", "").strip()
    out["LD_PRELOAD"] = f"{lib} {existing}" if existing else lib
    out["RAFAULT_SPEC"] = spec.render() if isinstance(spec, Spec) else spec
    return out


def _loaded_copies() -> list[Path]:
    """Fault-injection libraries mapped into this process, per ``/proc/self/maps``."""
    found: list[Path] = []
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return found
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6:
            continue
        path = Path(fields[5].strip())
        if path.name.startswith("faultinject") and path.suffix == ".so" and path not in found:
            found.append(path)
    return found


class FaultControl:
    """Run-time control of the library preloaded into *this* process.

    ``ctypes.CDLL`` on the already-loaded file returns the same copy the wrappers use; a
    second, separately loaded copy would have its own state and control nothing, so
    construction refuses unless the library is already mapped.
    """

    def __init__(self, path: Path | None = None) -> None:
        loaded = _loaded_copies()
        if path is None:
            if not loaded:
                raise RuntimeError(
                    "the fault-injection library is not loaded in this process "
                    "(start it with preload_env(...) so LD_PRELOAD carries it)"
                )
            path = loaded[0]
        elif path.resolve() not in {p.resolve() for p in loaded}:
            raise RuntimeError(f"{path} is not loaded in this process (LD_PRELOAD it)")
        self.path = path
        lib = ctypes.CDLL(str(path))
        lib.rafault_configure.argtypes = [ctypes.c_char_p]
        lib.rafault_configure.restype = ctypes.c_int
        lib.rafault_enable.argtypes = [ctypes.c_int]
        lib.rafault_enable.restype = None
        lib.rafault_stats.argtypes = [ctypes.c_char_p, ctypes.c_long]
        lib.rafault_stats.restype = ctypes.c_long
        lib.rafault_calls.argtypes = [ctypes.c_char_p, ctypes.c_long]
        lib.rafault_calls.restype = ctypes.c_long
        lib.rafault_reset_stats.argtypes = []
        lib.rafault_reset_stats.restype = None
        self._lib = lib

    def configure(self, spec: str | Spec) -> None:
        """Replace the spec; the decision sequence (after, burst, max) restarts at call 0."""
        text = spec.render() if isinstance(spec, Spec) else spec
        if self._lib.rafault_configure(text.encode()) != 0:
            raise ValueError(f"the library rejected the spec: {text!r}")

    def enable(self) -> None:
        """Inject again, with the current spec (the sequence carries on)."""
        self._lib.rafault_enable(1)

    def disable(self) -> None:
        """Stop injecting; calls pass through and are not counted as eligible."""
        self._lib.rafault_enable(0)

    def _text(self, name: str) -> str:
        fn = getattr(self._lib, name)
        size = 4096
        while True:
            buf = ctypes.create_string_buffer(size)
            needed = int(fn(buf, size))
            if needed < size:
                return buf.value.decode()
            size = needed + 1

    def _lines(self, name: str) -> list[list[str]]:
        return [line.split() for line in self._text(name).splitlines() if line.strip()]

    def stats(self) -> dict[tuple[str, str], int]:
        """Injected faults since the last ``reset()``, by (call group, errno name)."""
        return {(f[0], f[1]): int(f[2]) for f in self._lines("rafault_stats") if len(f) == 3}

    def eligible(self) -> int:
        """Eligible calls (enabled, group selected, path under a prefix) since ``reset()``."""
        for fields in self._lines("rafault_stats"):
            if len(fields) == 2 and fields[0] == "eligible":
                return int(fields[1])
        raise RuntimeError("the library's stats have no eligible line")

    def calls(self) -> dict[str, int]:
        """Eligible calls since ``reset()`` by libc symbol (``open64``, ``pwritev64v2``...)."""
        return {f[0]: int(f[1]) for f in self._lines("rafault_calls") if len(f) == 2}

    def faults(self) -> int:
        """Total injected faults since ``reset()``."""
        return sum(self.stats().values())

    def reset(self) -> None:
        """Zero the counters (the spec and the decision sequence are kept)."""
        self._lib.rafault_reset_stats()
