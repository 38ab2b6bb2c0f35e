//! Giving the writer the GIL when it asks, instead of after a switch interval.
//!
//! The writer thread needs the interpreter only briefly per batch, but each time it
//! comes back from the core it has to wait for the GIL, and a producer that never
//! blocks holds it until the interpreter's switch interval (5 ms) forces it off: the
//! writer then waits 5 ms at every step of every batch, and records wait for it. So the
//! writer's calls note when they start waiting for the GIL, and a producer's `push`
//! that finds the writer waiting longer than `YIELD_AFTER_NS` steps aside (the Python
//! side then waits, without the GIL, until the writer has it).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// When a writer thread began waiting for the GIL (ns, CLOCK_MONOTONIC); 0: none waits.
static WRITER_WAITS_SINCE: AtomicI64 = AtomicI64::new(0);

/// How long a writer may wait for the GIL before producers step aside.
pub const YIELD_AFTER_NS: i64 = 50_000;

/// `py.detach(f)` for the writer's calls: on the way back, say that the writer waits
/// for the GIL; once it has it, take that back.
pub fn writer_detach<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    let mut mark = 0;
    let out = py.detach(|| {
        let out = f();
        mark = monotonic_ns().max(1);
        WRITER_WAITS_SINCE.store(mark, Ordering::Release);
        out
    });
    let _ = WRITER_WAITS_SINCE.compare_exchange(mark, 0, Ordering::AcqRel, Ordering::Relaxed);
    out
}

fn monotonic_ns() -> i64 {
    crate::queue::clock_ns(libc::CLOCK_MONOTONIC)
}

/// Whether a writer has waited for the GIL for longer than `YIELD_AFTER_NS`.
#[inline]
pub fn writer_starved() -> bool {
    let since = WRITER_WAITS_SINCE.load(Ordering::Acquire);
    since != 0 && monotonic_ns() - since > YIELD_AFTER_NS
}

/// In a forked child: no writer thread of the parent exists here to clear the flag.
#[pyfunction]
pub fn _after_fork() {
    WRITER_WAITS_SINCE.store(0, Ordering::Release);
}

/// Wait without the GIL, at most `timeout` seconds, until no writer waits for it.
///
/// The writer takes the GIL within microseconds of it being free, so this spins for a
/// short while before it sleeps: a sleep costs at least the kernel's timer slack
/// (50 µs), which every step aside would add to a producer's call.
#[pyfunction]
pub fn yield_to_writer(py: Python<'_>, timeout: f64) {
    let limit = Duration::from_secs_f64(if timeout.is_finite() {
        timeout.clamp(0.0, 1.0)
    } else {
        0.0
    });
    py.detach(|| {
        let started = Instant::now();
        let waiting = || WRITER_WAITS_SINCE.load(Ordering::Acquire) != 0;
        while waiting() && started.elapsed() < limit {
            if started.elapsed() < SPIN_FOR {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    });
}

/// How long `yield_to_writer` spins before it sleeps.
const SPIN_FOR: Duration = Duration::from_micros(100);
