"""Hold and un-hold offers for the survivor of a failed call (no media relay)."""

from __future__ import annotations

import pytest

from callkeeper.sdp import (
    Direction,
    SessionDescription,
    check_answer,
    held_direction,
    is_held,
    make_hold_offer,
    make_unhold_offer,
    parse_sdp,
    rebase_origin,
)
from test_sdp_corpus import (
    BARESIP_INVITE,
    RFC4317_3_1_ANSWER,
    RFC4317_3_1_HOLD,
    RFC4317_3_1_HOLD_ANSWER,
    RFC4317_3_1_RESUME,
    RFC4317_3_2_ANSWER,
    RFC4317_3_2_HOLD,
    SIPP_UAC,
    WEBRTC_OFFER,
    crlf,
)

SR, SO, RO, IN = Direction.SENDRECV, Direction.SENDONLY, Direction.RECVONLY, Direction.INACTIVE


@pytest.mark.parametrize(("before", "held"), [(SR, SO), (SO, SO), (RO, IN), (IN, IN)])
def test_held_direction_table(before: Direction, held: Direction) -> None:
    """RFC 3264 §8.4: sendrecv → sendonly, recvonly → inactive; held streams stay held."""
    assert held_direction(before) is held


# --- make_hold_offer ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "hold"),
    [(RFC4317_3_1_ANSWER, RFC4317_3_1_HOLD), (RFC4317_3_2_ANSWER, RFC4317_3_2_HOLD)],
    ids=["4317-3.1", "4317-3.2"],
)
def test_hold_offer_is_exactly_rfc4317s(answer: bytes, hold: bytes) -> None:
    assert make_hold_offer(parse_sdp(answer)).to_bytes() == hold


def _one_stream(*attributes: str, session_attributes: tuple[str, ...] = ()) -> SessionDescription:
    return parse_sdp(
        crlf(
            "\n".join(
                [
                    "v=0", "o=- 7 7 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
                    *session_attributes, "m=audio 4000 RTP/AVP 0", *attributes,
                ]
            )
        )
    )  # fmt: skip


# (media-level direction, session-level direction, direction in the hold offer)
HOLD_TABLE = [
    (None, None, SO),
    ("sendrecv", None, SO),
    ("sendonly", None, SO),
    ("recvonly", None, IN),
    ("inactive", None, IN),
    (None, "recvonly", IN),
    (None, "sendonly", SO),
    ("sendrecv", "inactive", SO),  # media level wins
]


@pytest.mark.parametrize(("media_level", "session_level", "expected"), HOLD_TABLE)
def test_hold_offer_directions(
    media_level: str | None, session_level: str | None, expected: Direction
) -> None:
    last_sent = _one_stream(
        *([f"a={media_level}"] if media_level else []),
        session_attributes=(f"a={session_level}",) if session_level else (),
    )
    offer = make_hold_offer(last_sent)
    [media] = offer.media
    assert media.direction is expected
    assert offer.direction_of(media) is expected
    assert offer.origin.session_version == 8
    assert offer.attributes == last_sent.attributes  # session level kept as it was
    assert is_held(offer)


def test_hold_keeps_everything_else_and_leaves_the_input_alone() -> None:
    last_sent = parse_sdp(BARESIP_INVITE)
    offer = make_hold_offer(last_sent)
    expected = BARESIP_INVITE.replace(b"a=sendrecv", b"a=sendonly").replace(
        b"2933737088 569737589", b"2933737088 569737590"
    )
    assert offer.to_bytes() == expected
    assert last_sent.to_bytes() == BARESIP_INVITE


def test_hold_leaves_rejected_streams_alone() -> None:
    session = parse_sdp(WEBRTC_OFFER)
    session.media[2].port = 0
    offer = make_hold_offer(session)
    audio, video, data = offer.media
    assert (audio.direction, video.direction) == (SO, IN)  # video was recvonly
    assert data.direction is None and data.attributes == session.media[2].attributes


def test_hold_then_answer_fits() -> None:
    hold = make_hold_offer(parse_sdp(RFC4317_3_1_ANSWER))
    check_answer(hold, parse_sdp(RFC4317_3_1_HOLD_ANSWER))


