"""RTP header parse/serialize (RFC 3550 §5.1), RTCP recognition (RFC 5761), and fuzzing: a
datagram from the network is either a packet or an `RtpError`, nothing else."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callkeeper.media import rtp
from callkeeper.media.rtp import RtpError, RtpErrorReason, RtpExtension, RtpPacket

# A real PCMU packet header as baresip sends it: V=2, PT 0, seq 0x1234, ts 0xDEADBEEF, SSRC.
WIRE = bytes.fromhex("80001234deadbeef0badcafe") + bytes([0xFF]) * 160


def test_parses_a_plain_pcmu_packet() -> None:
    packet = rtp.parse(WIRE)
    assert packet == RtpPacket(
        payload_type=0,
        sequence=0x1234,
        timestamp=0xDEADBEEF,
        ssrc=0x0BADCAFE,
        payload=b"\xff" * 160,
    )
    assert packet.serialize() == WIRE


def test_marker_csrcs_extension_and_padding_on_the_wire() -> None:
    packet = RtpPacket(
        payload_type=101,
        sequence=65535,
        timestamp=0xFFFFFFFF,
        ssrc=1,
        payload=b"\x01\x02\x03",
        marker=True,
        csrcs=(0xAAAAAAAA, 0xBBBBBBBB),
        extension=RtpExtension(0xBEDE, b"\x10\x20\x00\x00"),
        padding=5,
    )
    wire = packet.serialize()
    first, second = wire[0], wire[1]
    assert first >> 6 == 2
    assert first & 0x20 and first & 0x10 and first & 0x0F == 2
    assert second == 0x80 | 101
    assert wire[12:20] == bytes.fromhex("aaaaaaaabbbbbbbb")
    assert wire[20:24] == bytes.fromhex("bede0001")
    assert wire[24:28] == b"\x10\x20\x00\x00"
    assert wire[28:31] == b"\x01\x02\x03"
    assert wire[31:] == b"\x00\x00\x00\x00\x05"
    assert rtp.parse(wire) == packet


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", RtpErrorReason.TRUNCATED),
        (WIRE[:11], RtpErrorReason.TRUNCATED),
        (bytes([0x40]) + WIRE[1:], RtpErrorReason.WRONG_VERSION),  # version 1
        (bytes([0x00]) + WIRE[1:], RtpErrorReason.WRONG_VERSION),  # version 0 (e.g. STUN)
        (bytes([0xC0]) + WIRE[1:], RtpErrorReason.WRONG_VERSION),  # version 3
        (bytes([0x83]) + WIRE[1:20], RtpErrorReason.TRUNCATED),  # 3 CSRCs need 24 octets
        (bytes([0x90]) + WIRE[1:14], RtpErrorReason.TRUNCATED),  # extension header cut
        (bytes([0x90]) + WIRE[1:12] + b"\xbe\xde\x00\x02" + b"\x00" * 7, RtpErrorReason.TRUNCATED),
        (bytes([0xA0]) + WIRE[1:12] + b"\x01\x00", RtpErrorReason.BAD_PADDING),  # count 0
        (bytes([0xA0]) + WIRE[1:12] + b"\x01\x04", RtpErrorReason.BAD_PADDING),  # count > payload
    ],
)
def test_malformed_datagrams_raise_rtp_error_with_a_reason(
    data: bytes, reason: RtpErrorReason
) -> None:
    with pytest.raises(RtpError) as caught:
        rtp.parse(data)
    assert caught.value.reason is reason
    assert str(caught.value).startswith(reason.value)


def test_padding_may_take_the_whole_payload() -> None:
    packet = rtp.parse(bytes([0xA0]) + WIRE[1:12] + b"\x00\x00\x03")
    assert packet.payload == b"" and packet.padding == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"payload_type": 128},
        {"payload_type": -1},
        {"sequence": 65536},
        {"timestamp": 1 << 32},
        {"ssrc": -1},
        {"csrcs": tuple(range(16))},
        {"csrcs": (1 << 32,)},
        {"padding": 256},
    ],
)
def test_out_of_range_fields_are_programming_errors(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"payload_type": 0, "sequence": 0, "timestamp": 0, "ssrc": 0}
    fields.update(kwargs)
    with pytest.raises(ValueError) as caught:
        RtpPacket(**fields)  # type: ignore[arg-type]
    assert not isinstance(caught.value, RtpError)


@pytest.mark.parametrize(("profile", "data"), [(-1, b""), (0x10000, b""), (1, b"abc")])
def test_bad_extensions_are_programming_errors(profile: int, data: bytes) -> None:
    with pytest.raises(ValueError):
        RtpExtension(profile, data)


u32 = st.integers(0, 0xFFFFFFFF)
packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=u32,
    ssrc=u32,
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrcs=st.lists(u32, max_size=15).map(tuple),
    extension=st.none()
    | st.builds(
        RtpExtension,
        profile=st.integers(0, 0xFFFF),
        data=st.integers(0, 8).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
    ),
    padding=st.integers(0, 255),
)


@given(packets)
def test_serialize_then_parse_round_trips(packet: RtpPacket) -> None:
    wire = packet.serialize()
    assert rtp.parse(wire) == packet
    assert rtp.parse(wire).serialize() == wire


@given(st.binary(max_size=300))
def test_random_bytes_parse_or_raise_rtp_error_only(data: bytes) -> None:
    try:
        packet = rtp.parse(data)
    except RtpError as error:
        assert isinstance(error.reason, RtpErrorReason)
    else:
        # What parses re-serializes to the same bytes, except that padding octets become zeros.
        wire = packet.serialize()
        assert len(wire) == len(data)
        assert wire[: len(wire) - packet.padding] == data[: len(data) - packet.padding]


@given(packets, st.data())
def test_truncating_a_packet_never_raises_anything_but_rtp_error(
    packet: RtpPacket, data: st.DataObject
) -> None:
    wire = packet.serialize()
    cut = data.draw(st.integers(0, len(wire)))
    with contextlib.suppress(RtpError):
        rtp.parse(wire[:cut])


@given(packets, st.booleans(), st.integers(0, 0xFFFF), u32, u32)
def test_rewrite_fixed_header_changes_only_those_fields(
    packet: RtpPacket, marker: bool, sequence: int, timestamp: int, ssrc: int
) -> None:
    rewritten = rtp.rewrite_fixed_header(
        packet.serialize(), marker=marker, sequence=sequence, timestamp=timestamp, ssrc=ssrc
    )
    expected = RtpPacket(
        payload_type=packet.payload_type,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=packet.payload,
        marker=marker,
        csrcs=packet.csrcs,
        extension=packet.extension,
        padding=packet.padding,
    )
    assert rewritten == expected.serialize()


def rtcp_receiver_report(ssrc: int = 0x01020304) -> bytes:
    # RR with no report blocks: V=2, RC=0, PT=201, length=1 (two 32-bit words in all).
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


@pytest.mark.parametrize("packet_type", [192, 200, 201, 202, 203, 204, 205, 206, 207, 223])
def test_rtcp_packet_types_are_recognised(packet_type: int) -> None:
    data = struct.pack("!BBHI", 0x81, packet_type, 1, 7)
    assert rtp.is_rtcp(data)
    header = rtp.parse_rtcp_header(data)
    assert (header.packet_type, header.count, header.length_words, header.ssrc) == (
        packet_type,
        1,
        1,
        7,
    )
    assert not header.padding


def test_rtp_is_not_rtcp() -> None:
    assert not rtp.is_rtcp(WIRE)
    assert not rtp.is_rtcp(RtpPacket(127, 0, 0, 0, marker=True).serialize())  # 0xFF
    assert not rtp.is_rtcp(RtpPacket(63, 0, 0, 0, marker=True).serialize())  # 0xBF
    assert not rtp.is_rtcp(b"\x80")
    assert not rtp.is_rtcp(bytes([0x00, 200]))  # version 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (rtcp_receiver_report()[:7], RtpErrorReason.TRUNCATED),
        (bytes([0x40]) + rtcp_receiver_report()[1:], RtpErrorReason.WRONG_VERSION),
        (struct.pack("!BBHI", 0x80, 0, 1, 1), RtpErrorReason.BAD_HEADER),
        (struct.pack("!BBHI", 0x80, 200, 6, 1), RtpErrorReason.TRUNCATED),
    ],
)
def test_malformed_rtcp(data: bytes, reason: RtpErrorReason) -> None:
    with pytest.raises(RtpError) as caught:
        rtp.parse_rtcp_header(data)
    assert caught.value.reason is reason


def test_rtcp_padding_flag() -> None:
    assert rtp.parse_rtcp_header(struct.pack("!BBHI", 0xA0, 200, 1, 1)).padding
