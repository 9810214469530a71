"""The pure bookkeeping of one-PeerConnection subscriptions (pysfu.media.single_pc)."""

from __future__ import annotations

from pysfu.media.sdp import MediaSection
from pysfu.media.single_pc import SinglePc


def _offer(*mids: tuple[str, str, str]) -> list[MediaSection]:
    return [MediaSection(kind, mid, direction, "", False) for mid, kind, direction in mids]


INITIAL = _offer(
    ("0", "audio", "recvonly"),
    ("1", "video", "recvonly"),
    ("2", "audio", "sendonly"),
)


def test_subscriptions_take_free_sections_once_and_ask_for_more() -> None:
    s = SinglePc()
    s.offered(INITIAL)
    s.want("TR_a", "audio", "PA_x|TR_a")
    s.want("TR_b", "audio", "PA_y|TR_b")
    assert s.assign() == [("TR_a", "PA_x|TR_a", "0")]
    s.answered()
    # One audio section short: ask for exactly one, once.
    assert s.requirement() == (1, 0)
    assert s.requirement() is None
    s.offered([*INITIAL, *_offer(("3", "audio", "recvonly"))])
    assert s.assign() == [("TR_b", "PA_y|TR_b", "3")]
    assert s.mid_to_track_id() == {"0": "TR_a", "3": "TR_b"}
    s.answered()
    assert s.requirement() is None
    # Unsubscribing retires the mid; resubscribing needs a fresh one.
    assert s.drop("TR_a") == "0"
    s.want("TR_a", "audio", "PA_x|TR_a")
    assert s.requirement() == (1, 0)


def test_a_bound_free_section_still_needs_a_new_offer_to_be_announced() -> None:
    s = SinglePc()
    s.offered(INITIAL)
    s.answered()
    s.want("TR_v", "video", "PA_x|TR_v")
    assert s.requirement() == (0, 0), "a new offer, no new sections"
    s.offered(INITIAL)
    assert s.assign() == [("TR_v", "PA_x|TR_v", "1")]


def test_answer_edits() -> None:
    s = SinglePc()
    s.offered(INITIAL)
    s.want("TR_a", "audio", "PA_x|TR_a")
    s.assign()
    answer = "\r\n".join(
        [
            "v=0",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=mid:0",
            "a=sendonly",
            "a=msid:rnd1 rnd2",
            "a=ssrc:1 msid:rnd1 rnd2",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "a=mid:1",
            "a=sendonly",
            "a=msid:rnd3 rnd4",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=mid:2",
            "a=recvonly",
            "",
        ]
    )
    edited = s.edit_answer(answer).split("\r\n")
    assert edited[3:6] == ["a=sendonly", "a=msid:PA_x|TR_a TR_a", "a=ssrc:1 msid:PA_x|TR_a TR_a"]
    assert edited[8] == "a=inactive", "an unbound receive section carries nothing"
    assert edited[12] == "a=recvonly", "the client's own sending section is left alone"
