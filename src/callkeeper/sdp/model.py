"""The SDP data model (RFC 8866, formerly RFC 4566): a session description as plain dataclasses.

Every line a peer sent has a home, so nothing is lost on the way through the B2BUA:
structured fields for what callkeeper reads or rewrites (`o=`, `c=`, `b=`, `t=`, `m=`), text
for what it only carries (`i=`, `u=`, `e=`, `p=`, `r=`, `z=`, `k=`), an ordered list of
`Attribute`s whose values stay text, and `extra_lines` for line types SDP does not define.

`to_bytes()` writes the RFC 8866 §5 line order with CRLF endings. A description that arrived
in that order — every well-formed one — serializes byte for byte as received; one whose lines
came in another order comes out in the standard order, attribute order unchanged, and lines
of unknown types at the end of their section.

Leaf values (`Origin`, `Connection`, `Attribute` ...) are frozen: build a new one with
`dataclasses.replace`. Session and media descriptions are mutable containers with a cheap
`copy()`; the rewriting helpers (hold.py, rewrite.py) return copies and never touch their
input, so a leg's stored SDP cannot change behind its back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callkeeper.sdp.addresses import address_type
from callkeeper.sdp.attributes import (
    STATIC_PAYLOAD_TYPES,
    RtcpAddress,
    RtpMap,
    parse_fmtp,
    parse_ptime,
    parse_rtcp,
    parse_rtpmap,
)
from callkeeper.sdp.direction import DEFAULT_DIRECTION, DIRECTION_NAMES, Direction

TELEPHONE_EVENT = "telephone-event"  # RFC 4733 DTMF events


@dataclass(frozen=True, slots=True)
class Origin:
    """`o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>` (RFC 8866 §5.2).

    `session_id` stays text (only compared, never computed with); `session_version` is a
    number because every re-offer must raise it by one (RFC 3264 §8).
    """

    username: str
    session_id: str
    session_version: int
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """`c=<nettype> <addrtype> <address>` (RFC 8866 §5.7); multicast keeps its `/ttl/count`."""

    nettype: str
    addrtype: str
    address: str

    @classmethod
    def of(cls, host: str) -> Connection:
        """An `IN IP4` or `IN IP6` connection to a unicast host, typed by its form."""
        return cls("IN", address_type(host), host)

    @property
    def host(self) -> str:
        """The address without a multicast `/ttl/count` suffix."""
        return self.address.partition("/")[0]

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """`b=<bwtype>:<kilobits per second, or bits for TIAS>` (RFC 8866 §5.8)."""

    type: str
    value: int

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


@dataclass(frozen=True, slots=True)
class Timing:
    """`t=<start> <stop>` and the `r=` repeat lines under it (RFC 8866 §5.9, §5.10)."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Attribute:
    """`a=<name>` or `a=<name>:<value>` (RFC 8866 §5.13); `value=""` is `a=<name>:`."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class Line:
    """A line of a type SDP does not define (`y=`, `f=` ...), kept so it can be passed on."""

    type: str
    value: str


class _Attributes:
    """Attribute access shared by session and media level (both hold `attributes`)."""

    __slots__ = ()
    attributes: list[Attribute]

    def has_attribute(self, name: str) -> bool:
        return any(attribute.name == name for attribute in self.attributes)

    def attribute(self, name: str) -> str | None:
        """The value of the first `a=<name>:<value>` line, or None."""
        for attribute in self.attributes:
            if attribute.name == name and attribute.value is not None:
                return attribute.value
        return None

    def attribute_values(self, name: str) -> list[str]:
        return [a.value for a in self.attributes if a.name == name and a.value is not None]

    def remove_attributes(self, *names: str) -> None:
        self.attributes[:] = [a for a in self.attributes if a.name not in names]

    @property
    def direction(self) -> Direction | None:
        """The direction attribute at this level only; None when there is none."""
        for attribute in self.attributes:
            if attribute.name in DIRECTION_NAMES:
                return Direction(attribute.name)
        return None

    def set_direction(self, direction: Direction | None) -> None:
        """Put one direction attribute where the first one was (else last); None removes."""
        kept: list[Attribute] = []
        position: int | None = None
        for attribute in self.attributes:
            if attribute.name in DIRECTION_NAMES:
                if position is None:
                    position = len(kept)
            else:
                kept.append(attribute)
        if direction is not None:
            kept.insert(len(kept) if position is None else position, Attribute(direction.value))
        self.attributes[:] = kept


@dataclass(slots=True)
class MediaDescription(_Attributes):
    """One `m=<media> <port>[/<count>] <proto> <fmt> ...` section (RFC 8866 §5.14).

    `formats` stay text: they are RTP payload type numbers for RTP profiles and tokens
    (`t38`, `webrtc-datachannel`, `*`) for others. Port 0 marks a rejected or removed
    stream (RFC 3264 §6, §8.2).
    """

    kind: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    title: str | None = None  # i=
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    key: str | None = None  # k= (obsolete, carried as is)
    attributes: list[Attribute] = field(default_factory=list)
    extra_lines: list[Line] = field(default_factory=list)

    # --- what the stream is -------------------------------------------------------------------
    @property
    def is_rtp(self) -> bool:
        """RTP/AVP, RTP/SAVP, RTP/AVPF, UDP/TLS/RTP/SAVPF, TCP/RTP/AVP ..."""
        return "RTP/" in self.proto.upper()

    @property
    def rejected(self) -> bool:
        return self.port == 0

    @property
    def connection(self) -> Connection | None:
        """The first media-level `c=` (several only occur with layered multicast)."""
        return self.connections[0] if self.connections else None

    @property
    def payload_types(self) -> list[int]:
        """The m= line's payload types in order of preference (empty when not RTP)."""
        if not self.is_rtp:
            return []
        return [int(f) for f in self.formats if f.isascii() and f.isdigit()]

    # --- codecs -------------------------------------------------------------------------------
    def rtpmap(self, payload_type: int) -> RtpMap | None:
        """The encoding of a payload type: its a=rtpmap, else its RFC 3551 static meaning."""
        for value in self.attribute_values("rtpmap"):
            rtpmap = parse_rtpmap(value)
            if rtpmap is not None and rtpmap.payload_type == payload_type:
                return rtpmap
        return STATIC_PAYLOAD_TYPES.get(payload_type)

    def codecs(self) -> list[RtpMap]:
        """The encodings of the m= line's payload types, in order (unknown ones left out)."""
        found = [self.rtpmap(pt) for pt in self.payload_types]
        return [rtpmap for rtpmap in found if rtpmap is not None]

    def fmtp(self, payload_type: int | str) -> str | None:
        """The format parameters text of `a=fmtp:<payload type> <parameters>`, or None."""
        wanted = str(payload_type)
        for value in self.attribute_values("fmtp"):
            parsed = parse_fmtp(value)
            if parsed is not None and parsed[0] == wanted:
                return parsed[1]
        return None

    @property
    def telephone_event(self) -> int | None:
        """The payload type offered for RFC 4733 DTMF events (the first, if several)."""
        for payload_type in self.payload_types:
            rtpmap = self.rtpmap(payload_type)
            if rtpmap is not None and rtpmap.encoding.lower() == TELEPHONE_EVENT:
                return payload_type
        return None

    @property
    def ptime(self) -> float | None:
        """`a=ptime:` in milliseconds, or None."""
        value = self.attribute("ptime")
        return None if value is None else parse_ptime(value)

    @property
    def rtcp(self) -> RtcpAddress | None:
        """`a=rtcp:` (RFC 3605), or None when RTCP uses the default RTP port + 1."""
        value = self.attribute("rtcp")
        return None if value is None else parse_rtcp(value)

    # --- copying and writing ------------------------------------------------------------------
    def copy(self) -> MediaDescription:
        return MediaDescription(
            self.kind, self.port, self.proto, list(self.formats), self.port_count, self.title,
            list(self.connections), list(self.bandwidths), self.key, list(self.attributes),
            list(self.extra_lines),
        )  # fmt: skip

    def media_line(self) -> str:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        return " ".join((self.kind, port, self.proto, *self.formats))

    def write_lines(self, out: list[str]) -> None:
        out.append("m=" + self.media_line())
        if self.title is not None:
            out.append("i=" + self.title)
        out.extend([f"c={c}" for c in self.connections])
        out.extend([f"b={b}" for b in self.bandwidths])
        if self.key is not None:
            out.append("k=" + self.key)
        out.extend([f"a={a}" for a in self.attributes])
        out.extend([f"{line.type}={line.value}" for line in self.extra_lines])


