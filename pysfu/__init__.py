"""pysfu: a LiveKit-compatible SFU for Python."""
