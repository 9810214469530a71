"""pysfu: a LiveKit-compatible SFU for Python.

Layers, each importing only those before it (a test checks)::

    rtc      pure room domain: Room -> Effects, no Trio, no engine
    runtime  Trio lifetimes: RoomManager (one apply), ParticipantSession, ports
    media    the engine bridge (MediaPlane port) over pysfu._core (Rust)
    signal   WebSocket signaling attaching to sessions
    api      HTTP routes, Twirp
    server   wiring; cli on top

Run loop: ``Server.serve`` listens on one HTTP port (signaling, Twirp, health) and owns
a ``RoomManager``; each signal request becomes a pure ``Room`` transition whose
``Effects`` the manager carries out. The media plane (``pysfu._core``, Rust) forwards
RTP without Python on the packet path.
"""

from .auth import AuthError as AuthError
from .auth import Claims as Claims
from .auth import VideoGrant as VideoGrant
from .auth import mint_token as mint_token
from .auth import verify_token as verify_token
from .config import Config as Config
from .config import ConfigError as ConfigError
from .config import load_config as load_config
from .errors import PysfuError as PysfuError
from .rtc.room import Participant as Participant
from .rtc.room import Publication as Publication
from .rtc.room import Room as Room
from .server import VERSION as VERSION
from .server import Server as Server

__all__ = [
    "VERSION",
    "AuthError",
    "Claims",
    "Config",
    "ConfigError",
    "Participant",
    "Publication",
    "PysfuError",
    "Room",
    "Server",
    "VideoGrant",
    "load_config",
    "mint_token",
    "verify_token",
]