@dataclass(slots=True)
class SessionDescription(_Attributes):
    """A whole session description: the session-level lines and the media sections."""

    origin: Origin
    name: str = "-"  # s=; "-" or " " when there is no name (RFC 8866 §5.3)
    version: int = 0  # v=; always 0
    info: str | None = None  # i=
    uri: str | None = None  # u=
    emails: list[str] = field(default_factory=list)  # e=
    phones: list[str] = field(default_factory=list)  # p=
    connection: Connection | None = None  # c=
    bandwidths: list[Bandwidth] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=lambda: [Timing()])  # t= / r=
    zone: str | None = None  # z=
    key: str | None = None  # k=
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    extra_lines: list[Line] = field(default_factory=list)

    # --- per-stream views that fall back on session level -------------------------------------
    def direction_of(self, media: MediaDescription) -> Direction:
        """The stream's direction: media level, else session level, else sendrecv."""
        return media.direction or self.direction or DEFAULT_DIRECTION

    def connection_of(self, media: MediaDescription) -> Connection | None:
        """The stream's `c=`: media level, else session level."""
        return media.connection or self.connection

    def address_of(self, media: MediaDescription) -> str | None:
        """The host the stream's media goes to (no multicast suffix), or None."""
        connection = self.connection_of(media)
        return None if connection is None else connection.host

    # --- copying and writing ------------------------------------------------------------------
    def copy(self) -> SessionDescription:
        """A copy that can be changed without touching this one (leaves are immutable)."""
        return SessionDescription(
            self.origin, self.name, self.version, self.info, self.uri, list(self.emails),
            list(self.phones), self.connection, list(self.bandwidths), list(self.timings),
            self.zone, self.key, list(self.attributes), [m.copy() for m in self.media],
            list(self.extra_lines),
        )  # fmt: skip

    def lines(self) -> list[str]:
        """The description's lines, without line endings, in RFC 8866 §5 order."""
        out = [f"v={self.version}", f"o={self.origin}", "s=" + self.name]
        if self.info is not None:
            out.append("i=" + self.info)
        if self.uri is not None:
            out.append("u=" + self.uri)
        out.extend(["e=" + email for email in self.emails])
        out.extend(["p=" + phone for phone in self.phones])
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend([f"b={b}" for b in self.bandwidths])
        for timing in self.timings:
            out.append(f"t={timing.start} {timing.stop}")
            out.extend(["r=" + repeat for repeat in timing.repeats])
        if self.zone is not None:
            out.append("z=" + self.zone)
        if self.key is not None:
            out.append("k=" + self.key)
        out.extend([f"a={a}" for a in self.attributes])
        out.extend([f"{line.type}={line.value}" for line in self.extra_lines])
        for media in self.media:
            media.write_lines(out)
        return out

    def __str__(self) -> str:
        return "\r\n".join(self.lines()) + "\r\n"

    def to_bytes(self) -> bytes:
        return str(self).encode()

    def __bytes__(self) -> bytes:
        return self.to_bytes()
