"""Property tests: any valid description round-trips; any corrupted body is an SdpError or parses.

`sessions()` draws well-formed descriptions from the model (every line type, ICE, RTP and
non-RTP streams, unknown lines), so the round trip is checked on far more shapes than the
corpus has. The fuzz tests corrupt the corpus bodies byte by byte and line by line and hold
the parser to its contract: it returns a description or raises `SdpError`, never anything
else — and whatever it accepts, every accessor and rewriter can work on.
"""

from __future__ import annotations

import contextlib
import ipaddress
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from callkeeper.sdp import (
    Attribute,
    Bandwidth,
    Connection,
    Direction,
    Line,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    Timing,
    anchor_media,
    check_answer,
    make_hold_offer,
    make_unhold_offer,
    next_version,
    parse_sdp,
    strip_ice,
)
from callkeeper.sdp.attributes import CHECKED_ATTRIBUTES
from test_sdp_corpus import ALL_BODIES

TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`{|}~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
words = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=12)
# Free text of i=, e=, attribute values ...: any Unicode but line breaks and control chars.
texts = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\r\n"), max_size=30
)
numbers = st.integers(0, 2**63)
ports = st.integers(0, 65535)

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: ipaddress.IPv6Address(a).compressed)
hostnames = st.from_regex(
    r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z][a-z0-9]{0,8}){0,2}", fullmatch=True
)


@st.composite
def connections(draw: st.DrawFn) -> Connection:
    addrtype = draw(st.sampled_from(["IP4", "IP6"]))
    host = draw((ipv4 if addrtype == "IP4" else ipv6) | hostnames)
    return Connection("IN", addrtype, host)


origins = st.builds(
    Origin,
    username=words,
    session_id=st.integers(0, 2**63).map(str),
    session_version=numbers,
    nettype=st.just("IN"),
    addrtype=st.just("IP4"),
    address=ipv4 | hostnames,
)
bandwidths = st.builds(Bandwidth, st.sampled_from(["AS", "CT", "TIAS", "X-YZ"]), numbers)
timings = st.builds(
    Timing, numbers, numbers, st.lists(texts, max_size=2).map(tuple)
)  # r= is carried as text
plain_attributes = st.builds(
    Attribute,
    tokens.filter(lambda name: name not in CHECKED_ATTRIBUTES),
    st.none() | texts,
)
directions = st.sampled_from(list(Direction)).map(lambda d: Attribute(d.value))
extra_lines = st.builds(Line, st.sampled_from("dfghjlnqwxy"), texts)


@st.composite
def attribute_lists(draw: st.DrawFn, payload_types: list[int]) -> list[Attribute]:
    attributes = draw(st.lists(plain_attributes, max_size=5))
    for payload_type in payload_types:
        if draw(st.booleans()):
            rate = draw(st.sampled_from([8000, 16000, 48000, 90000]))
            encoding = draw(st.sampled_from(["PCMU", "opus", "telephone-event", "H264"]))
            attributes.append(Attribute("rtpmap", f"{payload_type} {encoding}/{rate}"))
        if draw(st.booleans()):
            attributes.append(Attribute("fmtp", f"{payload_type} {draw(words)}"))
    if draw(st.booleans()):
        attributes.append(draw(directions))
    if draw(st.booleans()):
        attributes.append(Attribute("ptime", str(draw(st.integers(1, 200)))))
    if draw(st.booleans()):
        port = draw(ports)
        rtcp = draw(st.sampled_from([str(port), f"{port} IN IP4 192.0.2.9"]))
        attributes.append(Attribute("rtcp", rtcp))
    return draw(st.permutations(attributes))


@st.composite
def media_descriptions(draw: st.DrawFn, need_connection: bool) -> MediaDescription:
    if draw(st.booleans()):
        proto = draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "RTP/AVPF"]))
        payload_types = draw(st.lists(st.integers(0, 127), min_size=1, max_size=5, unique=True))
        formats = [str(pt) for pt in payload_types]
    else:
        proto = draw(st.sampled_from(["udptl", "TCP/MSRP", "UDP/DTLS/SCTP", "TCP/TLS/BFCP"]))
        payload_types = []
        formats = draw(st.lists(tokens, min_size=1, max_size=3))
    port = draw(ports)
    media = MediaDescription(
        kind=draw(st.sampled_from(["audio", "video", "image", "application", "text"])),
        port=port,
        proto=proto,
        formats=formats,
        port_count=draw(st.none() | st.integers(1, 8)),
        title=draw(st.none() | texts),
        connections=draw(st.lists(connections(), min_size=int(need_connection), max_size=2)),
        bandwidths=draw(st.lists(bandwidths, max_size=2)),
        key=draw(st.none() | texts),
        attributes=draw(attribute_lists(payload_types)),
        extra_lines=draw(st.lists(extra_lines, max_size=2)),
    )
    return media


@st.composite
def sessions(draw: st.DrawFn) -> SessionDescription:
    connection = draw(st.none() | connections())
    media = draw(st.lists(media_descriptions(need_connection=connection is None), max_size=4))
    return SessionDescription(
        origin=draw(origins),
        name=draw(texts),
        info=draw(st.none() | texts),
        uri=draw(st.none() | texts),
        emails=draw(st.lists(texts, max_size=2)),
        phones=draw(st.lists(texts, max_size=2)),
        connection=connection,
        bandwidths=draw(st.lists(bandwidths, max_size=2)),
        timings=draw(st.lists(timings, min_size=1, max_size=2)),
        zone=draw(st.none() | texts),
        key=draw(st.none() | texts),
        attributes=draw(attribute_lists([])),
        media=media,
        extra_lines=draw(st.lists(extra_lines, max_size=2)),
    )


# --- round trips ------------------------------------------------------------------------------
@given(sessions())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_model_round_trips_through_bytes(session: SessionDescription) -> None:
    data = session.to_bytes()
    parsed = parse_sdp(data)
    assert parsed == session
    assert parsed.to_bytes() == data
    assert parse_sdp(data.replace(b"\r\n", b"\n")) == session


@given(sessions())
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_rewriters_produce_parsable_descriptions(session: SessionDescription) -> None:
    _exercise(session)


# --- fuzz: corrupt the corpus -----------------------------------------------------------------
BODIES = list(ALL_BODIES.values())


def _exercise(session: SessionDescription) -> None:
    """Everything downstream of the parser must work on whatever the parser accepted."""
    for media in session.media:
        session.direction_of(media)
        session.address_of(media)
        media.codecs()
        media.fmtp(0)
        _ = (media.ptime, media.rtcp, media.telephone_event, media.payload_types)
    for derived in (
        make_hold_offer(session),
        make_unhold_offer(session, session),
        next_version(session),
        strip_ice(session),
        anchor_media(session, "192.0.2.99", [30000 + 2 * i for i in range(len(session.media))]),
    ):
        assert parse_sdp(derived.to_bytes()) == derived
    with contextlib.suppress(SdpError):  # a description answering its own hold may not fit
        check_answer(session, make_hold_offer(session))


def _parse_or_refuse(data: bytes) -> None:
    try:
        session = parse_sdp(data)
    except SdpError as error:
        assert error.reason
        return
    # Accepted: it must serialize to something that parses to the same description.
    again = parse_sdp(session.to_bytes())
    assert again == session
    _exercise(session)


@given(
    st.sampled_from(BODIES),
    st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), min_size=1, max_size=8),
)
@settings(max_examples=600)
def test_byte_corruption_raises_only_sdp_error(body: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(body)
    for position, value in edits:
        data[position % len(data)] = value
    _parse_or_refuse(bytes(data))


@given(st.sampled_from(BODIES), st.integers(0, 4096), st.binary(max_size=12))
@settings(max_examples=300)
@example(BODIES[0], 0, b"\xff")
def test_inserted_bytes_raise_only_sdp_error(body: bytes, position: int, junk: bytes) -> None:
    position %= len(body) + 1
    _parse_or_refuse(body[:position] + junk + body[position:])


@given(st.sampled_from(BODIES), st.integers(0, 4096), st.integers(0, 64))
@settings(max_examples=300)
def test_truncation_and_deletion_raise_only_sdp_error(body: bytes, start: int, size: int) -> None:
    start %= len(body)
    _parse_or_refuse(body[:start] + body[start + size :])
    _parse_or_refuse(body[:start])


@given(st.sampled_from(BODIES), st.data())
@settings(max_examples=300)
def test_line_shuffles_raise_only_sdp_error(body: bytes, data: st.DataObject) -> None:
    lines = body.split(b"\r\n")
    operation = data.draw(st.sampled_from(["shuffle", "duplicate", "drop", "swap-type"]))
    index = data.draw(st.integers(0, len(lines) - 1))
    if operation == "shuffle":
        lines = data.draw(st.permutations(lines))
    elif operation == "duplicate":
        lines.insert(index, lines[index])
    elif operation == "drop":
        del lines[index]
    elif lines[index][:2].endswith(b"="):
        letter = data.draw(st.sampled_from(b"vosiuepcbtrzkamyAZ0 "))
        lines[index] = bytes([letter]) + lines[index][1:]
    _parse_or_refuse(b"\r\n".join(lines))


@given(st.sampled_from(BODIES), st.integers(0, 200), st.sampled_from(["", " ", "/", ":", "-1"]))
@settings(max_examples=300)
def test_field_edits_raise_only_sdp_error(body: bytes, field: int, text: str) -> None:
    """Replace one blank- or colon-separated field: numbers, addresses, types, formats."""
    pieces = body.replace(b":", b": ").split(b" ")
    pieces[field % len(pieces)] = text.encode()
    _parse_or_refuse(b" ".join(pieces).replace(b": ", b":"))


@pytest.mark.parametrize("body", BODIES, ids=list(ALL_BODIES))
def test_corpus_bodies_survive_every_rewriter(body: bytes) -> None:
    _exercise(parse_sdp(body))
