//! Giving the writer the GIL when it asks, instead of after a switch interval.
//!
//! The writer thread needs the interpreter only briefly per batch, but each time it
//! comes back from the core it has to wait for the GIL, and a producer that never
//! blocks holds it until the interpreter's switch interval (5 ms) forces it off: the
//! writer then waits 5 ms at every step of every batch, and records wait for it. So the
//! writer's calls note when they start waiting for the GIL, and a producer's `push`
//! that finds the writer waiting longer than `YIELD_AFTER_NS` steps aside (the Python
//! side then waits, without the GIL, until the writer has it).
//!
//! The writer's own Python work (its periodic checks of the file, the clock and the
//! volume, checkpoints, rotation) gives the GIL up at every system call it makes, and a
//! producer that takes it then would keep it for a switch interval each time: a
//! periodic check of a few system calls became tens of milliseconds of records not
//! committed. So the writer marks such a section (`begin_section`), and a producer
//! that gets the GIL inside it steps aside until it ends.
//!
//! A producer steps aside only in the first `YIELD_WINDOW_NS` of a wait or a section
//! (a switch interval: after it the interpreter hands the GIL over anyway), so a
//! producer never waits longer than that for one writer section, however long it is.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// Since when (ns, CLOCK_MONOTONIC) the writer waits for the GIL or works in a marked
/// section; 0: neither.
static WRITER_WAITS_SINCE: AtomicI64 = AtomicI64::new(0);

/// The mark of the writer's current section; 0 outside one.
static SECTION: AtomicI64 = AtomicI64::new(0);

/// How long a writer may wait for the GIL before producers step aside.
pub const YIELD_AFTER_NS: i64 = 50_000;

/// After this long into a wait or a section, producers no longer step aside.
const YIELD_WINDOW_NS: i64 = 5_000_000;

/// How long `yield_to_writer` spins before it sleeps.
const SPIN_FOR: Duration = Duration::from_micros(20);

/// `py.detach(f)` for the writer's calls: on the way back, say that the writer waits
/// for the GIL; once it has it, take that back (or go back to the section the call was
/// made in). While `f` runs the writer needs no GIL, so nobody steps aside for it then,
/// section or not.
pub fn writer_detach<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    let section = SECTION.load(Ordering::Acquire);
    if section != 0 {
        let _ =
            WRITER_WAITS_SINCE.compare_exchange(section, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
    let mut mark = 0;
    let out = py.detach(|| {
        let out = f();
        mark = monotonic_ns().max(1);
        WRITER_WAITS_SINCE.store(mark, Ordering::Release);
        out
    });
    // Back to the section this call was made in, if any (its window goes on).
    let _ = WRITER_WAITS_SINCE.compare_exchange(mark, section, Ordering::AcqRel, Ordering::Relaxed);
    out
}

fn monotonic_ns() -> i64 {
    crate::queue::clock_ns(libc::CLOCK_MONOTONIC)
}

/// Whether a writer has waited for the GIL (or worked in a marked section) for longer
/// than `YIELD_AFTER_NS`, within the first `YIELD_WINDOW_NS`.
#[inline]
pub fn writer_starved() -> bool {
    let since = WRITER_WAITS_SINCE.load(Ordering::Acquire);
    if since == 0 {
        return false;
    }
    let age = monotonic_ns() - since;
    age > YIELD_AFTER_NS && age < YIELD_WINDOW_NS
}

/// Begin a section of the writer's own Python work during which producers step aside
/// when they get the GIL (see the module's text): a token for `end_section`. Sections
/// do not nest (the writer never opens one inside another).
#[pyfunction]
pub fn begin_section() -> i64 {
    let mark = monotonic_ns().max(1);
    SECTION.store(mark, Ordering::Release);
    WRITER_WAITS_SINCE.store(mark, Ordering::Release);
    mark
}

/// End the section `begin_section` returned `token` for. Nothing changes when another
/// writer has marked something since (several logs in one process share these marks:
/// at worst a producer steps aside for another log's writer).
#[pyfunction]
pub fn end_section(token: i64) {
    let _ = SECTION.compare_exchange(token, 0, Ordering::AcqRel, Ordering::Relaxed);
    let _ = WRITER_WAITS_SINCE.compare_exchange(token, 0, Ordering::AcqRel, Ordering::Relaxed);
}

/// In a forked child: no writer thread of the parent exists here to clear the flag.
#[pyfunction]
pub fn _after_fork() {
    SECTION.store(0, Ordering::Release);
    WRITER_WAITS_SINCE.store(0, Ordering::Release);
}

/// Wait without the GIL until the writer no longer waits for it (or has left its
/// marked section), at most `timeout` seconds and never past the step-aside window.
///
/// It spins for a short while before it sleeps: a sleep costs at least the kernel's
/// timer slack (50 µs), which every step aside would add to a producer's call.
#[pyfunction]
pub fn yield_to_writer(py: Python<'_>, timeout: f64) {
    let asked = Duration::from_secs_f64(if timeout.is_finite() {
        timeout.clamp(0.0, 1.0)
    } else {
        0.0
    });
    let mark = WRITER_WAITS_SINCE.load(Ordering::Acquire);
    if mark == 0 {
        return;
    }
    let window_left = Duration::from_nanos((mark + YIELD_WINDOW_NS - monotonic_ns()).max(0) as u64);
    let limit = asked.min(window_left);
    py.detach(|| {
        let started = Instant::now();
        let waiting = || WRITER_WAITS_SINCE.load(Ordering::Acquire) == mark;
        while waiting() && started.elapsed() < limit {
            if started.elapsed() < SPIN_FOR {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    });
}
