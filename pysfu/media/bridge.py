"""The bridge between rooms and the Rust media engine (``pysfu._core.MediaEngine``).

Each participant has two engine peers: ``<sid>/pub`` (the client offers, we
answer) and ``<sid>/sub`` (we offer, the client answers); one that joined on
``/rtc/v1`` has only ``<sid>/pub``, which carries both directions (``single_pc``).
This module translates signaling (SessionDescription, TrickleRequest,
UpdateTrackSettings) into engine commands, and engine events (peer connected, track
arrived, data received) into room transitions.

The engine forwards RTP on its own threads; Python sees only control events. The
event pump waits on the engine's wake-up fd with ``trio.lowlevel.wait_readable``, so
it costs nothing while the engine is quiet.
"""

from __future__ import annotations

import json
import logging
import re

import attrs
import trio
from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc

from .. import _core
from ..errors import RemoteProtocolError
from ..rtc.effects import Binding, DataDelivery, LayerChoice, Mute
from ..rtc.lifecycle import ParticipantEvent
from ..rtc.quality import LinkSample
from ..rtc.room import Room
from ..runtime.manager import RoomManager
from .negotiation import Negotiator
from .placement import SPREAD_AFTER, ShardPlacement
from .sdp import configure_opus, media_sections
from .single_pc import SinglePc

log = logging.getLogger(__name__)

Target = rtc.SignalTarget

_MID_RE = re.compile(r"^a=mid:(\S+)", re.MULTILINE)

MAX_CANDIDATE_BYTES = 4096
"""Longest trickle candidateInit JSON accepted; real ones are ~200 bytes."""

MAX_DATA_PACKET_BYTES = 64 * 1024
"""Larger DataPackets are dropped: SCTP messages from the SDKs stay below 64 KiB."""


def pub_peer(sid: str) -> str:
    return f"{sid}/pub"


def sub_peer(sid: str) -> str:
    return f"{sid}/sub"


def _split_peer(peer_id: str) -> tuple[str, bool]:
    """(participant sid, is subscriber peer)."""
    sid, _, role = peer_id.rpartition("/")
    return sid, role == "sub"


@attrs.define(eq=False)
class _ParticipantMedia:
    room: Room
    sid: str
    negotiator: Negotiator = attrs.field(factory=Negotiator)
    msid_tracks: dict[str, str] = attrs.field(factory=dict)
    """Track sid -> msid track id of its m-section in the publisher's offer (the cid,
    unless the client announced another id)."""
    has_publisher_peer: bool = False
    """The publisher PeerConnection exists in the engine. It is made on the client's
    first publisher offer (or candidate), not at join: most participants only
    subscribe, and an idle engine peer costs tens of kilobytes."""
    single: SinglePc | None = None
    """Set for a participant on ``/rtc/v1``: its one PeerConnection is ``<sid>/pub``."""
    shard: int = 0
    """The engine shard of the participant's peers (``placement``)."""

    def down_peer(self) -> str:
        """The engine peer that carries media to the client."""
        return pub_peer(self.sid) if self.single is not None else sub_peer(self.sid)


