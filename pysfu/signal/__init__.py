"""The client wire: signal connections (WebSocket, protocol v0) attaching to sessions."""
