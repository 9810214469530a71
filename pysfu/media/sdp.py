"""Just enough SDP for the control plane: which tracks a publisher's offer still
sends, and the Opus parameters of the publisher answer. The media engine owns the
full SDP; this only looks at m-sections."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

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


_OPUS_RTPMAP = re.compile(r"^a=rtpmap:(\d+) opus/48000", re.IGNORECASE)


def configure_opus(answer: str, audio: Mapping[str, tuple[bool, bool]]) -> str:
    """The publisher answer with Opus's DTX and stereo set per audio m-section, as
    the reference configures it: ``audio`` maps a mid to (dtx, stereo); ``usedtx=1``
    asks the client to stop sending in silence, ``stereo=1`` (with the highest
    average bitrate) to encode both channels. Sections not named stay as they are."""
    lines = answer.split("\r\n") if "\r\n" in answer else answer.split("\n")
    eol = "\r\n" if "\r\n" in answer else "\n"
    # Pass 1: each section's mid and Opus payload type.
    section = -1
    mids: dict[int, str] = {}
    opus: dict[int, str] = {}
    owner: list[int] = []
    for line in lines:
        if line.startswith("m="):
            section += 1
        owner.append(section)
        if line.startswith("a=mid:"):
            mids[section] = line[6:].strip()
        match = _OPUS_RTPMAP.match(line)
        if match is not None:
            opus.setdefault(section, match.group(1))
    out: list[str] = []
    for line, sec in zip(lines, owner, strict=True):
        wanted = audio.get(mids.get(sec, ""))
        pt = opus.get(sec)
        if wanted is not None and pt is not None and line.startswith(f"a=fmtp:{pt} "):
            line = _set_params(line, dtx=wanted[0], stereo=wanted[1])
        out.append(line)
    return eol.join(out)


def _set_params(fmtp: str, *, dtx: bool, stereo: bool) -> str:
    head, _, params = fmtp.partition(" ")
    kept = [p for p in params.split(";") if p and p.split("=")[0].strip() not in _MANAGED]
    if dtx:
        kept.append("usedtx=1")
    if stereo:
        kept += ["stereo=1", "maxaveragebitrate=510000"]
    return f"{head} {';'.join(kept)}"


_MANAGED: Collection[str] = frozenset({"usedtx", "stereo", "maxaveragebitrate"})
