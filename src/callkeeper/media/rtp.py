"""RTP packets (RFC 3550 §5.1) as a plain dataclass with a parse/serialize pair, and RTCP recognition.

The relay sees every datagram a phone sends to its media port; most are RTP, some are RTCP
multiplexed on the same port (RFC 5761), and some are garbage (a port scanner, a NAT's stray
packet, a buggy phone). `parse` therefore never raises anything but `RtpError`, whose `reason`
is one of a few short names the relay counts dropped packets by. We write this ourselves
because the Python RTP libraries either belong to a WebRTC stack with its own event loop
(aiortc) or are unmaintained; the header is 12 bytes plus three optional parts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

RTP_VERSION = 2
FIXED_HEADER_LENGTH = 12
MAX_CSRC_COUNT = 15

# RFC 5761 §4: with RTP and RTCP on one port, a second byte in 192..223 is RTCP (its packet type);
# RTP payload types 64..95 are never used so that this range stays unambiguous.
RTCP_PACKET_TYPES = range(192, 224)
RTCP_HEADER_LENGTH = 8  # version/count, packet type, length, sender SSRC

_FIXED = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")
_RTCP_HEADER = struct.Struct("!BBHI")


class RtpErrorReason(StrEnum):
    """Why a datagram is not a usable RTP/RTCP packet; the values are metric label values."""

    TRUNCATED = "truncated"
    WRONG_VERSION = "wrong-version"
    BAD_PADDING = "bad-padding"
    BAD_HEADER = "bad-header"


class RtpError(ValueError):
    """A datagram from the network is not a well-formed RTP (or RTCP) packet.

    The only exception `parse` and `parse_rtcp_header` raise: the relay catches it, counts
    `reason` and drops the datagram.
    """

    def __init__(self, reason: RtpErrorReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """The one header extension RFC 3550 §5.3.1 allows: a 16-bit profile id and 32-bit words."""

    profile: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.profile <= 0xFFFF:
            raise ValueError(f"extension profile out of range: {self.profile}")
        if len(self.data) % 4 or len(self.data) > 4 * 0xFFFF:
            raise ValueError("extension data must be a whole number of 32-bit words")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet. `padding` is the number of padding octets (0 for none, else 1..255,
    the last of which holds the count) — kept so a relayed packet serializes as it arrived."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0

    def __post_init__(self) -> None:
        # Programming errors, not network input: a ValueError that is not an RtpError.
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type out of range: {self.payload_type}")
        if not 0 <= self.sequence <= 0xFFFF:
            raise ValueError(f"sequence number out of range: {self.sequence}")
        if not 0 <= self.timestamp <= 0xFFFFFFFF:
            raise ValueError(f"timestamp out of range: {self.timestamp}")
        if not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise ValueError(f"SSRC out of range: {self.ssrc}")
        if len(self.csrcs) > MAX_CSRC_COUNT:
            raise ValueError(f"at most {MAX_CSRC_COUNT} CSRCs, got {len(self.csrcs)}")
        if any(not 0 <= csrc <= 0xFFFFFFFF for csrc in self.csrcs):
            raise ValueError("CSRC out of range")
        if not 0 <= self.padding <= 255:
            raise ValueError(f"padding must be 0..255 octets, got {self.padding}")

    def serialize(self) -> bytes:
        """The packet's wire form (padding octets are zeros followed by the count)."""
        first = (
            (RTP_VERSION << 6)
            | (0x20 if self.padding else 0)
            | (0x10 if self.extension is not None else 0)
            | len(self.csrcs)
        )
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [_FIXED.pack(first, second, self.sequence, self.timestamp, self.ssrc)]
        if self.csrcs:
            parts.append(struct.pack(f"!{len(self.csrcs)}I", *self.csrcs))
        if self.extension is not None:
            ext = self.extension
            parts.append(_EXTENSION_HEADER.pack(ext.profile, len(ext.data) // 4))
            parts.append(ext.data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


def parse(data: bytes) -> RtpPacket:
    """Decode one RTP datagram; raise `RtpError` for anything malformed (never anything else)."""
    if len(data) < FIXED_HEADER_LENGTH:
        raise RtpError(RtpErrorReason.TRUNCATED, f"{len(data)} octets, header needs 12")
    first, second, sequence, timestamp, ssrc = _FIXED.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(RtpErrorReason.WRONG_VERSION, f"version {first >> 6}")
    csrc_count = first & 0x0F
    offset = FIXED_HEADER_LENGTH + 4 * csrc_count
    if len(data) < offset:
        raise RtpError(RtpErrorReason.TRUNCATED, f"{csrc_count} CSRCs do not fit")
    csrcs = struct.unpack_from(f"!{csrc_count}I", data, FIXED_HEADER_LENGTH)
    extension = None
    if first & 0x10:
        if len(data) < offset + 4:
            raise RtpError(RtpErrorReason.TRUNCATED, "extension header does not fit")
        profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
        offset += 4
        if len(data) < offset + 4 * words:
            raise RtpError(RtpErrorReason.TRUNCATED, f"extension of {words} words does not fit")
        extension = RtpExtension(profile, bytes(data[offset : offset + 4 * words]))
        offset += 4 * words
    end = len(data)
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or end - padding < offset:
            raise RtpError(RtpErrorReason.BAD_PADDING, f"padding count {padding}")
        end -= padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrcs=csrcs,
        extension=extension,
        padding=padding,
    )


def rewrite_fixed_header(
    data: bytes, *, marker: bool, sequence: int, timestamp: int, ssrc: int
) -> bytes:
    """`data` with marker, sequence, timestamp and SSRC replaced and everything else untouched.

    The relay's fast path for continuity rewriting: only the first 12 octets change, so there is
    no need to rebuild CSRCs, extension and padding. `data` must already have passed `parse`.
    """
    header = bytearray(data[:FIXED_HEADER_LENGTH])
    header[1] = (header[1] & 0x7F) | (0x80 if marker else 0)
    struct.pack_into("!HII", header, 2, sequence, timestamp, ssrc)
    return bytes(header) + bytes(data[FIXED_HEADER_LENGTH:])


def is_rtcp(data: bytes) -> bool:
    """Whether a datagram on an RTP port is RTCP (RFC 5761 §4 demultiplexing by packet type)."""
    return len(data) >= 2 and data[0] >> 6 == RTP_VERSION and data[1] in RTCP_PACKET_TYPES


@dataclass(frozen=True, slots=True)
class RtcpHeader:
    """The first RTCP packet's common header (RFC 3550 §6.4): enough for the relay to pass
    a compound packet on and to know whose report it is."""

    packet_type: int
    count: int
    length_words: int
    ssrc: int
    padding: bool


def parse_rtcp_header(data: bytes) -> RtcpHeader:
    """The header of the first packet in an RTCP compound; raise `RtpError` when malformed."""
    if len(data) < RTCP_HEADER_LENGTH:
        raise RtpError(RtpErrorReason.TRUNCATED, f"{len(data)} octets, RTCP header needs 8")
    first, packet_type, length_words, ssrc = _RTCP_HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(RtpErrorReason.WRONG_VERSION, f"version {first >> 6}")
    if packet_type not in RTCP_PACKET_TYPES:
        raise RtpError(RtpErrorReason.BAD_HEADER, f"packet type {packet_type} is not RTCP")
    if 4 * (length_words + 1) > len(data):
        raise RtpError(RtpErrorReason.TRUNCATED, f"length {length_words} exceeds the datagram")
    return RtcpHeader(
        packet_type=packet_type,
        count=first & 0x1F,
        length_words=length_words,
        ssrc=ssrc,
        padding=bool(first & 0x20),
    )
