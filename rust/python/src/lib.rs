//! Thin PyO3 door: `pysfu._core`. All logic lives in `pysfu-engine`.
//!
//! Every `MediaEngine` method that talks to the engine thread releases the GIL
//! while it waits. Engine errors become `MediaError` in exactly one place,
//! [`to_py`].
use std::net::IpAddr;
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use pysfu_engine::{Engine, EngineConfig, EngineError, MediaEvent, Role};

mod load;

create_exception!(_core, MediaError, PyException, "An error reported by the media engine.");

/// The one conversion site from engine errors to Python exceptions.
fn to_py(e: EngineError) -> PyErr {
    MediaError::new_err(e.to_string())
}

/// Every interface address as (interface, ip, up, loopback), for choosing host
/// candidates when the media socket is bound to a wildcard address.
#[pyfunction]
fn interface_addresses() -> PyResult<Vec<(String, String, bool, bool)>> {
    let all = pysfu_engine::net::interfaces::list().map_err(|e| MediaError::new_err(format!("getifaddrs: {e}")))?;
    Ok(all.into_iter().map(|a| (a.interface, a.ip.to_string(), a.up, a.loopback)).collect())
}

/// Version of the compiled media core.
#[pyfunction]
fn core_version() -> &'static str {
    pysfu_engine::VERSION
}

/// ICE and DTLS are up for a peer.
#[pyclass(frozen, module = "pysfu._core")]
struct PeerConnected {
    #[pyo3(get)]
    peer_id: String,
}

#[pymethods]
impl PeerConnected {
    #[getter]
    fn kind(&self) -> &'static str {
        "peer_connected"
    }
    fn __repr__(&self) -> String {
        format!("PeerConnected(peer_id={:?})", self.peer_id)
    }
}

/// A peer failed, timed out or was closed by the remote. Sent once per peer.
#[pyclass(frozen, module = "pysfu._core")]
struct PeerClosed {
    #[pyo3(get)]
    peer_id: String,
    #[pyo3(get)]
    reason: String,
}

#[pymethods]
impl PeerClosed {
    #[getter]
    fn kind(&self) -> &'static str {
        "peer_closed"
    }
    fn __repr__(&self) -> String {
        format!("PeerClosed(peer_id={:?}, reason={:?})", self.peer_id, self.reason)
    }
}

/// First media on a publisher m-line (once per mid).
#[pyclass(frozen, module = "pysfu._core")]
struct TrackArrived {
    #[pyo3(get)]
    peer_id: String,
    #[pyo3(get)]
    mid: String,
    #[pyo3(get)]
    track_id: String,
    media_kind: &'static str,
    #[pyo3(get)]
    rid: Option<String>,
    #[pyo3(get)]
    codec: String,
}

#[pymethods]
impl TrackArrived {
    /// "audio" or "video" (the media kind, unlike the other events' `kind`).
    #[getter]
    fn kind(&self) -> &'static str {
        self.media_kind
    }
    fn __repr__(&self) -> String {
        format!(
            "TrackArrived(peer_id={:?}, mid={:?}, track_id={:?}, kind={:?}, rid={:?}, codec={:?})",
            self.peer_id, self.mid, self.track_id, self.media_kind, self.rid, self.codec
        )
    }
}

/// A message on one of a peer's data channels.
#[pyclass(frozen, module = "pysfu._core")]
struct DataReceived {
    #[pyo3(get)]
    peer_id: String,
    #[pyo3(get)]
    reliable: bool,
    payload: Vec<u8>,
}

#[pymethods]
impl DataReceived {
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.payload)
    }
    #[getter]
    fn kind(&self) -> &'static str {
        "data_received"
    }
    fn __repr__(&self) -> String {
        format!(
            "DataReceived(peer_id={:?}, reliable={}, payload=<{} bytes>)",
            self.peer_id,
            self.reliable,
            self.payload.len()
        )
    }
}

/// Audio level summaries of every audio track since the last such event.
#[pyclass(frozen, module = "pysfu._core")]
struct AudioLevels {
    /// (track id, observed ms, active ms, loudest level 0..=127).
    #[pyo3(get)]
    levels: Vec<(String, u32, u32, u8)>,
}

#[pymethods]
impl AudioLevels {
    #[getter]
    fn kind(&self) -> &'static str {
        "audio_levels"
    }
    fn __repr__(&self) -> String {
        format!("AudioLevels(levels={:?})", self.levels)
    }
}

