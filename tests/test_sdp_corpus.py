"""Real-world SDP bodies, and that each parses, round-trips and reads as its sender meant.

The other SDP tests import these bodies. Sources:
- SIPp 3.6's built-in `uac`/`uas` scenarios (`sipp -sd uac`), placeholders filled in;
- baresip 1.0.0 (Debian's baresip-core, configured by shared/peers/baresip/baresip-peer.sh),
  captured from the INVITE it sent to a UDP socket on loopback;
- a browser-style WebRTC offer: BUNDLE, trickle ICE, DTLS-SRTP, audio, video, data channel;
- RFC 4317 (SDP offer/answer examples) §2.1, §2.2, §3.1 and §3.2, written out from the RFC.
"""

from __future__ import annotations

import pytest

from callkeeper.sdp import Connection, Direction, Origin, RtcpAddress, RtpMap, parse_sdp


def crlf(text: str) -> bytes:
    """A body written one line per source line, sent with CRLF endings."""
    return "".join(line.strip() + "\r\n" for line in text.strip().splitlines()).encode()


SIPP_UAC = crlf("""
    v=0
    o=user1 53655765 2353687637 IN IP4 127.0.0.1
    s=-
    c=IN IP4 127.0.0.1
    t=0 0
    m=audio 6000 RTP/AVP 0
    a=rtpmap:0 PCMU/8000
""")

BARESIP_INVITE = crlf("""
    v=0
    o=- 2933737088 569737589 IN IP4 127.0.0.1
    s=-
    c=IN IP4 127.0.0.1
    t=0 0
    a=tool:baresip 1.0.0
    m=audio 47924 RTP/AVP 0 8 101
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=sendrecv
    a=label:1
    a=rtcp-rsize
    a=ssrc:2441136650 cname:sip:capt@127.0.0.1:47912
    a=minptime:20
    a=ptime:20
""")

WEBRTC_OFFER = crlf("""
    v=0
    o=- 4611731400430051336 2 IN IP4 127.0.0.1
    s=-
    t=0 0
    a=group:BUNDLE 0 1 2
    a=extmap-allow-mixed
    a=msid-semantic: WMS stream0
    m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
    c=IN IP4 0.0.0.0
    a=rtcp:9 IN IP4 0.0.0.0
    a=candidate:1467250027 1 udp 2122260223 192.0.2.10 46243 typ host generation 0
    a=candidate:1467250027 2 udp 2122260222 192.0.2.10 47199 typ host generation 0
    a=candidate:2631594011 1 udp 1686052607 203.0.113.7 46243 typ srflx raddr 192.0.2.10 rport 46243
    a=end-of-candidates
    a=ice-ufrag:EsAw
    a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
    a=ice-options:trickle
    a=fingerprint:sha-1 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB
    a=setup:actpass
    a=mid:0
    a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
    a=sendrecv
    a=msid:stream0 audio0
    a=rtcp-mux
    a=rtpmap:111 opus/48000/2
    a=rtcp-fb:111 transport-cc
    a=fmtp:111 minptime=10;useinbandfec=1
    a=rtpmap:63 red/48000/2
    a=fmtp:63 111/111
    a=rtpmap:9 G722/8000
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:13 CN/8000
    a=rtpmap:110 telephone-event/48000
    a=rtpmap:126 telephone-event/8000
    a=ssrc:3570614608 cname:4TOk42mSjXCkVIa6
    m=video 9 UDP/TLS/RTP/SAVPF 96 97
    c=IN IP4 0.0.0.0
    a=rtcp:9 IN IP4 0.0.0.0
    a=ice-ufrag:EsAw
    a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
    a=ice-options:trickle
    a=fingerprint:sha-1 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB
    a=setup:actpass
    a=mid:1
    a=recvonly
    a=rtcp-mux
    a=rtcp-rsize
    a=rtpmap:96 VP8/90000
    a=rtcp-fb:96 nack pli
    a=rtpmap:97 rtx/90000
    a=fmtp:97 apt=96
    m=application 9 UDP/DTLS/SCTP webrtc-datachannel
    c=IN IP4 0.0.0.0
    a=ice-ufrag:EsAw
    a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
    a=ice-options:trickle
    a=fingerprint:sha-1 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB
    a=setup:actpass
    a=mid:2
    a=sctp-port:5000
    a=max-message-size:262144
""")

