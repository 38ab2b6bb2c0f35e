//! What the metrics count per record — events by type and priority, the newest
//! acceptance time per source — read off the chained bodies on the writer thread, so
//! the producer's `append` does not pay for it under the GIL.
//!
//! The body's layout is fixed by `encode_event_body`: `"event_id":<string>,
//! "event_type":"NAME","priority":"NAME","source":<string>,...`. A `"` inside a JSON
//! string is always escaped, so `,"event_type":"` can only be the field itself.

use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// (event_type, priority) as the body spells them.
type Kind = (Box<[u8]>, Box<[u8]>);

#[derive(Default)]
struct Counts {
    by_kind: HashMap<Kind, u64>,
    last_by_source: HashMap<Box<[u8]>, i64>,
}

#[pyclass(frozen, module = "riskaudit._native")]
pub struct Tally {
    counts: Mutex<Counts>,
}

fn field<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = memchr::memmem::find(body, key)? + key.len();
    let rest = &body[at..];
    let mut k = 0;
    loop {
        let q = memchr::memchr(b'"', &rest[k..])? + k;
        // A quote preceded by an odd number of backslashes is escaped.
        let slashes = rest[..q].iter().rev().take_while(|&&c| c == b'\\').count();
        if slashes % 2 == 0 {
            return Some(&rest[..q]);
        }
        k = q + 1;
    }
}

impl Tally {
    /// Count one event body accepted at `ts_ns` (called by the chain, lock held by it).
    pub fn see(&self, items: &[(&[u8], i64)]) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for &(body, ts_ns) in items {
            let (Some(t), Some(p), Some(s)) = (
                field(body, b",\"event_type\":\""),
                field(body, b",\"priority\":\""),
                field(body, b",\"source\":\""),
            ) else {
                continue;
            };
            if let Some(n) = c.by_kind.get_mut(&(t.into(), p.into())) {
                *n += 1;
            } else {
                c.by_kind.insert((t.into(), p.into()), 1);
            }
            match c.last_by_source.get_mut(s) {
                Some(v) => *v = (*v).max(ts_ns),
                None => {
                    c.last_by_source.insert(s.into(), ts_ns);
                }
            }
        }
    }
}

#[pymethods]
impl Tally {
    #[new]
    fn new() -> Self {
        Tally {
            counts: Mutex::new(Counts::default()),
        }
    }

    /// `{(event_type, priority): count}` (names as bytes).
    fn by_kind<'py>(
        &self,
        py: Python<'py>,
    ) -> Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>, u64)> {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.by_kind
            .iter()
            .map(|((t, p), n)| (PyBytes::new(py, t), PyBytes::new(py, p), *n))
            .collect()
    }

    /// `[(source as JSON-escaped bytes, newest acceptance time ns)]`.
    fn last_by_source<'py>(&self, py: Python<'py>) -> Vec<(Bound<'py, PyBytes>, i64)> {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.last_by_source
            .iter()
            .map(|(s, t)| (PyBytes::new(py, s), *t))
            .collect()
    }
}
