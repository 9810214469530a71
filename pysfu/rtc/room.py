"""A room's state and every transition of it, with no I/O.

Each public method applies one request or fact to the room and returns an
:class:`Effects` value listing what must happen outside: signal messages to send,
sessions to end, subscriptions to bind/unbind in the media plane, data packets to
deliver and webhook events to emit. The Trio layer (``pysfu.manager``) performs them.
Keeping the room pure lets hypothesis drive thousands of joins, leaves, collisions,
publishes and subscriptions without sockets.

Invariants (checked by ``check_invariants`` in the property tests):

- at most one participant per identity;
- a subscription exists only for a publication that exists;
- a bound subscription belongs to a live publication and a subscriber allowed to subscribe;
- participant ``version`` values only grow.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import attrs
from livekit.protocol import models, rtc, webhook

from ..errors import LocalProtocolError
from . import ids
from .dynacast import quality_update, requested_layer, subscribed_layers
from .effects import Binding, DataDelivery, Effects, Mute
from .lifecycle import ParticipantEvent, ParticipantState, next_state, to_proto
from .quality import AUDIO_LOSS_WEIGHT, VIDEO_LOSS_WEIGHT, LinkSample, QualityScoring
from .speakers import LevelSummary, Speakers
from .subscription import DEFAULT_SETTINGS, Subscription, SubscriptionAction

DisconnectReason = models.DisconnectReason

# Attribute values set to "" delete the attribute, as in LiveKit.
_ATTRIBUTE_DELETE = ""

MAX_PUBLICATIONS = 64
"""Publications (pending or live) per participant; more are LIMIT_EXCEEDED. Real
clients publish a handful; the cap keeps one participant from growing the room."""

MAX_METADATA_BYTES = 64 * 1024
"""Largest metadata, name or total attributes (UTF-8 bytes) a participant may set,
in the spirit of livekit-server's limit.max_metadata_size."""


METADATA_TOO_LARGE = f"metadata, name or attributes over {MAX_METADATA_BYTES} bytes"

MAX_NAME_BYTES = 256
"""Longest track name, client track id (cid) or stream name accepted (UTF-8 bytes), as
the reference's ``limit`` defaults for names: 64 names of 900 kB once pinned 55 MB
per participant."""

MAX_TRACKS_PER_REQUEST = 1024
"""Track sids one UpdateSubscription may name; the rest are ignored. A request naming
30,000 unknown sids once queued an error per sid and stalled the control plane."""

MAX_ERRORS_PER_REQUEST = 16
"""SubscriptionResponse errors one request may cause; further unknown sids are
ignored without an answer (the reference answers none at once)."""

NOT_ALLOWED = rtc.RequestResponse.Reason.NOT_ALLOWED
LIMIT_EXCEEDED = rtc.RequestResponse.Reason.LIMIT_EXCEEDED


def _refusal(reason: rtc.RequestResponse.Reason, message: str, **echo: Any) -> rtc.SignalResponse:
    """A RequestResponse refusing a request, echoing it (and its request_id) back."""
    request_id = echo.get("update_metadata", rtc.UpdateParticipantMetadata()).request_id
    return rtc.SignalResponse(
        request_response=rtc.RequestResponse(
            request_id=request_id, reason=reason, message=message, **echo
        )
    )


@attrs.define(eq=False)
class Publication:
    """A published track. ``live`` becomes true when its media reaches the server;
    only then is it announced to others and subscribable."""

    info: models.TrackInfo
    cid: str
    publisher_sid: str
    live: bool = False
    announced_subscribed: bool = False
    """TrackSubscribed went to the publisher (once per publication)."""
    dynacast: tuple[bool, bool, bool] | None = None
    """Video: the qualities (LOW, MEDIUM, HIGH) its publisher was last told to send."""

    @property
    def sid(self) -> str:
        return self.info.sid


@attrs.define(eq=False)
class Participant:
    sid: str
    identity: str
    name: str
    metadata: str
    attributes: dict[str, str]
    kind: models.ParticipantInfo.Kind
    permission: models.ParticipantPermission
    joined_at: float
    auto_subscribe: bool = True
    state: ParticipantState = ParticipantState.JOINING
    version: int = 0
    disconnect_reason: DisconnectReason = DisconnectReason.UNKNOWN_REASON
    publications: dict[str, Publication] = attrs.field(factory=dict)
    """By track sid, in publish order."""
    seen_through: int = 0
    """Room version of its JoinResponse: every other participant's info up to this
    version reached it there, so a batched update need not repeat it."""
    last_reliable_seq: int = 0
    """Highest ``sequence`` of a reliable DataPacket it sent: a resuming client resends
    what followed, and the server drops what it already forwarded."""
    subscription_permission: rtc.SubscriptionPermission | None = None
    """Who may subscribe to its tracks (None: everyone, the default)."""

    def permits(self, subscriber: Participant, track_sid: str) -> bool:
        """Whether this publisher's subscription permissions let ``subscriber`` have
        ``track_sid`` (a publisher's own choice, apart from the subscriber's grants)."""
        perm = self.subscription_permission
        if perm is None or perm.all_participants:
            return True
        return any(
            (tp.participant_sid == subscriber.sid or tp.participant_identity == subscriber.identity)
            and (tp.all_tracks or track_sid in tp.track_sids)
            for tp in perm.track_permissions
        )

    @property
    def hidden(self) -> bool:
        return self.permission.hidden

    def publication_by_cid(self, cid: str) -> Publication | None:
        for pub in self.publications.values():
            if pub.cid == cid:
                return pub
        return None

    def pending_publication_for(self, track_id: str, kind: int) -> Publication | None:
        """The publication that media arriving with msid ``track_id`` belongs to: the
        one announced with that cid, else (some clients put another id in msid than
        the cid they announced) the oldest pending one of the same kind."""
        pub = self.publication_by_cid(track_id)
        if pub is not None:
            return pub
        return next(
            (x for x in self.publications.values() if not x.live and x.info.type == kind),
            None,
        )

    def info(self, *, only_live: bool = True) -> models.ParticipantInfo:
        """The ParticipantInfo others see; pending tracks are visible only to the owner."""
        tracks = [p.info for p in self.publications.values() if p.live or not only_live]
        return models.ParticipantInfo(
            sid=self.sid,
            identity=self.identity,
            name=self.name,
            metadata=self.metadata,
            attributes=self.attributes,
            state=to_proto(self.state),
            tracks=tracks,
            joined_at=int(self.joined_at),
            joined_at_ms=int(self.joined_at * 1000),
            version=self.version,
            permission=self.permission,
            is_publisher=any(p.live for p in self.publications.values()),
            kind=self.kind,
            disconnect_reason=self.disconnect_reason,
        )


