"""Anchoring media at the relay: addresses, ports, a=rtcp, ICE lines."""

from __future__ import annotations

import pytest

from callkeeper.sdp import (
    Attribute,
    Connection,
    RtcpAddress,
    anchor_media,
    is_ice_attribute,
    parse_sdp,
    strip_ice,
)
from test_sdp_corpus import BARESIP_INVITE, RFC8866_EXAMPLE, SIPP_UAC, WEBRTC_OFFER, crlf


@pytest.mark.parametrize(
    ("name", "ice"),
    [
        ("candidate", True), ("end-of-candidates", True), ("remote-candidates", True),
        ("ice-ufrag", True), ("ice-pwd", True), ("ice-options", True), ("ice-lite", True),
        ("ice-mismatch", True), ("rtcp", False), ("fingerprint", False), ("mid", False),
        ("icecast", False),
    ],
)  # fmt: skip
def test_is_ice_attribute(name: str, ice: bool) -> None:
    assert is_ice_attribute(name) is ice


def test_strip_ice_at_both_levels() -> None:
    offer = parse_sdp(WEBRTC_OFFER)
    offer.attributes.append(Attribute("ice-lite"))
    stripped = strip_ice(offer)
    remaining = [a.name for a in stripped.attributes] + [
        a.name for media in stripped.media for a in media.attributes
    ]
    assert not any(is_ice_attribute(name) for name in remaining)
    assert "fingerprint" in remaining and "rtcp" in remaining
    assert offer.attributes[-1] == Attribute("ice-lite")  # input untouched
    assert len(offer.media[0].attribute_values("candidate")) == 3


def test_anchor_webrtc_offer() -> None:
    offer = parse_sdp(WEBRTC_OFFER)
    anchored = anchor_media(offer, "203.0.113.50", [30000, 30002, 30004])
    assert anchored.connection is None  # every stream has its own c=: no session one added
    for media, port in zip(anchored.media, [30000, 30002, 30004], strict=True):
        assert media.connections == [Connection("IN", "IP4", "203.0.113.50")]
        assert media.port == port
        assert media.rtcp is None  # RTP port + 1 at the relay: the default
        assert not any(is_ice_attribute(a.name) for a in media.attributes)
    assert parse_sdp(anchored.to_bytes()) == anchored
    assert parse_sdp(WEBRTC_OFFER) == offer


def test_anchor_with_explicit_rtcp_ports() -> None:
    anchored = anchor_media(parse_sdp(WEBRTC_OFFER), "2001:db8::50", [30000, 30002, 30004],
                            rtcp_ports=[30001, None, 30009])  # fmt: skip
    audio, video, data = anchored.media
    assert audio.connections == [Connection("IN", "IP6", "2001:db8::50")]
    assert audio.rtcp == RtcpAddress(30001, "IN", "IP6", "2001:db8::50")
    # a=rtcp rewritten where it was, not moved
    names = [a.name for a in audio.attributes]
    assert names.index("rtcp") < names.index("fingerprint")
    assert video.rtcp is None
    assert data.rtcp == RtcpAddress(30009, "IN", "IP6", "2001:db8::50")  # added at the end
    assert data.attributes[-1].name == "rtcp"
    assert parse_sdp(anchored.to_bytes()) == anchored


def test_anchor_session_level_connection() -> None:
    anchored = anchor_media(parse_sdp(BARESIP_INVITE), "198.51.100.9", [40000])
    assert anchored.connection == Connection("IN", "IP4", "198.51.100.9")
    assert anchored.media[0].connections == []
    assert anchored.to_bytes() == BARESIP_INVITE.replace(
        b"c=IN IP4 127.0.0.1", b"c=IN IP4 198.51.100.9"
    ).replace(b"m=audio 47924", b"m=audio 40000")


def test_anchor_mixed_levels_and_rejected_streams() -> None:
    session = parse_sdp(RFC8866_EXAMPLE)
    session.media[1].port = 0
    anchored = anchor_media(session, "192.0.2.200", [5000, 5002, 5004])
    first, rejected, video = anchored.media
    assert anchored.connection == Connection("IN", "IP4", "192.0.2.200")
    assert (first.port, rejected.port, video.port) == (5000, 0, 5004)
    assert video.connections == [Connection("IN", "IP4", "192.0.2.200")]
    assert anchored.origin == session.origin


def test_anchor_adds_session_connection_when_a_stream_has_none() -> None:
    sdp = crlf("""
        v=0
        o=- 1 1 IN IP4 192.0.2.1
        s=-
        t=0 0
        m=audio 4000/2 RTP/AVP 0
        c=IN IP4 224.2.1.1/127/2
        a=rtcp:4005
        m=video 0 RTP/AVP 31
    """)
    anchored = anchor_media(parse_sdp(sdp), "192.0.2.200", [5000, 5002])
    audio, video = anchored.media
    assert anchored.connection == Connection("IN", "IP4", "192.0.2.200")
    assert (audio.port, audio.port_count, audio.rtcp) == (5000, None, None)
    assert audio.connections == [Connection("IN", "IP4", "192.0.2.200")]
    assert video.port == 0


@pytest.mark.parametrize(
    ("address", "ports", "rtcp_ports", "message"),
    [
        ("192.0.2.1", [1, 2], None, "2 ports for 1 m= lines"),
        ("192.0.2.1", [1], [1, 2], "2 RTCP ports for 1 m= lines"),
        ("300.0.0.1", [1], None, "not a unicast address"),
        ("224.2.1.1/127", [1], None, "not a unicast address"),
        ("192.0.2.1", [0], None, "not a port"),
        ("192.0.2.1", [70000], None, "not a port"),
        ("192.0.2.1", [1], [-1], "not a port"),
    ],
)
def test_anchor_refuses_programming_errors(
    address: str, ports: list[int], rtcp_ports: list[int | None] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        anchor_media(parse_sdp(SIPP_UAC), address, ports, rtcp_ports)
