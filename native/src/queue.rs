//! The hand-off between producer threads and the writer thread, and the chain.
//!
//! A producer's `append` encodes its event with orjson and makes one call here: `push`
//! copies the body, gives it the next `seq` and the acceptance time, and queues it, or
//! says there is no room (the Python side then applies the full-queue policy: the
//! reserve, the backlog throttle, waiting, fail-closed or an emergency line). The
//! writer takes everything queued in one call that waits without the GIL, and chains
//! the batch (line bytes and SHA-256) without the GIL too.
//!
//! Lock order: the queue's mutex is never held while the GIL is taken. A producer
//! holds the GIL and takes the mutex for a few instructions; every call that waits
//! releases the GIL first.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::format::{control_line, event_line, line_hash, HashHex, TsPrefix, HASH_HEX};
use crate::guard::{guarded, maybe_panic, Site};
use crate::tally::Tally;

/// One queued record: an event body, or a control record's `"kind":...` part.
///
/// 32 bytes: what the record is lives in the top two bits of `tagged_seq` (a seq never
/// reaches 2^62), so a queued record costs its bytes plus this and the allocator's
/// header.
pub struct Item {
    tagged_seq: u64,
    ts_ns: i64,
    body: Box<[u8]>,
}

const CONTROL: u64 = 1 << 63;
const OWN_TS: u64 = 1 << 62;
const SEQ_MASK: u64 = OWN_TS - 1;

impl Item {
    fn event(seq: u64, ts_ns: i64, body: Box<[u8]>) -> Item {
        Item {
            tagged_seq: seq & SEQ_MASK,
            ts_ns,
            body,
        }
    }

    fn control(seq: u64, ts_ns: i64, body: Box<[u8]>, has_ts: bool) -> Item {
        let tag = CONTROL | if has_ts { OWN_TS } else { 0 };
        Item {
            tagged_seq: (seq & SEQ_MASK) | tag,
            ts_ns,
            body,
        }
    }

    pub(crate) fn seq(&self) -> u64 {
        self.tagged_seq & SEQ_MASK
    }

    pub(crate) fn ts_ns(&self) -> i64 {
        self.ts_ns
    }

    /// None for an event; Some(has_ts) for a control record.
    pub(crate) fn control_ts(&self) -> Option<bool> {
        (self.tagged_seq & CONTROL != 0).then_some(self.tagged_seq & OWN_TS != 0)
    }
}

/// What a queued record costs beyond its bytes (the struct and the allocator's header).
pub const ITEM_OVERHEAD: usize = std::mem::size_of::<Item>() + 16;

struct State {
    items: VecDeque<Item>,
    bytes: usize,
    next_seq: u64,
    open: bool,
    writer_waiting: bool,
    /// The writer has something to do besides committing (reopen, rotate, close).
    kicked: bool,
    /// Someone waits for the queue to be taken (a flush, a producer out of room):
    /// take now, but there is nothing else to do.
    hurried: bool,
    takes: u64,
    space_waiters: u32,
}

/// An event type `push_event` may queue without Python looking at the event: the
/// `EventType` member (compared by identity: enum members are singletons) and its
/// required `data` keys (None when schemas are not checked).
///
/// The schema and actor rules live in Python (`riskaudit.policy`); these are only
/// their common case, given once: the types no rule needs to look at event by event.
/// Anything else, an absent type included, goes back to Python, which judges it and
/// says why.
type Kind = (Py<PyAny>, Option<Vec<Py<PyString>>>);

/// `push_event`: Python must check this event before it is queued (nothing queued).
pub const NEEDS_CHECK: i64 = -3;

/// The bounded queue (in records and in bytes), with the seq counter.
#[pyclass(frozen, module = "riskaudit._native")]
pub struct Queue {
    state: Mutex<State>,
    kinds: OnceLock<Vec<Kind>>,
    /// `State::open`, readable without the lock (push checks it first).
    open: AtomicBool,
    writer: Condvar,
    space: Condvar,
    wake_at: usize,
}

