"""STUN Binding on the SIP UDP port (RFC 5389), the keep-alive of RFC 5626 §4.4.2.

Phones behind NAT send STUN Binding requests to the port they register on, both to keep the NAT
binding open and to learn their public address; each request is also a sign of life for the
endpoint's failure detector. The server side of that is small: recognise a STUN datagram among
SIP datagrams, answer a Binding request with the source address it came from, drop anything
malformed. We write it ourselves because the Python STUN packages are clients (pystun3) or parts
of an ICE stack (aioice) that bring their own sockets and event loop; this module is pure bytes
in, bytes out.

Scope: no authentication (the RFC 5626 keep-alive usage needs none), so MESSAGE-INTEGRITY is
parsed and kept but never checked; no TCP framing (STUN keep-alives are a UDP mechanism: streams
use CRLF, see `keepalive`). A request carrying FINGERPRINT must carry a correct one and gets a
response with FINGERPRINT too (§7.3.1, §15.5).
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

MAGIC_COOKIE = 0x2112A442
FINGERPRINT_XOR = 0x5354554E
HEADER_LENGTH = 20
BINDING = 0x001

# Attribute types (RFC 5389 §18.2; PRIORITY and USE-CANDIDATE from RFC 8445 §16.1).
MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
REALM = 0x0014
NONCE = 0x0015
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
SOFTWARE = 0x8022
FINGERPRINT = 0x8028

# Comprehension-required attributes (type < 0x8000) that we accept in a Binding request. The ICE
# ones are listed because ICE-capable phones may run connectivity checks against the SIP port;
# answering them with the mapped address is harmless and more useful than a 420.
UNDERSTOOD_REQUIRED = frozenset(
    {MAPPED_ADDRESS, USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, UNKNOWN_ATTRIBUTES, REALM, NONCE,
     XOR_MAPPED_ADDRESS, PRIORITY, USE_CANDIDATE}
)  # fmt: skip

_FAMILY_IPV4 = 0x01
_FAMILY_IPV6 = 0x02
_COOKIE_BYTES = struct.pack(">I", MAGIC_COOKIE)


class StunClass(IntEnum):
    """The two class bits of the message type (RFC 5389 §6)."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


@dataclass(frozen=True, slots=True)
class StunAttribute:
    type: int
    value: bytes

    @property
    def comprehension_required(self) -> bool:
        return self.type < 0x8000


@dataclass(frozen=True, slots=True)
class StunMessage:
    """A decoded STUN message. `attributes` excludes FINGERPRINT, which is `has_fingerprint`."""

    method: int
    stun_class: StunClass
    transaction_id: bytes
    attributes: tuple[StunAttribute, ...] = ()
    has_fingerprint: bool = False

    def get(self, attribute_type: int) -> bytes | None:
        """The value of the first attribute of that type (later duplicates are ignored, §15)."""
        for attribute in self.attributes:
            if attribute.type == attribute_type:
                return attribute.value
        return None

    def unknown_required(self) -> tuple[int, ...]:
        """Comprehension-required attribute types we do not understand, without duplicates."""
        seen: list[int] = []
        for attribute in self.attributes:
            if (
                attribute.comprehension_required
                and attribute.type not in UNDERSTOOD_REQUIRED
                and attribute.type not in seen
            ):
                seen.append(attribute.type)
        return tuple(seen)


def message_type(method: int, stun_class: StunClass) -> int:
    """Interleave the 12 method bits and 2 class bits into the 14-bit type (§6, figure 3)."""
    cls = int(stun_class)
    return (
        (method & 0x000F)
        | ((cls & 0b01) << 4)
        | ((method & 0x0070) << 1)
        | ((cls & 0b10) << 7)
        | ((method & 0x0F80) << 2)
    )


def _split_type(value: int) -> tuple[int, StunClass]:
    method = (value & 0x000F) | ((value & 0x00E0) >> 1) | ((value & 0x3E00) >> 2)
    cls = ((value & 0x0010) >> 4) | ((value & 0x0100) >> 7)
    return method, StunClass(cls)


