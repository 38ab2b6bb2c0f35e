//! The verifier's fast path: records that follow the chain head exactly.
//!
//! `riskaudit verify` walks every line; nearly all of them are the next record in
//! order, and for those it only has to check that the line starts with
//! `{"seq":<head+1>,"prev":"<head hash>"` and ends with `}`, hash it, and move on (the
//! next record's `prev` vouches for every byte). `scan` does that for a run of lines
//! without the GIL and stops at the first line that needs the Python verifier's
//! judgement (anything else), right after a control record (the verifier reads those),
//! or after a seq the caller wants to see. The event-id reuse check of
//! `riskaudit/integrity/_reuse.py` runs here too, on the same terms.

use std::sync::Mutex;

use rustc_hash::FxHashMap;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::format::{line_hash, HashHex, HASH_HEX};
use crate::guard::{catch, maybe_panic, Site};

const ID: &[u8] = b"\"event_id\":\"";
const TS_SPAN: usize = b",\"ts\":\"2026-12-03T08:00:00.000000000Z\",".len();
const PRINCIPAL: &[u8] = b",\"principal\":{\"name\":";
const KIND: &[u8] = b",\"kind\":\"";
/// Slots of the look-back ring (the verifier's `_RING`): record `seq` lives in slot
/// `seq % RING`.
const RING: usize = 1 << 16;

/// Ids are kept as their 128-bit xxh3 digest (no allocation per id; two ids sharing
/// a digest are as likely as a SHA-256 collision of a short string is not, about
/// 2^-128 per pair), content as its 64-bit digest, as the Python twin keeps `hash()`.
struct Reuse {
    seen: FxHashMap<u128, (u64, u64)>,
    reused: Vec<(Box<[u8]>, u64, u64)>,
    full: bool,
    limit: usize,
}

impl Reuse {
    /// The twin of `ReusedIds.see`: same search for the id, same content span.
    fn see(&mut self, seq: u64, line: &[u8], start: usize) {
        let mut i = start + TS_SPAN;
        if !line.get(i..).is_some_and(|rest| rest.starts_with(ID)) {
            match memchr::memmem::find(line.get(start..).unwrap_or(b""), ID) {
                Some(at) => i = start + at,
                None => return,
            }
        }
        i += ID.len();
        let find_quote = |from: usize| {
            line.get(from..)
                .and_then(|r| memchr::memchr(b'"', r))
                .map(|k| from + k)
        };
        let mut j = find_quote(i);
        while let Some(k) = j {
            if k > 0 && line[k - 1] == b'\\' {
                j = find_quote(k + 1);
            } else {
                break;
            }
        }
        let Some(j) = j else { return };
        let cut = if line.ends_with(b"}}") {
            memchr::memmem::rfind(&line[j..], PRINCIPAL).map(|k| j + k)
        } else {
            None
        };
        let content = match cut {
            Some(c) if c > 0 => &line[j..c],
            _ => &line[j..],
        };
        let digest = xxhash_rust::xxh3::xxh3_64(content);
        let id = &line[i..j];
        let key = xxhash_rust::xxh3::xxh3_128(id);
        match self.seen.get(&key) {
            Some(&(first, known)) => {
                if known != digest && first != seq {
                    self.reused.push((id.into(), first, seq));
                }
            }
            None => {
                if self.seen.len() >= self.limit {
                    self.full = true;
                } else {
                    self.seen.insert(key, (seq, digest));
                }
            }
        }
    }
}

/// Event ids seen, for the reuse warning (see `riskaudit/integrity/_reuse.py`).
#[pyclass(frozen, module = "riskaudit._native")]
pub struct ReusedIds {
    inner: Mutex<Reuse>,
}

impl ReusedIds {
    fn lock(&self) -> std::sync::MutexGuard<'_, Reuse> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl ReusedIds {
    #[new]
    #[pyo3(signature = (limit = 2_000_000))]
    fn new(limit: usize) -> Self {
        ReusedIds {
            inner: Mutex::new(Reuse {
                seen: FxHashMap::default(),
                reused: Vec::new(),
                full: false,
                limit,
            }),
        }
    }

