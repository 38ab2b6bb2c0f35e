"""Clock evidence: how far the system clock may be from UTC, from the kernel's own view.

MiFID II RTS 25 asks trading venues and firms to keep business clocks within 100 µs of
UTC (1 µs granularity) for high-frequency trading and within 1 ms for other algorithmic
trading. riskaudit cannot discipline the clock, but it records what the kernel says
about it — ``adjtimex(2)``'s synchronisation flag, maximum error and estimated error —
in every ``start`` record and checkpoint, and writes a ``clock`` warning record when the
clock is unsynchronised or its maximum error exceeds ``RISK_AUDIT_CLOCK_MAX_ERROR``.

Where each timestamp is taken (RTS 25 Art. 4):

* ``timestamp_ns`` — by the producer, ``time.time_ns()`` (CLOCK_REALTIME) when the
  ``RiskEvent`` is constructed, unless the producer passes its own;
* ``ts`` of an event record — ``time.time_ns()`` inside ``AuditLog.append``, under the
  hand-off lock, on the producer's thread: the moment the log accepted the event;
* ``ts`` of a control record — ``time.time_ns()`` on the writer thread when the record
  is made (a checkpoint's ``ts`` is also part of its signed text).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5
_STATES = {
    0: "TIME_OK",
    1: "TIME_INS",
    2: "TIME_DEL",
    3: "TIME_OOP",
    4: "TIME_WAIT",
    5: "TIME_ERROR",
}


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """``struct timex`` from <sys/timex.h> (Linux)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


@dataclass(frozen=True, slots=True)
class ClockState:
    """The kernel's view of the system clock (errors in seconds)."""

    synchronised: bool
    max_error_s: float | None
    est_error_s: float | None
    state: str

    def problem(self, limit_s: float) -> str | None:
        """Why this clock is not good enough for the limit, or None."""
        if not self.synchronised:
            return "unsynchronised"
        if self.max_error_s is not None and self.max_error_s > limit_s:
            return f"maximum error {self.max_error_s:g}s exceeds {limit_s:g}s"
        return None

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


def read_clock() -> ClockState:
    """``adjtimex`` with no changes (modes 0): what the kernel knows of its clock."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return ClockState(False, None, None, "unknown (adjtimex unavailable)")
    if state < 0:
        return ClockState(False, None, None, f"unknown (adjtimex errno {ctypes.get_errno()})")
    synced = state != _TIME_ERROR and not (tx.status & _STA_UNSYNC)
    return ClockState(synced, tx.maxerror / 1e6, tx.esterror / 1e6, _STATES.get(state, str(state)))


ClockReader = Callable[[], ClockState]
