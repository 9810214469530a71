"""HTTP surfaces: the ASGI routes and the Twirp server API."""