    /// Feed one event record line (for the lines the Python verifier judges itself).
    #[pyo3(signature = (seq, line, start = 0))]
    fn see(&self, py: Python<'_>, seq: u64, line: &[u8], start: usize) -> PyResult<()> {
        py.detach(|| {
            let mut r = self.lock();
            catch(|| r.see(seq, line, start))
        })
        .map_err(PyErr::from)
    }

    /// `(raw id bytes, first seq, later seq)` for each reuse found, in order.
    fn reused<'py>(&self, py: Python<'py>) -> Vec<(Bound<'py, PyBytes>, u64, u64)> {
        self.lock()
            .reused
            .iter()
            .map(|(id, a, b)| (PyBytes::new(py, id), *a, *b))
            .collect()
    }

    /// Whether the limit of distinct ids was reached (the check stopped short).
    #[getter]
    fn full(&self) -> bool {
        self.lock().full
    }

    #[getter]
    fn limit(&self) -> usize {
        self.lock().limit
    }
}

#[derive(Clone, Copy)]
struct Slot {
    seq: u64,
    hash: HashHex,
    prev: HashHex,
    file: u32,
}

/// The verifier's look-back ring: `(seq, hash, prev hash, file index)` of the last
/// 65,536 records accepted, so a record seen again (a rotated copy, a duplicate) can
/// be told from a modified one.
#[pyclass(frozen, module = "riskaudit._native")]
pub struct Ring {
    slots: Mutex<Vec<Option<Slot>>>,
}

impl Ring {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl Ring {
    #[new]
    fn new() -> Self {
        Ring {
            slots: Mutex::new(vec![None; RING]),
        }
    }

    /// The entry in `seq`'s slot (it may be another seq's, as in the Python ring).
    fn get<'py>(
        &self,
        py: Python<'py>,
        seq: u64,
    ) -> Option<(u64, Bound<'py, PyBytes>, Bound<'py, PyBytes>, u32)> {
        let slot = self.lock()[(seq as usize) % RING];
        slot.map(|s| {
            (
                s.seq,
                PyBytes::new(py, &s.hash),
                PyBytes::new(py, &s.prev),
                s.file,
            )
        })
    }

    fn put(&self, seq: u64, hash: &[u8], prev: &[u8], file: u32) -> PyResult<()> {
        let hash: HashHex = hash
            .try_into()
            .map_err(|_| pyo3::exceptions::PyValueError::new_err("hash must be 64 bytes"))?;
        let prev: HashHex = prev
            .try_into()
            .map_err(|_| pyo3::exceptions::PyValueError::new_err("prev must be 64 bytes"))?;
        self.lock()[(seq as usize) % RING] = Some(Slot {
            seq,
            hash,
            prev,
            file,
        });
        Ok(())
    }
}

/// What a block scan accepted: `(offset after the last accepted line, lines accepted,
/// head seq, head hash, stopped after a control record, prev hash of the head, offset
/// where the last accepted line starts)`.
type BlockScanned<'py> = (
    usize,
    usize,
    u64,
    Bound<'py, PyBytes>,
    bool,
    Bound<'py, PyBytes>,
    usize,
);

