"""Calls end under overload orderings, driven through the pure call manager with a fake clock.

At 900 calls/s callkeeper reads its socket seconds late: the caller's INVITE arrives
retransmitted, the callee retransmits its 200 (each one re-ACKed), our 2xx to the caller is
retransmitted because its ACK waits unread in the socket, and the BYE comes after all that.
Whatever order they come in, the call ends when either side's BYE arrives, and the other
leg's silence only costs its BYE transaction's timeout, never the call.
"""

from __future__ import annotations

from callkeeper.config import Config
from callkeeper.sip.message import Request, Response
from support.core_driver import CoreDriver

CALLER = ("127.0.0.1", 7001)
CALLEE = ("127.0.0.1", 7002)
SDP = "v=0\no=a 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0\n"
TIMER_F = 32.0  # 64·T1: a BYE nobody answers is given up by then


def make_driver() -> CoreDriver:
    config = Config(
        sip={"listen": ["udp:127.0.0.1:5060"], "trusted_sources": ["127.0.0.1"]},
        users=[{"name": "bob", "static_contacts": [f"sip:bob@{CALLEE[0]}:{CALLEE[1]}"]}],
    )
    return CoreDriver(config)


def invite() -> str:
    body = SDP.replace("\n", "\r\n")
    return (
        "INVITE sip:bob@127.0.0.1:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-inv\n"
        "Max-Forwards: 70\nFrom: <sip:alice@127.0.0.1>;tag=at\nTo: <sip:bob@127.0.0.1>\n"
        "Call-ID: ov-call@127.0.0.1\nCSeq: 1 INVITE\n"
        f"Contact: <sip:alice@{CALLER[0]}:{CALLER[1]}>\nContent-Type: application/sdp\n"
        f"Content-Length: {len(body)}\n\n"
    ) + SDP


def callee_response(request: Request, status: int) -> str:
    reason = {180: "Ringing", 200: "OK"}[status]
    body = SDP.replace("\n", "\r\n") if status == 200 and request.method == "INVITE" else ""
    lines = [
        f"SIP/2.0 {status} {reason}",
        f"Via: {request.headers.get('via')}",
        f"From: {request.headers.get('from')}",
        f"To: {request.headers.get('to')};tag=bt",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.headers.get('cseq')}",
        f"Contact: <sip:bob@{CALLEE[0]}:{CALLEE[1]}>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return "\n".join(lines) + "\n\n" + SDP * bool(body)


def caller_request(method: str, cseq: int, ok: Response) -> str:
    return (
        f"{method} sip:callkeeper@127.0.0.1:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-{method.lower()}\n"
        "Max-Forwards: 70\n"
        f"From: {ok.headers.get('from')}\nTo: {ok.headers.get('to')}\n"
        f"Call-ID: ov-call@127.0.0.1\nCSeq: {cseq} {method}\nContent-Length: 0\n\n"
    )


def callee_bye(b_invite: Request) -> str:
    """The callee hangs up: From and To of its side of the dialog, swapped."""
    return (
        f"BYE sip:callkeeper@127.0.0.1:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP {CALLEE[0]}:{CALLEE[1]};branch=z9hG4bK-callee-bye\n"
        "Max-Forwards: 70\n"
        f"From: {b_invite.headers.get('to')};tag=bt\nTo: {b_invite.headers.get('from')}\n"
        f"Call-ID: {b_invite.call_id}\nCSeq: 1 BYE\nContent-Length: 0\n\n"
    )


def answered_late(driver: CoreDriver) -> tuple[Response, Request]:
    """Set-up as an overloaded callkeeper sees it: the caller's INVITE twice, the callee's 200
    three times (re-ACKed each time), and our 200 to the caller retransmitted (no ACK yet)."""
    driver.receive(invite(), CALLER)
    driver.receive(invite(), CALLER)  # its retransmission, read in the same burst
    (b_invite,) = driver.requests(CALLEE, "INVITE")
    driver.receive(callee_response(b_invite, 180), CALLEE)
    for _ in range(3):
        driver.receive(callee_response(b_invite, 200), CALLEE)
    ok = [r for r in driver.responses(CALLER) if r.status == 200]
    assert len(ok) == 1
    driver.advance(1.6)  # T1 and 2·T1 pass with the ACK still unread in the socket
    assert len([r for r in driver.responses(CALLER) if r.status == 200]) == 2
    assert len(driver.core.b2bua) == 1
    return ok[0], b_invite


def bye_answered(driver: CoreDriver, to: tuple[str, int]) -> bool:
    return any(r.status == 200 and r.cseq.method == "BYE" for r in driver.responses(to))


def test_the_callers_late_bye_ends_the_call_although_the_callee_never_answers_its_bye() -> None:
    driver = make_driver()
    ok, _ = answered_late(driver)
    driver.receive(caller_request("ACK", 1, ok), CALLER)
    driver.receive(caller_request("BYE", 2, ok), CALLER)
    assert bye_answered(driver, CALLER)
    assert len(driver.core.b2bua) == 0  # ended at once, not when the callee answers
    assert driver.requests(CALLEE, "BYE")
    driver.advance(TIMER_F + 1)  # the callee (it aborted the call) never answers the BYE
    assert driver.core.transaction_count == 0
    assert len(driver.core.b2bua) == 0


def test_a_bye_before_the_ack_ends_the_call_and_stops_the_2xx_retransmissions() -> None:
    driver = make_driver()
    ok, _ = answered_late(driver)
    driver.receive(caller_request("BYE", 2, ok), CALLER)  # the ACK was lost
    assert bye_answered(driver, CALLER)
    assert len(driver.core.b2bua) == 0
    driver.take()
    driver.advance(TIMER_F + 1)
    assert not [r for r in driver.responses(CALLER) if r.cseq.method == "INVITE"]
    driver.receive(caller_request("ACK", 1, ok), CALLER)  # very late: nothing to do any more
    assert len(driver.core.b2bua) == 0


def test_the_callees_bye_ends_the_call_although_the_caller_never_answers_its_bye() -> None:
    driver = make_driver()
    ok, b_invite = answered_late(driver)
    driver.receive(caller_request("ACK", 1, ok), CALLER)
    driver.receive(callee_bye(b_invite), CALLEE)
    assert bye_answered(driver, CALLEE)
    assert len(driver.core.b2bua) == 0
    assert driver.requests(CALLER, "BYE")
    driver.advance(TIMER_F + 1)
    assert driver.core.transaction_count == 0
