"""RFC 3264 offer/answer rules: direction tables, answer checks, o= versions; RFC 4317 exchanges."""

from __future__ import annotations

import pytest

from callkeeper.sdp import (
    Direction,
    SdpError,
    answer_direction,
    check_answer,
    direction_allowed,
    next_version,
    parse_sdp,
)
from test_sdp_corpus import (
    RFC4317_2_1_ANSWER,
    RFC4317_2_1_OFFER,
    RFC4317_2_2_ANSWER,
    RFC4317_3_1_ANSWER,
    RFC4317_3_1_HOLD,
    RFC4317_3_1_HOLD_ANSWER,
    RFC4317_3_1_OFFER,
    WEBRTC_OFFER,
    crlf,
)

SR, SO, RO, IN = Direction.SENDRECV, Direction.SENDONLY, Direction.RECVONLY, Direction.INACTIVE


# --- Direction itself ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("direction", "sends", "receives", "reversed_"),
    [(SR, True, True, SR), (SO, True, False, RO), (RO, False, True, SO), (IN, False, False, IN)],
)
def test_direction_bits(
    direction: Direction, sends: bool, receives: bool, reversed_: Direction
) -> None:
    assert (direction.sends, direction.receives) == (sends, receives)
    assert Direction.from_flags(sends, receives) is direction
    assert direction.reversed() is reversed_
    assert str(direction) == direction.value


# --- RFC 3264 §6.1: which answer directions an offer allows -------------------------------------
# (offered, answerer would like, answer to send)
ANSWER_TABLE = [
    (SR, SR, SR), (SR, SO, SO), (SR, RO, RO), (SR, IN, IN),
    (SO, SR, RO), (SO, SO, IN), (SO, RO, RO), (SO, IN, IN),
    (RO, SR, SO), (RO, SO, SO), (RO, RO, IN), (RO, IN, IN),
    (IN, SR, IN), (IN, SO, IN), (IN, RO, IN), (IN, IN, IN),
]  # fmt: skip


@pytest.mark.parametrize(("offered", "wanted", "expected"), ANSWER_TABLE)
def test_answer_direction(offered: Direction, wanted: Direction, expected: Direction) -> None:
    assert answer_direction(offered, wanted) is expected
    assert direction_allowed(offered, expected)


def test_answer_direction_defaults_to_what_the_offer_allows() -> None:
    assert [answer_direction(d) for d in (SR, SO, RO, IN)] == [SR, RO, SO, IN]


# Every (offered, answered) pair: allowed exactly as RFC 3264 §6.1 says.
ALLOWED = {
    SR: {SR, SO, RO, IN},
    SO: {RO, IN},
    RO: {SO, IN},
    IN: {IN},
}


@pytest.mark.parametrize("offered", list(Direction))
@pytest.mark.parametrize("answered", list(Direction))
def test_direction_allowed_table(offered: Direction, answered: Direction) -> None:
    assert direction_allowed(offered, answered) is (answered in ALLOWED[offered])


# --- check_answer -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        (RFC4317_2_1_OFFER, RFC4317_2_1_ANSWER),
        (RFC4317_2_1_OFFER, RFC4317_2_2_ANSWER),
        (RFC4317_3_1_OFFER, RFC4317_3_1_ANSWER),
        (RFC4317_3_1_HOLD, RFC4317_3_1_HOLD_ANSWER),
    ],
    ids=["4317-2.1", "4317-2.2", "4317-3.1", "4317-3.1-hold"],
)
def test_rfc4317_answers_fit_their_offers(offer: bytes, answer: bytes) -> None:
    check_answer(parse_sdp(offer), parse_sdp(answer))


def _audio(*lines: str, port: int = 4000, formats: str = "0 8", kind: str = "audio") -> str:
    return "\n".join([f"m={kind} {port} RTP/AVP {formats}", *lines])


def _session(*media: str) -> bytes:
    return crlf(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n" + "\n".join(media)
    )


BAD_ANSWERS = [
    ("fewer m= lines", [_audio(), _audio(kind="video")], [_audio()], "answer has 1 m= lines"),
    ("other media type", [_audio()], [_audio(kind="video")], "answers audio with video"),
    ("reopened stream", [_audio(port=0)], [_audio()], "offered with port 0 and answered open"),
    ("sendonly answered sendonly", [_audio("a=sendonly")], [_audio("a=sendonly")],
     "answers sendonly with sendonly"),
    ("inactive answered sendrecv", [_audio("a=inactive")], [_audio()],
     "answers inactive with sendrecv"),
    ("no common codec", [_audio(formats="0")], [_audio(formats="8")], "no format in common"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("offer", "answer", "reason"), [c[1:] for c in BAD_ANSWERS], ids=[c[0] for c in BAD_ANSWERS]
)
def test_bad_answers(offer: list[str], answer: list[str], reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        check_answer(parse_sdp(_session(*offer)), parse_sdp(_session(*answer)))


GOOD_ANSWERS = [
    ("rejected stream", [_audio(), _audio(kind="video")], [_audio(), _audio(kind="video", port=0)]),
    ("rejected offered port 0", [_audio(port=0)], [_audio(port=0)]),
    ("renumbered dynamic codec",
     [_audio("a=rtpmap:96 opus/48000/2", formats="96")],
     [_audio("a=rtpmap:111 OPUS/48000/2", formats="111")]),
    ("inactive with no common codec", [_audio(formats="0")], [_audio("a=inactive", formats="8")]),
    ("session-level direction", [_audio("a=sendonly")], ["a=recvonly\n" + _audio()]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("offer", "answer"), [c[1:] for c in GOOD_ANSWERS], ids=[c[0] for c in GOOD_ANSWERS]
)
def test_good_answers(offer: list[str], answer: list[str]) -> None:
    check_answer(parse_sdp(_session(*offer)), parse_sdp(_session(*answer)))


def test_non_rtp_streams_compare_formats_as_tokens() -> None:
    offer = _session("m=image 4000 udptl t38")
    check_answer(parse_sdp(offer), parse_sdp(offer))
    with pytest.raises(SdpError, match="no format in common"):
        check_answer(parse_sdp(offer), parse_sdp(_session("m=image 4000 udptl t38-other")))


# --- o= versions --------------------------------------------------------------------------------
def test_next_version_bumps_only_the_version() -> None:
    offer = parse_sdp(WEBRTC_OFFER)
    bumped = next_version(offer)
    assert bumped.origin.session_version == offer.origin.session_version + 1
    assert (bumped.origin.username, bumped.origin.session_id, bumped.origin.address) == (
        offer.origin.username, offer.origin.session_id, offer.origin.address,
    )  # fmt: skip
    assert bumped.media == offer.media
    assert parse_sdp(WEBRTC_OFFER) == offer  # the input is untouched
    assert next_version(bumped).origin.session_version == offer.origin.session_version + 2


def test_rfc4317_hold_answer_follows_answer_direction() -> None:
    hold = parse_sdp(RFC4317_3_1_HOLD)
    answer = parse_sdp(RFC4317_3_1_HOLD_ANSWER)
    assert answer.direction_of(answer.media[0]) is answer_direction(
        hold.direction_of(hold.media[0])
    )