@attrs.frozen
class ServerIdentity:
    """What the server says about itself in every JoinResponse."""

    version: str = "1.9.0"
    node_id: str = "ND_local"
    protocol: int = 16
    ping_interval_s: int = 5
    ping_timeout_s: int = 15


def _source_allowed(permission: models.ParticipantPermission, source: int) -> bool:
    allowed = list(permission.can_publish_sources)
    return not allowed or source in allowed


@attrs.define(eq=False)
class Room:
    name: str
    created_at: float
    """Monotonic time of creation (the clock the Trio layer uses for deadlines)."""
    empty_timeout_s: float = 300.0
    departure_timeout_s: float = 20.0
    max_participants: int = 0
    metadata: str = ""
    sid: str = attrs.field(factory=ids.room_sid)
    server: ServerIdentity = attrs.field(factory=ServerIdentity)
    wall_clock: Callable[[], float] = time.time
    creation_wall: float = attrs.field(default=0.0)
    participants: dict[str, Participant] = attrs.field(factory=dict)
    by_identity: dict[str, str] = attrs.field(factory=dict)
    subscriptions: dict[tuple[str, str], Subscription] = attrs.field(factory=dict)
    """Keyed by (subscriber sid, track sid)."""
    last_departure: float | None = None
    closed: bool = False
    _version: int = 0
    _batched: dict[str, None] = attrs.field(factory=dict)
    """Sids whose latest state others have not been sent yet (see flush_updates)."""
    speakers: Speakers = attrs.field(factory=Speakers)
    quality: QualityScoring = attrs.field(factory=QualityScoring)

    def __attrs_post_init__(self) -> None:
        if not self.creation_wall:
            self.creation_wall = self.wall_clock()

    # ---- views ------------------------------------------------------------------

    def info(self) -> models.Room:
        visible = [p for p in self.participants.values() if not p.hidden]
        return models.Room(
            sid=self.sid,
            name=self.name,
            empty_timeout=int(self.empty_timeout_s),
            departure_timeout=int(self.departure_timeout_s),
            max_participants=self.max_participants,
            creation_time=int(self.creation_wall),
            creation_time_ms=int(self.creation_wall * 1000),
            metadata=self.metadata,
            num_participants=len(visible),
            num_publishers=sum(1 for p in visible if any(x.live for x in p.publications.values())),
        )

    def participant_by_identity(self, identity: str) -> Participant | None:
        sid = self.by_identity.get(identity)
        return self.participants[sid] if sid is not None else None

    def metadata_fits(
        self, sid: str, name: str, metadata: str, attributes: Mapping[str, str]
    ) -> bool:
        """Whether an update (from the participant or the server API) stays within
        MAX_METADATA_BYTES for name, metadata and the merged attributes each."""
        merged = {**self.participants[sid].attributes, **attributes}
        attributes_size = sum(len(k.encode()) + len(v.encode()) for k, v in merged.items())
        largest = max(len(name.encode()), len(metadata.encode()), attributes_size)
        return largest <= MAX_METADATA_BYTES

    def is_full_for(self, identity: str) -> bool:
        """Whether a join by ``identity`` exceeds ``max_participants`` (a join that
        replaces the same identity never does)."""
        return bool(
            self.max_participants
            and len(self.participants) >= self.max_participants
            and self.participant_by_identity(identity) is None
        )

    def find_publication(self, track_sid: str) -> Publication | None:
        for p in self.participants.values():
            pub = p.publications.get(track_sid)
            if pub is not None:
                return pub
        return None

    def close_deadline(self) -> float | None:
        """When the room closes if nothing changes: ``empty_timeout`` after creation
        while nobody has joined, ``departure_timeout`` after the last one left."""
        if self.closed or self.participants:
            return None
        if self.last_departure is None:
            return self.created_at + self.empty_timeout_s
        return self.last_departure + self.departure_timeout_s

    def check_invariants(self) -> None:
        assert len(self.by_identity) == len(self.participants)
        for identity, sid in self.by_identity.items():
            assert self.participants[sid].identity == identity
        for (sub_sid, track_sid), sub in self.subscriptions.items():
            assert sub_sid in self.participants
            pub = self.find_publication(track_sid)
            assert pub is not None, "subscription to a track that is not published"
            if sub.bound:
                assert pub.live and sub.allowed and sub.permitted and sub.desired
            publisher = self.participants[pub.publisher_sid]
            assert sub.permitted == publisher.permits(self.participants[sub_sid], track_sid)

    # ---- helpers ------------------------------------------------------------------

    def _bump(self, p: Participant) -> None:
        # One counter for the room: versions grow for every participant, always.
        self._version += 1
        p.version = self._version

    def _broadcast_participant(
        self, fx: Effects, p: Participant, *, include_self: bool = True, batch: bool = False
    ) -> None:
        """Tell everyone about ``p``. With ``batch``, a participant that publishes
        nothing is only told itself now; the others learn of it at the next
        :meth:`flush_updates`, as the reference server batches subscriber-only
        changes: joins into a big room would otherwise cost an update to everyone,
        for everyone."""
        if p.hidden:
            if include_self and p.sid in self.participants:
                fx.send(p.sid, _update([p.info(only_live=False)]))
            return
        if batch and not p.publications:
            self._batched[p.sid] = None
            if include_self:
                fx.send(p.sid, _update([p.info(only_live=False)]))
            return
        # This update is the newest: a batched one would now be out of date.
        self._batched.pop(p.sid, None)
        for other in self.participants.values():
            if other.sid == p.sid:
                if include_self:
                    fx.send(p.sid, _update([p.info(only_live=False)]))
                continue
            fx.send(other.sid, _update([p.info()]))

    def _event(self, name: str, **kw: object) -> webhook.WebhookEvent:
        ev = webhook.WebhookEvent(event=name, room=self.info())
        for key, value in kw.items():
            getattr(ev, key).CopyFrom(value)
        return ev

    def _reconcile(self, fx: Effects, sub: Subscription) -> None:
        action = sub.reconcile()
        if action is None:
            return
        pub = self.find_publication(sub.track_sid)
        publisher_sid = pub.publisher_sid if pub is not None else ""
        subscriber = self.participants.get(sub.subscriber_sid)
        if (
            action is SubscriptionAction.BIND
            and pub is not None
            and not pub.announced_subscribed
            and publisher_sid in self.participants
            and subscriber is not None
            and not subscriber.hidden
        ):
            # The publisher's SDK resolves wait_for_subscription() on this; the
            # reference sends it once per track, for its first visible subscriber.
            pub.announced_subscribed = True
            fx.send(
                publisher_sid,
                rtc.SignalResponse(track_subscribed=rtc.TrackSubscribed(track_sid=sub.track_sid)),
            )
        fx.bindings.append(
            Binding(
                subscriber_sid=sub.subscriber_sid,
                publisher_sid=publisher_sid,
                track_sid=sub.track_sid,
                bind=action is SubscriptionAction.BIND,
            )
        )
        level = self.speakers.announced.get(publisher_sid)
        if action is SubscriptionAction.BIND and level is not None:
            # A new subscriber of someone speaking hears of it now (as the reference),
            # not at the speaker's next level change.
            speaker = models.SpeakerInfo(sid=publisher_sid, level=level, active=True)
            fx.send(
                sub.subscriber_sid,
                rtc.SignalResponse(speakers_changed=rtc.SpeakersChanged(speakers=[speaker])),
            )
        if action is SubscriptionAction.BIND and sub.settings() != DEFAULT_SETTINGS:
            # Settings that came before the binding (or survived an unbind).
            fx.layers.append(sub.layer_choice())
        if pub is not None:
            self._dynacast(fx, pub)

    def _dynacast(self, fx: Effects, pub: Publication) -> None:
        """Tell a live video track's publisher which qualities anyone receives, when
        that changed (dynacast: unused layers pause; all pause with nobody)."""
        if not pub.live or pub.info.type != models.TrackType.VIDEO:
            return
        layers = subscribed_layers(
            (s.layer, s.disabled)
            for (_, track_sid), s in self.subscriptions.items()
            if track_sid == pub.sid and s.bound
        )
        if layers == pub.dynacast or pub.publisher_sid not in self.participants:
            return
        pub.dynacast = layers
        update = quality_update(pub.sid, pub.info.mime_type, layers)
        fx.send(pub.publisher_sid, rtc.SignalResponse(subscribed_quality_update=update))

    def _subscription(self, subscriber: Participant, pub: Publication) -> Subscription:
        key = (subscriber.sid, pub.sid)
        sub = self.subscriptions.get(key)
        if sub is None:
            sub = Subscription(
                subscriber_sid=subscriber.sid,
                track_sid=pub.sid,
                desired=subscriber.auto_subscribe,
                allowed=subscriber.permission.can_subscribe,
                permitted=self._permitted(subscriber, pub),
                available=pub.live,
            )
            self.subscriptions[key] = sub
        return sub

    def _permitted(self, subscriber: Participant, pub: Publication) -> bool:
        publisher = self.participants.get(pub.publisher_sid)
        return publisher is None or publisher.permits(subscriber, pub.sid)

    def _drop_publication(self, fx: Effects, pub: Publication) -> None:
        for key in [k for k in self.subscriptions if k[1] == pub.sid]:
            sub = self.subscriptions.pop(key)
            sub.available = False
            self._reconcile(fx, sub)

    # ---- transitions --------------------------------------------------------------

    def join(
        self,
        *,
        identity: str,
        now: float,
        name: str = "",
        metadata: str = "",
        attributes: Mapping[str, str] | None = None,
        kind: models.ParticipantInfo.Kind = models.ParticipantInfo.Kind.STANDARD,
        permission: models.ParticipantPermission | None = None,
        auto_subscribe: bool = True,
        single_pc: bool = False,
        ice_servers: Iterable[rtc.ICEServer] = (),
    ) -> tuple[Participant, Effects]:
        """Add a participant. The first message queued for it is its JoinResponse.
        An existing participant with the same identity is removed first
        (DUPLICATE_IDENTITY). ``single_pc``: it joined on ``/rtc/v1`` with one
        PeerConnection, which its publisher side is (not subscriber-primary)."""
        if self.closed:
            raise LocalProtocolError(f"room {self.name!r} is closed")
        fx = Effects()
        old = self.participant_by_identity(identity)
        if old is not None:
            fx.extend(self.remove(old.sid, DisconnectReason.DUPLICATE_IDENTITY, now=now))
        if permission is None:
            permission = models.ParticipantPermission(
                can_publish=True, can_subscribe=True, can_publish_data=True
            )
        p = Participant(
            sid=ids.participant_sid(),
            identity=identity,
            name=name,
            metadata=metadata,
            attributes=dict(attributes or {}),
            kind=kind,
            permission=permission,
            joined_at=self.wall_clock(),
            auto_subscribe=auto_subscribe,
        )
        self._bump(p)
        others = [o for o in self.participants.values() if not o.hidden]
        self.participants[p.sid] = p
        self.by_identity[identity] = p.sid
        join = self._join_response(p, others)
        join.subscriber_primary = not single_pc
        join.ice_servers.extend(ice_servers)
        fx.send(p.sid, rtc.SignalResponse(join=join))
        p.seen_through = self._version
        self._broadcast_participant(fx, p, include_self=False, batch=True)
        for other in others:
            for pub in other.publications.values():
                if pub.live:
                    self._reconcile(fx, self._subscription(p, pub))
        return p, fx

    def _join_response(self, p: Participant, others: Iterable[Participant]) -> rtc.JoinResponse:
        s = self.server
        return rtc.JoinResponse(
            room=self.info(),
            participant=p.info(only_live=False),
            other_participants=[o.info() for o in others],
            server_version=s.version,
            server_info=models.ServerInfo(
                edition=models.ServerInfo.Edition.Standard,
                version=s.version,
                protocol=s.protocol,
                node_id=s.node_id,
            ),
            subscriber_primary=True,
            # As the reference: a participant that may publish sets up its publisher
            # PeerConnection (and data channels) at once; without it a first data
            # packet negotiates lazily, and one sent while the signal is down leaves
            # the publisher mid-offer when a resume restarts ICE.
            fast_publish=p.permission.can_publish,
            ping_interval=s.ping_interval_s,
            ping_timeout=s.ping_timeout_s,
        )

    def remove(self, sid: str, reason: DisconnectReason, *, now: float) -> Effects:
        """Remove a participant: it is told why (LeaveRequest) unless it left on its own,
        others see it DISCONNECTED, its tracks are unpublished."""
        fx = Effects()
        p = self.participants.get(sid)
        if p is None:
            return fx
        was_active = p.state is ParticipantState.ACTIVE
        for pub in list(p.publications.values()):
            self._unpublish(fx, p, pub, notify_owner=False)
        for key in [k for k in self.subscriptions if k[0] == sid]:
            sub = self.subscriptions.pop(key)
            sub.desired = False
            self._reconcile(fx, sub)
        p.state = next_state(p.state, ParticipantEvent.LEFT)
        p.disconnect_reason = reason
        self._bump(p)
        del self.participants[sid]
        del self.by_identity[p.identity]
        self._batched.pop(sid, None)
        if reason != DisconnectReason.CLIENT_INITIATED:
            fx.send(sid, rtc.SignalResponse(leave=leave_request(reason)))
        fx.closes.append((sid, reason))
        if not p.hidden:
            for other in self.participants.values():
                fx.send(other.sid, _update([p.info()]))
        name = "participant_left" if was_active else "participant_connection_aborted"
        fx.events.append(self._event(name, participant=p.info()))
        if not self.participants:
            self.last_departure = now
        return fx

    def transition(self, sid: str, event: ParticipantEvent) -> Effects:
        """Record a lifecycle fact (negotiated, transport connected)."""
        fx = Effects()
        p = self.participants.get(sid)
        if p is None:
            return fx
        new = next_state(p.state, event)
        if new is p.state:
            return fx
        p.state = new
        self._bump(p)
        self._broadcast_participant(fx, p, batch=True)
        if new is ParticipantState.ACTIVE:
            fx.events.append(self._event("participant_joined", participant=p.info()))
        return fx

    def add_track(self, sid: str, req: rtc.AddTrackRequest) -> Effects:
        """Accept a publication request: the publisher gets TrackPublishedResponse at
        once; others learn of the track when its media arrives (``track_live``)."""
        fx = Effects()
        p = self.participants.get(sid)
        if p is None:
            return fx
        if not p.permission.can_publish or not _source_allowed(p.permission, req.source):
            fx.send(sid, _refusal(NOT_ALLOWED, "not allowed to publish this source", add_track=req))
            return fx
        longest = max(len(req.name.encode()), len(req.cid.encode()), len(req.stream.encode()))
        if longest > MAX_NAME_BYTES:
            message = f"track name, cid or stream over {MAX_NAME_BYTES} bytes"
            fx.send(sid, _refusal(LIMIT_EXCEEDED, message, add_track=req))
            return fx
        pub = p.publication_by_cid(req.cid)
        if pub is None and len(p.publications) >= MAX_PUBLICATIONS:
            message = f"at most {MAX_PUBLICATIONS} tracks per participant"
            fx.send(sid, _refusal(LIMIT_EXCEEDED, message, add_track=req))
            return fx
        if pub is None:
            info = models.TrackInfo(
                sid=ids.track_sid(),
                type=req.type,
                name=req.name,
                muted=req.muted,
                width=req.width,
                height=req.height,
                simulcast=len(req.layers) > 1,
                disable_dtx=req.disable_dtx,
                source=req.source,
                layers=req.layers,
                stereo=req.stereo,
                disable_red=req.disable_red,
                encryption=req.encryption,
                stream=req.stream,
                audio_features=_audio_features(req),
                backup_codec_policy=req.backup_codec_policy,
            )
            pub = Publication(info=info, cid=req.cid, publisher_sid=sid)
            p.publications[info.sid] = pub
        fx.send(
            sid,
            rtc.SignalResponse(
                track_published=rtc.TrackPublishedResponse(cid=req.cid, track=pub.info)
            ),
        )
        return fx

    def track_live(
        self, sid: str, *, cid: str, mid: str = "", mime_type: str = ""
    ) -> tuple[Publication | None, Effects]:
        """Media for the publication with ``cid`` reached the server: announce it and
        start auto-subscriptions."""
        fx = Effects()
        p = self.participants.get(sid)
        pub = p.publication_by_cid(cid) if p is not None else None
        if p is None or pub is None or pub.live:
            return pub, fx
        pub.live = True
        if mid:
            pub.info.mid = mid
        if mime_type:
            pub.info.mime_type = mime_type
        self._bump(p)
        self._broadcast_participant(fx, p)
        for other in self.participants.values():
            if other.sid != sid:
                sub = self._subscription(other, pub)
                sub.available = True
                self._reconcile(fx, sub)
        self._dynacast(fx, pub)
        fx.events.append(self._event("track_published", participant=p.info(), track=pub.info))
        return pub, fx

    def _unpublish(
        self, fx: Effects, p: Participant, pub: Publication, *, notify_owner: bool
    ) -> None:
        del p.publications[pub.sid]
        self._drop_publication(fx, pub)
        fx.unpublished.append(pub.sid)
        if notify_owner:
            fx.send(
                p.sid,
                rtc.SignalResponse(
                    track_unpublished=rtc.TrackUnpublishedResponse(track_sid=pub.sid)
                ),
            )
        if pub.live:
            fx.events.append(self._event("track_unpublished", participant=p.info(), track=pub.info))

    def unpublish(self, sid: str, track_sid: str) -> Effects:
        fx = Effects()
        p = self.participants.get(sid)
        pub = p.publications.get(track_sid) if p is not None else None
        if p is None or pub is None:
            return fx
        self._unpublish(fx, p, pub, notify_owner=True)
        self._bump(p)
        self._broadcast_participant(fx, p)
        return fx

    def set_muted(self, sid: str, track_sid: str, muted: bool, *, by_server: bool) -> Effects:
        """Mute or unmute a publication. A server-side mute also tells the publisher
        (MuteTrackRequest) so its SDK stops sending."""
        fx = Effects()
        p = self.participants.get(sid)
        pub = p.publications.get(track_sid) if p is not None else None
        if p is None or pub is None or pub.info.muted == muted:
            return fx
        pub.info.muted = muted
        fx.mutes.append(Mute(track_sid, muted))
        if by_server:
            fx.send(sid, rtc.SignalResponse(mute=rtc.MuteTrackRequest(sid=track_sid, muted=muted)))
        self._bump(p)
        self._broadcast_participant(fx, p)
        return fx

    def update_audio_track(self, sid: str, req: rtc.UpdateLocalAudioTrack) -> Effects:
        """The publisher changed an audio track's features (the SDKs do when a
        microphone's processing or stereo changes): the publication takes them, and
        the ``stereo``/``disable_dtx`` flags follow; others are told if it is live.
        An unknown track gets RequestResponse NOT_FOUND."""
        fx = Effects()
        p = self.participants.get(sid)
        if p is None:
            return fx
        pub = p.publications.get(req.track_sid)
        if pub is None or pub.info.type != models.TrackType.AUDIO:
            fx.send(
                sid,
                rtc.SignalResponse(
                    request_response=rtc.RequestResponse(
                        reason=rtc.RequestResponse.Reason.NOT_FOUND,
                        message="track not found",
                        update_audio_track=req,
                    )
                ),
            )
            return fx
        features = _known_features(req.features)
        stereo = models.AudioTrackFeature.TF_STEREO in features
        no_dtx = models.AudioTrackFeature.TF_NO_DTX in features
        info = pub.info
        if (list(info.audio_features), info.stereo, info.disable_dtx) == (features, stereo, no_dtx):
            return fx
        del info.audio_features[:]
        info.audio_features.extend(features)
        info.stereo, info.disable_dtx = stereo, no_dtx
        if pub.live:
            self._bump(p)
            self._broadcast_participant(fx, p)
        return fx

    def update_own_metadata(self, sid: str, req: rtc.UpdateParticipantMetadata) -> Effects:
        """The participant asks to change its own name/metadata/attributes; it needs
        the canUpdateOwnMetadata grant, otherwise a RequestResponse NOT_ALLOWED."""
        fx = Effects()
        p = self.participants.get(sid)
        if p is None:
            return fx
        if not p.permission.can_update_metadata:
            message = "does not have permission to update own metadata"
            fx.send(sid, _refusal(NOT_ALLOWED, message, update_metadata=req))
            return fx
        if not self.metadata_fits(sid, req.name, req.metadata, req.attributes):
            fx.send(sid, _refusal(LIMIT_EXCEEDED, METADATA_TOO_LARGE, update_metadata=req))
            return fx
        fx.extend(
            self.update_participant(
                sid,
                name=req.name or None,
                metadata=req.metadata or None,
                attributes=dict(req.attributes) or None,
            )
        )
        if req.request_id:
            # SDKs wait for this (5 s otherwise) before set_metadata() returns.
            fx.send(
                sid,
                rtc.SignalResponse(
                    request_response=rtc.RequestResponse(
                        request_id=req.request_id, reason=rtc.RequestResponse.Reason.OK
                    )
                ),
            )
        return fx

    def update_participant(
        self,
        sid: str,
        *,
        name: str | None = None,
        metadata: str | None = None,
        attributes: Mapping[str, str] | None = None,
        permission: models.ParticipantPermission | None = None,
    ) -> Effects:
        fx = Effects()
        p = self.participants.get(sid)
        if p is None:
            return fx
        if name is not None:
            p.name = name
        if metadata is not None:
            p.metadata = metadata
        if attributes:
            for key, value in attributes.items():
                if value == _ATTRIBUTE_DELETE:
                    p.attributes.pop(key, None)
                else:
                    p.attributes[key] = value
        if permission is not None:
            p.permission = permission
            # Revoking publish rights unpublishes what they no longer cover, as LiveKit.
            for pub in list(p.publications.values()):
                if not permission.can_publish or not _source_allowed(permission, pub.info.source):
                    self._unpublish(fx, p, pub, notify_owner=True)
            for (sub_sid, _), sub in self.subscriptions.items():
                if sub_sid == sid:
                    sub.allowed = permission.can_subscribe
                    self._reconcile(fx, sub)
        self._bump(p)
        self._broadcast_participant(fx, p)
        return fx

    def update_subscription(
        self,
        sid: str,
        *,
        track_sids: Iterable[str],
        subscribe: bool,
        participant_tracks: Iterable[models.ParticipantTracks] = (),
        quiet: bool = False,
    ) -> Effects:
        """Selective subscription. Unknown tracks get SubscriptionResponse
        SE_TRACK_NOTFOUND instead of being remembered (``quiet``: ignored, as for a
        resuming client's statement of what it had)."""
        fx = Effects()
        p = self.participants.get(sid)
        if p is None:
            return fx
        wanted = list(itertools.islice(track_sids, MAX_TRACKS_PER_REQUEST))
        for pt in participant_tracks:
            room_left = max(0, MAX_TRACKS_PER_REQUEST - len(wanted))
            wanted.extend(itertools.islice(pt.track_sids, room_left))
        errors = 0
        for track_sid in dict.fromkeys(wanted):
            pub = self.find_publication(track_sid)
            if pub is None or pub.publisher_sid == sid:
                errors += 1
                if quiet or errors > MAX_ERRORS_PER_REQUEST:
                    continue
                fx.send(
                    sid,
                    rtc.SignalResponse(
                        subscription_response=rtc.SubscriptionResponse(
                            track_sid=track_sid, err=models.SubscriptionError.SE_TRACK_NOTFOUND
                        )
                    ),
                )
                continue
            sub = self._subscription(p, pub)
            sub.desired = subscribe
            self._reconcile(fx, sub)
        return fx

    def track_settings(self, sid: str, settings: rtc.UpdateTrackSettings) -> Effects:
        """A subscriber's settings for tracks it receives: the layer it wants (by
        quality or rendered size), the frame rate, its priority, or that it disabled
        them. The media plane follows
        for bound tracks; video publishers hear what is still wanted (dynacast)."""
        fx = Effects()
        if sid not in self.participants:
            return fx
        layer = requested_layer(settings)
        for track_sid in dict.fromkeys(
            itertools.islice(settings.track_sids, MAX_TRACKS_PER_REQUEST)
        ):
            sub = self.subscriptions.get((sid, track_sid))
            pub = self.find_publication(track_sid)
            if sub is None or pub is None:
                continue
            # fps and priority are uint32 on the wire, as the engine takes them.
            wanted = (layer, settings.disabled, settings.fps, settings.priority)
            if sub.settings() == wanted:
                continue
            sub.layer, sub.disabled, sub.fps, sub.priority = wanted
            if sub.bound:
                fx.layers.append(sub.layer_choice())
            self._dynacast(fx, pub)
        return fx

    def state_update(self, sid: str) -> Effects:
        """Everything ``sid`` must know after a gap in its signal: every visible
        participant (itself included) and the room, in one update each."""
        fx = Effects()
        p = self.participants.get(sid)
        if p is None:
            return fx
        infos = [p.info(only_live=False)]
        infos += [o.info() for o in self.participants.values() if o.sid != sid and not o.hidden]
        fx.send(sid, _update(infos))
        fx.send(sid, rtc.SignalResponse(room_update=rtc.RoomUpdate(room=self.info())))
        return fx

    def set_subscription_permission(self, sid: str, perm: rtc.SubscriptionPermission) -> Effects:
        """A publisher says who may subscribe to its tracks. Media stops at once to
        subscribers no longer permitted (and resumes when permitted again); each
        subscriber that wants the track is told (SubscriptionPermissionUpdate)."""
        fx = Effects()
        p = self.participants.get(sid)
        if p is None:
            return fx
        stored = rtc.SubscriptionPermission()
        stored.CopyFrom(perm)
        p.subscription_permission = stored
        for (sub_sid, track_sid), sub in self.subscriptions.items():
            if track_sid not in p.publications:
                continue
            subscriber = self.participants[sub_sid]
            permitted = p.permits(subscriber, track_sid)
            if permitted == sub.permitted:
                continue
            sub.permitted = permitted
            self._reconcile(fx, sub)
            if sub.desired:
                fx.send(
                    sub_sid,
                    rtc.SignalResponse(
                        subscription_permission_update=rtc.SubscriptionPermissionUpdate(
                            participant_sid=sid, track_sid=track_sid, allowed=permitted
                        )
                    ),
                )
        return fx

    def route_data(
        self, sender_sid: str | None, packet: models.DataPacket, *, reliable: bool
    ) -> Effects:
        """Deliver a DataPacket from a participant (or from the server when
        ``sender_sid`` is None) to everyone else or to the named identities. The
        sender's identity and sid overwrite whatever the packet claims; ``sequence``
        is kept because receivers de-duplicate on (sender sid, sequence)."""
        fx = Effects()
        out = models.DataPacket()
        out.CopyFrom(packet)
        if sender_sid is not None:
            sender = self.participants.get(sender_sid)
            if sender is None or not sender.permission.can_publish_data:
                return fx
            if reliable and packet.sequence:
                # A resumed client resends what it is not sure arrived: forward once.
                if packet.sequence <= sender.last_reliable_seq:
                    return fx
                sender.last_reliable_seq = packet.sequence
            if out.HasField("transcription") and not _may_transcribe(sender, out.transcription):
                # Every SDK shows a transcription as the named participant's speech:
                # only agents may speak for others (as the reference), anyone for itself.
                return fx
            # A hidden participant stays hidden in what it sends (as the reference).
            identity, psid = ("", "") if sender.hidden else (sender.identity, sender.sid)
            out.participant_identity = identity
            out.participant_sid = psid
            if out.HasField("user"):
                out.user.participant_identity = identity
                out.user.participant_sid = psid
        destinations = set(out.destination_identities)
        if out.HasField("user"):
            destinations.update(out.user.destination_identities)
        for p in self.participants.values():
            if p.sid == sender_sid:
                continue
            if destinations and p.identity not in destinations:
                continue
            fx.data.append(DataDelivery(participant_sid=p.sid, packet=out, reliable=reliable))
        return fx

    def set_metadata(self, metadata: str) -> Effects:
        fx = Effects()
        self.metadata = metadata
        update = rtc.SignalResponse(room_update=rtc.RoomUpdate(room=self.info()))
        for p in self.participants.values():
            fx.send(p.sid, update)
        return fx

    def close(self, reason: DisconnectReason, *, now: float) -> Effects:
        """Close the room: every participant is told ``reason`` and removed."""
        fx = Effects()
        if self.closed:
            return fx
        for sid in list(self.participants):
            fx.extend(self.remove(sid, reason, now=now))
        self.closed = True
        fx.room_closed = True
        fx.events.append(self._event("room_finished"))
        return fx

    def flush_updates(self) -> Effects:
        """Send the batched participant updates: one ParticipantUpdate per recipient
        with every batched participant it has not seen at its current version."""
        fx = Effects()
        infos = [self.participants[sid].info() for sid in self._batched]
        self._batched.clear()
        if not infos:
            return fx
        shared: dict[tuple[str, ...], rtc.SignalResponse] = {}
        for other in self.participants.values():
            news = [i for i in infos if i.sid != other.sid and i.version > other.seen_through]
            if not news:
                continue
            key = tuple(i.sid for i in news)
            msg = shared.get(key)
            if msg is None:
                msg = shared[key] = _update(news)
            fx.send(other.sid, msg)
        return fx

    # ---- media observations ------------------------------------------------------

    def _received(self) -> dict[str, list[Publication]]:
        """Per subscriber sid, the publications it receives (bound subscriptions), in
        one pass over the subscriptions."""
        tracks = {
            pub.sid: pub for p in self.participants.values() for pub in p.publications.values()
        }
        received: dict[str, list[Publication]] = {}
        for (sub_sid, track_sid), sub in self.subscriptions.items():
            pub = tracks.get(track_sid)
            if sub.bound and pub is not None:
                received.setdefault(sub_sid, []).append(pub)
        return received

    def audio_levels(self, levels: Iterable[tuple[str, int, int, int]], now: float) -> Effects:
        """The engine's level summaries (track sid, observed ms, active ms, loudest)
        for this room's tracks, at ``now``: everyone hears of speakers that started,
        changed or stopped among itself and those it subscribes to (SpeakersChanged),
        as the reference."""
        fx = Effects()
        for track_sid, observed_ms, active_ms, loudest in levels:
            self.speakers.observe(track_sid, LevelSummary(observed_ms, active_ms, loudest), now)
        live = {sid for p in self.participants.values() for sid in p.publications}
        self.speakers.forget([sid for sid in self.speakers.meters if sid not in live])
        microphones = {
            p.sid: [
                pub.sid
                for pub in p.publications.values()
                if pub.live
                and not pub.info.muted
                and pub.info.source == models.TrackSource.MICROPHONE
            ]
            for p in self.participants.values()
            if not p.hidden
        }
        changes = self.speakers.changes(microphones, now)
        if not changes:
            return fx
        received = self._received()
        for p in self.participants.values():
            scope = {pub.publisher_sid for pub in received.get(p.sid, ())} | {p.sid}
            mine = [s for s in changes if s.sid in scope]
            if mine:
                fx.send(
                    p.sid,
                    rtc.SignalResponse(speakers_changed=rtc.SpeakersChanged(speakers=mine)),
                )
        return fx

    def stream_state(self, subscriber_sid: str, track_sid: str, *, paused: bool) -> Effects:
        """The engine paused (or resumed) ``track_sid`` to ``subscriber_sid``: its
        bandwidth does not fit even the lowest layer. The subscriber is told with a
        StreamStateUpdate, as the reference's stream allocator does (clients show
        the track as paused rather than frozen)."""
        fx = Effects()
        pub = self.find_publication(track_sid)
        if pub is None or subscriber_sid not in self.participants:
            return fx
        state = rtc.StreamState.PAUSED if paused else rtc.StreamState.ACTIVE
        info = rtc.StreamStateInfo(
            participant_sid=pub.publisher_sid, track_sid=track_sid, state=state
        )
        update = rtc.StreamStateUpdate(stream_states=[info])
        fx.send(subscriber_sid, rtc.SignalResponse(stream_state_update=update))
        return fx

    def link_stats(self, samples: Iterable[tuple[str, bool, LinkSample]], now: float) -> Effects:
        """The engine's link reports (participant sid, of its subscriber peer, sample)
        for this room, at ``now``. At the end of each scoring window, if anyone's
        quality is new or changed, every active participant gets a
        ConnectionQualityUpdate with its own and its publishers' qualities."""
        fx = Effects()
        for sid, subscriber, sample in samples:
            if sid in self.participants:
                self.quality.observe(sid, subscriber, sample)
        for sid in {k[0] for k in self.quality.scorers} - self.participants.keys():
            self.quality.forget(sid)
        if not self.quality.window_due(now):
            return fx
        active = [
            p.sid
            for p in self.participants.values()
            if p.state is ParticipantState.ACTIVE and not p.hidden
        ]
        received = self._received()
        weights = {}
        for sid in active:
            # The reference weighs loss by codec: video if the participant sends or
            # receives any, else Opus.
            pubs = [x for x in self.participants[sid].publications.values() if x.live]
            pubs += received.get(sid, [])
            video = any(x.info.type == models.TrackType.VIDEO for x in pubs)
            weights[sid] = VIDEO_LOSS_WEIGHT if video else AUDIO_LOSS_WEIGHT
        infos = self.quality.tick(now, active, weights)
        if not infos:
            return fx
        for sid in active:
            publishers = dict.fromkeys(pub.publisher_sid for pub in received.get(sid, ()))
            updates = [infos[sid]]
            updates += [infos[o] for o in publishers if o in infos and o != sid]
            fx.send(
                sid,
                rtc.SignalResponse(connection_quality=rtc.ConnectionQualityUpdate(updates=updates)),
            )
        return fx

    @property
    def has_batched_updates(self) -> bool:
        return bool(self._batched)

    def started_event(self) -> webhook.WebhookEvent:
        return self._event("room_started")


