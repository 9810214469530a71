"""The exception hierarchy: one root, local misuse kept apart from remote misbehaviour."""


class PysfuError(Exception):
    """Root of every error pysfu raises on purpose."""


class LocalProtocolError(PysfuError):
    """Our own code asked for something the current state forbids (a bug, not bad input)."""


class RemoteProtocolError(PysfuError):
    """A peer sent something malformed or out of order; the peer is at fault."""
