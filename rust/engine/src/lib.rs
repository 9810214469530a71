//! pysfu's media data plane. Knows peers and tracks, never rooms.

/// Version of the engine crate, reported by the Python side.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
