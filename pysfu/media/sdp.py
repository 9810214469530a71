"""Just enough SDP reading for the control plane: which tracks a publisher's offer
still sends. The media engine owns the full SDP; this only looks at m-sections."""

from __future__ import annotations

import attrs

_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@attrs.frozen
class MediaSection:
    kind: str
    """"audio", "video" or "application"."""
    mid: str
    direction: str
    track_id: str
    """msid track id (the client's cid for a published track), or ""."""
    port_zero: bool
    """A rejected/stopped section (``m=<kind> 0 ...``)."""

    @property
    def sending(self) -> bool:
        return not self.port_zero and self.direction in ("sendrecv", "sendonly")


def media_sections(sdp: str) -> list[MediaSection]:
    """The m-sections of ``sdp``, tolerating anything malformed by skipping it."""
    sections: list[MediaSection] = []
    current: dict[str, str] | None = None

    def flush() -> None:
        if current is not None:
            sections.append(
                MediaSection(
                    kind=current.get("kind", ""),
                    mid=current.get("mid", ""),
                    direction=current.get("direction", "sendrecv"),
                    track_id=current.get("track", ""),
                    port_zero=current.get("port") == "0",
                )
            )

    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            flush()
            parts = line[2:].split()
            current = {
                "kind": parts[0] if parts else "",
                "port": parts[1] if len(parts) > 1 else "",
            }
        elif current is None:
            continue
        elif line.startswith("a=mid:"):
            current["mid"] = line[6:].strip()
        elif line[2:] in _DIRECTIONS and line.startswith("a="):
            current["direction"] = line[2:]
        elif line.startswith("a=msid:"):
            parts = line[7:].split()
            if len(parts) >= 2:
                current["track"] = parts[1]
    flush()
    return sections
