"""STUN Binding server: RFC 5769 test vectors, framing, responses and malformed input."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callkeeper.sip import stun
from callkeeper.sip.stun import (
    BINDING,
    ERROR_CODE,
    FINGERPRINT,
    MAPPED_ADDRESS,
    MESSAGE_INTEGRITY,
    SOFTWARE,
    UNKNOWN_ATTRIBUTES,
    USERNAME,
    XOR_MAPPED_ADDRESS,
    StunAttribute,
    StunClass,
    StunMessage,
)


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 5769 §2.1: sample request (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
# MESSAGE-INTEGRITY, FINGERPRINT). Username "evtj:h6vY", password "VOkJxbRl1RmTxUk/WvJxBt".
RFC5769_REQUEST = _hex(
    """
    00 01 00 58  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
    80 22 00 10  53 54 55 4e  20 74 65 73  74 20 63 6c  69 65 6e 74
    00 24 00 04  6e 00 01 ff
    80 29 00 08  93 2f f9 b1  51 26 3b 36
    00 06 00 09  65 76 74 6a  3a 68 36 76  59 20 20 20
    00 08 00 14  9a ea a7 0c  bf d8 cb 56  78 1e f2 b5  b2 d3 f2 49  c1 b5 71 a2
    80 28 00 04  e5 7a 3b cf
    """
)
# RFC 5769 §2.2: sample IPv4 response, mapped address 192.0.2.1:32853.
RFC5769_IPV4_RESPONSE = _hex(
    """
    01 01 00 3c  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
    80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
    00 20 00 08  00 01 a1 47  e1 12 a6 43
    00 08 00 14  2b 91 f5 99  fd 9e 90 c3  8c 74 89 f9  2a f9 ba 53  f0 6b e7 d7
    80 28 00 04  c0 7d 4c 96
    """
)
# RFC 5769 §2.3: sample IPv6 response, mapped address
# [2001:db8:1234:5678:11:2233:4455:6677]:32853.
RFC5769_IPV6_RESPONSE = _hex(
    """
    01 01 00 48  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
    80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
    00 20 00 14  00 02 a1 47  01 13 a9 fa  a5 d3 f1 79  bc 25 f4 b5  be d2 b9 d9
    00 08 00 14  a3 82 95 4e  4b e6 7b f1  17 84 c9 7c  82 92 c2 75  bf e3 ed 41
    80 28 00 04  c8 fb 0b 4c
    """
)
RFC5769_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
TID = _hex("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")


def _integrity_ok(data: bytes) -> bool:
    """Check MESSAGE-INTEGRITY of an RFC 5769 sample (it precedes an 8-byte FINGERPRINT)."""
    mi_start = len(data) - 8 - 24
    length = mi_start + 24 - 20  # the length field as it was when MI was computed
    signed = data[:2] + struct.pack(">H", length) + data[4:mi_start]
    expected = hmac.new(RFC5769_PASSWORD, signed, hashlib.sha1).digest()
    return expected == data[mi_start + 4 : mi_start + 24]


def _request(*attributes: StunAttribute, tid: bytes = TID, fingerprint: bool = False) -> bytes:
    message = StunMessage(BINDING, StunClass.REQUEST, tid, attributes)
    return stun.encode_stun(message, with_fingerprint=fingerprint)


# --- RFC 5769 vectors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [RFC5769_REQUEST, RFC5769_IPV4_RESPONSE, RFC5769_IPV6_RESPONSE], ids=["req", "v4", "v6"]
)
def test_rfc5769_vectors_are_transcribed_correctly(data: bytes) -> None:
    # Both checksums match, so the bytes above are the RFC's.
    assert stun.fingerprint(data[:-8]) == struct.unpack(">I", data[-4:])[0]
    assert _integrity_ok(data)


def test_rfc5769_request_parses() -> None:
    message = stun.parse_stun(RFC5769_REQUEST)
    assert message is not None
    assert (message.method, message.stun_class) == (BINDING, StunClass.REQUEST)
    assert message.transaction_id == TID
    assert message.has_fingerprint
    assert [a.type for a in message.attributes] == [SOFTWARE, 0x0024, 0x8029, USERNAME, 0x0008]
    assert message.get(SOFTWARE) == b"STUN test client"
    assert message.get(USERNAME) == b"evtj:h6vY"  # padding is not part of the value
    assert message.get(MESSAGE_INTEGRITY) == RFC5769_REQUEST[-28:-8]
    assert message.unknown_required() == ()  # PRIORITY is understood (ICE checks)


def test_rfc5769_ipv4_response_decodes_to_the_mapped_address() -> None:
    message = stun.parse_stun(RFC5769_IPV4_RESPONSE)
    assert message is not None
    assert message.stun_class is StunClass.SUCCESS
    assert message.get(SOFTWARE) == b"test vector"
    value = message.get(XOR_MAPPED_ADDRESS)
    assert value is not None
    assert stun.decode_xor_address(value, message.transaction_id) == ("192.0.2.1", 32853)


def test_rfc5769_ipv6_response_decodes_to_the_mapped_address() -> None:
    message = stun.parse_stun(RFC5769_IPV6_RESPONSE)
    assert message is not None
    value = message.get(XOR_MAPPED_ADDRESS)
    assert value is not None
    assert stun.decode_xor_address(value, message.transaction_id) == (
        "2001:db8:1234:5678:11:2233:4455:6677",
        32853,
    )


@pytest.mark.parametrize(
    ("host", "vector"),
    [
        ("192.0.2.1", RFC5769_IPV4_RESPONSE),
        ("2001:db8:1234:5678:11:2233:4455:6677", RFC5769_IPV6_RESPONSE),
        ("[2001:db8:1234:5678:11:2233:4455:6677]", RFC5769_IPV6_RESPONSE),
    ],
)
def test_xor_mapped_address_encoding_matches_rfc5769(host: str, vector: bytes) -> None:
    message = stun.parse_stun(vector)
    assert message is not None
    assert stun.encode_xor_address(host, 32853, TID) == message.get(XOR_MAPPED_ADDRESS)


def test_answer_to_rfc5769_request_matches_the_rfc_response_layout() -> None:
    answer = stun.handle_datagram(RFC5769_REQUEST, ("192.0.2.1", 32853), software="test vector")
    assert answer is not None
    # Same header, SOFTWARE and XOR-MAPPED-ADDRESS as §2.2 (we send no MESSAGE-INTEGRITY).
    assert answer[:2] == b"\x01\x01"
    assert answer[4:20] == RFC5769_IPV4_RESPONSE[4:20]
    response = stun.parse_stun(answer)
    assert response is not None
    assert response.get(XOR_MAPPED_ADDRESS) == stun.encode_xor_address("192.0.2.1", 32853, TID)
    assert response.get(SOFTWARE) == b"test vector"
    assert response.has_fingerprint  # the request had one
    assert stun.fingerprint(answer[:-8]) == struct.unpack(">I", answer[-4:])[0]


# --- detection ----------------------------------------------------------------------------------


def test_is_stun_accepts_every_rfc5769_sample() -> None:
    assert stun.is_stun(RFC5769_REQUEST)
    assert stun.is_stun(RFC5769_IPV4_RESPONSE)
    assert stun.is_stun(_request())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"\x00" * 11,  # 19 bytes: short header
        b"\x40" + _request()[1:],  # top bits not zero
        b"\x80" + _request()[1:],
        _request()[:4] + b"\x21\x12\xa4\x43" + _request()[8:],  # wrong cookie
        b"\x00\x01\x00\x04" + _request()[4:],  # length says 4, nothing follows
        b"\x00\x01\x00\x02" + _request()[4:] + b"\x00\x00",  # length not a multiple of 4
        _request() + b"\x00\x00\x00\x00",  # trailing bytes beyond the length
        b"INVITE sip:bob@example.com SIP/2.0\r\n\r\n",
    ],
)
def test_is_stun_rejects(data: bytes) -> None:
    assert not stun.is_stun(data)
    assert stun.parse_stun(data) is None
    assert stun.handle_datagram(data, ("192.0.2.1", 5060)) is None


# --- message type encoding ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "cls", "value"),
    [
        (BINDING, StunClass.REQUEST, 0x0001),
        (BINDING, StunClass.INDICATION, 0x0011),
        (BINDING, StunClass.SUCCESS, 0x0101),
        (BINDING, StunClass.ERROR, 0x0111),
        (0x003, StunClass.REQUEST, 0x0003),  # TURN Allocate
        (0xFFF, StunClass.ERROR, 0x3FFF),
    ],
)
def test_message_type_interleaves_method_and_class(method: int, cls: StunClass, value: int) -> None:
    assert stun.message_type(method, cls) == value


@given(
    method=st.integers(0, 0xFFF),
    cls=st.sampled_from(list(StunClass)),
    tid=st.binary(min_size=12, max_size=12),
    attributes=st.lists(
        st.builds(
            StunAttribute,
            st.integers(0, 0xFFFF).filter(lambda t: t not in (FINGERPRINT, MESSAGE_INTEGRITY)),
            st.binary(max_size=40),
        ),
        max_size=5,
    ),
    with_fingerprint=st.booleans(),
)
def test_encode_parse_round_trip(
    method: int,
    cls: StunClass,
    tid: bytes,
    attributes: list[StunAttribute],
    with_fingerprint: bool,
) -> None:
    message = StunMessage(method, cls, tid, tuple(attributes))
    data = stun.encode_stun(message, with_fingerprint=with_fingerprint)
    assert len(data) % 4 == 0
    parsed = stun.parse_stun(data)
    assert parsed == StunMessage(method, cls, tid, tuple(attributes), with_fingerprint)


@given(st.binary(max_size=64))
def test_parse_never_raises(data: bytes) -> None:
    result = stun.parse_stun(data)
    assert result is None or isinstance(result, StunMessage)
    answer = stun.handle_datagram(data, ("10.0.0.1", 5060))
    assert answer is None or stun.is_stun(answer)


@given(st.binary(min_size=0, max_size=60))
def test_parse_of_a_valid_header_with_random_body_never_raises(body: bytes) -> None:
    body += b"\x00" * (-len(body) % 4)
    data = struct.pack(">HHI", 0x0001, len(body), stun.MAGIC_COOKIE) + TID + body
    result = stun.parse_stun(data)
    assert result is None or result.transaction_id == TID


# --- parse rules -------------------------------------------------------------------------------


def test_attributes_after_message_integrity_are_ignored() -> None:
    data = _request(
        StunAttribute(USERNAME, b"user"),
        StunAttribute(MESSAGE_INTEGRITY, b"\x00" * 20),
        StunAttribute(SOFTWARE, b"after"),
    )
    message = stun.parse_stun(data)
    assert message is not None
    assert [a.type for a in message.attributes] == [USERNAME, MESSAGE_INTEGRITY]
    assert message.get(SOFTWARE) is None


def test_wrong_fingerprint_drops_the_message() -> None:
    data = bytearray(_request(StunAttribute(SOFTWARE, b"x"), fingerprint=True))
    data[-1] ^= 0x01
    assert stun.is_stun(bytes(data))
    assert stun.parse_stun(bytes(data)) is None
    assert stun.handle_datagram(bytes(data), ("10.0.0.1", 5060)) is None


def test_fingerprint_with_wrong_length_drops_the_message() -> None:
    data = _request(StunAttribute(FINGERPRINT, b"\x00" * 8))
    assert stun.parse_stun(data) is None


def test_attribute_after_fingerprint_drops_the_message() -> None:
    # A correct FINGERPRINT (over the header with the final length), then one more attribute.
    header = struct.pack(">HHI", 0x0001, 8 + 4, stun.MAGIC_COOKIE) + TID
    fingerprint = struct.pack(">HHI", FINGERPRINT, 4, stun.fingerprint(header))
    data = header + fingerprint + struct.pack(">HH", SOFTWARE, 0)
    assert stun.is_stun(data)
    assert stun.parse_stun(header[:2] + b"\x00\x08" + header[4:] + fingerprint) is None  # CRC
    assert stun.parse_stun(data) is None


def test_attribute_overrunning_the_message_drops_it() -> None:
    body = struct.pack(">HH", SOFTWARE, 8) + b"abcd"  # says 8 bytes, has 4
    data = struct.pack(">HHI", 0x0001, len(body), stun.MAGIC_COOKIE) + TID + body
    assert stun.is_stun(data)
    assert stun.parse_stun(data) is None


def test_get_returns_first_of_duplicates() -> None:
    data = _request(StunAttribute(SOFTWARE, b"one"), StunAttribute(SOFTWARE, b"two"))
    message = stun.parse_stun(data)
    assert message is not None
    assert message.get(SOFTWARE) == b"one"


def test_unknown_required_lists_each_type_once_and_skips_optional_ones() -> None:
    message = StunMessage(
        BINDING,
        StunClass.REQUEST,
        TID,
        (
            StunAttribute(0x0003, b"\x00" * 4),  # CHANGE-REQUEST (RFC 5780): required, unknown
            StunAttribute(0x8055, b""),  # comprehension-optional: ignored
            StunAttribute(0x0003, b"\x00" * 4),
            StunAttribute(0x7FFF, b""),
            StunAttribute(USERNAME, b"u"),
        ),
    )
    assert message.unknown_required() == (0x0003, 0x7FFF)
    assert StunAttribute(0x7FFF, b"").comprehension_required
    assert not StunAttribute(0x8000, b"").comprehension_required


# --- addresses ---------------------------------------------------------------------------------


@given(
    ip=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    port=st.integers(0, 65535),
    tid=st.binary(min_size=12, max_size=12),
)
def test_xor_address_round_trip(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, tid: bytes
) -> None:
    value = stun.encode_xor_address(str(ip), port, tid)
    assert stun.decode_xor_address(value, tid) == (str(ip), port)
    assert stun.decode_address(stun.encode_address(str(ip), port)) == (str(ip), port)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x00\x01\x00",  # too short
        b"\x00\x01\x00\x50\x01\x02\x03",  # IPv4 with 3 address bytes
        b"\x00\x02\x00\x50" + b"\x00" * 4,  # IPv6 family with an IPv4-sized address
        b"\x00\x03\x00\x50" + b"\x00" * 4,  # unknown family
    ],
)
def test_decode_address_rejects_malformed(value: bytes) -> None:
    assert stun.decode_address(value) is None
    assert stun.decode_xor_address(value, TID) is None


def test_encode_address_rejects_a_host_name() -> None:
    with pytest.raises(ValueError):
        stun.encode_address("phone.example.com", 5060)


# --- the Binding server ------------------------------------------------------------------------


def _answer(
    data: bytes,
    source: tuple[str, int] = ("203.0.113.7", 40000),
    *,
    software: str | None = None,
    mapped_address: bool = False,
) -> StunMessage:
    raw = stun.handle_datagram(data, source, software=software, mapped_address=mapped_address)
    assert raw is not None
    message = stun.parse_stun(raw)
    assert message is not None
    return message


def test_binding_request_gets_xor_mapped_address_of_the_source() -> None:
    response = _answer(_request())
    assert (response.method, response.stun_class) == (BINDING, StunClass.SUCCESS)
    assert response.transaction_id == TID
    value = response.get(XOR_MAPPED_ADDRESS)
    assert value is not None
    assert stun.decode_xor_address(value, TID) == ("203.0.113.7", 40000)
    assert response.get(MAPPED_ADDRESS) is None
    assert response.get(SOFTWARE) is None
    assert not response.has_fingerprint  # the request had none


def test_binding_request_over_ipv6() -> None:
    response = _answer(_request(), ("2001:db8::5", 5062))
    value = response.get(XOR_MAPPED_ADDRESS)
    assert value is not None
    assert stun.decode_xor_address(value, TID) == ("2001:db8::5", 5062)


def test_mapped_address_for_old_clients_and_software() -> None:
    response = _answer(_request(), mapped_address=True, software="callkeeper " + "x" * 200)
    value = response.get(MAPPED_ADDRESS)
    assert value is not None
    assert stun.decode_address(value) == ("203.0.113.7", 40000)
    software = response.get(SOFTWARE)
    assert software is not None
    assert len(software) == 127  # fewer than 128 characters (§15.10)


def test_fingerprint_in_request_means_fingerprint_in_response() -> None:
    raw = stun.handle_datagram(_request(fingerprint=True), ("203.0.113.7", 40000))
    assert raw is not None
    assert raw[-8:-4] == struct.pack(">HH", FINGERPRINT, 4)
    assert struct.unpack(">I", raw[-4:])[0] == stun.fingerprint(raw[:-8])


def test_unknown_comprehension_required_attribute_gets_420() -> None:
    data = _request(StunAttribute(0x0003, b"\x00\x00\x00\x04"), fingerprint=True)
    response = _answer(data, software="ck")
    assert (response.method, response.stun_class) == (BINDING, StunClass.ERROR)
    assert response.transaction_id == TID
    assert response.get(ERROR_CODE) == b"\x00\x00\x04\x14Unknown Attribute"  # class 4, 20
    assert response.get(UNKNOWN_ATTRIBUTES) == b"\x00\x03"
    assert response.get(SOFTWARE) == b"ck"
    assert response.has_fingerprint


def test_request_of_another_method_gets_400() -> None:
    data = stun.encode_stun(StunMessage(0x003, StunClass.REQUEST, TID))
    response = _answer(data)
    assert (response.method, response.stun_class) == (0x003, StunClass.ERROR)
    assert response.get(ERROR_CODE) == b"\x00\x00\x04\x00Bad Request"
    assert response.get(UNKNOWN_ATTRIBUTES) is None


@pytest.mark.parametrize("cls", [StunClass.INDICATION, StunClass.SUCCESS, StunClass.ERROR])
def test_non_requests_get_no_answer(cls: StunClass) -> None:
    data = stun.encode_stun(StunMessage(BINDING, cls, TID))
    assert stun.parse_stun(data) is not None
    assert stun.handle_datagram(data, ("203.0.113.7", 40000)) is None


def test_source_that_is_not_an_ip_gets_no_answer() -> None:
    assert stun.handle_datagram(_request(), ("phone.example.com", 5060)) is None
