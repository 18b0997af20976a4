"""The SDP parser's strictness and tolerance, one case per rule, and the model's accessors."""

from __future__ import annotations

import pytest

from callkeeper.sdp import (
    MAX_SDP_BYTES,
    Attribute,
    Bandwidth,
    Connection,
    Direction,
    Line,
    MediaDescription,
    Origin,
    RtpMap,
    SdpError,
    SessionDescription,
    Timing,
    parse_sdp,
    validate_sdp,
)
from callkeeper.sdp.addresses import address_problem
from test_sdp_corpus import BARESIP_INVITE, SIPP_UAC, crlf

HEAD = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"


def body(*lines: str, head: str = HEAD) -> bytes:
    return (head + "".join(line + "\n" for line in lines)).encode()


def audio(*lines: str) -> bytes:
    return body("m=audio 4000 RTP/AVP 0 8 101", *lines)


# --- what is refused, and why ----------------------------------------------------------------
MALFORMED: list[tuple[str, bytes, str]] = [
    ("empty", b"", "must begin with v=0"),
    ("only blank lines", b"\r\n\r\n", "must begin with v=0"),
    ("no v=", b"o=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n", "must begin with v=0"),
    ("v=1", b"v=1\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n", "unsupported SDP version"),
    ("two v=", body("v=0"), "more than one v= line"),
    ("no o=", b"v=0\ns=-\nt=0 0\n", "no o= line"),
    ("no s=", b"v=0\no=- 1 1 IN IP4 192.0.2.1\nt=0 0\n", "no s= line"),
    ("no t=", b"v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\n", "no t= line"),
    ("two o=", body("o=- 2 2 IN IP4 192.0.2.1"), "more than one o= line"),
    ("two s=", body("s=again"), "more than one s= line"),
    ("two session c=", body("c=IN IP4 192.0.2.2"), "more than one session-level c= line"),
    ("two i=", body("i=a", "i=b"), "more than one i= line"),
    ("two u=", body("u=a", "u=b"), "more than one u= line"),
    ("two z=", body("z=0 -1h", "z=1 0"), "more than one z= line"),
    ("two k=", body("k=prompt", "k=clear:x"), "more than one k= line"),
    ("o= short", body(head="v=0\no=- 1 IN IP4 x\ns=-\nt=0 0\n"), "bad o= line"),
    ("o= version", body(head="v=0\no=- 1 v2 IN IP4 h\ns=-\nt=0 0\n"), "bad o= session version"),
    ("o= addrtype", body(head="v=0\no=- 1 1 IN IPX h\ns=-\nt=0 0\n"), "bad o= address type"),
    ("no '='", body("hello"), "malformed line"),
    ("one letter", body("a"), "malformed line"),
    ("upper-case type", body("A=sendrecv"), "malformed line"),
    ("digit type", body("1=x"), "malformed line"),
    ("blank line inside", body("", "a=sendrecv"), "empty line in SDP"),
    ("r= before t=", b"v=0\no=- 1 1 IN IP4 h\ns=-\nr=7d 1h 0 25h\nt=0 0\n", "before any t="),
    ("t= one field", body(head="v=0\no=- 1 1 IN IP4 h\ns=-\nt=0\n"), "bad t= line"),
    ("t= not numeric", body(head="v=0\no=- 1 1 IN IP4 h\ns=-\nt=now 0\n"), "bad t= line"),
    ("b= no colon", body("b=AS64"), "bad b= line"),
    ("b= not numeric", body("b=AS:lots"), "bad b= line"),
    ("b= bad type", body("b=A S:64"), "bad b= line"),
    ("c= two fields", body(head="v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4\nt=0 0\n"), "bad c= line"),
    ("c= IPv6 as IP4", audio("c=IN IP4 2001:db8::1"), "IPv6 address with address type IP4"),
    ("c= IPv4 as IP6", audio("c=IN IP6 192.0.2.7"), "IPv4 address with address type IP6"),
    ("c= bad IPv6", audio("c=IN IP6 2001:db8:::1:x"), "bad IPv6 address"),
    ("c= bad IPv4", audio("c=IN IP4 300.1.2.3"), "bad address"),
    ("c= partial IPv4", audio("c=IN IP4 192.0.2"), "bad address"),
    ("c= bad host", audio("c=IN IP4 -host-"), "bad address"),
    ("c= host suffix", audio("c=IN IP4 host.example/127"), "bad address"),
    ("c= bad multicast", audio("c=IN IP4 233.252.0.1/ttl"), "bad multicast suffix"),
    ("c= bad v6 multicast", audio("c=IN IP6 ff15::101/1/2"), "bad multicast suffix"),
    ("c= IPX", audio("c=IN IPX 192.0.2.7"), "unknown address type for IN"),
    ("c= bad nettype", audio("c=I(N IP4 192.0.2.7"), "bad network or address type"),
    ("m= short", body("m=audio 4000 RTP/AVP"), "bad m= line"),
    ("m= bad media", body("m=au(dio 4000 RTP/AVP 0"), "bad m= line"),
    ("m= bad proto", body("m=audio 4000 RTP//AVP 0"), "bad m= line"),
    ("m= port word", body("m=audio port RTP/AVP 0"), "bad m= port"),
    ("m= port too big", body("m=audio 65536 RTP/AVP 0"), "bad m= port"),
    ("m= port unicode", body("m=audio ４０００ RTP/AVP 0"), "bad m= port"),
    ("m= port underscore", body("m=audio 4_000 RTP/AVP 0"), "bad m= port"),
    ("m= port count 0", body("m=audio 4000/0 RTP/AVP 0"), "bad m= port count"),
    ("m= port count word", body("m=audio 4000/x RTP/AVP 0"), "bad m= port count"),
    ("m= PT word", body("m=audio 4000 RTP/AVP 0 PCMA"), "bad RTP payload type"),
    ("m= PT 128", body("m=audio 4000 RTP/AVP 128"), "bad RTP payload type"),
    ("m= PT SAVPF", body("m=audio 4000 UDP/TLS/RTP/SAVPF 0 x"), "bad RTP payload type"),
    ("m= bad format", body("m=image 4000 udptl t(38"), "bad m= format"),
    ("m= without c=", body(head="v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 0\n") + b"m=audio 4 RTP/AVP 0\n",
     "no c= line for stream"),
    ("o= in media", audio("o=- 1 1 IN IP4 192.0.2.1"), "o= line inside a media description"),
    ("t= in media", audio("t=0 0"), "t= line inside a media description"),
    ("two media i=", audio("i=a", "i=b"), "more than one i= line in a media description"),
    ("two media k=", audio("k=prompt", "k=prompt"), "more than one k= line in a media"),
    ("bad attribute name", audio("a=rtp map:0 PCMU/8000"), "bad attribute name"),
    ("direction value", audio("a=sendonly:yes"), "a=sendonly takes no value"),
    ("conflicting directions", audio("a=sendonly", "a=recvonly"), "conflicting direction"),
    ("session directions", body("a=inactive", "a=sendrecv"), "conflicting direction"),
    ("rtpmap no value", audio("a=rtpmap"), "a=rtpmap needs a value"),
    ("rtpmap garbage", audio("a=rtpmap:PCMU"), "bad a=rtpmap"),
    ("rtpmap PT 200", audio("a=rtpmap:200 X/8000"), "bad a=rtpmap"),
    ("rtpmap no rate", audio("a=rtpmap:101 telephone-event"), "bad a=rtpmap"),
    ("fmtp empty", audio("a=fmtp:"), "bad a=fmtp"),
    ("rtcp word", audio("a=rtcp:port"), "bad a=rtcp"),
    ("rtcp too big", audio("a=rtcp:70000"), "bad a=rtcp"),
    ("rtcp mismatch", audio("a=rtcp:4001 IN IP6 192.0.2.1"), "bad a=rtcp"),
    ("rtcp short", audio("a=rtcp:4001 IN IP4"), "bad a=rtcp"),
    ("ptime word", audio("a=ptime:twenty"), "bad a=ptime"),
    ("not UTF-8", b"v=0\r\ns=\xff\xfe\r\n", "not UTF-8"),
    ("overlong UTF-8", body("s=x") + b"i=\xc0\xaf\n", "not UTF-8"),
    ("NUL", body("a=tool:x\x00y"), "control character"),
    ("escape char", body("s=\x1b[31m"), "control character"),
    ("DEL", body("a=x\x7f"), "control character"),
    ("bare CR", body("a=sendrecv\ra=x"), "bare CR"),
    ("huge number", body(head="v=0\no=- 1 " + "9" * 5000 + " IN IP4 h\ns=-\nt=0 0\n"),
     "bad o= session version"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("sdp", "reason"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_bodies_are_refused_with_a_reason(sdp: bytes, reason: str) -> None:
    with pytest.raises(SdpError) as caught:
        parse_sdp(sdp)
    assert reason in caught.value.reason
    assert caught.value.status == 488
    assert validate_sdp(sdp) == caught.value.reason


def test_error_text_fits_a_warning_header() -> None:
    with pytest.raises(SdpError) as caught:
        parse_sdp(body('x"y\\z' + "w" * 100))
    reason = caught.value.reason
    assert '"' not in reason and "\\" not in reason
    assert len(reason) < 80
    assert str(caught.value) == reason


def test_text_that_cannot_be_utf8_is_refused() -> None:
    with pytest.raises(SdpError, match="not valid Unicode"):
        parse_sdp(SIPP_UAC.decode().replace("s=-", "s=\ud800"))


def test_mixed_line_endings() -> None:
    mixed = SIPP_UAC.replace(b"s=-\r\n", b"s=-\n")
    assert parse_sdp(mixed).to_bytes() == SIPP_UAC
    with pytest.raises(SdpError, match="bare CR"):
        parse_sdp(mixed.replace(b"t=0 0\r\n", b"t=0 0\r"))


def test_body_size_limit() -> None:
    big = audio(*["a=x-padding:" + "p" * 100] * (MAX_SDP_BYTES // 100))
    with pytest.raises(SdpError, match="larger than"):
        parse_sdp(big)
    with pytest.raises(SdpError, match="larger than"):
        parse_sdp(big.decode())


def test_validate_sdp_accepts_a_good_body() -> None:
    assert validate_sdp(BARESIP_INVITE) is None


# --- what is tolerated ----------------------------------------------------------------------
def test_text_input_is_accepted() -> None:
    assert parse_sdp(SIPP_UAC.decode()) == parse_sdp(SIPP_UAC)


@pytest.mark.parametrize(
    "variant",
    [
        SIPP_UAC.rstrip(b"\r\n"),  # no final line ending
        SIPP_UAC + b"\r\n\r\n",  # blank lines after the last
        SIPP_UAC.replace(b"\r\n", b"\n"),  # LF only
        SIPP_UAC.replace(b"m=audio 6000", b"m=audio  6000"),  # a run of blanks
        SIPP_UAC.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 127.0.0.1 "),  # a trailing blank
    ],
    ids=["no-final-eol", "trailing-blank-lines", "lf-only", "double-space", "trailing-space"],
)
def test_sloppy_but_unambiguous_bodies_parse_and_come_out_clean(variant: bytes) -> None:
    assert parse_sdp(variant).to_bytes() == SIPP_UAC


def test_lines_out_of_order_come_out_in_standard_order() -> None:
    sloppy = crlf("""
        v=0
        t=0 0
        s=-
        a=tool:x
        c=IN IP4 192.0.2.1
        o=- 1 1 IN IP4 192.0.2.1
        m=audio 4000 RTP/AVP 0
        a=sendrecv
        c=IN IP4 192.0.2.2
        a=ptime:20
        b=AS:80
    """)
    assert parse_sdp(sloppy).to_bytes() == crlf("""
        v=0
        o=- 1 1 IN IP4 192.0.2.1
        s=-
        c=IN IP4 192.0.2.1
        t=0 0
        a=tool:x
        m=audio 4000 RTP/AVP 0
        c=IN IP4 192.0.2.2
        b=AS:80
        a=sendrecv
        a=ptime:20
    """)


def test_empty_session_name_and_a_single_space() -> None:
    assert parse_sdp(body(head="v=0\no=- 1 1 IN IP4 h\ns=\nt=0 0\n")).name == ""
    assert parse_sdp(body(head="v=0\no=- 1 1 IN IP4 h\ns= \nt=0 0\n")).name == " "


def test_unknown_line_types_are_kept_in_their_section() -> None:
    sdp = audio("a=sendrecv", "y=0100000001", "f=v/2/25")
    parsed = parse_sdp(body("x=session-level") + sdp[len(HEAD) :])
    assert parsed.extra_lines == [Line("x", "session-level")]
    assert parsed.media[0].extra_lines == [Line("y", "0100000001"), Line("f", "v/2/25")]
    assert parse_sdp(parsed.to_bytes()) == parsed


def test_every_session_line_type() -> None:
    sdp = crlf("""
        v=0
        o=jdoe 2890844526 2890842807 IN IP4 198.51.100.1
        s=Seminar
        i=A Seminar on the session description protocol
        u=http://www.example.com/seminars/sdp.pdf
        e=j.doe@example.com (Jane Doe)
        e=jane@example.com
        p=+1 617 555-6011
        c=IN IP4 233.252.0.1/127
        b=CT:128
        t=2873397496 2873404696
        r=7d 1h 0 25h
        r=604800 3600 0 90000
        t=3034423619 3042462419
        z=2882844526 -1h 2898848070 0
        k=clear:secret
        a=recvonly
        m=audio 49170/2 RTP/AVP 0
        i=main audio
        c=IN IP4 233.252.0.1/127/2
        b=AS:64
        k=prompt
        a=orient:landscape
        a=empty:
    """)
    session = parse_sdp(sdp)
    assert session.to_bytes() == sdp
    assert bytes(session) == sdp
    assert session.emails == ["j.doe@example.com (Jane Doe)", "jane@example.com"]
    assert session.connection == Connection("IN", "IP4", "233.252.0.1/127")
    assert session.connection.host == "233.252.0.1"
    assert session.bandwidths == [Bandwidth("CT", 128)]
    assert session.timings == [
        Timing(2873397496, 2873404696, ("7d 1h 0 25h", "604800 3600 0 90000")),
        Timing(3034423619, 3042462419),
    ]
    assert session.zone == "2882844526 -1h 2898848070 0"
    assert session.key == "clear:secret"
    [media] = session.media
    assert (media.port, media.port_count, media.title, media.key) == (
        49170,
        2,
        "main audio",
        "prompt",
    )
    assert media.bandwidths == [Bandwidth("AS", 64)]
    assert session.address_of(media) == "233.252.0.1"
    assert session.direction_of(media) is Direction.RECVONLY
    assert media.direction is None
    assert media.attribute("empty") == ""
    assert media.has_attribute("empty")


@pytest.mark.parametrize(
    ("nettype", "addrtype", "address"),
    [
        ("IN", "IP4", "192.0.2.1"),
        ("IN", "IP4", "0.0.0.0"),
        ("IN", "IP4", "host.atlanta.example.com"),
        ("IN", "IP4", "localhost"),
        ("IN", "IP4", "233.252.0.1/127/3"),
        ("IN", "IP6", "2001:db8::1"),
        ("IN", "IP6", "::ffff:192.0.2.1"),
        ("IN", "IP6", "ff15::101/3"),
        ("IN", "IP6", "host6.example.com"),
        ("TN", "RFC2543", "+1-617-555-6011"),  # other network types are opaque
    ],
)
def test_good_connection_addresses(nettype: str, addrtype: str, address: str) -> None:
    assert address_problem(nettype, addrtype, address) is None
    assert parse_sdp(audio(f"c={nettype} {addrtype} {address}")).media[0].connections == [
        Connection(nettype, addrtype, address)
    ]


# --- accessors and model helpers ------------------------------------------------------------
def test_codec_accessors() -> None:
    session = parse_sdp(
        body(
            "m=audio 4000 RTP/AVP 0 8 96 101 18",
            "a=rtpmap:96 opus/48000/2 ",
            "a=rtpmap:101 TELEPHONE-EVENT/8000",
            "a=fmtp:101 0-16",
            "a=fmtp:18 annexb=no",
            "a=fmtp:96",
            "a=ptime:30.5",
            "a=rtcp:4001",
        )
    )
    media = session.media[0]
    assert media.rtpmap(96) == RtpMap(96, "opus", 48000, "2")  # the trailing blank is tolerated
    assert media.rtpmap(18) == RtpMap(18, "G729", 8000)  # static (RFC 3551), no a=rtpmap
    assert media.telephone_event == 101
    assert media.fmtp(18) == "annexb=no"
    assert media.fmtp("101") == "0-16"
    assert media.fmtp(96) == ""
    assert media.ptime == 30.5
    assert media.rtcp is not None and (media.rtcp.port, media.rtcp.address) == (4001, None)
    assert str(media.rtcp) == "4001"
    assert str(media.rtpmap(96)) == "96 opus/48000/2"


def test_set_direction_replaces_in_place_or_appends() -> None:
    session = parse_sdp(audio("a=rtpmap:0 PCMU/8000", "a=sendrecv", "a=ptime:20"))
    media = session.media[0]
    media.set_direction(Direction.SENDONLY)
    assert [str(a) for a in media.attributes] == ["rtpmap:0 PCMU/8000", "sendonly", "ptime:20"]
    media.set_direction(None)
    assert media.direction is None
    media.set_direction(Direction.INACTIVE)
    assert media.attributes[-1] == Attribute("inactive")
    session.set_direction(Direction.RECVONLY)
    assert session.direction is Direction.RECVONLY
    assert session.direction_of(media) is Direction.INACTIVE


def test_remove_attributes_and_values() -> None:
    session = parse_sdp(audio("a=x:1", "a=y", "a=x:2", "a=x"))
    media = session.media[0]
    assert media.attribute_values("x") == ["1", "2"]
    assert media.attribute("y") is None
    media.remove_attributes("x", "nothing")
    assert media.attributes == [Attribute("y")]


def test_copy_is_independent() -> None:
    original = parse_sdp(BARESIP_INVITE)
    copy = original.copy()
    assert copy == original
    copy.media[0].set_direction(Direction.INACTIVE)
    copy.media[0].formats.append("9")
    copy.attributes.append(Attribute("x"))
    assert original == parse_sdp(BARESIP_INVITE)


def test_media_without_connection_anywhere_reads_none() -> None:
    session = SessionDescription(Origin("-", "1", 1, "IN", "IP4", "h"))
    media = MediaDescription("audio", 0, "RTP/AVP", ["0"])
    session.media.append(media)
    assert session.connection_of(media) is None
    assert session.address_of(media) is None
    assert (
        session.to_bytes() == b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n"
    )
    assert media.rejected


def test_a_built_description_serializes_and_parses_back() -> None:
    media = MediaDescription(
        "audio", 5004, "RTP/AVP", ["0", "101"],
        attributes=[Attribute("rtpmap", "101 telephone-event/8000"), Attribute("fmtp", "101 0-15")],
    )  # fmt: skip
    session = SessionDescription(
        Origin("callkeeper", "42", 1, "IN", "IP4", "192.0.2.5"),
        connection=Connection.of("192.0.2.5"),
        media=[media],
    )
    assert parse_sdp(session.to_bytes()) == session
    assert Connection.of("2001:db8::5") == Connection("IN", "IP6", "2001:db8::5")


def test_parsed_values_are_shared_but_immutable() -> None:
    first, second = parse_sdp(BARESIP_INVITE), parse_sdp(BARESIP_INVITE)
    assert first.media[0].attributes[0] is second.media[0].attributes[0]
    with pytest.raises(AttributeError):
        first.media[0].attributes[0].value = "8 PCMA/8000"  # type: ignore[misc]


def test_cache_stays_bounded_under_distinct_lines() -> None:
    from callkeeper.sdp import parser

    for index in range(parser._CACHE_SIZE + 10):
        parse_sdp(audio(f"a=x-unique:{index}", f"b=AS:{index}"))
    assert len(parser._ATTRIBUTES) <= parser._CACHE_SIZE
    assert len(parser._BANDWIDTHS) <= parser._CACHE_SIZE