pub fn now_ns() -> i64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// A clock's reading in nanoseconds (CLOCK_REALTIME is what `time.time_ns()` reads).
pub fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    // time_t and c_long are i64 on the 64-bit Linux targets this is built for.
    #[allow(clippy::unnecessary_cast)]
    let ns = ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64;
    ns
}

fn secs(timeout: f64) -> Duration {
    if timeout.is_finite() && timeout > 0.0 {
        Duration::from_secs_f64(timeout.min(1e9))
    } else {
        Duration::ZERO
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic never happens with the lock held (no code that can panic runs under
        // it); a poisoned lock is still consistent, so it is used as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enqueue(&self, st: &mut State, item: Item) -> u64 {
        let seq = item.seq();
        st.bytes += item.body.len();
        st.items.push_back(item);
        if st.writer_waiting && st.items.len() >= self.wake_at {
            st.writer_waiting = false;
            self.writer.notify_one();
        }
        seq
    }
}

#[pymethods]
impl Queue {
    #[new]
    #[pyo3(signature = (next_seq, wake_at))]
    fn new(next_seq: u64, wake_at: usize) -> PyResult<Self> {
        if next_seq > SEQ_MASK {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "seq beyond 2**62 - 1",
            ));
        }
        Ok(Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                next_seq,
                open: true,
                writer_waiting: false,
                kicked: false,
                hurried: false,
                takes: 0,
                space_waiters: 0,
            }),
            kinds: OnceLock::new(),
            open: AtomicBool::new(true),
            writer: Condvar::new(),
            space: Condvar::new(),
            wake_at: wake_at.max(1),
        })
    }

    /// Queue an event body: its seq (> 0); 0 when `limit` records or `byte_limit`
    /// bytes are already queued; -1 when the queue is closed; -2 (only if `may_yield`)
    /// when the writer has waited for the GIL too long: nothing queued, step aside
    /// (`yield_to_writer`) and push again.
    #[pyo3(signature = (body, limit, byte_limit, may_yield=true))]
    fn push(&self, body: &[u8], limit: usize, byte_limit: usize, may_yield: bool) -> PyResult<i64> {
        guarded(|| {
            maybe_panic(Site::HandOff);
            // Closed first: a shut queue (a closed log, a forked child's copy) refuses
            // whatever the writer flag says.
            if !self.open.load(Ordering::Acquire) {
                return -1;
            }
            if may_yield && crate::gil::writer_starved() {
                return -2;
            }
            let body: Box<[u8]> = body.into();
            let mut st = self.lock();
            if !st.open || st.next_seq > SEQ_MASK {
                return -1;
            }
            if st.items.len() >= limit || st.bytes + body.len() > byte_limit {
                return 0;
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            // Read under the lock that orders the seqs: ts never goes back as seq grows.
            let item = Item::event(seq, now_ns(), body);
            self.enqueue(&mut st, item) as i64
        })
    }

    /// Give the event types' checks (once): `(member, required keys or None)` for each
    /// type no rule needs to look at. False if they were given before.
    fn set_checks(&self, kinds: Vec<Kind>) -> bool {
        self.kinds.set(kinds).is_ok()
    }

    /// `append`'s one native call: queue the body of `encoded` (the event as one JSON
    /// object; its opening brace is left out, as the line supplies its own) when its
    /// type's checks plainly pass, as `push` with `may_yield`. -3 when Python must
    /// check the event first (nothing queued; always, before `set_checks`).
    fn push_event(
        &self,
        encoded: &[u8],
        event_type: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        limit: usize,
        byte_limit: usize,
    ) -> PyResult<i64> {
        if !self.plainly_fine(event_type, data)? {
            return Ok(NEEDS_CHECK);
        }
        self.push(
            encoded.get(1..).unwrap_or_default(),
            limit,
            byte_limit,
            true,
        )
    }

    /// Queue a control record (never refused for room): its seq; -1 when closed and
    /// not `force` (the writer's own closing records are forced).
    #[pyo3(signature = (mid, has_ts, force=false))]
    fn push_control(&self, mid: &[u8], has_ts: bool, force: bool) -> PyResult<i64> {
        guarded(|| {
            let mut st = self.lock();
            if (!st.open && !force) || st.next_seq > SEQ_MASK {
                return -1;
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            let item = Item::control(seq, now_ns(), mid.into(), has_ts);
            self.enqueue(&mut st, item) as i64
        })
    }

    /// The writer's turn: wait up to `timeout` seconds (without the GIL) until
    /// `wake_at` records are queued or `kick` is called, then take everything.
    fn take(&self, py: Python<'_>, timeout: f64) -> PyResult<Batch> {
        let wait = secs(timeout);
        crate::gil::writer_detach(py, || guarded(|| self.take_wait(wait).0))
    }

    /// Everything queued plus the next `n` seqs (the first is returned), atomically:
    /// the writer's own records then follow everything queued before them.
    fn take_reserving(&self, n: u64) -> PyResult<(Batch, u64)> {
        guarded(|| {
            let mut st = self.lock();
            let batch = self.take_locked(&mut st);
            let seq = st.next_seq;
            st.next_seq += n;
            (batch, seq)
        })
    }

    /// Wake the writer now, to come back to Python (reopen, rotate, close).
    fn kick(&self) {
        let mut st = self.lock();
        st.kicked = true;
        st.writer_waiting = false;
        self.writer.notify_one();
    }

    /// Wake the writer now to take what is queued, without the group-commit window
    /// (a flush waits).
    fn hurry(&self) {
        let mut st = self.lock();
        st.hurried = true;
        st.writer_waiting = false;
        self.writer.notify_one();
    }

    /// Wait (without the GIL) up to `timeout` seconds until fewer than `below`
    /// records and `below_bytes` bytes are queued or the queue closes; whether there
    /// is room now.
    #[pyo3(signature = (below, below_bytes, timeout, need_bytes=0))]
    fn wait_room(
        &self,
        py: Python<'_>,
        below: usize,
        below_bytes: usize,
        timeout: f64,
        need_bytes: usize,
    ) -> bool {
        // Room for a body of `need_bytes` means `bytes + need_bytes <= below_bytes`,
        // as push judges it (not merely fewer bytes than the limit).
        let below_bytes = below_bytes.saturating_sub(need_bytes).saturating_add(1);
        let wait = secs(timeout);
        py.detach(|| {
            let deadline = Instant::now() + wait;
            let mut st = self.lock();
            st.space_waiters += 1;
            st.hurried = true;
            self.writer.notify_one();
            st = self.wait_space(st, deadline, |st| {
                st.items.len() >= below || st.bytes >= below_bytes
            });
            st.space_waiters -= 1;
            st.items.len() < below && st.bytes < below_bytes
        })
    }

    /// The backlog throttle: wait (without the GIL) up to `timeout` seconds until the
    /// writer has taken the queue once more, or the queue closes.
    fn wait_taken(&self, py: Python<'_>, timeout: f64) {
        let wait = secs(timeout);
        py.detach(|| {
            let deadline = Instant::now() + wait;
            let mut st = self.lock();
            let takes = st.takes;
            st.space_waiters += 1;
            st.hurried = true; // a writer still syncing takes at once when it is back
            if st.writer_waiting {
                self.writer.notify_one();
            }
            st = self.wait_space(st, deadline, |st| st.takes == takes);
            st.space_waiters -= 1;
        })
    }

    /// Refuse new events from now on (close, a dead writer, a fork); wake every waiter.
    fn shut(&self) {
        self.open.store(false, Ordering::Release);
        let mut st = self.lock();
        st.open = false;
        st.kicked = true;
        self.writer.notify_all();
        self.space.notify_all();
    }

    /// The seq the next record gets.
    #[getter]
    fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    #[setter]
    fn set_next_seq(&self, seq: u64) -> PyResult<()> {
        if seq > SEQ_MASK {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "seq beyond 2**62 - 1",
            ));
        }
        self.lock().next_seq = seq;
        Ok(())
    }

    /// Bytes of queued bodies.
    #[getter]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// What one queued record costs beyond its bytes.
    #[classattr]
    fn item_overhead() -> usize {
        ITEM_OVERHEAD
    }

    fn __len__(&self) -> usize {
        self.lock().items.len()
    }
}