_KNOWN_FEATURES = {
    int(v): cast("models.AudioTrackFeature", v) for v in models.AudioTrackFeature.values()
}


def _known_features(features: Iterable[int]) -> list[models.AudioTrackFeature]:
    """Each known feature once, in order: a client's list of a million unknown values
    must not become every subscriber's TrackInfo."""
    return [_KNOWN_FEATURES[f] for f in dict.fromkeys(features) if f in _KNOWN_FEATURES]


def _audio_features(req: rtc.AddTrackRequest) -> list[models.AudioTrackFeature]:
    """The request's audio features, with its older ``stereo`` and ``disable_dtx``
    flags folded in (as the reference), each once."""
    features = _known_features(req.audio_features)
    if req.stereo and models.AudioTrackFeature.TF_STEREO not in features:
        features.append(models.AudioTrackFeature.TF_STEREO)
    if req.disable_dtx and models.AudioTrackFeature.TF_NO_DTX not in features:
        features.append(models.AudioTrackFeature.TF_NO_DTX)
    return features


def _may_transcribe(sender: Participant, transcription: models.Transcription) -> bool:
    # The Rust SDK (and so the Python one) aborts its process on a track id that is
    # not a track sid: such a packet would crash every Python receiver.
    if not transcription.track_id.startswith("TR_"):
        return False
    return (
        sender.kind == models.ParticipantInfo.Kind.AGENT
        or transcription.transcribed_participant_identity in ("", sender.identity)
    )


_RECONNECT_REASONS = frozenset(
    {
        DisconnectReason.MEDIA_FAILURE,
        DisconnectReason.MIGRATION,
        DisconnectReason.SIGNAL_CLOSE,
        DisconnectReason.CONNECTION_TIMEOUT,
        DisconnectReason.JOIN_FAILURE,
        DisconnectReason.STATE_MISMATCH,
    }
)
"""Removals the client did not ask for and may undo by joining again: its SDK is told
to reconnect in full rather than to give up (as the reference does on failures)."""


def leave_request(reason: DisconnectReason) -> rtc.LeaveRequest:
    """The LeaveRequest telling a removed participant why, and what its SDK should do."""
    if reason in _RECONNECT_REASONS:
        return rtc.LeaveRequest(
            reason=reason, action=rtc.LeaveRequest.Action.RECONNECT, can_reconnect=True
        )
    return rtc.LeaveRequest(
        reason=reason, action=rtc.LeaveRequest.Action.DISCONNECT, can_reconnect=False
    )


def _update(infos: list[models.ParticipantInfo]) -> rtc.SignalResponse:
    return rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=infos))
