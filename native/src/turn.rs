//! The writer's commit turns: take, chain, write and mark, in one call without the GIL.
//!
//! While the primary file takes every write, a turn needs no Python at all: take what
//! is queued, chain it, `pwritev2(RWF_DSYNC)` it at the end of the file, mark the range
//! durable on the watermark (which wakes `flush()` and `durable=True` callers). Coming
//! back to Python costs the writer a wait for the GIL (up to the interpreter's switch
//! interval when a host thread computes), so `commit_turns` keeps turning until
//! something needs the Python writer: a deadline (its periodic checks), a kick (flush,
//! reopen, rotate, close), the queue idle for a whole window, enough records for a
//! checkpoint, enough bytes for a rotation, or one turn when an `on_durable` hook waits.
//!
//! Anything else goes back to Python with the batch in hand, chained or not, and the
//! Python writer does exactly what it does on its own path: a shrunk file (copytruncate)
//! is rewritten, a failed write poisons the file and falls back to the spool, a panic of
//! the core ends the writer the documented way (events as unsequenced lines when the
//! chain failed, chained records to stdout when the write did).

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::commit::{os_error, write_all_durably};
use crate::format::HashHex;
use crate::guard::{catch, maybe_panic, Site};
use crate::queue::{chain_items, clock_ns, count_events, now_ns, Batch, Queue};
use crate::tally::Tally;
use crate::watermark::{Watermark, PRIMARY};

/// The file is shorter than what was written to it: rewrite before writing on.
pub const SHRUNK: u8 = 1;
/// The write (or the size check before it) failed: `errno` and `strerror` say how.
pub const FAILED: u8 = 2;
/// The core panicked while chaining: the batch comes back unchained.
pub const CHAIN_PANIC: u8 = 3;
/// The core panicked while writing: the chained batch comes back unwritten.
pub const COMMIT_PANIC: u8 = 4;

type Chunks = Vec<(u64, Vec<u8>)>;

/// A turn written to the primary and marked on the watermark.
struct Committed {
    first: u64,
    last: u64,
    first_ts: i64,
    size: usize,
    sync_ns: i64,
    done_ns: i64,
    chunks: Chunks,
}

/// A turn the core did not finish: Python takes over.
enum Pending {
    Unwritten {
        status: u8,
        error: (i32, String),
        first: u64,
        first_ts: i64,
        last: u64,
        chunks: Chunks,
    },
    Unchained {
        message: String,
        batch: Batch,
    },
}

/// When to stop turning (besides a kick, an idle window or trouble).
struct Limits {
    deadline_ns: i64,
    max_turns: usize,
    max_records: u64,
    until_offset: i64,
    dsync: bool,
    /// The chunks of the newest this many records come back (the writer's ring of
    /// recent records, for a rewrite after a truncation); older ones are freed at once.
    keep_records: u64,
}

fn monotonic_ns() -> i64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `fstat(fd).st_size`, through the C library (the fault library sees it).
fn file_size(fd: i32) -> std::io::Result<i64> {
    // SAFETY: fstat fills the struct we own; the kernel checks the descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.st_size)
}