impl Queue {
    /// Whether an event of this type with this `data` passes the checks without
    /// Python: a type no rule needs to look at, and every required key present in a
    /// plain dict.
    fn plainly_fine(
        &self,
        event_type: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let Some(kinds) = self.kinds.get() else {
            return Ok(false);
        };
        let Some(kind) = kinds
            .iter()
            .find(|(member, _)| member.as_ptr() == event_type.as_ptr())
        else {
            return Ok(false);
        };
        let Some(required) = &kind.1 else {
            return Ok(true);
        };
        let Ok(data) = data.cast_exact::<PyDict>() else {
            return Ok(false);
        };
        for key in required {
            if !data.contains(key.bind(data.py()))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Wait on the space condition while `blocked` holds, the queue is open and the
    /// deadline is ahead.
    fn wait_space<'a>(
        &self,
        st: MutexGuard<'a, State>,
        deadline: Instant,
        blocked: impl Fn(&State) -> bool,
    ) -> MutexGuard<'a, State> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.space
            .wait_timeout_while(st, left, |st| st.open && blocked(st))
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    /// Wait up to `wait` until `wake_at` records are queued or `kick` or `hurry` is
    /// called, then take everything; whether it was kicked (the writer has something
    /// to do besides committing: reopen, rotate, close) and whether it was hurried
    /// (someone waits for the take). No GIL here.
    pub(crate) fn take_wait(&self, wait: Duration) -> (Batch, bool, bool) {
        let mut st = self.lock();
        let idle = |st: &mut State| !st.kicked && !st.hurried && st.items.len() < self.wake_at;
        if idle(&mut st) && !wait.is_zero() {
            st.writer_waiting = true;
            st = self
                .writer
                .wait_timeout_while(st, wait, idle)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            st.writer_waiting = false;
        }
        let hurried = std::mem::replace(&mut st.hurried, false);
        let kicked = std::mem::replace(&mut st.kicked, false);
        (self.take_locked(&mut st), kicked, hurried)
    }

    fn take_locked(&self, st: &mut State) -> Batch {
        st.takes += 1;
        if st.items.is_empty() {
            if st.space_waiters > 0 {
                self.space.notify_all();
            }
            return Batch { items: Vec::new() };
        }
        // The next batch starts with this one's capacity (at most 64k records, 2 MiB):
        // a producer does not pay for the queue growing again after every take.
        let keep = st.items.capacity().min(1 << 16);
        let items: Vec<Item> =
            std::mem::replace(&mut st.items, VecDeque::with_capacity(keep)).into();
        st.bytes = 0;
        if st.space_waiters > 0 {
            self.space.notify_all();
        }
        Batch { items }
    }
}

/// Records taken from the queue (or made by the writer itself), in seq order.
#[pyclass(frozen, module = "riskaudit._native")]
pub struct Batch {
    pub(crate) items: Vec<Item>,
}

#[pymethods]
impl Batch {
    /// A batch of the writer's own control records: `(seq, ts_ns, mid, has_ts)` each.
    #[staticmethod]
    fn of_controls(records: Vec<(u64, i64, Vec<u8>, bool)>) -> Batch {
        let items = records
            .into_iter()
            .map(|(seq, ts_ns, mid, has_ts)| Item::control(seq, ts_ns, mid.into(), has_ts))
            .collect();
        Batch { items }
    }

