"""The media plane: the bridge from rooms to the Rust engine (``pysfu._core``)."""
