"""received/rport stamping (RFC 3261 §18.2.1, RFC 3581) and response routing (§18.2.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callkeeper.sip.message import Request
from callkeeper.sip.nat import (
    ResponseTarget,
    default_port,
    response_target,
    stamp_request,
    stamp_via,
)
from callkeeper.sip.parser import parse_message
from callkeeper.sip.transport import Flow
from callkeeper.sip.via import parse_via

SOURCE = ("198.51.100.7", 34567)


def _via(text: str) -> str:
    return str(stamp_via(parse_via(text), SOURCE))


@pytest.mark.parametrize(
    ("via", "stamped"),
    [
        # sent-by equals the source: nothing to add (§18.2.1)
        ("SIP/2.0/UDP 198.51.100.7:34567;branch=z9hG4bK1", None),
        # private address behind NAT: received
        (
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1",
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;received=198.51.100.7",
        ),
        # a host name always differs from the source IP
        (
            "SIP/2.0/UDP phone.example.com;branch=z9hG4bK1",
            "SIP/2.0/UDP phone.example.com;branch=z9hG4bK1;received=198.51.100.7",
        ),
        # empty rport: filled with the source port, and received added even if equal (RFC 3581 §4)
        (
            "SIP/2.0/UDP 198.51.100.7:5060;rport;branch=z9hG4bK1",
            "SIP/2.0/UDP 198.51.100.7:5060;rport=34567;branch=z9hG4bK1;received=198.51.100.7",
        ),
        (
            "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1;rport",
            "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1;rport=34567;received=198.51.100.7",
        ),
        # rport that already has a value (set by a proxy upstream) is kept
        (
            "SIP/2.0/UDP 10.0.0.5;rport=1111;branch=z9hG4bK1",
            "SIP/2.0/UDP 10.0.0.5;rport=1111;branch=z9hG4bK1;received=198.51.100.7",
        ),
        # an existing received is replaced, not duplicated
        (
            "SIP/2.0/UDP 10.0.0.5;received=1.2.3.4;branch=z9hG4bK1",
            "SIP/2.0/UDP 10.0.0.5;received=198.51.100.7;branch=z9hG4bK1",
        ),
        # parameter names are case-insensitive
        (
            "SIP/2.0/TCP 10.0.0.5;RPort;branch=z9hG4bK1",
            "SIP/2.0/TCP 10.0.0.5;RPort=34567;branch=z9hG4bK1;received=198.51.100.7",
        ),
    ],
)
def test_stamp_via(via: str, stamped: str | None) -> None:
    original = parse_via(via)
    result = stamp_via(original, SOURCE)
    if stamped is None:
        assert result is original
    else:
        assert str(result) == stamped
        assert parse_via(str(result)) == result  # what we write parses back


def test_stamp_via_ipv6_compares_addresses_not_text() -> None:
    via = parse_via("SIP/2.0/UDP [2001:DB8:0::1]:5060;branch=z9hG4bK1")
    assert stamp_via(via, ("2001:db8::1", 5060)) is via
    stamped = stamp_via(via, ("2001:db8::2", 5060))
    # via-received is an IPv6address: no brackets (RFC 3261 §25.1, RFC 5118 §4.5)
    assert stamped.param("received") == "2001:db8::2"
    assert parse_via(str(stamped)).param("received") == "2001:db8::2"


def test_stamp_via_with_bracketed_source() -> None:
    via = parse_via("SIP/2.0/UDP [2001:db8::1];rport;branch=z9hG4bK1")
    stamped = stamp_via(via, ("[2001:db8::1]", 6000))
    assert stamped.param("received") == "2001:db8::1"
    assert stamped.param("rport") == "6000"


REQUEST = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKabc,"
    b" SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKold\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\n"
    b"To: <sip:alice@example.com>\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_stamp_request_rewrites_only_the_top_via() -> None:
    request = parse_message(REQUEST)
    assert isinstance(request, Request)
    assert stamp_request(request, Flow("udp", SOURCE))
    vias = request.vias
    assert len(vias) == 2
    assert vias[0].param("received") == "198.51.100.7"
    assert vias[0].param("rport") == "34567"
    assert vias[1].host == "10.9.9.9"
    assert not vias[1].has_param("received")
    reparsed = parse_message(request.to_bytes())
    assert reparsed.top_via.param("rport") == "34567"
    # the response carries the stamped Via and goes back to the NAT's public address
    response = request.create_response(200)
    assert response_target(response.top_via) == ResponseTarget("UDP", "198.51.100.7", 34567)


def test_stamp_request_leaves_a_matching_via_alone() -> None:
    request = parse_message(REQUEST.replace(b"10.0.0.5:5060;rport;", b"198.51.100.7:34567;"))
    assert isinstance(request, Request)
    before = request.headers.get("via")
    assert not stamp_request(request, Flow("udp", SOURCE))
    assert request.headers.get("via") == before


@pytest.mark.parametrize(
    ("via", "flow", "target"),
    [
        # reliable: reuse the connection; fallback is received + sent-by port
        (
            "SIP/2.0/TCP 10.0.0.5:5070;received=198.51.100.7;branch=z9hG4bK1",
            Flow("tcp", SOURCE, connection=42),
            ResponseTarget("TCP", "198.51.100.7", 5070, connection=42),
        ),
        (
            "SIP/2.0/TLS phone.example.com;branch=z9hG4bK1",
            Flow("tls", SOURCE, connection=7),
            ResponseTarget("TLS", "phone.example.com", 5061, connection=7),
        ),
        (
            "SIP/2.0/WSS abc.invalid;branch=z9hG4bK1",
            None,
            ResponseTarget("WSS", "abc.invalid", 5061),
        ),
        # reliable Via but the flow is UDP (should not happen): no connection to reuse
        (
            "SIP/2.0/TCP 10.0.0.5;branch=z9hG4bK1",
            Flow("udp", SOURCE),
            ResponseTarget("TCP", "10.0.0.5", 5060),
        ),
        # maddr: multicast gets a TTL (default 1), unicast none
        (
            "SIP/2.0/UDP 10.0.0.5:5062;maddr=239.255.255.1;ttl=16;branch=z9hG4bK1",
            None,
            ResponseTarget("UDP", "239.255.255.1", 5062, ttl=16),
        ),
        (
            "SIP/2.0/UDP 10.0.0.5;maddr=224.0.1.75;branch=z9hG4bK1",
            None,
            ResponseTarget("UDP", "224.0.1.75", 5060, ttl=1),
        ),
        (
            "SIP/2.0/UDP 10.0.0.5;maddr=192.0.2.9;received=198.51.100.7;rport=9;branch=z9hG4bK1",
            None,
            ResponseTarget("UDP", "192.0.2.9", 5060),
        ),
        (
            "SIP/2.0/UDP 10.0.0.5;maddr=proxy.example.com;branch=z9hG4bK1",
            None,
            ResponseTarget("UDP", "proxy.example.com", 5060),
        ),
        # received + rport (RFC 3581)
        (
            "SIP/2.0/UDP 10.0.0.5:5060;received=198.51.100.7;rport=34567;branch=z9hG4bK1",
            Flow("udp", SOURCE),
            ResponseTarget("UDP", "198.51.100.7", 34567),
        ),
        # received without rport: the sent-by port (§18.2.2)
        (
            "SIP/2.0/UDP 10.0.0.5:5080;received=198.51.100.7;branch=z9hG4bK1",
            None,
            ResponseTarget("UDP", "198.51.100.7", 5080),
        ),
        # empty rport (not stamped) or an out-of-range one: the sent-by port
        (
            "SIP/2.0/UDP 10.0.0.5;received=198.51.100.7;rport;branch=z9hG4bK1",
            None,
            ResponseTarget("UDP", "198.51.100.7", 5060),
        ),
        (
            "SIP/2.0/UDP 10.0.0.5;received=198.51.100.7;rport=70000;branch=z9hG4bK1",
            None,
            ResponseTarget("UDP", "198.51.100.7", 5060),
        ),
        (
            "SIP/2.0/UDP 10.0.0.5;received=198.51.100.7;rport=0;branch=z9hG4bK1",
            None,
            ResponseTarget("UDP", "198.51.100.7", 5060),
        ),
        # IPv6 received, canonicalised
        (
            "SIP/2.0/UDP [2001:db8::5];received=2001:DB8:0:0::7;rport=5000;branch=z9hG4bK1",
            None,
            ResponseTarget("UDP", "2001:db8::7", 5000),
        ),
        # nothing stamped: sent-by host and port (§18.2.2 last rule)
        (
            "SIP/2.0/UDP [2001:db8::5]:5090;branch=z9hG4bK1",
            None,
            ResponseTarget("UDP", "2001:db8::5", 5090),
        ),
        (
            "SIP/2.0/UDP pbx.example.com;branch=z9hG4bK1",
            None,
            ResponseTarget("UDP", "pbx.example.com", 5060),
        ),
    ],
)
def test_response_target(via: str, flow: Flow | None, target: ResponseTarget) -> None:
    assert response_target(parse_via(via), flow) == target


def test_multicast_ttl_without_value_defaults_to_one() -> None:
    via = parse_via("SIP/2.0/UDP 10.0.0.5;maddr=[ff02::1];branch=z9hG4bK1")
    assert response_target(via) == ResponseTarget("UDP", "ff02::1", 5060, ttl=1)


@pytest.mark.parametrize(
    ("transport", "port"),
    [("UDP", 5060), ("udp", 5060), ("TCP", 5060), ("WS", 5060), ("TLS", 5061), ("wss", 5061)],
)
def test_default_port(transport: str, port: int) -> None:
    assert default_port(transport) == port


@given(
    private=st.ip_addresses(v=4),
    public=st.ip_addresses(v=4),
    port=st.integers(1, 65535),
    sent_port=st.integers(1, 65535),
)
def test_udp_response_returns_to_the_source_whatever_the_via_says(
    private: object, public: object, port: int, sent_port: int
) -> None:
    via = parse_via(f"SIP/2.0/UDP {private}:{sent_port};rport;branch=z9hG4bKx")
    stamped = stamp_via(via, (str(public), port))
    assert response_target(stamped) == ResponseTarget("UDP", str(public), port)