/// Link stats of every peer with stream stats since the last such event.
#[pyclass(frozen, module = "pysfu._core")]
struct LinkStats {
    /// (peer id, loss fraction or None, jitter ms, rtt ms or None).
    #[pyo3(get)]
    links: Vec<(String, Option<f32>, f32, Option<f32>)>,
}

#[pymethods]
impl LinkStats {
    #[getter]
    fn kind(&self) -> &'static str {
        "link_stats"
    }
    fn __repr__(&self) -> String {
        format!("LinkStats(links={:?})", self.links)
    }
}

/// The bandwidth allocator paused a video track to a subscriber, or resumed it.
#[pyclass(frozen, module = "pysfu._core")]
struct StreamStateChanged {
    #[pyo3(get)]
    peer_id: String,
    #[pyo3(get)]
    track_id: String,
    #[pyo3(get)]
    paused: bool,
}

#[pymethods]
impl StreamStateChanged {
    #[getter]
    fn kind(&self) -> &'static str {
        "stream_state_changed"
    }
    fn __repr__(&self) -> String {
        format!(
            "StreamStateChanged(peer_id={:?}, track_id={:?}, paused={})",
            self.peer_id, self.track_id, self.paused
        )
    }
}

fn event_to_py(py: Python<'_>, e: MediaEvent) -> PyResult<PyObject> {
    Ok(match e {
        MediaEvent::PeerConnected { peer_id } => Py::new(py, PeerConnected { peer_id })?.into_any(),
        MediaEvent::PeerClosed { peer_id, reason } => {
            Py::new(py, PeerClosed { peer_id, reason })?.into_any()
        }
        MediaEvent::TrackArrived { peer_id, mid, track_id, kind, rid, codec } => Py::new(
            py,
            TrackArrived { peer_id, mid, track_id, media_kind: kind, rid, codec },
        )?
        .into_any(),
        MediaEvent::DataReceived { peer_id, reliable, payload } => {
            Py::new(py, DataReceived { peer_id, reliable, payload })?.into_any()
        }
        MediaEvent::AudioLevels { levels } => {
            let levels = levels.into_iter().map(|(t, l)| (t, l.observed_ms, l.active_ms, l.loudest)).collect();
            Py::new(py, AudioLevels { levels })?.into_any()
        }
        MediaEvent::LinkStats { links } => {
            let links = links.into_iter().map(|(p, l)| (p, l.loss, l.jitter_ms, l.rtt_ms)).collect();
            Py::new(py, LinkStats { links })?.into_any()
        }
        MediaEvent::StreamStateChanged { peer_id, track_id, paused } => {
            Py::new(py, StreamStateChanged { peer_id, track_id, paused })?.into_any()
        }
        other => {
            return Err(PyValueError::new_err(format!("unexpected engine event {other:?}")));
        }
    })
}

/// The media engine: one UDP port, an engine thread, commands in, events out.
#[pyclass(frozen, module = "pysfu._core")]
struct MediaEngine {
    engine: Engine,
}

#[pymethods]
impl MediaEngine {
    #[new]
    // Keyword arguments of the Python constructor, one per engine setting.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (*, bind_ip = "127.0.0.1", udp_port = 7882, advertise_ip = None, ice_disconnected_grace = 10.0, bandwidth_estimation = true, allow_pause = false, audio_nack = true, advertise_ips = Vec::new(), tcp_port = None, workers = 1))]
    fn new(
        py: Python<'_>,
        bind_ip: &str,
        udp_port: u16,
        advertise_ip: Option<&str>,
        ice_disconnected_grace: f64,
        bandwidth_estimation: bool,
        allow_pause: bool,
        audio_nack: bool,
        advertise_ips: Vec<String>,
        tcp_port: Option<u16>,
        workers: usize,
    ) -> PyResult<Self> {
        let ice_disconnected_grace = Duration::try_from_secs_f64(ice_disconnected_grace).map_err(|_| {
            PyValueError::new_err(format!("bad ice_disconnected_grace {ice_disconnected_grace:?} (seconds, >= 0)"))
        })?;
        let bind_ip: IpAddr = bind_ip
            .parse()
            .map_err(|_| PyValueError::new_err(format!("bad bind_ip {bind_ip:?}")))?;
        let advertise_ip = advertise_ip
            .map(|a| a.parse::<IpAddr>().map_err(|_| PyValueError::new_err(format!("bad advertise_ip {a:?}"))))
            .transpose()?;
        let advertise_ips = advertise_ips
            .iter()
            .map(|a| a.parse::<IpAddr>().map_err(|_| PyValueError::new_err(format!("bad advertise_ips entry {a:?}"))))
            .collect::<PyResult<Vec<_>>>()?;
        let config = EngineConfig {
            bind_ip,
            udp_port,
            advertise_ip,
            ice_disconnected_grace,
            bandwidth_estimation,
            allow_pause,
            audio_nack,
            advertise_ips,
            tcp_port,
            workers,
        };
        let engine = py.allow_threads(|| Engine::start(config)).map_err(to_py)?;
        Ok(Self { engine })
    }