# --- is_held --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sdp", "held"),
    [
        (SIPP_UAC, False),
        (RFC4317_3_1_HOLD, True),
        (RFC4317_3_1_HOLD_ANSWER, False),  # recvonly: the held party still receives
        (SIPP_UAC.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 0.0.0.0"), True),  # RFC 2543 hold
        (SIPP_UAC.replace(b"m=audio 6000", b"m=audio 0"), False),  # no open stream at all
    ],
    ids=["active", "sendonly", "recvonly", "c=0.0.0.0", "all-rejected"],
)
def test_is_held(sdp: bytes, held: bool) -> None:
    assert is_held(parse_sdp(sdp)) is held


# --- rebase_origin and make_unhold_offer ---------------------------------------------------------
def test_rfc4317_resume_is_an_unhold_offer() -> None:
    """Bob resumes Alice with his own description: RFC 4317 §3.1's last offer, byte for byte."""
    resume = make_unhold_offer(parse_sdp(RFC4317_3_1_ANSWER), parse_sdp(RFC4317_3_1_HOLD))
    assert resume.to_bytes() == RFC4317_3_1_RESUME


def test_rebase_origin_keeps_identity_and_raises_version() -> None:
    previous = make_hold_offer(parse_sdp(SIPP_UAC))  # what the survivor last got from us
    new_party = parse_sdp(BARESIP_INVITE)
    rebased = rebase_origin(new_party, previous)
    assert rebased.origin == previous.origin.__class__(
        "user1", "53655765", 2353687639, "IN", "IP4", "127.0.0.1"
    )
    assert rebased.media == new_party.media
    assert rebased.attributes == new_party.attributes
    assert new_party == parse_sdp(BARESIP_INVITE)


def test_unhold_offer_carries_the_new_party_under_the_old_identity() -> None:
    survivor_view = parse_sdp(SIPP_UAC)  # what we sent the survivor when the call began
    held = make_hold_offer(survivor_view)
    new_party = parse_sdp(BARESIP_INVITE.replace(b"127.0.0.1", b"192.0.2.77"))
    offer = make_unhold_offer(new_party, held)
    assert offer.origin == held.origin.__class__(
        "user1", "53655765", held.origin.session_version + 1, "IN", "IP4", "127.0.0.1"
    )
    [audio] = offer.media
    assert offer.address_of(audio) == "192.0.2.77"
    assert audio.port == 47924
    assert audio.payload_types == [0, 8, 101]
    assert offer.direction_of(audio) is SR
    assert not is_held(offer)
    assert parse_sdp(offer.to_bytes()) == offer


def _media_lines(session: SessionDescription) -> list[str]:
    return [media.media_line() for media in session.media]


def _kinds(*streams: tuple[str, int]) -> SessionDescription:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"]
    for kind, port in streams:
        lines += [f"m={kind} {port} RTP/AVP 0", "a=sendrecv"]
    return parse_sdp(crlf("\n".join(lines)))


# (m= lines previously sent to the survivor, the new party's m= lines, the un-hold offer's)
ALIGN_TABLE = [
    ([("audio", 4000)], [("audio", 6000)], ["audio 6000 RTP/AVP 0"]),
    (
        [("audio", 4000), ("video", 4002)],
        [("audio", 6000)],
        ["audio 6000 RTP/AVP 0", "video 0 RTP/AVP 0"],  # no video any more: disabled, kept
    ),
    (
        [("audio", 4000)],
        [("audio", 6000), ("video", 6002)],
        ["audio 6000 RTP/AVP 0"],  # the survivor never had video: not added
    ),
    (
        [("audio", 4000), ("video", 4002)],
        [("video", 6002), ("audio", 6000)],
        ["audio 6000 RTP/AVP 0", "video 6002 RTP/AVP 0"],  # matched by media type
    ),
    (
        [("audio", 4000), ("audio", 4002)],
        [("audio", 6000), ("audio", 6002)],
        ["audio 6000 RTP/AVP 0", "audio 6002 RTP/AVP 0"],  # same type: by position
    ),
    (
        [("video", 0), ("audio", 4000)],
        [("audio", 6000)],
        ["video 0 RTP/AVP 0", "audio 6000 RTP/AVP 0"],
    ),
]


@pytest.mark.parametrize(("previous", "new", "expected"), ALIGN_TABLE)
def test_unhold_offer_keeps_the_dialogs_m_lines(
    previous: list[tuple[str, int]], new: list[tuple[str, int]], expected: list[str]
) -> None:
    previous_sent = _kinds(*previous)
    offer = make_unhold_offer(_kinds(*new), previous_sent)
    assert _media_lines(offer) == expected
    assert offer.origin.session_version == previous_sent.origin.session_version + 1
    disabled = [media for media in offer.media if media.port == 0]
    assert all(media.attributes == [] for media in disabled)
