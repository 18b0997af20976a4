"""Parse SDP bodies (RFC 8866) into the model, strictly, in one pass.

The B2BUA parses the SDP of every INVITE, so this is a single loop over the lines that
dispatches on the type letter — no regex per line, no intermediate structures — and checks as
it goes. What it refuses, each as an `SdpError` (answered 488) and never another exception:

- bytes that are not UTF-8, control characters, a bare CR, a body over `MAX_SDP_BYTES`;
- a first line other than `v=0`; a missing or repeated `o=`, `s=`, `t=`; session-only
  lines inside a media section; lines that are not `<letter>=<value>`;
- a bad `o=`/`c=`/`b=`/`t=`/`m=` line: wrong field count, non-numeric numbers, a port over
  65535, an RTP payload type that is not a number 0–127, a `c=` address that does not match
  its address type, a stream with no `c=` at either level;
- a malformed value of an attribute callkeeper interprets (rtpmap, fmtp, rtcp, ptime, the
  direction attributes) and conflicting direction attributes at one level.

It is liberal where that costs nothing: LF-only line endings, a missing final line ending,
blank lines at the end, runs of blanks between fields, an empty `s=`, lines in a non-standard
order (kept as received within their kind), and line types SDP does not define (kept).
"""

from __future__ import annotations

import re
from typing import TypeVar

from callkeeper.sdp.addresses import TOKEN, address_problem
from callkeeper.sdp.attributes import CHECKED_ATTRIBUTES, MAX_PAYLOAD_TYPE, attribute_problem
from callkeeper.sdp.direction import DIRECTION_NAMES
from callkeeper.sdp.errors import SdpError
from callkeeper.sdp.model import (
    Attribute,
    Bandwidth,
    Connection,
    Line,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
)

MAX_SDP_BYTES = 64 * 1024  # far above any phone's SDP; bounds the work a peer can cause
_MAX_DIGITS = 20  # 64-bit numbers (WebRTC session versions); also keeps int() cheap and safe
_MAX_PORT = 65535

# Control characters other than HTAB (CR and LF only as line endings) have no place in SDP.
_ALLOWED_BYTES = bytes(b for b in range(256) if (b >= 0x20 and b != 0x7F) or b in b"\t\r\n")
_TOKEN_RE = re.compile(TOKEN)
_PROTO_RE = re.compile(rf"{TOKEN}(?:/{TOKEN})*")
_KNOWN_TYPES = frozenset("vosiuepcbtrzkam")
_MEDIA_LEVEL_TYPES = frozenset("icbka")
# Attribute names seen in practice skip the token check (it is the costliest per-line step).
_COMMON_NAMES = CHECKED_ATTRIBUTES | {
    "rtcp-mux", "rtcp-rsize", "rtcp-fb", "ssrc", "ssrc-group", "mid", "msid", "msid-semantic",
    "group", "extmap", "candidate", "end-of-candidates", "ice-ufrag", "ice-pwd", "ice-options",
    "ice-lite", "fingerprint", "setup", "crypto", "label", "tool", "maxptime", "minptime",
    "silenceSupp", "framerate", "T38FaxVersion", "T38MaxBitRate", "T38FaxRateManagement",
}  # fmt: skip

# Values already parsed and checked, by the text of their line: the same rtpmap, direction
# and c= lines arrive call after call, and their model objects are immutable, so they are
# shared. Bounded; attributes unique to a call (keys, candidates, SSRCs) are not kept.
_CACHE_SIZE = 4096
_ATTRIBUTES: dict[str, Attribute] = {}
_CONNECTIONS: dict[str, Connection] = {}
_BANDWIDTHS: dict[str, Bandwidth] = {}
_UNIQUE_NAMES = frozenset(
    {"ssrc", "candidate", "crypto", "ice-ufrag", "ice-pwd", "fingerprint", "msid"}
)
_UNBOUNDED = Timing(0, 0)
_T = TypeVar("_T")


def _error(what: str, line: str) -> SdpError:
    # The line goes into a Warning header's quoted-string: keep it short and quote-free.
    shown = line if len(line) <= 48 else line[:45] + "..."
    shown = shown.replace('"', "'").replace("\\", "/")
    return SdpError(f"{what}: {shown}")