class EngineMediaPlane:
    """Implements the runtime's ``MediaPlane`` port on top of the Rust engine."""

    connected = True

    def __init__(
        self, manager: RoomManager, engine: _core.MediaEngine, *, spread_after: int = SPREAD_AFTER
    ) -> None:
        self.manager = manager
        self.engine = engine
        self._participants: dict[str, _ParticipantMedia] = {}
        self._track_rooms: dict[str, Room] = {}
        """Room of each track bound in the engine (for its audio levels)."""
        self._placement = ShardPlacement(engine.shards, spread_after)

    # ---- lifetime ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Pump engine events into rooms until cancelled."""
        fd = self.engine.wake_fd()
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_readable(fd)
                try:
                    events = self.engine.drain_events()
                except Exception:
                    # Not one event may end the pump (and the server with it).
                    log.exception("engine events could not be read")
                    continue
                for event in events:
                    try:
                        self._on_event(event)
                    except Exception:
                        log.exception("error handling media event %r", event)
        finally:
            self.engine.close()

    # ---- signaling → engine -------------------------------------------------------------

    def participant_joined(self, room: Room, sid: str, *, single_pc: bool = False) -> None:
        shard = self._placement.place(room.name, sid)
        pm = _ParticipantMedia(
            room=room, sid=sid, single=SinglePc() if single_pc else None, shard=shard
        )
        self._participants[sid] = pm
        if single_pc:
            self._publisher_peer(pm)
        else:
            self.engine.add_peer(sub_peer(sid), subscriber=True, shard=shard)

    def _publisher_peer(self, pm: _ParticipantMedia) -> str:
        """The participant's publisher peer, made on first use."""
        peer = pub_peer(pm.sid)
        if not pm.has_publisher_peer:
            self.engine.add_peer(peer, subscriber=False, shard=pm.shard)
            pm.has_publisher_peer = True
        return peer

    def offer_initial(self, sid: str) -> None:
        """Send the first subscriber offer unless bindings already caused one. The
        client waits for the subscriber PC (primary) to connect before its connect()
        resolves, so this offer goes out even with nothing to subscribe to, carrying
        the server's data channels."""
        pm = self._participants.get(sid)
        if pm is not None and pm.single is None and pm.negotiator.offer_id == 0:
            self._renegotiate(sid)

    def resumed(self, sid: str, *, ice_restart: bool) -> None:
        """The client's signal is back. As the reference does on a v0 resume, the
        subscriber side gets a fresh offer with new ICE credentials: its transport may
        have failed while the signal was away, and any offer made in the gap is void
        (the manager discards queued ones). The publisher side restarts ICE from the
        client's own offer."""
        pm = self._participants.get(sid)
        if pm is None or pm.single is not None:
            # One PeerConnection: the client restarts ICE with its own offer.
            return
        log.debug("%s resumed (ice restart asked: %s)", sid, ice_restart)
        self._send_offer(sid, pm.negotiator.restart(), ice_restart=True)

    def participant_removed(self, sid: str) -> None:
        pm = self._participants.pop(sid, None)
        if pm is None:
            return
        self._placement.release(sid)
        peers = [] if pm.single is not None else [sub_peer(sid)]
        if pm.has_publisher_peer:
            peers.append(pub_peer(sid))
        for peer in peers:
            try:
                self.engine.remove_peer(peer)
            except _core.MediaError as exc:
                log.debug("removing %s: %s", peer, exc)

    def publisher_offer(self, sid: str, offer: rtc.SessionDescription) -> None:
        pm = self._participants.get(sid)
        if pm is None:
            return
        self._unpublish_stopped(pm, offer.sdp)
        try:
            answer = self.engine.accept_offer(self._publisher_peer(pm), offer.sdp)
        except _core.MediaError as exc:
            log.warning("%s: publisher offer rejected: %s", sid, exc)
            return
        answer = configure_opus(answer, self._opus_settings(pm, offer.sdp))
        reply = rtc.SessionDescription(type="answer", sdp=answer, id=offer.id)
        if pm.single is not None:
            self._single_pc_answer(pm, offer.sdp, reply)
        self.manager.send(sid, rtc.SignalResponse(answer=reply))
        self._trickle_local(sid, Target.PUBLISHER, answer)
        if pm.single is not None:
            self._ask_for_offer(pm)

    def _single_pc_answer(
        self, pm: _ParticipantMedia, offer_sdp: str, reply: rtc.SessionDescription
    ) -> None:
        """Bind waiting subscriptions to the offer's free receive m-sections and tell
        the client which track each carries."""
        state = pm.single
        assert state is not None
        state.offered(media_sections(offer_sdp))
        for track_sid, stream_id, mid in state.assign():
            try:
                self.engine.subscribe_on_mid(
                    subscriber=pub_peer(pm.sid), track_id=track_sid, stream_id=stream_id, mid=mid
                )
            except _core.MediaError as exc:
                log.warning("%s: cannot forward %s on mid %s: %s", pm.sid, track_sid, mid, exc)
                state.drop(track_sid)
        reply.sdp = state.edit_answer(reply.sdp)
        reply.mid_to_track_id.update(state.mid_to_track_id())
        state.answered()
        log.debug("%s: single-PC answer %d:\n%s", pm.sid, reply.id, reply.sdp)

    def _ask_for_offer(self, pm: _ParticipantMedia) -> None:
        """The client must offer again (more receive sections, or bindings to learn):
        MediaSectionsRequirement, as the reference sends it."""
        assert pm.single is not None
        need = pm.single.requirement()
        if need is None:
            return
        audios, videos = need
        self.manager.send(
            pm.sid,
            rtc.SignalResponse(
                media_sections_requirement=rtc.MediaSectionsRequirement(
                    num_audios=audios, num_videos=videos
                )
            ),
        )

    def _opus_settings(self, pm: _ParticipantMedia, sdp: str) -> dict[str, tuple[bool, bool]]:
        """(dtx, stereo) per audio mid of a publisher offer, from the features of the
        publication each m-section carries (matched by msid track id = cid, or by
        mid once live)."""
        p = pm.room.participants.get(pm.sid)
        if p is None:
            return {}
        settings: dict[str, tuple[bool, bool]] = {}
        for section in media_sections(sdp):
            if section.kind != "audio" or not section.sending:
                continue
            pub = p.publication_by_cid(section.track_id) or next(
                (x for x in p.publications.values() if x.live and x.info.mid == section.mid),
                None,
            )
            if pub is None or pub.info.type != models.TrackType.AUDIO:
                continue
            features = pub.info.audio_features
            settings[section.mid] = (
                models.AudioTrackFeature.TF_NO_DTX not in features,
                models.AudioTrackFeature.TF_STEREO in features,
            )
        return settings

    def _unpublish_stopped(self, pm: _ParticipantMedia, sdp: str) -> None:
        """Clients unpublish by renegotiating without the track (no signal message):
        a live publication whose m-section stopped sending is unpublished."""
        p = pm.room.participants.get(pm.sid)
        if p is None:
            return
        sending = {s.mid: s for s in media_sections(sdp) if s.sending}
        for pub in list(p.publications.values()):
            if not pub.live or not pub.info.mid:
                continue
            section = sending.get(pub.info.mid)
            expected = pm.msid_tracks.get(pub.sid, pub.cid)
            if section is None or (section.track_id and section.track_id != expected):
                pm.msid_tracks.pop(pub.sid, None)
                self.manager.apply(pm.room, pm.room.unpublish(pm.sid, pub.sid))

    def subscriber_answer(self, sid: str, answer: rtc.SessionDescription) -> None:
        pm = self._participants.get(sid)
        if pm is None:
            return
        log.debug("%s: subscriber answer %d:\n%s", sid, answer.id, answer.sdp)
        try:
            self.engine.accept_answer(sub_peer(sid), answer.sdp)
            follow_up = pm.negotiator.answered(answer.id)
        except (_core.MediaError, RemoteProtocolError) as exc:
            log.warning("%s: subscriber answer rejected: %s", sid, exc)
            return
        if follow_up is not None:
            self._send_offer(sid, follow_up)

    def trickle(self, sid: str, trickle: rtc.TrickleRequest) -> None:
        pm = self._participants.get(sid)
        if pm is None:
            return
        if len(trickle.candidateInit) > MAX_CANDIDATE_BYTES:
            log.warning("%s: oversized trickle candidate ignored", sid)
            return
        try:
            init = json.loads(trickle.candidateInit)
            candidate = init.get("candidate", "") if isinstance(init, dict) else ""
        except (ValueError, RecursionError):
            # RecursionError: deeply nested JSON, which json.loads does not bound.
            log.warning("%s: undecodable trickle candidate ignored", sid)
            return
        if not isinstance(candidate, str):
            return
        if not candidate:
            return  # end-of-candidates
        try:
            subscriber = trickle.target == Target.SUBSCRIBER and pm.single is None
            peer = sub_peer(sid) if subscriber else self._publisher_peer(pm)
            self.engine.add_remote_candidate(peer, candidate)
        except _core.MediaError as exc:
            log.debug("%s: candidate ignored: %s", sid, exc)

    def apply_mutes(self, mutes: list[Mute]) -> None:
        for m in mutes:
            try:
                self.engine.set_muted(m.track_sid, m.muted)
            except _core.MediaError:
                log.debug("mute of unbound track %s ignored", m.track_sid)

    def apply_layers(self, layers: list[LayerChoice]) -> None:
        items = []
        for choice in layers:
            pm = self._participants.get(choice.subscriber_sid)
            if pm is not None:
                items.append((pm.down_peer(), choice.track_sid, *choice.settings()))
        for item, error in zip(items, self.engine.set_layers(items), strict=True):
            if error is not None:
                log.debug("layer choice %s for an unbound track ignored: %s", item, error)

    def apply_bindings(self, bindings: list[Binding]) -> None:
        # One engine round trip per shard for the whole batch, in order.
        batch: list[tuple[str, str, str | None]] = []
        batched: list[Binding] = []
        for b in bindings:
            pm = self._participants.get(b.subscriber_sid)
            if pm is None:
                continue
            if pm.single is not None:
                self._single_pc_binding(pm, b)
                continue
            stream = f"{b.publisher_sid}|{b.track_sid}" if b.bind else None
            batch.append((sub_peer(b.subscriber_sid), b.track_sid, stream))
            batched.append(b)
        changed: dict[str, None] = {}
        for b, error in zip(batched, self.engine.bind_many(batch), strict=True):
            if error is not None:
                log.warning("binding %s failed: %s", b, error)
                continue
            changed[b.subscriber_sid] = None
        for sid in changed:
            self._renegotiate(sid)

    def _single_pc_binding(self, pm: _ParticipantMedia, b: Binding) -> None:
        state = pm.single
        assert state is not None
        if b.bind:
            pub = self._track_kind(pm.room, b.publisher_sid, b.track_sid)
            state.want(b.track_sid, pub, f"{b.publisher_sid}|{b.track_sid}")
        elif state.drop(b.track_sid) is not None:
            try:
                self.engine.unsubscribe(subscriber=pub_peer(pm.sid), track_id=b.track_sid)
            except _core.MediaError as exc:
                log.debug("unbinding %s: %s", b, exc)
        self._ask_for_offer(pm)

    @staticmethod
    def _track_kind(room: Room, publisher_sid: str, track_sid: str) -> str:
        p = room.participants.get(publisher_sid)
        pub = p.publications.get(track_sid) if p is not None else None
        if pub is not None and pub.info.type == models.TrackType.VIDEO:
            return "video"
        return "audio"

    def tracks_unpublished(self, track_sids: list[str]) -> None:
        for track_sid in track_sids:
            self._track_rooms.pop(track_sid, None)
            try:
                self.engine.unpublish_track(track_sid)
            except _core.MediaError:
                log.debug("unpublish of unbound track %s ignored", track_sid)

    def deliver_data(self, deliveries: list[DataDelivery]) -> None:
        for d in deliveries:
            pm = self._participants.get(d.participant_sid)
            if pm is None:
                continue
            try:
                self.engine.send_data(
                    pm.down_peer(),
                    reliable=d.reliable,
                    payload=d.packet.SerializeToString(),
                )
            except _core.MediaError as exc:
                log.debug("data to %s dropped: %s", d.participant_sid, exc)

    # ---- negotiation helpers --------------------------------------------------------------

    def _renegotiate(self, sid: str) -> None:
        pm = self._participants.get(sid)
        if pm is None:
            return
        offer_id = pm.negotiator.changed()
        if offer_id is not None:
            self._send_offer(sid, offer_id)

    def _send_offer(self, sid: str, offer_id: int, *, ice_restart: bool = False) -> None:
        try:
            sdp = self.engine.create_offer(sub_peer(sid), ice_restart=ice_restart)
        except _core.MediaError as exc:
            log.warning("%s: no subscriber offer: %s", sid, exc)
            return
        log.debug("%s: subscriber offer %d:\n%s", sid, offer_id, sdp)
        self.manager.send(
            sid,
            rtc.SignalResponse(offer=rtc.SessionDescription(type="offer", sdp=sdp, id=offer_id)),
        )
        self._trickle_local(sid, Target.SUBSCRIBER, sdp)

    def _trickle_local(self, sid: str, target: rtc.SignalTarget, sdp: str) -> None:
        """Candidates are in the SDP already; trickling them too helps clients that
        only take candidates from trickle. sdpMid must be a real mid (clients crash
        on null)."""
        match = _MID_RE.search(sdp)
        if match is None:
            return
        peer = sub_peer(sid) if target == Target.SUBSCRIBER else pub_peer(sid)
        for candidate in self.engine.local_candidates(peer):
            init = {"candidate": candidate, "sdpMid": match.group(1), "sdpMLineIndex": 0}
            self.manager.send(
                sid,
                rtc.SignalResponse(
                    trickle=rtc.TrickleRequest(candidateInit=json.dumps(init), target=target)
                ),
            )

    # ---- engine → rooms -------------------------------------------------------------------

    def _on_event(self, event: _core._MediaEvent) -> None:
        if isinstance(event, _core.AudioLevels):
            self._audio_levels(event.levels)
            return
        if isinstance(event, _core.LinkStats):
            self._link_stats(event.links)
            return
        sid, is_sub = _split_peer(event.peer_id)
        pm = self._participants.get(sid)
        if pm is None:
            return
        room = pm.room
        if isinstance(event, _core.PeerConnected):
            self.manager.apply(room, room.transition(sid, ParticipantEvent.TRANSPORT_CONNECTED))
        elif isinstance(event, _core.PeerClosed):
            log.info("%s: %s peer closed (%s)", sid, "sub" if is_sub else "pub", event.reason)
            # Not a removal yet: a client that leaves closes its DTLS right after its
            # LeaveRequest, which may arrive second (it must read CLIENT_INITIATED).
            self.manager.media_failed(sid)
        elif isinstance(event, _core.TrackArrived):
            self._track_arrived(pm, event)
        elif isinstance(event, _core.DataReceived):
            self._data_received(pm, event.reliable, bytes(event.payload))
        elif isinstance(event, _core.StreamStateChanged):
            self.manager.apply(room, room.stream_state(sid, event.track_id, paused=event.paused))

    def _audio_levels(self, levels: list[tuple[str, int, int, int]]) -> None:
        """Level summaries to their rooms; every room that has speakers ticks even
        without new levels (speech ends by going quiet or going away)."""
        by_room: dict[str, tuple[Room, list[tuple[str, int, int, int]]]] = {}
        for level in levels:
            room = self._track_rooms.get(level[0])
            if room is None or room.closed:
                self._track_rooms.pop(level[0], None)
                continue
            by_room.setdefault(room.name, (room, []))[1].append(level)
        for room in self.manager.rooms:
            if room.name not in by_room and (room.speakers.meters or room.speakers.announced):
                by_room[room.name] = (room, [])
        now = self.manager.now()
        for room, room_levels in by_room.values():
            fx = room.audio_levels(room_levels, now)
            if fx.messages:
                self.manager.apply(room, fx)

    def _link_stats(self, links: list[tuple[str, float | None, float, float | None]]) -> None:
        """Link reports to their participants' rooms; every room's scoring ticks
        (each closes its windows on its own schedule)."""
        by_room: dict[str, list[tuple[str, bool, LinkSample]]] = {}
        for peer_id, loss, jitter_ms, rtt_ms in links:
            sid, is_sub = _split_peer(peer_id)
            pm = self._participants.get(sid)
            if pm is not None:
                sample = LinkSample(loss=loss, jitter_ms=jitter_ms, rtt_ms=rtt_ms)
                by_room.setdefault(pm.room.name, []).append((sid, is_sub, sample))
        now = self.manager.now()
        for room in self.manager.rooms:
            fx = room.link_stats(by_room.get(room.name, []), now)
            if fx.messages:
                self.manager.apply(room, fx)

    def _track_arrived(self, pm: _ParticipantMedia, event: _core.TrackArrived) -> None:
        room, sid = pm.room, pm.sid
        p = room.participants.get(sid)
        if p is None:
            return
        log.debug("%s: track arrived %r", sid, event)
        kind = models.TrackType.AUDIO if event.kind == "audio" else models.TrackType.VIDEO
        pub = p.pending_publication_for(event.track_id, kind)
        if pub is None or pub.live:
            log.info("%s: media on mid %s matches no pending publication", sid, event.mid)
            return
        self.engine.publish_track(publisher=pub_peer(sid), mid=event.mid, track_id=pub.sid)
        self._track_rooms[pub.sid] = room
        pm.msid_tracks[pub.sid] = event.track_id
        if pub.info.muted:
            self.engine.set_muted(pub.sid, True)
        _, fx = room.track_live(
            sid, cid=pub.cid, mid=event.mid, mime_type=f"{event.kind}/{event.codec}"
        )
        self.manager.apply(room, fx)

    def _data_received(self, pm: _ParticipantMedia, reliable: bool, payload: bytes) -> None:
        if len(payload) > MAX_DATA_PACKET_BYTES:
            log.warning("%s: oversized data packet dropped", pm.sid)
            return
        packet = models.DataPacket()
        try:
            packet.ParseFromString(payload)
        except DecodeError:
            log.warning("%s: undecodable data packet dropped", pm.sid)
            return
        self.manager.apply(pm.room, pm.room.route_data(pm.sid, packet, reliable=reliable))