#[allow(clippy::too_many_arguments)]
fn turns(
    queue: &Queue,
    watermark: &Watermark,
    tally: Option<&Tally>,
    mut prev: HashHex,
    chunk_bytes: usize,
    fd: i32,
    mut offset: i64,
    first_wait: f64,
    limits: &Limits,
) -> (HashHex, i64, Vec<Committed>, Option<Pending>) {
    let mut done: Vec<Committed> = Vec::new();
    let mut records = 0u64;
    // done[first_kept..] still hold their chunks: `kept` records.
    let (mut first_kept, mut kept) = (0usize, 0u64);
    let pending = loop {
        let wait = if done.is_empty() {
            first_wait
        } else {
            let left = (limits.deadline_ns - monotonic_ns()) as f64 / 1e9;
            if left <= 0.0 {
                break None;
            }
            first_wait.min(left)
        };
        let (batch, kicked, hurried) = queue.take_wait(seconds(wait));
        let items = &batch.items;
        let (Some(head), Some(tail)) = (items.first(), items.last()) else {
            if hurried && !kicked && monotonic_ns() < limits.deadline_ns {
                continue; // a flush found nothing queued: wait on
            }
            break None;
        };
        let (first, first_ts, last) = (head.seq(), head.ts_ns(), tail.seq());
        let chained = catch(|| {
            let out = chain_items(items, prev, chunk_bytes);
            count_events(items, tally);
            out
        });
        let chunks = match chained {
            Ok((head, chunks)) => {
                prev = head;
                chunks
            }
            Err(panicked) => {
                break Some(Pending::Unchained {
                    message: panicked.message(),
                    batch,
                })
            }
        };
        drop(batch); // the bodies are in the lines now
        let unwritten = |status, error, chunks| Pending::Unwritten {
            status,
            error,
            first,
            first_ts,
            last,
            chunks,
        };
        match file_size(fd) {
            Ok(size) if size < offset => break Some(unwritten(SHRUNK, (0, String::new()), chunks)),
            Ok(_) => {}
            Err(e) => break Some(unwritten(FAILED, os_error(&e), chunks)),
        }
        let started = monotonic_ns();
        let slices: Vec<&[u8]> = chunks.iter().map(|(_, c)| &c[..]).collect();
        let written = catch(|| {
            maybe_panic(Site::Commit);
            write_all_durably(fd, &slices, offset, limits.dsync)
        });
        drop(slices);
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => break Some(unwritten(FAILED, os_error(&e), chunks)),
            Err(panicked) => break Some(unwritten(COMMIT_PANIC, (0, panicked.message()), chunks)),
        }
        let sync_ns = monotonic_ns() - started;
        let size: usize = chunks.iter().map(|(_, c)| c.len()).sum();
        offset += size as i64;
        watermark.mark_range(first, last, PRIMARY);
        records += last - first + 1;
        kept += last - first + 1;
        done.push(Committed {
            first,
            last,
            first_ts,
            size,
            sync_ns,
            done_ns: now_ns(),
            chunks,
        });
        while first_kept < done.len() {
            let newest = first_kept + 1 == done.len();
            let oldest = &mut done[first_kept];
            let n = oldest.last - oldest.first + 1;
            if limits.keep_records > 0 && (newest || kept - n < limits.keep_records) {
                break;
            }
            oldest.chunks = Vec::new();
            kept -= n;
            first_kept += 1;
        }
        if kicked
            || done.len() >= limits.max_turns
            || records >= limits.max_records
            || offset >= limits.until_offset
        {
            break None;
        }
    };
    (prev, offset, done, pending)
}

fn seconds(s: f64) -> std::time::Duration {
    if s.is_finite() && s > 0.0 {
        std::time::Duration::from_secs_f64(s.min(1e9))
    } else {
        std::time::Duration::ZERO
    }
}

/// What `commit_turns` returns: `(prev, offset, committed, pending)`.
type TurnsOut<'py> = (
    Bound<'py, PyBytes>,
    i64,
    Vec<Bound<'py, PyAny>>,
    Option<Bound<'py, PyAny>>,
);