    /// The bound UDP port.
    #[getter]
    fn udp_port(&self) -> u16 {
        self.engine.local_addr().port()
    }

    /// The bound ICE-TCP port, or None without TCP.
    #[getter]
    fn tcp_port(&self) -> Option<u16> {
        self.engine.tcp_addrs().first().map(|a| a.port())
    }

    /// Advertised host candidate addresses as ("udp"|"tcp", "ip", port).
    fn advertised(&self) -> Vec<(&'static str, String, u16)> {
        let udp = self.engine.udp_addrs().iter().map(|a| ("udp", a.ip().to_string(), a.port()));
        let tcp = self.engine.tcp_addrs().iter().map(|a| ("tcp", a.ip().to_string(), a.port()));
        udp.chain(tcp).collect()
    }

    fn wake_fd(&self) -> i32 {
        self.engine.wake_fd()
    }

    fn drain_events(&self, py: Python<'_>) -> PyResult<Vec<PyObject>> {
        self.engine
            .drain_events()
            .into_iter()
            .map(|e| event_to_py(py, e))
            .collect()
    }

    /// Number of engine threads (shards).
    #[getter]
    fn shards(&self) -> usize {
        self.engine.shards()
    }

    /// Add a peer on `shard` (None: the least loaded).
    #[pyo3(signature = (peer_id, *, subscriber, shard = None))]
    fn add_peer(&self, py: Python<'_>, peer_id: &str, subscriber: bool, shard: Option<usize>) -> PyResult<()> {
        let role = if subscriber { Role::Subscriber } else { Role::Publisher };
        py.allow_threads(|| self.engine.add_peer(peer_id, role, shard)).map_err(to_py)
    }

    fn remove_peer(&self, py: Python<'_>, peer_id: &str) -> PyResult<()> {
        py.allow_threads(|| self.engine.remove_peer(peer_id)).map_err(to_py)
    }

    fn accept_offer(&self, py: Python<'_>, peer_id: &str, sdp: &str) -> PyResult<String> {
        py.allow_threads(|| self.engine.accept_offer(peer_id, sdp)).map_err(to_py)
    }

    #[pyo3(signature = (peer_id, *, ice_restart = false))]
    fn create_offer(&self, py: Python<'_>, peer_id: &str, ice_restart: bool) -> PyResult<String> {
        py.allow_threads(|| {
            if ice_restart {
                self.engine.create_ice_restart_offer(peer_id)
            } else {
                self.engine.create_offer(peer_id)
            }
        })
        .map_err(to_py)
    }

    fn accept_answer(&self, py: Python<'_>, peer_id: &str, sdp: &str) -> PyResult<()> {
        py.allow_threads(|| self.engine.accept_answer(peer_id, sdp)).map_err(to_py)
    }

    fn add_remote_candidate(&self, py: Python<'_>, peer_id: &str, candidate: &str) -> PyResult<()> {
        py.allow_threads(|| self.engine.add_remote_candidate(peer_id, candidate))
            .map_err(to_py)
    }

    fn local_candidates(&self, py: Python<'_>, peer_id: &str) -> PyResult<Vec<String>> {
        py.allow_threads(|| self.engine.local_candidates(peer_id)).map_err(to_py)
    }

    #[pyo3(signature = (*, publisher, mid, track_id))]
    fn publish_track(&self, py: Python<'_>, publisher: &str, mid: &str, track_id: &str) -> PyResult<()> {
        py.allow_threads(|| self.engine.publish_track(publisher, mid, track_id))
            .map_err(to_py)
    }

    fn unpublish_track(&self, py: Python<'_>, track_id: &str) -> PyResult<()> {
        py.allow_threads(|| self.engine.unpublish_track(track_id)).map_err(to_py)
    }