def _digits(text: str, limit: int = _MAX_DIGITS) -> bool:
    # str.isdigit alone accepts "²" and "١"; int() accepts "1_0" and " 1": both are refused.
    return 0 < len(text) <= limit and text.isascii() and text.isdigit()


def _lines(body: bytes | str) -> list[str]:
    if isinstance(body, str):
        try:
            data = body.encode()
        except UnicodeEncodeError:  # a lone surrogate could never be sent on
            raise SdpError("SDP text is not valid Unicode") from None
    else:
        data = body
    if len(data) > MAX_SDP_BYTES:
        raise SdpError(f"SDP body larger than {MAX_SDP_BYTES} bytes")
    # translate() with every allowed byte deleted leaves only the forbidden ones: one C pass.
    if data.translate(None, _ALLOWED_BYTES):
        raise SdpError("control character in SDP body")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise SdpError("SDP body is not UTF-8") from None
    crlf = data.count(b"\r\n")
    if crlf == data.count(b"\r") and crlf == data.count(b"\n"):
        lines = text.split("\r\n")  # the usual case: CRLF throughout
    else:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            raise SdpError("bare CR in SDP body")
        lines = text.split("\n")
    while lines and not lines[-1]:
        lines.pop()
    return lines


def parse_sdp(body: bytes | str) -> SessionDescription:
    """Parse a session description; raise `SdpError` saying why when it is not acceptable."""
    lines = _lines(body)
    if not lines or lines[0] != "v=0":
        if lines and lines[0].startswith("v="):
            raise _error("unsupported SDP version", lines[0])
        raise SdpError("SDP must begin with v=0")
    origin: Origin | None = None
    name: str | None = None
    info = uri = zone = key = None
    connection: Connection | None = None
    emails: list[str] = []
    phones: list[str] = []
    bandwidths: list[Bandwidth] = []
    timings: list[Timing] = []
    attributes: list[Attribute] = []
    extra: list[Line] = []
    media_list: list[MediaDescription] = []
    media: MediaDescription | None = None
    direction: str | None = None  # the direction attribute seen at the current level

    for index in range(1, len(lines)):
        line = lines[index]
        if len(line) < 2 or line[1] != "=":
            raise _error("malformed line", line) if line else SdpError("empty line in SDP")
        kind = line[0]
        value = line[2:]
        if kind == "a":
            attribute = _ATTRIBUTES.get(value) or _parse_attribute(value, line)
            if attribute.name in DIRECTION_NAMES:
                if direction is not None and direction != attribute.name:
                    raise _error("conflicting direction attributes", line)
                direction = attribute.name
            (attributes if media is None else media.attributes).append(attribute)
        elif kind == "m":
            media = _parse_media(value, line)
            media_list.append(media)
            direction = None
        elif kind == "c":
            parsed = _CONNECTIONS.get(value) or _parse_connection(value, line)
            if media is not None:
                media.connections.append(parsed)
            elif connection is None:
                connection = parsed
            else:
                raise _error("more than one session-level c= line", line)
        elif kind == "b":
            bandwidth = _BANDWIDTHS.get(value) or _parse_bandwidth(value, line)
            (bandwidths if media is None else media.bandwidths).append(bandwidth)
        elif media is not None:
            if kind == "i" and media.title is None:
                media.title = value
            elif kind == "k" and media.key is None:
                media.key = value
            elif kind in _MEDIA_LEVEL_TYPES:
                raise _error(f"more than one {kind}= line in a media description", line)
            elif kind in _KNOWN_TYPES:
                raise _error(f"{kind}= line inside a media description", line)
            else:
                media.extra_lines.append(_extra_line(kind, value, line))
        elif kind == "o":
            if origin is not None:
                raise _error("more than one o= line", line)
            origin = _parse_origin(value, line)
        elif kind == "s":
            if name is not None:
                raise _error("more than one s= line", line)
            name = value
        elif kind == "t":
            timings.append(_UNBOUNDED if value == "0 0" else _parse_timing(value, line))
        elif kind == "r":
            if not timings:
                raise _error("r= line before any t= line", line)
            timing = timings[-1]
            timings[-1] = Timing(timing.start, timing.stop, (*timing.repeats, value))
        elif kind == "e":
            emails.append(value)
        elif kind == "p":
            phones.append(value)
        elif kind == "i" and info is None:
            info = value
        elif kind == "u" and uri is None:
            uri = value
        elif kind == "z" and zone is None:
            zone = value
        elif kind == "k" and key is None:
            key = value
        elif kind in _KNOWN_TYPES:
            raise _error(f"more than one {kind}= line", line)
        else:
            extra.append(_extra_line(kind, value, line))

    if origin is None:
        raise SdpError("SDP has no o= line")
    if name is None:
        raise SdpError("SDP has no s= line")
    if not timings:
        raise SdpError("SDP has no t= line")
    if connection is None:
        for described in media_list:
            if not described.connections and described.port != 0:
                raise _error("no c= line for stream", "m=" + described.media_line())
    return SessionDescription(
        origin, name, 0, info, uri, emails, phones, connection, bandwidths, timings, zone, key,
        attributes, media_list, extra,
    )  # fmt: skip


