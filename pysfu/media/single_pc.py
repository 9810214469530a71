"""One PeerConnection for both directions (``/rtc/v1``), as the SDKs drive it: the
client always offers and the server always answers. The client's offers carry
recvonly m-sections (three audio and three video up front, more when asked with
``MediaSectionsRequirement``); the server forwards each subscribed track on one of
them and says which in the answer (``mid_to_track_id``, and the msid the SDKs take
the participant from).

This module is the pure bookkeeping: which offered mids are free, which track each
bound mid carries, which subscriptions wait for a mid, when the client must offer
again, and the few edits the engine's answer needs. A mid is used once: the SDKs
announce a (mid, stream) pair once per PeerConnection, so a resubscription takes a
fresh m-section. An offered mid carrying nothing is answered ``inactive``, so that
binding it later (a transition to sendonly) fires the client's ``track`` event.
"""

from __future__ import annotations

import re

import attrs

from .sdp import MediaSection

__all__ = ["SinglePc"]

_KINDS = ("audio", "video")


@attrs.define
class _Bound:
    track_sid: str
    stream_id: str


@attrs.define
class SinglePc:
    free: dict[str, list[str]] = attrs.field(factory=lambda: {k: [] for k in _KINDS})
    """Offered recvonly mids never bound, by kind, in offer order."""
    used: set[str] = attrs.field(factory=set)
    bound: dict[str, _Bound] = attrs.field(factory=dict)
    """mid -> what it carries now."""
    waiting: dict[str, tuple[str, str]] = attrs.field(factory=dict)
    """track sid -> (kind, stream id), subscribed but without a mid yet (in order)."""
    requested: dict[str, int] = attrs.field(factory=lambda: {k: 0 for k in _KINDS})
    """Sections asked for with MediaSectionsRequirement and not yet offered."""
    receiving: set[str] = attrs.field(factory=set)
    """Mids the client's latest offer receives on (recvonly/sendrecv audio/video)."""
    stale: bool = False
    """A binding changed since the last answer: the client must offer again."""
    asked: bool = False
    """A MediaSectionsRequirement is out and no offer has come since."""

    def offered(self, sections: list[MediaSection]) -> None:
        """Learn the m-sections of a client offer (call before assigning)."""
        self.asked = False
        self.receiving = set()
        for s in sections:
            if s.kind not in _KINDS or s.port_zero:
                continue
            if s.direction not in ("recvonly", "sendrecv"):
                continue
            self.receiving.add(s.mid)
            if s.mid in self.used or s.mid in self.free[s.kind]:
                continue
            self.free[s.kind].append(s.mid)
            if self.requested[s.kind]:
                self.requested[s.kind] -= 1

    def want(self, track_sid: str, kind: str, stream_id: str) -> None:
        if kind not in _KINDS or track_sid in self.waiting:
            return
        self.drop(track_sid)
        self.waiting[track_sid] = (kind, stream_id)
        self.stale = True

    def drop(self, track_sid: str) -> str | None:
        """Stop a subscription; the mid it had (now retired), if any."""
        self.waiting.pop(track_sid, None)
        for mid, b in list(self.bound.items()):
            if b.track_sid == track_sid:
                del self.bound[mid]
                self.stale = True
                return mid
        return None

    def assign(self) -> list[tuple[str, str, str]]:
        """Bind waiting subscriptions to free mids: (track sid, stream id, mid)."""
        out = []
        for track_sid, (kind, stream_id) in list(self.waiting.items()):
            if not self.free[kind]:
                continue
            mid = self.free[kind].pop(0)
            self.used.add(mid)
            self.bound[mid] = _Bound(track_sid, stream_id)
            del self.waiting[track_sid]
            out.append((track_sid, stream_id, mid))
        return out

    def requirement(self) -> tuple[int, int] | None:
        """(audios, videos) to ask the client for, when it must offer again: more
        sections than are free, or bindings it has not been told about. None while
        an earlier request is unanswered or nothing is needed."""
        if self.asked:
            return None
        need = {k: 0 for k in _KINDS}
        for kind, _ in self.waiting.values():
            need[kind] += 1
        short = {k: max(0, need[k] - len(self.free[k]) - self.requested[k]) for k in _KINDS}
        if not (self.stale or any(short.values())):
            return None
        for k in _KINDS:
            self.requested[k] += short[k]
        self.asked = True
        self.stale = False
        return short["audio"], short["video"]

    def answered(self) -> None:
        """The answer to the latest offer went out with every binding in it."""
        self.stale = False

    def mid_to_track_id(self) -> dict[str, str]:
        return {mid: b.track_sid for mid, b in self.bound.items()}

    def edit_answer(self, sdp: str) -> str:
        """The engine's answer as the client must see it: bound mids carry their
        track's msid; offered receive mids carrying nothing are inactive."""
        out: list[str] = []
        section: list[str] = []

        def flush() -> None:
            if section:
                out.extend(self._edit_section(section))
                section.clear()

        for line in sdp.split("\r\n"):
            if line.startswith("m="):
                flush()
                section.append(line)
            elif section:
                section.append(line)
            else:
                out.append(line)
        flush()
        return "\r\n".join(out)

    def _edit_section(self, lines: list[str]) -> list[str]:
        mid = next((ln[6:].strip() for ln in lines if ln.startswith("a=mid:")), None)
        if mid is None or mid not in self.receiving:
            return lines
        bound = self.bound.get(mid)
        if bound is not None:
            msid = f"{bound.stream_id} {bound.track_sid}"
            edited = [
                f"a=msid:{msid}" if ln.startswith("a=msid:") else _SSRC_MSID.sub(rf"\1{msid}", ln)
                for ln in lines
            ]
            if not any(ln.startswith("a=msid:") for ln in edited):
                edited.insert(1, f"a=msid:{msid}")
            return edited
        return ["a=inactive" if ln in ("a=sendonly", "a=sendrecv") else ln for ln in lines]


_SSRC_MSID = re.compile(r"^(a=ssrc:\d+ msid:).*$")
