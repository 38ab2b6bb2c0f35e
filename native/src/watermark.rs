//! The durable watermark: which records are handled, and where each range went.
//!
//! The writer marks every range it commits with its outcome (primary, spool or
//! stdout); callers of `flush()` and `append(..., durable=True)` wait here without the
//! GIL, and per-caller durability reads the ranges: a record is durable when the range
//! holding it went to the primary or the spool. This is the one source of truth for
//! both (the writer-under-faults rule).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::prelude::*;

use crate::guard::{catch, guarded};

pub const PRIMARY: u8 = 0;
pub const SPOOL: u8 = 1;
pub const STDOUT: u8 = 2;

struct State {
    handled: u64,
    durable: u64,
    /// Merged `(first, last, outcome)` ranges, in seq order.
    ranges: Vec<(u64, u64, u8)>,
    stopped: bool,
}

#[pyclass(frozen, module = "riskaudit._native")]
pub struct Watermark {
    state: Mutex<State>,
    moved: Condvar,
}

impl Watermark {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl Watermark {
    /// A watermark at `seq`: everything up to it is already durable (opened log).
    #[new]
    fn new(seq: u64) -> Self {
        Watermark {
            state: Mutex::new(State {
                handled: seq,
                durable: seq,
                ranges: Vec::new(),
                stopped: false,
            }),
            moved: Condvar::new(),
        }
    }

    /// The writer committed `first..=last` to `outcome` (0 primary, 1 spool, 2 stdout).
    fn mark(&self, first: u64, last: u64, outcome: u8) -> PyResult<()> {
        if outcome > STDOUT || last < first {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "bad range or outcome",
            ));
        }
        guarded(|| self.mark_range(first, last, outcome))
    }

    /// Wait (without the GIL) up to `timeout` seconds until `seq` is handled or the
    /// watermark is stopped (a dead writer); whether it is handled.
    fn wait(&self, py: Python<'_>, seq: u64, timeout: f64) -> PyResult<bool> {
        let wait = if timeout.is_finite() && timeout > 0.0 {
            Duration::from_secs_f64(timeout.min(1e9))
        } else {
            Duration::ZERO
        };
        py.detach(|| catch(|| self.wait_for(seq, wait)))
            .map_err(PyErr::from)
    }

    /// Wake every waiter for good (the writer died or the process forked).
    fn stop(&self) {
        self.lock().stopped = true;
        self.moved.notify_all();
    }

    /// The ranges within `low..=high` that went to `outcome`, clipped, merged.
    fn ranges(&self, outcome: u8, low: u64, high: u64) -> PyResult<Vec<(u64, u64)>> {
        guarded(|| self.ranges_of(outcome, low, high))
    }

    #[getter]
    fn handled(&self) -> u64 {
        self.lock().handled
    }

    #[getter]
    fn durable(&self) -> u64 {
        self.lock().durable
    }
}

impl Watermark {
    /// `mark` without the GIL (the commit turn calls it).
    pub(crate) fn mark_range(&self, first: u64, last: u64, outcome: u8) {
        let mut st = self.lock();
        match st.ranges.last_mut() {
            Some(prev) if prev.2 == outcome && prev.1.checked_add(1) == Some(first) => {
                prev.1 = last
            }
            _ => st.ranges.push((first, last, outcome)),
        }
        st.handled = st.handled.max(last);
        if outcome != STDOUT {
            st.durable = st.durable.max(last);
        }
        self.moved.notify_all();
    }

    fn wait_for(&self, seq: u64, wait: Duration) -> bool {
        let st = self
            .moved
            .wait_timeout_while(self.lock(), wait, |st| st.handled < seq && !st.stopped)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        st.handled >= seq
    }

    fn ranges_of(&self, outcome: u8, low: u64, high: u64) -> Vec<(u64, u64)> {
        let st = self.lock();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &(a, b, o) in &st.ranges {
            if o != outcome || b < low || a > high {
                continue;
            }
            let (a, b) = (a.max(low), b.min(high));
            match out.last_mut() {
                Some(prev) if prev.1.checked_add(1) == Some(a) => prev.1 = b,
                _ => out.push((a, b)),
            }
        }
        out
    }
}
