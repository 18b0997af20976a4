"""The SIP endpoint and the element policy, driven in memory: keep-alives, STUN, stateless
OPTIONS, 405/501/420/483/482/481, malformed input answered or dropped, stream items."""

from __future__ import annotations

import struct

from callkeeper.config import Config
from callkeeper.sip.errors import MessageTooLarge, ParseError
from callkeeper.sip.message import Response
from callkeeper.sip.parser import FramingError, KeepAlivePing, KeepAlivePong, parse_message
from callkeeper.sip.transport import CloseFlow, Flow, Transmit
from support.core_driver import SERVER, CoreDriver

PEER = ("127.0.0.1", 6001)


def driver() -> CoreDriver:
    return CoreDriver(
        Config(sip={"listen": ["udp:127.0.0.1:5060"], "trusted_sources": ["127.0.0.1"]})
    )


def request(method: str, extra: str = "", to_tag: str = "", uri: str = "sip:127.0.0.1:5060") -> str:
    tag = f";tag={to_tag}" if to_tag else ""
    return (
        f"{method} {uri} SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bK-{method}-{to_tag}\n"
        f"Max-Forwards: 70\nFrom: <sip:a@127.0.0.1>;tag=f1\nTo: <sip:b@127.0.0.1>{tag}\n"
        f"Call-ID: core-{method}@x\nCSeq: 1 {method}\n{extra}Content-Length: 0\n\n"
    )


def only_response(d: CoreDriver) -> Response:
    responses = [r for r in d.responses(PEER) if r.status >= 200]
    assert len(responses) == 1, responses
    return responses[0]


def test_options_is_answered_statelessly_with_capabilities() -> None:
    d = driver()
    d.receive(request("OPTIONS"), PEER)
    response = only_response(d)
    assert response.status == 200
    assert "INVITE" in (response.headers.get("allow") or "")
    assert response.headers.get("accept") and response.headers.get("supported")
    assert d.core.transaction_count == 0  # no state kept for a probe


def test_unknown_method_501_and_known_unsupported_405() -> None:
    for method, status in (("FOO", 501), ("PUBLISH", 405)):
        d = driver()
        d.receive(request(method), PEER)
        response = only_response(d)
        assert response.status == status and response.headers.get("allow")


def test_unsupported_require_420_also_for_options() -> None:
    d = driver()
    d.receive(request("OPTIONS", "Require: foo\n"), PEER)
    response = only_response(d)
    assert response.status == 420 and response.headers.get("unsupported") == "foo"
    d.receive(request("INVITE", "Require: bar\nContact: <sip:a@127.0.0.1:6001>\n"), PEER)
    assert only_response(d).status == 420


def test_max_forwards_zero_is_483_and_in_dialog_request_without_dialog_481() -> None:
    d = driver()
    d.receive(
        request("INVITE", "Contact: <sip:a@127.0.0.1>\n").replace(
            "Max-Forwards: 70", "Max-Forwards: 0"
        ),
        PEER,
    )
    assert only_response(d).status == 483
    d.receive(request("BYE", to_tag="x"), PEER)
    assert only_response(d).status == 481
    d.receive(request("BYE"), PEER)  # no To tag: a BYE outside any dialog
    assert only_response(d).status == 481
    d.receive(request("SUBSCRIBE", "Event: presence\n"), PEER)
    assert only_response(d).status == 489


def test_malformed_request_is_answered_400_and_unanswerable_dropped() -> None:
    d = driver()
    d.receive(request("OPTIONS").replace("Max-Forwards: 70", "Max-Forwards: many"), PEER)
    response = only_response(d)
    assert response.status == 400 and "399" in (response.headers.get("warning") or "")
    d.receive(request("OPTIONS").replace("From: <sip:a@127.0.0.1>;tag=f1\n", ""), PEER)
    assert not d.take()  # no From: nobody could match an answer
    assert d.core.sip_stats.dropped["unanswerable"] == 1
    d.receive(request("ACK").replace("CSeq: 1 ACK", "CSeq: y ACK"), PEER)
    assert not d.take() and d.core.sip_stats.dropped["malformed-ack"] == 1
    d.core.receive_datagram(b"\x80\x00garbage", Flow("udp", PEER, SERVER), d.now)
    assert d.core.sip_stats.dropped["not-sip"] == 1
    d.core.receive_datagram(b"NOT SIP AT ALL", Flow("udp", PEER, SERVER), d.now)
    assert d.core.sip_stats.dropped["unparseable"] == 1


def test_stun_binding_and_udp_crlf_keepalive() -> None:
    d = driver()
    transaction_id = bytes(range(12))
    stun = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + transaction_id
    d.core.receive_datagram(stun, Flow("udp", PEER, SERVER), d.now)
    command = d.core.next_command()
    assert isinstance(command, Transmit) and command.data[:2] == b"\x01\x01"
    d.core.receive_datagram(b"\r\n\r\n", Flow("udp", PEER, SERVER), d.now)
    assert d.core.next_command() is None  # nothing to answer on UDP
    assert d.core.sip_stats.keepalives["stun"] == 1 and d.core.sip_stats.keepalives["udp-crlf"] == 1


def test_stream_items() -> None:
    d = driver()
    flow = Flow("tcp", PEER, SERVER, connection=7)
    d.core.receive_stream_item(KeepAlivePing(), flow, d.now)
    assert d.core.next_command() == Transmit(flow, b"\r\n")
    d.core.receive_stream_item(KeepAlivePong(), flow, d.now)
    assert d.core.next_command() is None
    d.core.receive_stream_item(ParseError("one bad response"), flow, d.now)
    assert d.core.next_command() is None  # framing intact: keep the connection
    for broken in (FramingError("bad Content-Length"), MessageTooLarge("too big")):
        d.core.receive_stream_item(broken, flow, d.now)
        assert d.core.next_command() == CloseFlow(flow)
    message = parse_message(request("OPTIONS").replace("\n", "\r\n").replace("UDP", "TCP").encode())
    d.core.receive_stream_item(message, flow, d.now)
    command = d.core.next_command()
    assert isinstance(command, Transmit) and command.flow == flow  # answered on the connection
    d.core.connection_lost(flow, d.now)


def test_invite_to_unknown_user_404_and_loop_482() -> None:
    d = driver()
    d.receive(
        request("INVITE", "Contact: <sip:a@127.0.0.1:6001>\n", uri="sip:nobody@127.0.0.1"), PEER
    )
    assert only_response(d).status == 404
