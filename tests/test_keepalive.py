"""Classifying what arrives on the SIP port: CRLF keep-alives, STUN, SIP, junk."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callkeeper.sip import stun
from callkeeper.sip.keepalive import PING, PONG, Kind, classify, keepalive_reply
from callkeeper.sip.stun import BINDING, StunClass, StunMessage

BINDING_REQUEST = stun.encode_stun(StunMessage(BINDING, StunClass.REQUEST, b"\x01" * 12))


def test_constants() -> None:
    assert PING == b"\r\n\r\n"
    assert PONG == b"\r\n"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\r\n\r\n", Kind.PING),
        (b"\r\n\r\n\r\n\r\n", Kind.PING),  # two pings in one read
        (b"\r\n\r\n\r\n", Kind.PING),
        (b"\r\n", Kind.PONG),
        (BINDING_REQUEST, Kind.STUN),
        (stun.encode_stun(StunMessage(BINDING, StunClass.INDICATION, b"\x02" * 12)), Kind.STUN),
        (b"INVITE sip:bob@example.com SIP/2.0\r\n", Kind.SIP),
        (b"SIP/2.0 200 OK\r\n", Kind.SIP),
        (b"OPTIONS sip:x SIP/2.0\r\n", Kind.SIP),
        (b"\r\nREGISTER sip:example.com SIP/2.0\r\n", Kind.SIP),  # CRLF before start line
        (b"\r\n\r\nBYE sip:x SIP/2.0", Kind.SIP),
        (b"\r\n\r", Kind.SIP),  # incomplete: let the parser (or stream framer) decide
        (b"\n", Kind.SIP),
        (b"", Kind.UNKNOWN),
        (b"\x00\x00\x00\x00", Kind.UNKNOWN),  # not a STUN message (too short)
        (b"\x16\xfe\xfd" + b"\x00" * 10, Kind.UNKNOWN),  # DTLS record
        (b"\x80\x00\x12\x34" + b"\x00" * 8, Kind.UNKNOWN),  # RTP
        (b" INVITE", Kind.UNKNOWN),
    ],
)
def test_classify(data: bytes, kind: Kind) -> None:
    assert classify(data) is kind


def test_stun_that_fails_framing_is_not_stun() -> None:
    truncated = BINDING_REQUEST + b"\x00\x00\x00\x00"
    assert classify(truncated) is Kind.UNKNOWN  # first byte 0x00 is no SIP token char


@given(st.binary(max_size=40))
def test_classify_is_total(data: bytes) -> None:
    kind = classify(data)
    assert isinstance(kind, Kind)
    if kind is Kind.STUN:
        assert stun.is_stun(data)
    if kind in (Kind.PING, Kind.PONG):
        assert set(data) <= {13, 10}


@given(st.sampled_from(["INVITE", "ACK", "BYE", "REGISTER", "SIP/2.0", "x-custom", "100rel"]))
def test_every_token_start_is_sip(start: str) -> None:
    assert classify(start.encode() + b" rest") is Kind.SIP


@pytest.mark.parametrize(
    ("kind", "reliable", "reply"),
    [
        (Kind.PING, True, PONG),  # RFC 5626 §4.4.1: pong on a stream
        (Kind.PING, False, None),  # UDP CRLF keep-alive: a sign of life, no answer
        (Kind.PONG, True, None),
        (Kind.PONG, False, None),
        (Kind.STUN, False, None),  # answered by stun.handle_datagram, not here
        (Kind.SIP, True, None),
        (Kind.UNKNOWN, False, None),
    ],
)
def test_keepalive_reply(kind: Kind, reliable: bool, reply: bytes | None) -> None:
    assert keepalive_reply(kind, reliable) == reply
