"""Failing system calls, seeded: no confirmed event lost, none duplicated, verify valid.

Our LD_PRELOAD library (``faultinject.c``) fails ``write``, ``pwritev2``, ``fsync``,
``ftruncate``, ``rename`` and ``open`` with EIO/ENOSPC/EROFS — a failed write leaving
nothing, part or all of its bytes — only under the log and spool directories of a real
writer process. Each seed decides the run's shape (spool or not, 1 or 4 producers,
``flush()`` or ``durable=True`` confirmation, ``pwritev2(RWF_DSYNC)`` or write + fsync,
built-in rotation or not) and its fault schedule; ``_syscall_worker.py`` says what one
run does. ``make test`` runs 200 seeds; ``make soak`` runs more, from a random base that
it prints (``RISKAUDIT_SOAK_SEED=N make soak`` replays it).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.faults._faultlib import Spec, library_path, preload_env
from tests.faults._orchestrate import ROOT, SRC
from tests.faults._syscall_worker import MIN_CONFIRMED, TARGETED
from tests.helpers import require

#: Rows for the terminal summary (docs/reliability.md quotes them).
TABLE: list[str] = []
WORKERS = 2


def _scratch() -> Path:
    """tmpfs when there is one: the faults come from the library, not the disk, and a
    run's thousands of syncs then cost nothing."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="riskaudit-syscall-", dir=base))


def run_seeds(seeds: list[int]) -> list[dict[str, Any]]:
    """Run the seeds in WORKERS preloaded processes; their results, one per seed."""
    try:
        lib = library_path()
    except RuntimeError as exc:
        require(False, f"cannot build the fault library: {exc}")
        raise
    work = _scratch()
    env = preload_env(Spec(enabled=False).render())
    env["PYTHONPATH"] = f"{SRC}{os.pathsep}{ROOT}"
    assert str(lib) in env["LD_PRELOAD"]
    procs = []
    try:
        for w in range(WORKERS):
            mine = [str(s) for s in seeds[w::WORKERS]]
            out = work / f"results-{w}.jsonl"
            err = open(work / f"worker-{w}.stderr", "wb")  # noqa: SIM115
            procs.append(
                (
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "tests.faults._syscall_worker",
                            str(work),
                            str(out),
                            *mine,
                        ],
                        cwd=ROOT,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    ),
                    out,
                    err,
                )
            )
        results: list[dict[str, Any]] = []
        for proc, out, err in procs:
            rc = proc.wait(timeout=1200)
            err.close()
            tail = Path(err.name).read_text(errors="replace")[-3000:]
            assert rc == 0, f"worker exited {rc}:\n{tail}"
            results.extend(orjson.loads(line) for line in out.read_bytes().splitlines())
        return results
    finally:
        for proc, _out, _err in procs:
            if proc.poll() is None:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def check_and_tabulate(label: str, seeds: list[int], results: list[dict[str, Any]]) -> None:
    """Assert the invariant for every run; add the suite's table to the summary."""
    assert sorted(r["seed"] for r in results) == sorted(seeds)
    errors = [r for r in results if "error" in r]
    assert not errors, f"seed {errors[0]['seed']}: {errors[0]['trace']}"
    cells: Counter[tuple[str, str]] = Counter()
    reached: dict[tuple[str, str], Counter[str]] = {}
    bad = []
    for r in results:
        fired = {(g, e): n for g, e, n in r["faults"]}
        cells.update(fired)
        for key in fired:
            reached.setdefault(key, Counter()).update(k for k, v in r["reached"].items() if v)
        problems = []
        if not fired:
            problems.append("no fault fired")
        if r["confirmed"] < MIN_CONFIRMED:
            problems.append(f"only {r['confirmed']} confirmed")
        if r["lost_count"]:
            problems.append(f"{r['lost_count']} confirmed events lost, e.g. {r['lost'][:3]}")
        if r["duplicates"]:
            problems.append(f"{r['duplicates']} duplicated")
        if not r["valid"]:
            problems.append(f"verify: {r['findings'][:3]}")
        if not r["back_on_primary"]:
            problems.append("the writer never came back to the primary")
        if problems:
            bad.append(f"seed {r['seed']} ({r['plan']}): " + "; ".join(problems))
    durable = [r for r in results if r["plan"]["confirm"] == "durable"]
    confirmed = sum(r["confirmed"] for r in results)
    TABLE.append(f"### {label}: {len(results)} runs, seeds {min(seeds)}-{max(seeds)}")
    TABLE.append(
        f"runs {len(results)} | faults injected {sum(cells.values())} | confirmed events "
        f"{confirmed} | lost {sum(r['lost_count'] for r in results)} | duplicates "
        f"{sum(r['duplicates'] for r in results)} | verify valid "
        f"{sum(r['valid'] for r in results)}/{len(results)}"
    )
    TABLE.append("| call | errno | injected | runs reaching spool | stdout | set aside |")
    TABLE.append("| --- | --- | ---: | ---: | ---: | ---: |")
    for (g, e), n in sorted(cells.items()):
        c = reached[(g, e)]
        TABLE.append(f"| {g} | {e} | {n} | {c['spool']} | {c['stdout']} | {c['set_aside']} |")
    assert not bad, "\n".join(bad[:10])
    # Every call the schedule targets fired somewhere, with every errno it can choose.
    missing = [g for g in TARGETED if not any(k[0] == g for k in cells)]
    assert not missing, f"calls never failed: {missing}"
    assert durable and len(durable) < len(results), "both confirmation modes must run"


def _require_tools() -> None:
    require(sys.platform.startswith("linux"), "LD_PRELOAD fault injection needs Linux")
    require(shutil.which("gcc") is not None, "needs gcc to build the fault library")


def test_failing_system_calls_200_seeds() -> None:
    """200 seeded runs with write/pwritev2/fsync/ftruncate/rename/open failing mid-stream
    (EIO, ENOSPC, EROFS; nothing, part or all of a write on disk): after the faults are
    lifted, a reopen and recover, every confirmed event is in the log exactly once and
    verify passes; each run had at least one fault."""
    _require_tools()
    seeds = list(range(1, 201))
    started = time.monotonic()
    results = run_seeds(seeds)
    check_and_tabulate("failing system calls", seeds, results)
    TABLE.append(f"({time.monotonic() - started:.0f} s)")


@pytest.mark.soak
def test_failing_system_calls_soak() -> None:
    """More seeds from a random base (printed; RISKAUDIT_SOAK_SEED replays it)."""
    _require_tools()
    base = int(os.environ.get("RISKAUDIT_SOAK_SEED") or random.randrange(10**6, 10**9))
    count = int(os.environ.get("RISKAUDIT_SOAK_RUNS", "1000"))
    print(f"soak: RISKAUDIT_SOAK_SEED={base} RISKAUDIT_SOAK_RUNS={count}")
    seeds = list(range(base, base + count))
    check_and_tabulate("failing system calls (soak)", seeds, run_seeds(seeds))