    /// A batch of event bodies: `(seq, ts_ns, body)` each (tests and tools).
    #[staticmethod]
    fn of_events(records: Vec<(u64, i64, Vec<u8>)>) -> Batch {
        let items = records
            .into_iter()
            .map(|(seq, ts_ns, body)| Item::event(seq, ts_ns, body.into()))
            .collect();
        Batch { items }
    }

    fn __len__(&self) -> usize {
        self.items.len()
    }

    #[getter]
    fn first_seq(&self) -> Option<u64> {
        self.items.first().map(|i| i.seq())
    }

    #[getter]
    fn first_ts(&self) -> Option<i64> {
        self.items.first().map(|i| i.ts_ns)
    }

    #[getter]
    fn last_seq(&self) -> Option<u64> {
        self.items.last().map(|i| i.seq())
    }

    /// The bodies of the event records (the unsequenced fallback of a dead writer).
    fn event_bodies<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        self.items
            .iter()
            .filter(|i| i.control_ts().is_none())
            .map(|i| PyBytes::new(py, &i.body))
            .collect()
    }
}

/// `(new head hash, [(last seq, chunk bytes), ...])`.
type Chained<'py> = (Bound<'py, PyBytes>, Vec<(u64, Bound<'py, PyBytes>)>);

/// Chain a batch after `prev`: `(new prev, [(last seq, bytes), ...])`, each chunk
/// about `chunk_bytes` long, every line ending in `\n`. Runs without the GIL; a
/// `tally` given counts the batch's events for the metrics on the way.
#[pyfunction]
#[pyo3(signature = (batch, prev, chunk_bytes, tally=None))]
pub fn chain<'py>(
    py: Python<'py>,
    batch: &Batch,
    prev: &[u8],
    chunk_bytes: usize,
    tally: Option<&Tally>,
) -> PyResult<Chained<'py>> {
    let prev: HashHex = prev
        .try_into()
        .map_err(|_| pyo3::exceptions::PyValueError::new_err("prev must be 64 hex bytes"))?;
    let items = &batch.items;
    let (head, chunks) = crate::gil::writer_detach(py, || {
        guarded(|| {
            let out = chain_items(items, prev, chunk_bytes);
            count_events(items, tally);
            out
        })
    })?;
    let chunks = chunks
        .into_iter()
        .map(|(seq, data)| (seq, PyBytes::new(py, &data)))
        .collect();
    Ok((PyBytes::new(py, &head), chunks))
}

