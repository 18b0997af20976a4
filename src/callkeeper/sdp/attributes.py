"""Values of the attributes callkeeper reads: rtpmap, fmtp, ptime (RFC 8866 §6), rtcp (RFC 3605).

Attributes stay `name` + raw `value` text in the model, so anything we do not interpret
round-trips untouched. The few we do interpret are parsed here, by the parser when a
description arrives (a malformed `a=rtpmap` is a 488 at the door, not a surprise mid-call) and
again by the model's accessors. `STATIC_PAYLOAD_TYPES` gives the RFC 3551 meanings that a
payload type below 96 has without an rtpmap (SIPp's `m=audio ... RTP/AVP 0` relies on it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from callkeeper.sdp.addresses import TOKEN, address_problem
from callkeeper.sdp.direction import DIRECTION_NAMES

MAX_PAYLOAD_TYPE = 127  # RTP's PT field is 7 bits (RFC 3550 §5.1)
MAX_PORT = 65535


@dataclass(frozen=True, slots=True)
class RtpMap:
    """`a=rtpmap:<payload type> <encoding>/<clock rate>[/<parameters>]` (RFC 8866 §6.6)."""

    payload_type: int
    encoding: str
    clock_rate: int
    parameters: str | None = None  # for audio, the channel count

    def __str__(self) -> str:
        text = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        return text if self.parameters is None else f"{text}/{self.parameters}"


@dataclass(frozen=True, slots=True)
class RtcpAddress:
    """`a=rtcp:<port> [IN IP4|IP6 <address>]` (RFC 3605 §2.1): where RTCP goes, when not RTP+1."""

    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None

    def __str__(self) -> str:
        if self.address is None:
            return str(self.port)
        return f"{self.port} {self.nettype} {self.addrtype} {self.address}"


def _static(payload_type: int, encoding: str, rate: int, channels: str | None = None) -> RtpMap:
    return RtpMap(payload_type, encoding, rate, channels)


# RFC 3551 §6, tables 4 and 5: payload types with a static meaning.
STATIC_PAYLOAD_TYPES: dict[int, RtpMap] = {
    rtpmap.payload_type: rtpmap
    for rtpmap in (
        _static(0, "PCMU", 8000), _static(3, "GSM", 8000), _static(4, "G723", 8000),
        _static(5, "DVI4", 8000), _static(6, "DVI4", 16000), _static(7, "LPC", 8000),
        _static(8, "PCMA", 8000), _static(9, "G722", 8000), _static(10, "L16", 44100, "2"),
        _static(11, "L16", 44100), _static(12, "QCELP", 8000), _static(13, "CN", 8000),
        _static(14, "MPA", 90000), _static(15, "G728", 8000), _static(16, "DVI4", 11025),
        _static(17, "DVI4", 22050), _static(18, "G729", 8000), _static(25, "CelB", 90000),
        _static(26, "JPEG", 90000), _static(28, "nv", 90000), _static(31, "H261", 90000),
        _static(32, "MPV", 90000), _static(33, "MP2T", 90000), _static(34, "H263", 90000),
    )
}  # fmt: skip

# Trailing blanks are tolerated: some phones end attribute lines with a space.
_RTPMAP_RE = re.compile(rf"([0-9]{{1,3}}) ({TOKEN})/([0-9]{{1,9}})(?:/(\S+))?[ \t]*")
_FMTP_RE = re.compile(r"(\S+)(?: (.*))?")
_RTCP_RE = re.compile(r"([0-9]{1,5})(?: (\S+) (\S+) (\S+))?[ \t]*")
_PTIME_RE = re.compile(r"([0-9]{1,6}(?:\.[0-9]{1,6})?)[ \t]*")


def parse_rtpmap(value: str) -> RtpMap | None:
    match = _RTPMAP_RE.fullmatch(value)
    if match is None:
        return None
    payload_type, encoding, clock_rate, parameters = match.groups()
    if int(payload_type) > MAX_PAYLOAD_TYPE:
        return None
    return RtpMap(int(payload_type), encoding, int(clock_rate), parameters)


def parse_fmtp(value: str) -> tuple[str, str] | None:
    """`(format, parameters)` of an `a=fmtp:` value; parameters stay text (codec-specific)."""
    match = _FMTP_RE.fullmatch(value)
    if match is None:
        return None
    return match[1], match[2] or ""


def parse_rtcp(value: str) -> RtcpAddress | None:
    match = _RTCP_RE.fullmatch(value)
    if match is None:
        return None
    port, nettype, addrtype, address = match.groups()
    if int(port) > MAX_PORT:
        return None
    if address is not None and address_problem(nettype, addrtype, address) is not None:
        return None
    return RtcpAddress(int(port), nettype, addrtype, address)


def parse_ptime(value: str) -> float | None:
    match = _PTIME_RE.fullmatch(value)
    return None if match is None else float(match[1])


def attribute_problem(name: str, value: str | None) -> str | None:
    """Why an attribute callkeeper interprets is malformed, or None (unknown ones always pass)."""
    if name in DIRECTION_NAMES:
        return None if value is None else f"a={name} takes no value"
    if value is None:
        return None if name not in _PARSERS else f"a={name} needs a value"
    parse = _PARSERS.get(name)
    if parse is None or parse(value) is not None:
        return None
    return f"bad a={name}"


_PARSERS: dict[str, Callable[[str], object]] = {
    "rtpmap": parse_rtpmap,
    "fmtp": parse_fmtp,
    "rtcp": parse_rtcp,
    "ptime": parse_ptime,
}
CHECKED_ATTRIBUTES = DIRECTION_NAMES | _PARSERS.keys()
