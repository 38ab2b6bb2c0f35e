//! The commit's system call: a chained batch written at the end of the file and made
//! durable in one `pwritev2(..., RWF_DSYNC)`, without the GIL.
//!
//! Through the C library (`libc::pwritev2`), never a raw system call, so an LD_PRELOAD
//! library sees it as it sees any other write (the project's fault library does: see
//! tests/faults/test_faultlib.py). What to do with a short write, or a kernel or file
//! system that refuses the flag, is the caller's decision (format/_files.py falls back
//! to write + fsync); this function reports what happened as Python's `OSError` does.

use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::guard::{catch, maybe_panic, Site};

/// `pwritev2(fd, chunks, offset, RWF_DSYNC if dsync else 0)`: the bytes written.
#[pyfunction]
pub fn write_durably(
    py: Python<'_>,
    fd: i32,
    chunks: &Bound<'_, PyList>,
    offset: i64,
    dsync: bool,
) -> PyResult<usize> {
    let mut owners: Vec<Bound<'_, PyBytes>> = Vec::with_capacity(chunks.len());
    for item in chunks.iter() {
        owners.push(item.cast_into::<PyBytes>()?);
    }
    // The bytes objects stay alive (`owners`) and are immutable while the GIL is
    // released; the iovecs are built from their addresses.
    let spans: Vec<(usize, usize)> = owners
        .iter()
        .map(|b| {
            let d = b.as_bytes();
            (d.as_ptr() as usize, d.len())
        })
        .collect();
    let flags = if dsync { libc::RWF_DSYNC } else { 0 };
    let written = crate::gil::writer_detach(py, || {
        catch(|| {
            maybe_panic(Site::Commit);
            pwritev2(&spans, fd, offset, flags)
        })
    })?;
    drop(owners);
    written.map_err(|err| {
        let (errno, strerror) = os_error(&err);
        // OSError(errno, strerror): Python picks the subclass and sets .errno.
        PyOSError::new_err((errno, strerror))
    })
}

/// `(errno, strerror)` of an I/O error, as Python's OSError spells them.
pub(crate) fn os_error(err: &std::io::Error) -> (i32, String) {
    let text = err.to_string();
    let strerror = text.split(" (os error").next().unwrap_or(&text).to_owned();
    (err.raw_os_error().unwrap_or(libc::EIO), strerror)
}

/// Whether `RWF_DSYNC` works here (a kernel or file system that refuses it turns
/// this off for the process, as format/_files.py does on the Python side).
static DSYNC_WORKS: AtomicBool = AtomicBool::new(true);

/// The most buffers one `pwritev2` takes (Linux's IOV_MAX is 1024).
const IOV_MAX: usize = 512;

/// Write all of `chunks` at `offset` and make them durable, without the GIL: one
/// `pwritev2(RWF_DSYNC)` per 512 buffers, a short write continued where it stopped
/// (what a `RWF_DSYNC` write reported written is durable); where the flag is refused,
/// plain writes and one `fsync` (also when the caller says `dsync` is off). The commit
/// turn's write (turn.rs).
pub(crate) fn write_all_durably(
    fd: i32,
    chunks: &[&[u8]],
    mut offset: i64,
    dsync: bool,
) -> std::io::Result<()> {
    let mut spans: Vec<(usize, usize)> = chunks
        .iter()
        .filter(|c| !c.is_empty())
        .map(|c| (c.as_ptr() as usize, c.len()))
        .collect();
    let mut sync_after = !dsync || !DSYNC_WORKS.load(Ordering::Relaxed);
    let mut at = 0;
    while at < spans.len() {
        let group = &spans[at..spans.len().min(at + IOV_MAX)];
        let flags = if sync_after { 0 } else { libc::RWF_DSYNC };
        let mut n = match pwritev2(group, fd, offset, flags) {
            Ok(n) => n,
            Err(e)
                if flags != 0
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS)
                    ) =>
            {
                DSYNC_WORKS.store(false, Ordering::Relaxed);
                sync_after = true;
                continue;
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "the write wrote nothing",
            ));
        }
        offset += n as i64;
        while n > 0 {
            let (ptr, len) = spans[at];
            if n >= len {
                n -= len;
                at += 1;
            } else {
                spans[at] = (ptr + n, len - n);
                n = 0;
            }
        }
    }
    // SAFETY: fsync on a descriptor number; the kernel checks it.
    if sync_after && unsafe { libc::fsync(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn pwritev2(spans: &[(usize, usize)], fd: i32, offset: i64, flags: i32) -> std::io::Result<usize> {
    {
        let iov: Vec<libc::iovec> = spans
            .iter()
            .map(|&(ptr, len)| libc::iovec {
                iov_base: ptr as *mut libc::c_void,
                iov_len: len,
            })
            .collect();
        loop {
            // SAFETY: every iovec points into a live, immutable bytes buffer.
            let n = unsafe { libc::pwritev2(fd, iov.as_ptr(), iov.len() as i32, offset, flags) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}
