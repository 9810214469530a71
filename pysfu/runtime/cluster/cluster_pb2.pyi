from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    SERVING: _ClassVar[NodeState]
    DRAINING: _ClassVar[NodeState]
NODE_STATE_UNSPECIFIED: NodeState
SERVING: NodeState
DRAINING: NodeState

class NodeStats(_message.Message):
    __slots__ = ("rooms", "participants", "tracks_in", "packets_in", "packets_out", "bytes_in", "bytes_out", "cpu_load", "num_cpus", "sys_load")
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    TRACKS_IN_FIELD_NUMBER: _ClassVar[int]
    PACKETS_IN_FIELD_NUMBER: _ClassVar[int]
    PACKETS_OUT_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    CPU_LOAD_FIELD_NUMBER: _ClassVar[int]
    NUM_CPUS_FIELD_NUMBER: _ClassVar[int]
    SYS_LOAD_FIELD_NUMBER: _ClassVar[int]
    rooms: int
    participants: int
    tracks_in: int
    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int
    cpu_load: float
    num_cpus: int
    sys_load: float
    def __init__(self, rooms: _Optional[int] = ..., participants: _Optional[int] = ..., tracks_in: _Optional[int] = ..., packets_in: _Optional[int] = ..., packets_out: _Optional[int] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ..., cpu_load: _Optional[float] = ..., num_cpus: _Optional[int] = ..., sys_load: _Optional[float] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("id", "http_url", "version", "state", "started_at_ms", "updated_at_ms", "stats")
    ID_FIELD_NUMBER: _ClassVar[int]
    HTTP_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    id: str
    http_url: str
    version: str
    state: NodeState
    started_at_ms: int
    updated_at_ms: int
    stats: NodeStats
    def __init__(self, id: _Optional[str] = ..., http_url: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[_Union[NodeState, str]] = ..., started_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., stats: _Optional[_Union[NodeStats, _Mapping]] = ...) -> None: ...

class RoomPlacement(_message.Message):
    __slots__ = ("room", "node_id", "placed_at_ms")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PLACED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    room: str
    node_id: str
    placed_at_ms: int
    def __init__(self, room: _Optional[str] = ..., node_id: _Optional[str] = ..., placed_at_ms: _Optional[int] = ...) -> None: ...

class RelayGrant(_message.Message):
    __slots__ = ("from_node", "to_node", "api_key", "expires_at_ms")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    from_node: str
    to_node: str
    api_key: str
    expires_at_ms: int
    def __init__(self, from_node: _Optional[str] = ..., to_node: _Optional[str] = ..., api_key: _Optional[str] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...
