//! `LoadGenerator`: the door to `pysfu-loadgen` for `pysfu loadtest`.
use std::net::IpAddr;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use pysfu_loadgen::synth::Kind;
use pysfu_loadgen::{LoadGen, TrackSpec};

use crate::to_py;

fn to_dict<'py>(py: Python<'py>, items: Vec<(&'static str, u64)>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in items {
        d.set_item(k, v)?;
    }
    Ok(d)
}

/// Synthetic WebRTC peers driven by one Rust thread.
#[pyclass(frozen, module = "pysfu._core")]
pub(crate) struct LoadGenerator {
    gen: LoadGen,
}

#[pymethods]
impl LoadGenerator {
    #[new]
    #[pyo3(signature = (*, local_ip = "127.0.0.1"))]
    fn new(local_ip: &str) -> PyResult<Self> {
        let ip: IpAddr = local_ip
            .parse()
            .map_err(|_| PyValueError::new_err(format!("bad local_ip {local_ip:?}")))?;
        Ok(Self { gen: LoadGen::start(ip).map_err(to_py)? })
    }

    fn now_ns(&self) -> u64 {
        self.gen.now_ns()
    }

    fn add_peer(&self, py: Python<'_>) -> PyResult<u32> {
        py.allow_threads(|| self.gen.add_peer()).map_err(to_py)
    }

    fn publisher_offer(&self, py: Python<'_>, peer: u32, tracks: Vec<(String, String, u32)>) -> PyResult<String> {
        let specs = tracks
            .into_iter()
            .map(|(cid, kind, kbps)| {
                let kind = match kind.as_str() {
                    "audio" => Kind::Audio,
                    "video" => Kind::Video,
                    other => return Err(PyValueError::new_err(format!("track kind {other:?}: audio or video"))),
                };
                Ok(TrackSpec { cid, kind, kbps })
            })
            .collect::<PyResult<Vec<_>>>()?;
        py.allow_threads(|| self.gen.publisher_offer(peer, specs)).map_err(to_py)
    }

    fn accept_answer(&self, py: Python<'_>, peer: u32, sdp: String) -> PyResult<()> {
        py.allow_threads(|| self.gen.accept_answer(peer, sdp)).map_err(to_py)
    }

    fn accept_offer(&self, py: Python<'_>, peer: u32, sdp: String) -> PyResult<String> {
        py.allow_threads(|| self.gen.accept_offer(peer, sdp)).map_err(to_py)
    }

    fn add_remote_candidate(&self, py: Python<'_>, peer: u32, candidate: String) -> PyResult<()> {
        py.allow_threads(|| self.gen.add_remote_candidate(peer, candidate)).map_err(to_py)
    }

    fn remove_peer(&self, py: Python<'_>, peer: u32) -> PyResult<()> {
        py.allow_threads(|| self.gen.remove_peer(peer)).map_err(to_py)
    }

    fn peer_info<'py>(&self, py: Python<'py>, peer: u32) -> PyResult<Bound<'py, PyDict>> {
        let info = py.allow_threads(|| self.gen.peer_info(peer)).map_err(to_py)?;
        to_dict(py, info)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = py.allow_threads(|| self.gen.stats()).map_err(to_py)?;
        to_dict(py, stats)
    }

    fn reset_stats(&self, py: Python<'_>) -> PyResult<()> {
        py.allow_threads(|| self.gen.reset_stats()).map_err(to_py)
    }

    fn close(&self, py: Python<'_>) {
        py.allow_threads(|| self.gen.close());
    }
}