def is_stun(data: bytes) -> bool:
    """True when `data` is framed as a STUN message (RFC 5389 §6, demultiplexed as RFC 7983 does).

    The top two bits are zero, the magic cookie is at offset 4, and the length field is a
    multiple of 4 that accounts for exactly the rest of the datagram.
    """
    if len(data) < HEADER_LENGTH or data[0] & 0xC0:
        return False
    length = (data[2] << 8) | data[3]
    return length % 4 == 0 and len(data) == HEADER_LENGTH + length and data[4:8] == _COOKIE_BYTES


def fingerprint(data: bytes) -> int:
    """The FINGERPRINT value of a message prefix (§15.5): CRC-32 XOR 0x5354554E."""
    return (zlib.crc32(data) ^ FINGERPRINT_XOR) & 0xFFFFFFFF


def parse_stun(data: bytes) -> StunMessage | None:
    """Decode one STUN datagram; None for anything malformed (the caller drops it).

    Attributes after MESSAGE-INTEGRITY other than FINGERPRINT are ignored (§15.4); anything
    after FINGERPRINT, or a FINGERPRINT that does not match, makes the message invalid.
    """
    if not is_stun(data):
        return None
    method, stun_class = _split_type((data[0] << 8) | data[1])
    transaction_id = data[8:20]
    attributes: list[StunAttribute] = []
    has_fingerprint = False
    after_integrity = False
    offset = HEADER_LENGTH
    end = len(data)
    while offset < end:  # both 4-aligned (is_stun), so a whole attribute header remains
        if has_fingerprint:
            return None
        attribute_type, length = struct.unpack_from(">HH", data, offset)
        value_start = offset + 4
        value_end = value_start + length
        if value_end > end:
            return None
        value = data[value_start:value_end]
        if attribute_type == FINGERPRINT:
            if length != 4:
                return None
            if struct.unpack(">I", value)[0] != fingerprint(data[:offset]):
                return None
            has_fingerprint = True
        elif not after_integrity:
            attributes.append(StunAttribute(attribute_type, value))
            after_integrity = attribute_type == MESSAGE_INTEGRITY
        offset = value_end + (-length % 4)
    return StunMessage(method, stun_class, transaction_id, tuple(attributes), has_fingerprint)


def encode_stun(message: StunMessage, *, with_fingerprint: bool = False) -> bytes:
    """Encode a message; FINGERPRINT is computed and appended when asked for."""
    body = bytearray()
    for attribute in message.attributes:
        body += struct.pack(">HH", attribute.type, len(attribute.value))
        body += attribute.value
        body += b"\x00" * (-len(attribute.value) % 4)
    length = len(body) + (8 if with_fingerprint else 0)
    header = struct.pack(
        ">HHI", message_type(message.method, message.stun_class), length, MAGIC_COOKIE
    )
    out = header + message.transaction_id + bytes(body)
    if with_fingerprint:
        out += struct.pack(">HHI", FINGERPRINT, 4, fingerprint(out))
    return out


# --- addresses ----------------------------------------------------------------------------------


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)


def encode_address(host: str, port: int) -> bytes:
    """A MAPPED-ADDRESS value (§15.1). `host` is an IPv4 or IPv6 literal (brackets allowed)."""
    ip = _ip(host)
    family = _FAMILY_IPV4 if ip.version == 4 else _FAMILY_IPV6
    return struct.pack(">BBH", 0, family, port) + ip.packed


def encode_xor_address(host: str, port: int, transaction_id: bytes) -> bytes:
    """An XOR-MAPPED-ADDRESS value (§15.2)."""
    plain = encode_address(host, port)
    mask = b"\x00\x00" + _COOKIE_BYTES[:2] + _COOKIE_BYTES + transaction_id
    return bytes(a ^ b for a, b in zip(plain, mask, strict=False))