# RFC 4317 §2.1 "Audio and Video 1": Alice offers audio and video, Bob accepts one codec each.
RFC4317_2_1_OFFER = crlf("""
    v=0
    o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com
    s=
    c=IN IP4 host.atlanta.example.com
    t=0 0
    m=audio 49170 RTP/AVP 0 8 97
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:97 iLBC/8000
    m=video 51372 RTP/AVP 31 32
    a=rtpmap:31 H261/90000
    a=rtpmap:32 MPV/90000
""")
RFC4317_2_1_ANSWER = crlf("""
    v=0
    o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com
    s=
    c=IN IP4 host.biloxi.example.com
    t=0 0
    m=audio 49174 RTP/AVP 0
    a=rtpmap:0 PCMU/8000
    m=video 49170 RTP/AVP 32
    a=rtpmap:32 MPV/90000
""")

# RFC 4317 §2.2 "Audio and Video 2": Bob has no video and rejects the stream with port 0.
RFC4317_2_2_ANSWER = crlf("""
    v=0
    o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com
    s=
    c=IN IP4 host.biloxi.example.com
    t=0 0
    m=audio 49172 RTP/AVP 0 8
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    m=video 0 RTP/AVP 31
    a=rtpmap:31 H261/90000
""")

# RFC 4317 §3.1 "Hold and Unhold 1": Bob holds Alice (sendonly), Alice answers recvonly,
# Bob resumes with his original description and the next version.
RFC4317_3_1_OFFER = crlf("""
    v=0
    o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com
    s=
    c=IN IP4 host.atlanta.example.com
    t=0 0
    m=audio 49170 RTP/AVP 0 97
    a=rtpmap:0 PCMU/8000
    a=rtpmap:97 iLBC/8000
""")
RFC4317_3_1_ANSWER = crlf("""
    v=0
    o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com
    s=
    c=IN IP4 host.biloxi.example.com
    t=0 0
    m=audio 49172 RTP/AVP 97
    a=rtpmap:97 iLBC/8000
""")
RFC4317_3_1_HOLD = crlf("""
    v=0
    o=bob 2808844564 2808844565 IN IP4 host.biloxi.example.com
    s=
    c=IN IP4 host.biloxi.example.com
    t=0 0
    m=audio 49172 RTP/AVP 97
    a=rtpmap:97 iLBC/8000
    a=sendonly
""")
RFC4317_3_1_HOLD_ANSWER = crlf("""
    v=0
    o=alice 2890844526 2890844527 IN IP4 host.atlanta.example.com
    s=
    c=IN IP4 host.atlanta.example.com
    t=0 0
    m=audio 49170 RTP/AVP 97
    a=rtpmap:97 iLBC/8000
    a=recvonly
""")
RFC4317_3_1_RESUME = crlf("""
    v=0
    o=bob 2808844564 2808844566 IN IP4 host.biloxi.example.com
    s=
    c=IN IP4 host.biloxi.example.com
    t=0 0
    m=audio 49172 RTP/AVP 97
    a=rtpmap:97 iLBC/8000
""")

# RFC 4317 §3.2 "Hold with Two Streams": the same with audio and video, both held.
RFC4317_3_2_ANSWER = crlf("""
    v=0
    o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com
    s=
    c=IN IP4 host.biloxi.example.com
    t=0 0
    m=audio 49172 RTP/AVP 97
    a=rtpmap:97 iLBC/8000
    m=video 49168 RTP/AVP 32
    a=rtpmap:32 MPV/90000
""")
RFC4317_3_2_HOLD = crlf("""
    v=0
    o=bob 2808844564 2808844565 IN IP4 host.biloxi.example.com
    s=
    c=IN IP4 host.biloxi.example.com
    t=0 0
    m=audio 49172 RTP/AVP 97
    a=rtpmap:97 iLBC/8000
    a=sendonly
    m=video 49168 RTP/AVP 32
    a=rtpmap:32 MPV/90000
    a=sendonly
""")

# RFC 8866 §5's example session: i=, u=, e=, p= lines, and an IPv6 media-level c=.
RFC8866_EXAMPLE = crlf("""
    v=0
    o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1
    s=Call to John Smith
    i=SDP Offer #1
    u=http://www.jdoe.example.com/home.html
    e=Jane Doe <jane@jdoe.example.com>
    p=+1 617 555-6011
    c=IN IP4 198.51.100.1
    t=0 0
    m=audio 49170 RTP/AVP 0
    m=audio 49180 RTP/AVP 0
    m=video 51372 RTP/AVP 99
    c=IN IP6 2001:db8::2
    a=rtpmap:99 h263-1998/90000
""")

ALL_BODIES = {
    "sipp": SIPP_UAC,
    "baresip": BARESIP_INVITE,
    "webrtc": WEBRTC_OFFER,
    "rfc4317-2.1-offer": RFC4317_2_1_OFFER,
    "rfc4317-2.1-answer": RFC4317_2_1_ANSWER,
    "rfc4317-2.2-answer": RFC4317_2_2_ANSWER,
    "rfc4317-3.1-offer": RFC4317_3_1_OFFER,
    "rfc4317-3.1-answer": RFC4317_3_1_ANSWER,
    "rfc4317-3.1-hold": RFC4317_3_1_HOLD,
    "rfc4317-3.1-hold-answer": RFC4317_3_1_HOLD_ANSWER,
    "rfc4317-3.1-resume": RFC4317_3_1_RESUME,
    "rfc4317-3.2-answer": RFC4317_3_2_ANSWER,
    "rfc4317-3.2-hold": RFC4317_3_2_HOLD,
    "rfc8866-example": RFC8866_EXAMPLE,
}


