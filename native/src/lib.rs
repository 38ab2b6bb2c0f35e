//! `riskaudit._native`: the per-record work of riskaudit, without the GIL.
//!
//! Four things run per record and nothing else does: the hand-off (`Queue`), the
//! chain (`chain`: line bytes and SHA-256) and the commit's write, run together by
//! `commit_turns` while the primary takes every write, the durable watermark that
//! callers wait on (`Watermark`) and the verifier's scan (`scan`). Everything
//! that happens per batch or per episode (destinations, rotation, checkpoints,
//! signatures, metrics) stays in Python. See docs/benchmarks.md for the measured split.

mod commit;
mod format;
mod gil;
mod guard;
mod queue;
mod scan;
mod tally;
mod turn;
mod watermark;

use pyo3::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use pyo3::types::PyBytes;

/// The hex SHA-256 of a line (the hash the next record names in `prev`).
#[pyfunction]
fn line_hash<'py>(py: Python<'py>, line: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &format::line_hash(line))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("TEST_PANICS", cfg!(feature = "test-panics"))?;
    m.add_class::<queue::Queue>()?;
    m.add_class::<queue::Batch>()?;
    m.add("NEEDS_CHECK", queue::NEEDS_CHECK)?;
    m.add_class::<scan::ReusedIds>()?;
    m.add_class::<scan::Ring>()?;
    m.add_class::<tally::Tally>()?;
    m.add_class::<watermark::Watermark>()?;
    m.add("PRIMARY", watermark::PRIMARY)?;
    m.add("SPOOL", watermark::SPOOL)?;
    m.add("STDOUT", watermark::STDOUT)?;
    m.add_function(wrap_pyfunction!(queue::chain, m)?)?;
    m.add_function(wrap_pyfunction!(commit::write_durably, m)?)?;
    m.add_function(wrap_pyfunction!(turn::commit_turns, m)?)?;
    m.add_class::<turn::Chunk>()?;
    m.add("SHRUNK", turn::SHRUNK)?;
    m.add("FAILED", turn::FAILED)?;
    m.add("CHAIN_PANIC", turn::CHAIN_PANIC)?;
    m.add("COMMIT_PANIC", turn::COMMIT_PANIC)?;
    m.add_function(wrap_pyfunction!(gil::yield_to_writer, m)?)?;
    m.add_function(wrap_pyfunction!(gil::begin_section, m)?)?;
    m.add_function(wrap_pyfunction!(gil::end_section, m)?)?;
    m.add_function(wrap_pyfunction!(gil::_after_fork, m)?)?;
    m.add_function(wrap_pyfunction!(scan::scan_block, m)?)?;
    m.add_function(wrap_pyfunction!(line_hash, m)?)?;
    #[cfg(feature = "test-panics")]
    m.add_function(wrap_pyfunction!(guard::_arm_panic, m)?)?;
    Ok(())
}