def decode_address(value: bytes) -> tuple[str, int] | None:
    """Decode a MAPPED-ADDRESS value to (ip, port); None when malformed."""
    if len(value) < 4:
        return None
    family = value[1]
    port = (value[2] << 8) | value[3]
    if family == _FAMILY_IPV4 and len(value) == 8:
        return str(ipaddress.IPv4Address(value[4:8])), port
    if family == _FAMILY_IPV6 and len(value) == 20:
        return str(ipaddress.IPv6Address(value[4:20])), port
    return None


def decode_xor_address(value: bytes, transaction_id: bytes) -> tuple[str, int] | None:
    """Decode an XOR-MAPPED-ADDRESS value to (ip, port); None when malformed."""
    mask = b"\x00\x00" + _COOKIE_BYTES[:2] + _COOKIE_BYTES + transaction_id
    return decode_address(bytes(a ^ b for a, b in zip(value, mask, strict=False)) + value[20:])


# --- the Binding server -------------------------------------------------------------------------


def _software(software: str | None) -> list[StunAttribute]:
    """A SOFTWARE attribute (§15.10: fewer than 128 characters), if there is a name to send."""
    return [StunAttribute(SOFTWARE, software[:127].encode("utf-8"))] if software else []


def binding_success(
    request: StunMessage,
    source: tuple[str, int],
    *,
    software: str | None = None,
    mapped_address: bool = False,
) -> bytes:
    """The success response to a Binding request from `source` (§7.3.1.1, §12).

    `mapped_address` adds the plain MAPPED-ADDRESS as well, for clients written to RFC 3489.
    """
    host, port = source
    attributes = [
        StunAttribute(XOR_MAPPED_ADDRESS, encode_xor_address(host, port, request.transaction_id))
    ]
    if mapped_address:
        attributes.append(StunAttribute(MAPPED_ADDRESS, encode_address(host, port)))
    attributes += _software(software)
    response = StunMessage(BINDING, StunClass.SUCCESS, request.transaction_id, tuple(attributes))
    return encode_stun(response, with_fingerprint=request.has_fingerprint)


def binding_error(
    request: StunMessage,
    code: int,
    reason: str,
    *,
    unknown: tuple[int, ...] = (),
    software: str | None = None,
) -> bytes:
    """An error response with ERROR-CODE (§15.6) and, for 420, UNKNOWN-ATTRIBUTES (§15.9)."""
    error_value = struct.pack(">HBB", 0, code // 100, code % 100) + reason.encode("utf-8")
    attributes = [StunAttribute(ERROR_CODE, error_value)]
    if unknown:
        attributes.append(
            StunAttribute(UNKNOWN_ATTRIBUTES, b"".join(struct.pack(">H", t) for t in unknown))
        )
    attributes += _software(software)
    response = StunMessage(
        request.method, StunClass.ERROR, request.transaction_id, tuple(attributes)
    )
    return encode_stun(response, with_fingerprint=request.has_fingerprint)


def handle_datagram(
    data: bytes,
    source: tuple[str, int],
    *,
    software: str | None = None,
    mapped_address: bool = False,
) -> bytes | None:
    """Answer one STUN datagram received from `source`: the bytes to send back, or None.

    - a valid Binding request → success response with XOR-MAPPED-ADDRESS;
    - a Binding request with comprehension-required attributes we do not know → 420;
    - a request of another method → 400 (§7.3.1: we only implement Binding);
    - indications (a keep-alive that wants no answer), responses, malformed data → None.
    """
    message = parse_stun(data)
    if message is None or message.stun_class is not StunClass.REQUEST:
        return None
    if message.method != BINDING:
        return binding_error(message, 400, "Bad Request", software=software)
    unknown = message.unknown_required()
    if unknown:
        return binding_error(message, 420, "Unknown Attribute", unknown=unknown, software=software)
    try:
        return binding_success(message, source, software=software, mapped_address=mapped_address)
    except ValueError:  # the source is not an IP literal: nothing sensible to tell the client
        return None
