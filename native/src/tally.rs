//! What the metrics count per record — events by type and priority, the newest
//! acceptance time per source — read off the chained bodies on the writer thread, so
//! the producer's `append` does not pay for it under the GIL.
//!
//! The body's layout is fixed by `encode_event_body`: `"event_id":<string>,
//! "event_type":"NAME","priority":"NAME","source":<string>,...`. A `"` inside a JSON
//! string is always escaped, so `,"event_type":"` can only be the field itself.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use memchr::memmem::Finder;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Counts by event_type, then by priority, as the body spells them (two levels, so a
/// lookup borrows the body's bytes and allocates nothing).
type ByKind = HashMap<Box<[u8]>, HashMap<Box<[u8]>, u64>>;

#[derive(Default)]
struct Counts {
    by_kind: ByKind,
    last_by_source: HashMap<Box<[u8]>, i64>,
}

#[pyclass(frozen, module = "riskaudit._native")]
pub struct Tally {
    counts: Mutex<Counts>,
}

/// The raw JSON string after `key` in `body[from..]` (escapes kept), and where it ends.
fn field<'a>(body: &'a [u8], from: usize, key: &Finder<'_>) -> Option<(&'a [u8], usize)> {
    let at = from + key.find(&body[from..])? + key.needle().len();
    let rest = &body[at..];
    let mut k = 0;
    loop {
        let q = memchr::memchr(b'"', &rest[k..])? + k;
        // A quote preceded by an odd number of backslashes is escaped.
        let slashes = rest[..q].iter().rev().take_while(|&&c| c == b'\\').count();
        if slashes % 2 == 0 {
            return Some((&rest[..q], at + q));
        }
        k = q + 1;
    }
}

static KEYS: OnceLock<[Finder<'static>; 3]> = OnceLock::new();

impl Tally {
    /// Count one event body accepted at `ts_ns` (called by the chain, lock held by it).
    pub fn see(&self, items: &[(&[u8], i64)]) {
        let [kt, kp, ks] = KEYS.get_or_init(|| {
            [
                Finder::new(b",\"event_type\":\""),
                Finder::new(b",\"priority\":\""),
                Finder::new(b",\"source\":\""),
            ]
        });
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for &(body, ts_ns) in items {
            // In the order encode_event_body writes them, each search after the last.
            let Some((t, end)) = field(body, 0, kt) else {
                continue;
            };
            let Some((p, end)) = field(body, end, kp) else {
                continue;
            };
            let Some((s, _)) = field(body, end, ks) else {
                continue;
            };
            let per_type = match c.by_kind.get_mut(t) {
                Some(m) => m,
                None => c.by_kind.entry(t.into()).or_default(),
            };
            match per_type.get_mut(p) {
                Some(n) => *n += 1,
                None => {
                    per_type.insert(p.into(), 1);
                }
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
            .flat_map(|(t, m)| m.iter().map(move |(p, n)| (t, p, *n)))
            .map(|(t, p, n)| (PyBytes::new(py, t), PyBytes::new(py, p), n))
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