/// Commit turns to the primary file open as `fd` (written up to `offset`) until
/// something needs the Python writer (see the module's text).
///
/// Returns `(prev, offset, committed, pending)`: the new chain head and file end;
/// per turn committed `(first, last, first_ts, size, sync_ns, done_ns, chunks)`
/// with `chunks` as `chain` gives them; `pending` is None, or
/// `(status, errno, strerror, first, first_ts, last, chunks)` for a batch chained but
/// not written (SHRUNK, FAILED, COMMIT_PANIC), or `(CHAIN_PANIC, 0, message, batch)`.
/// A committed turn's `chunks` is empty when the newer turns of the call hold
/// `keep_records` records or more (none are kept when it is 0).
/// `deadline` is on `time.monotonic()`'s clock; a limit of 0 means none. `dsync`
/// False: write, then `fsync` (a file system known to refuse `RWF_DSYNC`).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (queue, watermark, tally, prev, chunk_bytes, fd, offset, wait, deadline, max_turns, max_records, until_offset, dsync=true, keep_records=0))]
pub fn commit_turns<'py>(
    py: Python<'py>,
    queue: &Queue,
    watermark: &Watermark,
    tally: Option<&Tally>,
    prev: &[u8],
    chunk_bytes: usize,
    fd: i32,
    offset: i64,
    wait: f64,
    deadline: f64,
    max_turns: usize,
    max_records: u64,
    until_offset: i64,
    dsync: bool,
    keep_records: u64,
) -> PyResult<TurnsOut<'py>> {
    let prev: HashHex = prev
        .try_into()
        .map_err(|_| pyo3::exceptions::PyValueError::new_err("prev must be 64 hex bytes"))?;
    let limits = Limits {
        deadline_ns: if deadline.is_finite() {
            (deadline * 1e9) as i64
        } else {
            i64::MAX
        },
        max_turns: if max_turns == 0 {
            usize::MAX
        } else {
            max_turns
        },
        max_records: if max_records == 0 {
            u64::MAX
        } else {
            max_records
        },
        until_offset: if until_offset <= 0 {
            i64::MAX
        } else {
            until_offset
        },
        dsync,
        keep_records,
    };
    // The chain and the write catch their own panics (the batch comes back in hand);
    // this one catches the rest (waiting, the size check, the watermark), which only
    // running out of memory could make panic.
    let (head, offset, done, pending) = crate::gil::writer_detach(py, || {
        crate::guard::guarded(|| {
            turns(
                queue,
                watermark,
                tally,
                prev,
                chunk_bytes,
                fd,
                offset,
                wait,
                &limits,
            )
        })
    })?;
    let chunks_of = |chunks: Chunks| -> Vec<(u64, Bound<'py, PyBytes>)> {
        chunks
            .into_iter()
            .map(|(seq, data)| (seq, PyBytes::new(py, &data)))
            .collect()
    };
    // What reached the file goes to the writer's ring as it is, without a copy: a copy
    // of a turn's megabyte into fresh Python memory, under the GIL, is what a producer
    // would wait for at every commit an `on_durable` hook brings back.
    let kept_of = |chunks: Chunks| -> PyResult<Vec<(u64, Bound<'py, Chunk>)>> {
        chunks
            .into_iter()
            .map(|(seq, data)| Ok((seq, Bound::new(py, Chunk { data })?)))
            .collect()
    };
    let mut committed = Vec::with_capacity(done.len());
    for c in done {
        let turn = (
            c.first,
            c.last,
            c.first_ts,
            c.size,
            c.sync_ns,
            c.done_ns,
            kept_of(c.chunks)?,
        );
        committed.push(turn.into_pyobject(py)?.into_any());
    }
    let pending = match pending {
        None => None,
        Some(Pending::Unwritten {
            status,
            error: (errno, strerror),
            first,
            first_ts,
            last,
            chunks,
        }) => Some(
            (
                status,
                errno,
                strerror,
                first,
                first_ts,
                last,
                chunks_of(chunks),
            )
                .into_pyobject(py)?
                .into_any(),
        ),
        Some(Pending::Unchained { message, batch }) => Some(
            (CHAIN_PANIC, 0, message, Bound::new(py, batch)?)
                .into_pyobject(py)?
                .into_any(),
        ),
    };
    Ok((PyBytes::new(py, &head), offset, committed, pending))
}

/// Record lines the core wrote, handed to Python without a copy: bytes-like (the
/// buffer protocol, read-only), so `b"".join` and `bytes()` take it as they are.
#[pyclass(frozen, module = "riskaudit._native")]
pub struct Chunk {
    data: Vec<u8>,
}

#[pymethods]
impl Chunk {
    /// # Safety
    /// `view` is the buffer struct Python hands in; `PyBuffer_FillInfo` fills it and
    /// holds a reference to this object, whose bytes never change (frozen).
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        let data = &slf.get().data;
        let rc = pyo3::ffi::PyBuffer_FillInfo(
            view,
            slf.as_ptr(),
            data.as_ptr() as *mut std::os::raw::c_void,
            data.len() as pyo3::ffi::Py_ssize_t,
            1,
            flags,
        );
        if rc == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.data.len()
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.data)
    }
}