/// Count the events of `items` on the metrics' tally, if there is one.
pub(crate) fn count_events(items: &[Item], tally: Option<&Tally>) {
    if let Some(t) = tally {
        let events: Vec<(&[u8], i64)> = items
            .iter()
            .filter(|i| i.control_ts().is_none())
            .map(|i| (&i.body[..], i.ts_ns))
            .collect();
        t.see(&events);
    }
}

pub(crate) fn chain_items(
    items: &[Item],
    mut prev: HashHex,
    chunk_bytes: usize,
) -> (HashHex, Vec<(u64, Vec<u8>)>) {
    maybe_panic(Site::Chain);
    let mut ts = TsPrefix::new();
    let mut chunks = Vec::new();
    let mut buf: Vec<u8> =
        Vec::with_capacity(chunk_bytes.min(items.iter().map(|i| i.body.len() + 140).sum()));
    let mut last = 0;
    for item in items {
        let start = buf.len();
        match item.control_ts() {
            None => event_line(item.seq(), &prev, item.ts_ns, &item.body, &mut ts, &mut buf),
            Some(has_ts) => control_line(
                item.seq(),
                &prev,
                item.ts_ns,
                &item.body,
                has_ts,
                &mut ts,
                &mut buf,
            ),
        }
        prev = line_hash(&buf[start..]);
        buf.push(b'\n');
        last = item.seq();
        if buf.len() >= chunk_bytes {
            chunks.push((last, std::mem::take(&mut buf)));
        }
    }
    if !buf.is_empty() {
        chunks.push((last, buf));
    }
    debug_assert_eq!(prev.len(), HASH_HEX);
    (prev, chunks)
}