    #[pyo3(signature = (*, subscriber, track_id, stream_id))]
    fn subscribe(&self, py: Python<'_>, subscriber: &str, track_id: &str, stream_id: &str) -> PyResult<()> {
        py.allow_threads(|| self.engine.subscribe(subscriber, track_id, stream_id))
            .map_err(to_py)
    }

    /// Single PeerConnection (/rtc/v1): forward a track on a client-offered m-line.
    #[pyo3(signature = (*, subscriber, track_id, stream_id, mid))]
    fn subscribe_on_mid(
        &self,
        py: Python<'_>,
        subscriber: &str,
        track_id: &str,
        stream_id: &str,
        mid: &str,
    ) -> PyResult<()> {
        py.allow_threads(|| self.engine.subscribe_on_mid(subscriber, track_id, stream_id, mid))
            .map_err(to_py)
    }

    /// Subscribes (stream id given) and unsubscribes (None) in one round trip per
    /// shard; per item None when done, else the error's message.
    fn bind_many(&self, py: Python<'_>, items: Vec<(String, String, Option<String>)>) -> Vec<Option<String>> {
        let results = py.allow_threads(|| self.engine.bind_many(items));
        results.into_iter().map(|r| r.err().map(|e| e.to_string())).collect()
    }

    /// (subscriber, track, quality, disabled, fps, priority) choices in one round
    /// trip per shard; per item None when done, else the error's message.
    fn set_layers(&self, py: Python<'_>, items: Vec<pysfu_engine::LayerSettings>) -> Vec<Option<String>> {
        let results = py.allow_threads(|| self.engine.set_layers(items));
        results.into_iter().map(|r| r.err().map(|e| e.to_string())).collect()
    }

    #[pyo3(signature = (*, subscriber, track_id))]
    fn unsubscribe(&self, py: Python<'_>, subscriber: &str, track_id: &str) -> PyResult<()> {
        py.allow_threads(|| self.engine.unsubscribe(subscriber, track_id))
            .map_err(to_py)
    }

    fn set_muted(&self, py: Python<'_>, track_id: &str, muted: bool) -> PyResult<()> {
        py.allow_threads(|| self.engine.set_muted(track_id, muted)).map_err(to_py)
    }

    #[pyo3(signature = (*, subscriber, track_id, quality))]
    fn set_layer(&self, py: Python<'_>, subscriber: &str, track_id: &str, quality: i64) -> PyResult<()> {
        py.allow_threads(|| self.engine.set_layer(subscriber, track_id, quality))
            .map_err(to_py)
    }

    #[pyo3(signature = (*, subscriber, track_id, disabled))]
    fn set_disabled(&self, py: Python<'_>, subscriber: &str, track_id: &str, disabled: bool) -> PyResult<()> {
        py.allow_threads(|| self.engine.set_disabled(subscriber, track_id, disabled))
            .map_err(to_py)
    }

    #[pyo3(signature = (peer_id, *, reliable, payload))]
    fn send_data(&self, py: Python<'_>, peer_id: &str, reliable: bool, payload: Vec<u8>) -> PyResult<()> {
        py.allow_threads(|| self.engine.send_data(peer_id, reliable, payload))
            .map_err(to_py)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = py.allow_threads(|| self.engine.stats()).map_err(to_py)?;
        let d = PyDict::new(py);
        for (k, v) in stats {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn close(&self, py: Python<'_>) {
        py.allow_threads(|| self.engine.close());
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<PyObject>,
        exc: Option<PyObject>,
        tb: Option<PyObject>,
    ) -> bool {
        // Exceptions propagate; the engine closes either way.
        let _ = (exc_type, exc, tb);
        self.close(py);
        false
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(core_version, m)?)?;
    m.add_function(wrap_pyfunction!(interface_addresses, m)?)?;
    m.add("MediaError", m.py().get_type::<MediaError>())?;
    m.add_class::<MediaEngine>()?;
    m.add_class::<load::LoadGenerator>()?;
    m.add_class::<PeerConnected>()?;
    m.add_class::<PeerClosed>()?;
    m.add_class::<TrackArrived>()?;
    m.add_class::<DataReceived>()?;
    m.add_class::<AudioLevels>()?;
    m.add_class::<LinkStats>()?;
    m.add_class::<StreamStateChanged>()?;
    Ok(())
}