/// The verifier's fast path over the lines of one block of a file (each ending in
/// `\n`) from byte `begin` up to byte `end`, without the GIL and without a bytes object
/// per line. Accepts lines while each is the next record in the chain; stops before the
/// first that is not, after a control record, or after seq `stop_at`.
#[pyfunction]
#[pyo3(signature = (data, begin, end, seq, prev, stop_at, reuse, ring, file))]
#[allow(clippy::too_many_arguments)]
pub fn scan_block<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyBytes>,
    begin: usize,
    end: usize,
    seq: u64,
    prev: &[u8],
    stop_at: u64,
    reuse: &ReusedIds,
    ring: &Ring,
    file: u32,
) -> PyResult<BlockScanned<'py>> {
    let head0: HashHex = prev
        .try_into()
        .map_err(|_| pyo3::exceptions::PyValueError::new_err("prev must be 64 hex bytes"))?;
    let bytes = data.as_bytes();
    let end = end.min(bytes.len());
    let begin = begin.min(end);
    let block = &bytes[begin..end];
    // `data` is an immutable bytes object kept alive by the caller's reference for the
    // whole call, so its buffer may be read without the GIL.
    let outcome = py.detach(|| {
        let mut r = reuse.lock();
        let reuse_ref = &mut *r;
        let mut slots = ring.lock();
        catch(|| {
            maybe_panic(Site::Scan);
            // Each line's hash depends on nothing but the line: a window of lines is
            // hashed on every core first, then its links are checked in order. Work
            // stays proportional to the lines accepted: the first line's head is
            // checked before anything is hashed, and a window is at most WINDOW lines.
            let mut seq = seq;
            let mut head = head0;
            let mut head_prev = head0;
            let mut pos = 0usize;
            let mut last_start = 0usize;
            let mut taken = 0usize;
            let mut control = false;
            let mut pfx: Vec<u8> = Vec::with_capacity(96);
            let mut buf = itoa::Buffer::new();
            let mut spans: Vec<(usize, usize)> = Vec::with_capacity(WINDOW);
            'windows: while pos < block.len() {
                spans.clear();
                let mut start = pos;
                for nl in memchr::memchr_iter(b'\n', &block[pos..]) {
                    spans.push((start, pos + nl));
                    start = pos + nl + 1;
                    if spans.len() == WINDOW {
                        break;
                    }
                }
                if spans.is_empty() {
                    break;
                }
                let (s0, e0) = spans[0];
                if !line_follows(&block[s0..e0], seq, &head, &mut pfx, &mut buf) {
                    break;
                }
                let hashes = hash_all(block, &spans);
                for (k, &(start, nl)) in spans.iter().enumerate() {
                    let line = &block[start..nl];
                    if !line_follows(line, seq, &head, &mut pfx, &mut buf) {
                        break 'windows;
                    }
                    seq += 1;
                    let h = hashes[k];
                    slots[(seq as usize) % RING] = Some(Slot {
                        seq,
                        hash: h,
                        prev: head,
                        file,
                    });
                    head_prev = head;
                    head = h;
                    taken += 1;
                    last_start = start;
                    pos = nl + 1;
                    if line[pfx.len()..].starts_with(KIND) {
                        control = true;
                        break 'windows;
                    }
                    reuse_ref.see(seq, line, pfx.len());
                    if seq == stop_at {
                        break 'windows;
                    }
                }
            }
            (pos, taken, seq, head, control, head_prev, last_start)
        })
    })?;
    let (pos, taken, seq, head, control, head_prev, last_start) = outcome;
    Ok((
        begin + pos,
        taken,
        seq,
        PyBytes::new(py, &head),
        control,
        PyBytes::new(py, &head_prev),
        begin + last_start,
    ))
}

/// Lines hashed per window of the block scan.
const WINDOW: usize = 4096;

/// Whether `line` is the record after `seq` whose `prev` is `head` (the fast path's
/// test); leaves the expected head in `pfx`.
fn line_follows(
    line: &[u8],
    seq: u64,
    head: &HashHex,
    pfx: &mut Vec<u8>,
    buf: &mut itoa::Buffer,
) -> bool {
    pfx.clear();
    pfx.extend_from_slice(b"{\"seq\":");
    pfx.extend_from_slice(buf.format(seq + 1).as_bytes());
    pfx.extend_from_slice(b",\"prev\":\"");
    pfx.extend_from_slice(head);
    pfx.push(b'"');
    line.starts_with(pfx) && line.ends_with(b"}")
}

/// The hash of every line, spread over the machine's cores (at most 8 threads; one
/// for less than 256 KiB).
fn hash_all(block: &[u8], spans: &[(usize, usize)]) -> Vec<HashHex> {
    let mut out = vec![[0u8; HASH_HEX]; spans.len()];
    let bytes = spans.last().map_or(0, |l| l.1) - spans.first().map_or(0, |f| f.0);
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let threads = if bytes < (256 << 10) { 1 } else { cores };
    let per = spans.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        for (part, dest) in spans.chunks(per).zip(out.chunks_mut(per)) {
            let mut work = move || {
                for (&(start, nl), slot) in part.iter().zip(dest.iter_mut()) {
                    *slot = line_hash(&block[start..nl]);
                }
            };
            if threads == 1 {
                work();
            } else {
                scope.spawn(work);
            }
        }
    });
    out
}