@pytest.mark.parametrize("body", ALL_BODIES.values(), ids=ALL_BODIES.keys())
def test_real_bodies_round_trip_byte_for_byte(body: bytes) -> None:
    assert parse_sdp(body).to_bytes() == body


@pytest.mark.parametrize("body", ALL_BODIES.values(), ids=ALL_BODIES.keys())
def test_lf_only_bodies_parse_the_same_and_come_out_crlf(body: bytes) -> None:
    lf_only = body.replace(b"\r\n", b"\n")
    assert parse_sdp(lf_only) == parse_sdp(body)
    assert parse_sdp(lf_only).to_bytes() == body


def test_sipp_default_offer() -> None:
    session = parse_sdp(SIPP_UAC)
    assert session.origin == Origin("user1", "53655765", 2353687637, "IN", "IP4", "127.0.0.1")
    assert session.name == "-"
    [audio] = session.media
    assert (audio.kind, audio.port, audio.proto, audio.payload_types) == (
        "audio", 6000, "RTP/AVP", [0],
    )  # fmt: skip
    assert session.address_of(audio) == "127.0.0.1"
    assert session.direction_of(audio) is Direction.SENDRECV
    assert audio.rtpmap(0) == RtpMap(0, "PCMU", 8000)
    assert audio.telephone_event is None
    assert audio.ptime is None
    assert audio.rtcp is None


def test_baresip_offer() -> None:
    session = parse_sdp(BARESIP_INVITE)
    assert session.attribute("tool") == "baresip 1.0.0"
    [audio] = session.media
    assert audio.payload_types == [0, 8, 101]
    assert [c.encoding for c in audio.codecs()] == ["PCMU", "PCMA", "telephone-event"]
    assert audio.telephone_event == 101
    assert audio.fmtp(101) == "0-15"
    assert audio.fmtp(0) is None
    assert audio.ptime == 20
    assert audio.direction is Direction.SENDRECV
    assert audio.has_attribute("rtcp-rsize")
    assert audio.attribute("ssrc") == "2441136650 cname:sip:capt@127.0.0.1:47912"


def test_webrtc_offer() -> None:
    session = parse_sdp(WEBRTC_OFFER)
    assert session.origin.session_version == 2
    assert session.connection is None
    assert session.attribute("group") == "BUNDLE 0 1 2"
    assert session.has_attribute("extmap-allow-mixed")
    audio, video, data = session.media
    assert (audio.proto, audio.is_rtp) == ("UDP/TLS/RTP/SAVPF", True)
    assert session.connection_of(audio) == Connection("IN", "IP4", "0.0.0.0")
    assert audio.rtcp == RtcpAddress(9, "IN", "IP4", "0.0.0.0")
    assert audio.rtpmap(111) == RtpMap(111, "opus", 48000, "2")
    assert audio.fmtp(111) == "minptime=10;useinbandfec=1"
    assert audio.telephone_event == 110  # the first one offered (48 kHz); 126 is 8 kHz
    assert len(audio.attribute_values("candidate")) == 3
    assert session.direction_of(video) is Direction.RECVONLY
    assert video.rtpmap(97) == RtpMap(97, "rtx", 90000)
    assert video.rtpmap(98) is None
    assert (data.kind, data.formats, data.is_rtp, data.payload_types) == (
        "application", ["webrtc-datachannel"], False, [],
    )  # fmt: skip
    assert data.codecs() == []
    assert session.direction_of(data) is Direction.SENDRECV


def test_rfc8866_example_keeps_every_kind_of_line() -> None:
    session = parse_sdp(RFC8866_EXAMPLE)
    assert session.info == "SDP Offer #1"
    assert session.uri == "http://www.jdoe.example.com/home.html"
    assert session.emails == ["Jane Doe <jane@jdoe.example.com>"]
    assert session.phones == ["+1 617 555-6011"]
    first, second, video = session.media
    assert session.address_of(first) == session.address_of(second) == "198.51.100.1"
    assert session.address_of(video) == "2001:db8::2"
    assert video.rtpmap(99) == RtpMap(99, "h263-1998", 90000)


def test_rfc4317_rejected_stream() -> None:
    _audio, video = parse_sdp(RFC4317_2_2_ANSWER).media
    assert video.rejected
    assert video.formats == ["31"]
