//! Panics never cross into the host process.
//!
//! Every entry point that does real work (the queue's push, take and waits, the chain,
//! the commit's write, the watermark, verify's scans, the reuse check) runs it inside
//! `guarded` or `catch`, which catches a panic (the crate is built with
//! `panic = "unwind"`; the hash threads of a scan are joined inside it) and turns it into
//! `riskaudit.errors.AuditNativeError`. The rest (getters, `len`, building a batch from
//! Python values) cannot panic short of running out of memory, where Rust aborts anyway;
//! pyo3 would still stop a panic there at the boundary, as its own `PanicException`.
//! Whichever way:
//! the writer thread then dies the documented way (its records go to the emergency
//! output) instead of unwinding through the interpreter or aborting the host.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::prelude::*;

/// Where a test may ask for a panic (`test-panics` builds only).
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum Site {
    HandOff = 1,
    Chain = 2,
    Scan = 4,
    Commit = 8,
}

/// A caught panic, turned into the Python exception when it reaches the boundary.
pub struct Panicked(String);

impl Panicked {
    /// What the AuditNativeError says.
    pub fn message(&self) -> String {
        format!(
            "riskaudit's native core failed (a bug, please report it): {}",
            self.0
        )
    }
}

impl From<Panicked> for PyErr {
    fn from(p: Panicked) -> PyErr {
        Python::attach(|py| {
            let msg = p.message();
            match py
                .import("riskaudit.errors")
                .and_then(|m| m.getattr("AuditNativeError"))
            {
                Ok(cls) => match cls.call1((msg.clone(),)) {
                    Ok(exc) => PyErr::from_value(exc),
                    Err(e) => e,
                },
                Err(_) => pyo3::exceptions::PyRuntimeError::new_err(msg),
            }
        })
    }
}

/// Run `f`; a panic becomes `Panicked` (with its message).
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let text = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic".to_owned()
        };
        Panicked(text)
    })
}

/// `catch` with the error already a `PyErr` (takes the GIL only when it panicked).
pub fn guarded<T>(f: impl FnOnce() -> T) -> PyResult<T> {
    catch(f).map_err(PyErr::from)
}

#[cfg(feature = "test-panics")]
static ARMED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Panic here if a test armed this site (a no-op in release builds without the feature).
#[inline(always)]
pub fn maybe_panic(site: Site) {
    #[cfg(feature = "test-panics")]
    {
        use std::sync::atomic::Ordering;
        if ARMED.fetch_and(!(site as u8), Ordering::SeqCst) & site as u8 != 0 {
            panic!("test panic armed at {}", site as u8);
        }
    }
    #[cfg(not(feature = "test-panics"))]
    let _ = site;
}

/// Arm a one-shot panic at `site` ("hand-off", "chain", "commit" or "scan"); test
/// builds only.
#[cfg(feature = "test-panics")]
#[pyfunction]
pub fn _arm_panic(site: &str) -> PyResult<()> {
    use std::sync::atomic::Ordering;
    let bit = match site {
        "hand-off" => Site::HandOff,
        "chain" => Site::Chain,
        "scan" => Site::Scan,
        "commit" => Site::Commit,
        _ => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "no site {site:?}"
            )))
        }
    };
    ARMED.fetch_or(bit as u8, Ordering::SeqCst);
    Ok(())
}
