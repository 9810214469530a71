//! Thin PyO3 door: `pysfu._core`. All logic lives in `pysfu-engine`.
use pyo3::prelude::*;

/// Version of the compiled media core.
#[pyfunction]
fn core_version() -> &'static str {
    pysfu_engine::VERSION
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(core_version, m)?)?;
    Ok(())
}
