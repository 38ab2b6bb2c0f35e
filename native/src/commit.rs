//! The commit's system call: a chained batch written at the end of the file and made
//! durable in one `pwritev2(..., RWF_DSYNC)`, without the GIL.
//!
//! Through the C library (`libc::pwritev2`), never a raw system call, so an LD_PRELOAD
//! library sees it as it sees any other write (the project's fault library does: see
//! tests/faults/test_faultlib.py). What to do with a short write, or a kernel or file
//! system that refuses the flag, is the caller's decision (format/_files.py falls back
//! to write + fsync); this function reports what happened as Python's `OSError` does.

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
    match written {
        Ok(n) => Ok(n),
        // OSError(errno, strerror): Python picks the subclass and sets .errno.
        Err(err) => {
            let text = err.to_string();
            let strerror = text.split(" (os error").next().unwrap_or(&text).to_owned();
            Err(PyOSError::new_err((
                err.raw_os_error().unwrap_or(libc::EIO),
                strerror,
            )))
        }
    }
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