def validate_sdp(body: bytes) -> str | None:
    """Why a body is not acceptable SDP (the 488 Warning text), or None when it is."""
    try:
        parse_sdp(body)
    except SdpError as error:
        return error.reason
    return None


def _remember(cache: dict[str, _T], key: str, value: _T) -> _T:
    if len(cache) >= _CACHE_SIZE:
        cache.clear()  # a peer sending endless distinct lines only costs us the cache's benefit
    cache[key] = value
    return value


def _parse_attribute(value: str, line: str) -> Attribute:
    name, colon, text = value.partition(":")
    if name not in _COMMON_NAMES and not _TOKEN_RE.fullmatch(name):
        raise _error("bad attribute name", line)
    attribute = Attribute(name, text if colon else None)
    if name in CHECKED_ATTRIBUTES:
        problem = attribute_problem(name, attribute.value)
        if problem is not None:
            raise _error(problem, line)
    if name in _UNIQUE_NAMES:
        return attribute
    return _remember(_ATTRIBUTES, value, attribute)


def _extra_line(kind: str, value: str, line: str) -> Line:
    if not "a" <= kind <= "z":
        raise _error("malformed line", line)
    return Line(kind, value)


def _parse_origin(value: str, line: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise _error("bad o= line", line)
    username, session_id, version, nettype, addrtype, address = parts
    if not _digits(version):
        raise _error("bad o= session version", line)
    if nettype == "IN" and addrtype not in ("IP4", "IP6"):
        raise _error("bad o= address type", line)
    return Origin(username, session_id, int(version), nettype, addrtype, address)


def _parse_connection(value: str, line: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise _error("bad c= line", line)
    nettype, addrtype, address = parts
    problem = address_problem(nettype, addrtype, address)
    if problem is not None:
        raise _error(problem, line)
    return _remember(_CONNECTIONS, value, Connection(nettype, addrtype, address))


def _parse_bandwidth(value: str, line: str) -> Bandwidth:
    bwtype, _, amount = value.partition(":")
    if not _TOKEN_RE.fullmatch(bwtype) or not _digits(amount):
        raise _error("bad b= line", line)
    return _remember(_BANDWIDTHS, value, Bandwidth(bwtype, int(amount)))


def _parse_timing(value: str, line: str) -> Timing:
    parts = value.split()
    if len(parts) != 2 or not _digits(parts[0]) or not _digits(parts[1]):
        raise _error("bad t= line", line)
    return Timing(int(parts[0]), int(parts[1]))


def _parse_media(value: str, line: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise _error("bad m= line", line)
    kind, ports, proto = parts[0], parts[1], parts[2]
    formats = parts[3:]
    if not _TOKEN_RE.fullmatch(kind) or not _PROTO_RE.fullmatch(proto):
        raise _error("bad m= line", line)
    port_text, slash, count_text = ports.partition("/")
    if not _digits(port_text, 5) or int(port_text) > _MAX_PORT:
        raise _error("bad m= port", line)
    port_count = None
    if slash:
        if not _digits(count_text, 5) or int(count_text) == 0:
            raise _error("bad m= port count", line)
        port_count = int(count_text)
    if "RTP/" in proto.upper():
        for payload_type in formats:
            if not _digits(payload_type, 3) or int(payload_type) > MAX_PAYLOAD_TYPE:
                raise _error("bad RTP payload type", line)
    else:
        for media_format in formats:
            if not _TOKEN_RE.fullmatch(media_format):
                raise _error("bad m= format", line)
    return MediaDescription(kind, int(port_text), proto, formats, port_count)
