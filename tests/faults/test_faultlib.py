"""The LD_PRELOAD fault-injection library does what the fault tests rely on.

Every check runs in a child Python started with ``preload_env(...)``: the wrappers only
intercept when the library is preloaded. The child prints one JSON line; the test
asserts on it. Without gcc the module skips (fails under ``CI=true``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.faults._faultlib import (
    BUILD_DIR,
    GROUPS,
    SYMBOLS,
    FaultControl,
    Spec,
    library_path,
    preload_env,
)
from tests.helpers import require

ROOT = Path(__file__).resolve().parents[2]

# Shared by every child: attempt() turns an OSError into its errno name.
PRELUDE = """
import dataclasses, errno, json, os, sys, threading
from pathlib import Path
from tests.faults._faultlib import FaultControl, Spec

def attempt(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"

def emit(**fields):
    print(json.dumps(fields), flush=True)

INSIDE, OUTSIDE = Path(sys.argv[1]), Path(sys.argv[2])
"""


@pytest.fixture(scope="module", autouse=True)
def built_library() -> Path:
    require(sys.platform.startswith("linux"), "LD_PRELOAD fault injection needs Linux/glibc")
    require(shutil.which("gcc") is not None, "gcc is needed to build tests/faults/faultinject.c")
    return library_path()


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """The faulted directory and a sibling whose name shares its prefix ("inside2")."""
    inside, outside = tmp_path / "inside", tmp_path / "inside2"
    inside.mkdir()
    outside.mkdir()
    return inside, outside


def with_prefix(spec: Spec, *prefixes: Path) -> Spec:
    return dataclasses.replace(spec, prefixes=tuple(str(p) for p in prefixes))


def run_child(
    code: str,
    spec: str | Spec,
    dirs: tuple[Path, Path],
    *,
    cwd: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    env = preload_env(spec)
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("RAFAULT_LOG", None)
    env.update(extra_env or {})
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), str(dirs[0]), str(dirs[1])],
        env=env,
        cwd=cwd or dirs[0].parent,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"child printed nothing:\n{proc.stderr}"
    return dict(json.loads(lines[-1])), proc


def test_write_fails_under_prefix_only(dirs: tuple[Path, Path]) -> None:
    """os.write fails with the set errno under the prefix; a sibling dir, pipe, stdout do not."""
    spec = Spec(rate=1.0, calls=("write",), errnos=("ENOSPC",), modes=("none",))
    result, _ = run_child(
        """
        fin = os.open(INSIDE / "log", os.O_CREAT | os.O_WRONLY)
        fout = os.open(OUTSIDE / "log", os.O_CREAT | os.O_WRONLY)
        r, w = os.pipe()
        emit(
            inside=[attempt(os.write, fin, b"record\\n") for _ in range(3)],
            outside=[attempt(os.write, fout, b"record\\n") for _ in range(3)],
            pipe=attempt(os.write, w, b"x"),
            inside_bytes=(INSIDE / "log").read_bytes().decode(),
            outside_bytes=(OUTSIDE / "log").read_bytes().decode(),
            stats={f"{g} {e}": n for (g, e), n in FaultControl().stats().items()},
        )
        """,
        with_prefix(spec, dirs[0]),
        dirs,
    )
    assert result["inside"] == ["ENOSPC"] * 3
    assert result["outside"] == ["ok"] * 3
    assert result["pipe"] == "ok"
    assert result["inside_bytes"] == ""
    assert result["outside_bytes"] == "record\n" * 3
    assert result["stats"] == {"write ENOSPC": 3}


@pytest.mark.parametrize("mode", ["none", "part", "all"])
def test_pwritev_dsync_modes(dirs: tuple[Path, Path], mode: str) -> None:
    """pwritev+RWF_DSYNC fails as pwritev2; none/part/all leave nothing/a strict prefix/all."""
    spec = with_prefix(Spec(calls=("pwritev2",), errnos=("EIO",), modes=(mode,)), dirs[0])
    result, _ = run_child(
        """
        ctl = FaultControl()
        path = INSIDE / "seg"
        lengths, outcomes = [], []
        for seed in range(12):
            ctl.configure(dataclasses.replace(SPEC, seed=seed))
            path.write_bytes(b"")
            fd = os.open(path, os.O_WRONLY)
            outcomes.append(attempt(os.pwritev, fd, [b"hello ", b"wor", b"ld!"], 0, os.RWF_DSYNC))
            os.close(fd)
            data = path.read_bytes()
            assert b"hello world!".startswith(data), data
            lengths.append(len(data))
        stats = [list(k) + [v] for k, v in ctl.stats().items()]
        emit(outcomes=outcomes, lengths=lengths, stats=stats)
        """.replace("SPEC", repr(spec)),
        spec,
        dirs,
    )
    assert result["outcomes"] == ["EIO"] * 12
    assert result["stats"] == [["pwritev2", "EIO", 12]]
    lengths = result["lengths"]
    if mode == "none":
        assert set(lengths) == {0}
    elif mode == "all":
        assert set(lengths) == {12}
    else:
        assert all(0 < n < 12 for n in lengths)
        assert len(set(lengths)) > 1, "the partial length should depend on the seed"


def test_every_call_group_fails_and_does_nothing(dirs: tuple[Path, Path]) -> None:
    """Sync, truncate, rename and writing opens fail doing nothing; read-only opens never fail."""
    spec = with_prefix(Spec(errnos=("EROFS",), modes=("none",), enabled=False), dirs[0])
    result, _ = run_child(
        """
        ctl = FaultControl()
        (INSIDE / "a").write_bytes(b"0123456789")
        (INSIDE / "sub").mkdir()
        fd = os.open(INSIDE / "a", os.O_RDWR)
        dfd = os.open(INSIDE, os.O_RDONLY)
        os.chdir(INSIDE / "sub")
        ctl.enable()
        out = {
            "fsync": attempt(os.fsync, fd),
            "fdatasync": attempt(os.fdatasync, fd),
            "ftruncate": attempt(os.ftruncate, fd, 2),
            "rename": attempt(os.rename, INSIDE / "a", INSIDE / "b"),
            "replace": attempt(os.replace, INSIDE / "a", INSIDE / "b"),
            "rename_dirfd": attempt(os.rename, "a", "b", src_dir_fd=dfd, dst_dir_fd=dfd),
            "rename_into": attempt(os.rename, OUTSIDE / "nothing", INSIDE / "b"),
            "creat": attempt(os.open, INSIDE / "new", os.O_CREAT | os.O_WRONLY, 0o644),
            "creat_relative": attempt(os.open, "../new", os.O_CREAT | os.O_WRONLY),
            "creat_dirfd": attempt(os.open, "new", os.O_CREAT | os.O_WRONLY, dir_fd=dfd),
            "wronly": attempt(os.open, INSIDE / "a", os.O_WRONLY),
            "append": attempt(os.open, INSIDE / "a", os.O_RDONLY | os.O_APPEND),
            "trunc": attempt(os.open, INSIDE / "a", os.O_RDONLY | os.O_TRUNC),
            "builtin_open_w": attempt(open, INSIDE / "new", "w"),
            "rdonly": attempt(os.open, INSIDE / "a", os.O_RDONLY),
            "rdonly_relative": attempt(os.open, "../a", os.O_RDONLY),
            "builtin_open_r": attempt(open, INSIDE / "a"),
            "creat_outside_relative": attempt(
                os.open, "../../inside2/new", os.O_CREAT | os.O_WRONLY
            ),
        }
        ctl.disable()
        emit(
            out=out,
            content=(INSIDE / "a").read_bytes().decode(),
            names=sorted(p.name for p in INSIDE.iterdir()),
            outside=sorted(p.name for p in OUTSIDE.iterdir()),
            groups=sorted({g for g, _ in ctl.stats()}),
        )
        """,
        spec,
        dirs,
    )
    out = result["out"]
    never = {"rdonly", "rdonly_relative", "builtin_open_r", "creat_outside_relative"}
    assert {k: v for k, v in out.items() if k in never} == dict.fromkeys(never, "ok")
    assert {k: v for k, v in out.items() if k not in never} == {
        k: "EROFS" for k in out if k not in never
    }
    assert result["content"] == "0123456789"  # ftruncate did nothing
    assert result["names"] == ["a", "sub"]  # no rename, no create
    assert result["outside"] == ["new"]
    assert result["groups"] == sorted({"fsync", "fdatasync", "ftruncate", "rename", "openat"})


def test_python_calls_reach_the_expected_symbols(dirs: tuple[Path, Path]) -> None:
    """Each os.* call the writer uses reaches a wrapped symbol of the right group, exactly once."""
    spec = with_prefix(Spec(rate=0.0), dirs[0])
    result, _ = run_child(
        """
        ctl = FaultControl()
        seen = {}
        def step(name, fn, *args, **kwargs):
            ctl.reset()
            fn(*args, **kwargs)
            seen[name] = ctl.calls()
        step("os.open", os.open, INSIDE / "a", os.O_CREAT | os.O_WRONLY)
        fd = os.open(INSIDE / "a", os.O_RDWR)
        dfd = os.open(INSIDE, os.O_RDONLY)
        step("os.write", os.write, fd, b"x")
        step("os.pwrite", os.pwrite, fd, b"x", 0)
        step("os.pwritev+RWF_DSYNC", os.pwritev, fd, [b"x"], 0, os.RWF_DSYNC)
        step("os.fsync", os.fsync, fd)
        step("os.fdatasync", os.fdatasync, fd)
        step("os.ftruncate", os.ftruncate, fd, 0)
        step("os.rename", os.rename, INSIDE / "a", INSIDE / "b")
        step("os.replace", os.replace, INSIDE / "b", INSIDE / "a")
        step("os.rename(dir_fd)", os.rename, "a", "b", src_dir_fd=dfd, dst_dir_fd=dfd)
        step("os.open(dir_fd)", os.open, "c", os.O_CREAT | os.O_WRONLY, dir_fd=dfd)
        step("open(w)", open, INSIDE / "d", "w")
        emit(seen=seen)
        """,
        spec,
        dirs,
    )
    expected = {
        "os.open": "openat",
        "os.write": "write",
        "os.pwrite": "pwrite",
        "os.pwritev+RWF_DSYNC": "pwritev2",
        "os.fsync": "fsync",
        "os.fdatasync": "fdatasync",
        "os.ftruncate": "ftruncate",
        "os.rename": "rename",
        "os.replace": "rename",
        "os.rename(dir_fd)": "rename",
        "os.open(dir_fd)": "openat",
        "open(w)": "openat",
    }
    seen: dict[str, dict[str, int]] = result["seen"]
    print("libc symbols reached:", {k: sorted(v) for k, v in seen.items()})
    for call, group in expected.items():
        assert sum(seen[call].values()) == 1, (call, seen[call])
        assert [SYMBOLS[s] for s in seen[call]] == [group], (call, seen[call])


def test_every_wrapped_symbol_fails_when_called_directly(dirs: tuple[Path, Path]) -> None:
    """All 18 wrapped libc symbols, called through ctypes, fail with the errno and do nothing."""
    spec = with_prefix(Spec(errnos=("EIO",), modes=("none",), enabled=False), dirs[0])
    result, _ = run_child(
        """
        import ctypes
        class Iovec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
        libc = ctypes.CDLL(None, use_errno=True)
        ctl = FaultControl()
        (INSIDE / "a").write_bytes(b"0123")
        fd = os.open(INSIDE / "a", os.O_RDWR)
        dfd = os.open(INSIDE, os.O_RDONLY)
        data = ctypes.create_string_buffer(b"xy")
        iov = Iovec(ctypes.cast(data, ctypes.c_void_p), 2)
        a, b, n = (bytes(INSIDE / x) for x in ("a", "b", "n"))
        off = ctypes.c_long(0)
        creat = os.O_CREAT | os.O_WRONLY
        calls = {
            "write": (fd, data, 2),
            "pwrite": (fd, data, 2, off),
            "pwrite64": (fd, data, 2, off),
            "pwritev": (fd, ctypes.byref(iov), 1, off),
            "pwritev64": (fd, ctypes.byref(iov), 1, off),
            "pwritev2": (fd, ctypes.byref(iov), 1, off, 0),
            "pwritev64v2": (fd, ctypes.byref(iov), 1, off, 0),
            "fsync": (fd,),
            "fdatasync": (fd,),
            "ftruncate": (fd, off),
            "ftruncate64": (fd, off),
            "rename": (a, b),
            "renameat": (dfd, b"a", dfd, b"b"),
            "renameat2": (dfd, b"a", dfd, b"b", 0),
            "open": (n, creat, 0o644),
            "open64": (n, creat, 0o644),
            "openat": (dfd, b"n", creat, 0o644),
            "openat64": (dfd, b"n", creat, 0o644),
        }
        ctl.enable()
        out = {}
        for name, args in calls.items():
            ctl.reset()
            ctypes.set_errno(0)
            rc = getattr(libc, name)(*args)
            out[name] = [rc, errno.errorcode.get(ctypes.get_errno(), "0"), ctl.calls()]
        ctl.disable()
        emit(out=out, names=sorted(p.name for p in INSIDE.iterdir()),
             content=(INSIDE / "a").read_bytes().decode())
        """,
        spec,
        dirs,
    )
    assert result["out"] == {name: [-1, "EIO", {name: 1}] for name in SYMBOLS}
    assert result["names"] == ["a"]
    assert result["content"] == "0123"


def test_open_mode_argument_passes_through(dirs: tuple[Path, Path]) -> None:
    """The variadic mode of open/openat with O_CREAT and O_TMPFILE reaches the kernel intact."""
    spec = with_prefix(Spec(rate=0.0), dirs[0])
    result, _ = run_child(
        """
        os.umask(0)
        dfd = os.open(INSIDE, os.O_RDONLY)
        a = os.open(INSIDE / "a", os.O_CREAT | os.O_WRONLY, 0o604)
        b = os.open("b", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o611, dir_fd=dfd)
        t = os.open(INSIDE, os.O_TMPFILE | os.O_WRONLY, 0o640)
        emit(modes=[oct(os.fstat(fd).st_mode & 0o7777) for fd in (a, b, t)])
        """,
        spec,
        dirs,
    )
    assert result["modes"] == ["0o604", "0o611", "0o640"]


def write_pattern_code(n: int) -> str:
    return f"""
        fd = os.open(INSIDE / "log", os.O_CREAT | os.O_WRONLY)
        def pattern(spec=None):
            if spec is not None:
                FaultControl().configure(spec)
            return "".join("." if attempt(os.write, fd, b"x") == "ok" else "E" for _ in range({n}))
        """


def test_same_seed_same_decisions(dirs: tuple[Path, Path]) -> None:
    """Same seed and calls give the same faults (across processes, on configure); seeds differ."""
    code = write_pattern_code(200) + "emit(first=pattern(), again=pattern(SPEC_AGAIN))"

    def spec(seed: int) -> Spec:
        return with_prefix(Spec(seed=seed, rate=0.5, calls=("write",), errnos=("EIO",)), dirs[0])

    code = code.replace("SPEC_AGAIN", repr(spec(1).render()))
    one, _ = run_child(code, spec(1), dirs)
    one_again, _ = run_child(code, spec(1), dirs)
    two, _ = run_child(code, spec(2), dirs)
    assert one["first"] == one_again["first"] == one["again"] == two["again"]
    assert two["first"] != one["first"]
    for pattern in (one["first"], two["first"]):
        assert 60 < pattern.count("E") < 140, pattern


def expected_pattern(raw: str, *, after: int, burst: int, most: int | None) -> str:
    """after/burst/max as specified, applied to the burst-free decisions ``raw``."""
    out, left, faults = [], 0, 0
    for i, hit in enumerate(raw):
        if i < after or (most is not None and faults >= most):
            fail = False
        elif left > 0:
            fail, left = True, left - 1
        elif hit == "E":
            fail, left = True, burst
        else:
            fail = False
        faults += fail
        out.append("E" if fail else ".")
    return "".join(out)


def test_after_burst_max(dirs: tuple[Path, Path]) -> None:
    """after spares the first calls, burst extends a fault to the next calls, max caps the total."""
    base = with_prefix(Spec(seed=11, rate=0.05, calls=("write",), errnos=("EIO",)), dirs[0])
    variants = {
        "raw": base,
        "burst": dataclasses.replace(base, burst=4),
        "after": dataclasses.replace(base, after=100, burst=2),
        "max": dataclasses.replace(base, max=7, burst=3),
        "all_after": dataclasses.replace(base, rate=1.0, after=5),
        "all_max": dataclasses.replace(base, rate=1.0, max=3),
        "all_after_max": dataclasses.replace(base, rate=1.0, after=2, max=3),
    }
    code = write_pattern_code(300) + "emit(**{k: pattern(v) for k, v in VARIANTS.items()})"
    code = code.replace("VARIANTS", repr({k: v.render() for k, v in variants.items()}))
    got, _ = run_child(code, base, dirs)
    raw = got["raw"]
    assert 5 <= raw.count("E") <= 30, raw
    assert got["burst"] == expected_pattern(raw, after=0, burst=4, most=None)
    assert got["burst"].count("E") > raw.count("E")
    assert "EEEEE" in got["burst"]
    assert got["after"] == expected_pattern(raw, after=100, burst=2, most=None)
    assert "E" not in got["after"][:100]
    assert got["max"] == expected_pattern(raw, after=0, burst=3, most=7)
    assert got["max"].count("E") == 7
    assert got["all_after"] == "." * 5 + "E" * 295
    assert got["all_max"] == "E" * 3 + "." * 297
    assert got["all_after_max"] == ".." + "EEE" + "." * 295


def test_fault_control_at_run_time(dirs: tuple[Path, Path]) -> None:
    """FaultControl enables, disables, reconfigures at run time; stats match the faults seen."""
    spec = with_prefix(
        Spec(calls=("write",), errnos=("EIO",), modes=("none",), enabled=False), dirs[0]
    )
    fsync_spec = with_prefix(Spec(calls=("fsync",), errnos=("ENOSPC",)), dirs[0])
    result, _ = run_child(
        f"""
        ctl = FaultControl()
        fd = os.open(INSIDE / "log", os.O_CREAT | os.O_WRONLY)
        seen = [attempt(os.write, fd, b"a")]
        eligible_disabled = ctl.eligible()
        ctl.enable()
        seen += [attempt(os.write, fd, b"b") for _ in range(3)]
        ctl.disable()
        seen.append(attempt(os.write, fd, b"c"))
        ctl.configure({fsync_spec.render()!r})
        seen += [attempt(os.write, fd, b"d"), attempt(os.fsync, fd), attempt(os.fsync, fd)]
        stats = {{f"{{g}} {{e}}": n for (g, e), n in ctl.stats().items()}}
        eligible = ctl.eligible()
        try:
            ctl.configure("rate=7")
            bad = "accepted"
        except ValueError:
            bad = "rejected"
        ctl.reset()
        emit(seen=seen, eligible_disabled=eligible_disabled, stats=stats, eligible=eligible,
             bad=bad, after_reset=[ctl.stats(), ctl.eligible()], faults=ctl.faults(),
             content=(INSIDE / "log").read_bytes().decode())
        """,
        spec,
        dirs,
    )
    assert result["seen"] == ["ok", "EIO", "EIO", "EIO", "ok", "ok", "ENOSPC", "ENOSPC"]
    assert result["eligible_disabled"] == 0
    assert result["stats"] == {"write EIO": 3, "fsync ENOSPC": 2}
    assert result["eligible"] == 5
    assert result["bad"] == "rejected"
    assert result["after_reset"] == [{}, 0]
    assert result["faults"] == 0
    assert result["content"] == "acd"


def test_fault_control_refuses_without_preload() -> None:
    """FaultControl raises in a process without the preloaded library, not steering a dead copy."""
    with pytest.raises(RuntimeError, match="not loaded"):
        FaultControl()
    with pytest.raises(RuntimeError, match="not loaded"):
        FaultControl(library_path())


def test_four_threads_concurrently(dirs: tuple[Path, Path]) -> None:
    """4 threads writing and syncing at once: no crash, errors add up to the counters, max holds."""
    spec = with_prefix(Spec(seed=5, rate=0.3, calls=("write", "fsync"), errnos=("EIO",)), dirs[0])
    capped = with_prefix(Spec(rate=1.0, max=100, calls=("write",)), dirs[0])
    result, _ = run_child(
        f"""
        ctl = FaultControl()
        def run(n, results):
            fd = os.open(INSIDE / f"t{{n}}", os.O_CREAT | os.O_WRONLY)
            ok = failed = 0
            for i in range(400):
                outcome = attempt(os.fsync, fd) if i % 10 == 0 else attempt(os.write, fd, b"x")
                if outcome == "ok":
                    ok += 1
                else:
                    failed += 1
            results.append((ok, failed))
        def wave():
            results = []
            threads = [threading.Thread(target=run, args=(n, results)) for n in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return results
        first = wave()
        stats1, eligible1 = sum(ctl.stats().values()), ctl.eligible()
        ctl.configure({capped.render()!r})
        ctl.reset()
        second = wave()
        emit(first=first, stats1=stats1, eligible1=eligible1,
             second=second, stats2=sum(ctl.stats().values()), eligible2=ctl.eligible())
        """,
        spec,
        dirs,
    )
    failed1 = sum(f for _, f in result["first"])
    assert len(result["first"]) == 4
    assert result["eligible1"] == 1600
    assert failed1 == result["stats1"]
    assert 300 < failed1 < 700
    failed2 = sum(f for _, f in result["second"])
    assert failed2 == result["stats2"] == 100
    assert result["eligible2"] == 1440  # the fsyncs (40 a thread) are not eligible now


def test_bad_spec_in_environment_warns_and_injects_nothing(dirs: tuple[Path, Path]) -> None:
    """A malformed RAFAULT_SPEC is reported on stderr and leaves every call alone."""
    result, proc = run_child(
        """
        fd = os.open(INSIDE / "log", os.O_CREAT | os.O_WRONLY)
        emit(write=attempt(os.write, fd, b"x"), fsync=attempt(os.fsync, fd))
        """,
        f"rate=1;prefixes={dirs[0]};calls=write,bogus",
        dirs,
    )
    assert result == {"write": "ok", "fsync": "ok"}
    assert "bad RAFAULT_SPEC" in proc.stderr


def test_fault_log_records_each_fault(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """RAFAULT_LOG gets one 'group errno mode path' line per injected fault."""
    log = tmp_path / "faults.log"
    spec = with_prefix(Spec(calls=("write", "rename"), errnos=("EIO",), modes=("none",)), dirs[0])
    run_child(
        """
        fd = os.open(INSIDE / "seg", os.O_CREAT | os.O_WRONLY)
        attempt(os.write, fd, b"x")
        attempt(os.rename, OUTSIDE / "x", INSIDE / "y")
        emit()
        """,
        spec,
        dirs,
        extra_env={"RAFAULT_LOG": str(log)},
    )
    inside = dirs[0].resolve()
    assert log.read_text().splitlines() == [
        f"write EIO none {inside / 'seg'}",
        f"rename EIO none {inside / 'y'}",
    ]


def test_spec_render_and_validation() -> None:
    """Spec renders every field explicitly and rejects values the library would reject."""
    spec = Spec(seed=3, rate=0.25, burst=2, after=1, max=4, calls=("write", "fsync"))
    assert spec.render() == (
        "seed=3;rate=0.25;burst=2;after=1;max=4;calls=write,fsync;errnos=EIO,ENOSPC,EROFS;"
        "modes=none,part,all;prefixes=;enabled=1"
    )
    assert Spec().render().startswith("seed=0;rate=1.0;burst=0;after=0;max=-1;")
    assert f"calls={','.join(GROUPS)};" in Spec().render()
    for bad in ({"rate": 1.5}, {"calls": ("nope",)}, {"prefixes": ("relative",)}, {"max": -1}):
        with pytest.raises(ValueError):
            Spec(**bad)


def test_preload_env_and_build_cache() -> None:
    """preload_env prepends to LD_PRELOAD, input untouched; the build is cached and git-ignored."""
    base = {"LD_PRELOAD": "/other.so", "PATH": os.environ.get("PATH", "")}
    env = preload_env("rate=0", base)
    lib = library_path()
    assert env["LD_PRELOAD"] == f"{lib} /other.so"
    assert env["RAFAULT_SPEC"] == "rate=0"
    assert base["LD_PRELOAD"] == "/other.so"
    assert library_path() == lib
    assert lib.parent == BUILD_DIR
    assert (BUILD_DIR / ".gitignore").read_text() == "*\n"


def test_the_native_commit_goes_through_the_library(dirs: tuple[Path, Path]) -> None:
    """The core's commit (riskaudit._native.write_durably: pwritev2 with RWF_DSYNC, from
    Rust through the C library) is intercepted like Python's own calls: under the
    prefix it fails with the set errno and writes nothing, counted as pwritev2; outside
    it writes."""
    spec = with_prefix(Spec(calls=("pwritev2",), errnos=("EIO",), modes=("none",)), dirs[0])
    result, _ = run_child(
        """
        from riskaudit._native import write_durably
        fin = os.open(INSIDE / "seg", os.O_CREAT | os.O_WRONLY)
        fout = os.open(OUTSIDE / "seg", os.O_CREAT | os.O_WRONLY)
        emit(
            inside=attempt(write_durably, fin, [b"hello ", b"world"], 0, True),
            outside=attempt(write_durably, fout, [b"hello ", b"world"], 0, True),
            inside_bytes=(INSIDE / "seg").read_bytes().decode(),
            outside_bytes=(OUTSIDE / "seg").read_bytes().decode(),
            stats=[list(k) + [v] for k, v in FaultControl().stats().items()],
        )
        """,
        spec,
        dirs,
    )
    assert result["inside"] == "EIO"
    assert result["outside"] == "ok"
    assert result["inside_bytes"] == ""
    assert result["outside_bytes"] == "hello world"
    assert result["stats"] == [["pwritev2", "EIO", 1]]


def test_the_core_turns_fall_back_where_dsync_is_refused(dirs: tuple[Path, Path]) -> None:
    """Where the file system refuses RWF_DSYNC (EOPNOTSUPP), the core's commit turn
    writes the batch plainly and fsyncs it: the turn is committed, not failed, and the
    next turn does the same without asking again."""
    spec = with_prefix(
        Spec(calls=("pwritev2",), errnos=("EOPNOTSUPP",), modes=("none",), max=1), dirs[0]
    )
    result, _ = run_child(
        """
        import time
        from riskaudit._native import Queue, Watermark, commit_turns
        ZERO = b"0" * 64
        q, wm = Queue(1, 1), Watermark(0)
        fd = os.open(INSIDE / "log", os.O_CREAT | os.O_RDWR)
        def turn(prev, offset):
            return commit_turns(q, wm, None, prev, 1 << 20, fd, offset, 0.0,
                                time.monotonic() + 5, 1, 0, 0)
        q.push(b'"event_id":"a"', 10, 1000)
        prev, offset, turns1, pending1 = turn(ZERO, 0)
        q.push(b'"event_id":"b"', 10, 1000)
        prev, offset, turns2, pending2 = turn(prev, offset)
        emit(
            turns=[len(turns1), len(turns2)],
            pending=[pending1, pending2],
            lines=(INSIDE / "log").read_bytes().count(b"\\n"),
            offset=offset,
            durable=wm.durable,
            stats=[list(k) + [v] for k, v in FaultControl().stats().items()],
        )
        """,
        spec,
        dirs,
    )
    assert result["turns"] == [1, 1] and result["pending"] == [None, None]
    assert (result["lines"], result["durable"]) == (2, 2)
    assert result["stats"] == [["pwritev2", "EOPNOTSUPP", 1]]


def test_a_failed_turn_comes_back_to_python(dirs: tuple[Path, Path]) -> None:
    """An EIO from the core's pwritev2 comes back as FAILED with errno 5 and nothing
    marked durable: the Python writer then poisons the file and falls back."""
    spec = with_prefix(Spec(calls=("pwritev2",), errnos=("EIO",), modes=("part",)), dirs[0])
    result, _ = run_child(
        """
        import time
        from riskaudit._native import FAILED, Queue, Watermark, commit_turns
        q, wm = Queue(1, 1), Watermark(0)
        fd = os.open(INSIDE / "log", os.O_CREAT | os.O_RDWR)
        q.push(b'"event_id":"a"', 10, 1000)
        _prev, offset, turns, pending = commit_turns(
            q, wm, None, b"0" * 64, 1 << 20, fd, 0, 0.0, time.monotonic() + 5, 1, 0, 0)
        emit(status=[pending[0] == FAILED, pending[1]], turns=len(turns), offset=offset,
             handled=wm.handled)
        """,
        spec,
        dirs,
    )
    assert result == {"status": [True, 5], "turns": 0, "offset": 0, "handled": 0}


def test_a_turn_failing_after_turns_of_the_same_call_loses_nothing(
    dirs: tuple[Path, Path],
) -> None:
    """The core's call commits turn after turn, then a write fails part-way: the turns
    before it stay booked, the failed batch and what follows go to the spool (replayed
    into the primary when it is back, at the latest by the next open), and every event
    is in the stream once, the chain valid."""
    from riskaudit import AuditConfig, AuditLog, verify_paths
    from tests.helpers import stream_event_ids, synced_clock

    spec = with_prefix(
        Spec(calls=("pwritev2",), errnos=("EIO",), modes=("part",), after=4, max=1), dirs[0]
    )
    result, _ = run_child(
        """
        import riskaudit.log._writer as writer
        from riskaudit import AuditConfig, AuditLog
        from tests.helpers import event
        calls = []
        real = writer.commit_turns
        def counted(*args):
            out = real(*args)
            calls.append([len(out[2]), None if out[3] is None else out[3][0]])
            return out
        writer.commit_turns = counted
        log = AuditLog(AuditConfig(log_path=INSIDE / "log.jsonl", spool_dir=OUTSIDE / "spool",
                                   retry_max=0.05))
        ids = []
        for burst in range(8):
            for i in range(10):
                e = event(burst * 10 + i)
                ids.append(e.event_id)
                log.append(e)
            log.flush()
        log.close()
        emit(calls=calls, ids=ids, stats=[list(k) + [v] for k, v in FaultControl().stats().items()])
        """,
        spec,
        dirs,
    )
    from riskaudit._native import FAILED

    assert result["stats"] == [["pwritev2", "EIO", 1]]
    assert any(turns >= 1 and status == FAILED for turns, status in result["calls"]), result
    # What the spool still holds (the primary may not have come back before close) is
    # replayed by the next open.
    AuditLog(
        AuditConfig(log_path=dirs[0] / "log.jsonl", spool_dir=dirs[1] / "spool"), clock=synced_clock
    ).close()
    assert verify_paths([dirs[0]]).valid
    assert stream_event_ids(dirs[0]) == result["ids"]
