"""RFC 4028 session timers on both legs, driven through the pure call manager with a fake clock."""

from __future__ import annotations

import pytest

from callkeeper.config import Config
from callkeeper.sip.message import Request, Response
from support.core_driver import CoreDriver

CALLER = ("127.0.0.1", 7001)
CALLEE = ("127.0.0.1", 7002)
SDP = "v=0\no=a 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0\n"


def make_driver() -> CoreDriver:
    config = Config(
        sip={"listen": ["udp:127.0.0.1:5060"], "trusted_sources": ["127.0.0.1"]},
        users=[{"name": "bob", "static_contacts": [f"sip:bob@{CALLEE[0]}:{CALLEE[1]}"]}],
    )
    return CoreDriver(config)


def invite(session_expires: str) -> str:
    body = SDP.replace("\n", "\r\n")
    return (
        "INVITE sip:bob@127.0.0.1:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-a1;rport\n"
        "Max-Forwards: 70\nFrom: <sip:alice@127.0.0.1>;tag=at\nTo: <sip:bob@127.0.0.1>\n"
        "Call-ID: st-call@127.0.0.1\nCSeq: 1 INVITE\n"
        f"Contact: <sip:alice@{CALLER[0]}:{CALLER[1]}>\nSupported: timer\nAllow: INVITE, ACK, BYE, UPDATE\n"
        f"Session-Expires: {session_expires}\nContent-Type: application/sdp\n"
        f"Content-Length: {len(body)}\n\n"
    ) + SDP


def answer(request: Request, session_expires: str | None, allow_update: bool = True) -> str:
    lines = [
        "SIP/2.0 200 OK",
        f"Via: {request.headers.get('via')}",
        f"From: {request.headers.get('from')}",
        f"To: {request.headers.get('to')};tag=bt",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.headers.get('cseq')}",
        f"Contact: <sip:bob@{CALLEE[0]}:{CALLEE[1]}>",
        "Allow: INVITE, ACK, BYE" + (", UPDATE" if allow_update else ""),
    ]
    if session_expires:
        lines.append(f"Session-Expires: {session_expires}")
    body = SDP.replace("\n", "\r\n") if request.method == "INVITE" else ""
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return "\n".join(lines) + "\n\n" + SDP * bool(body)


def ack_for(response: Response) -> str:
    return (
        "ACK sip:callkeeper@127.0.0.1:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-a2\n"
        "Max-Forwards: 70\n"
        f"From: {response.headers.get('from')}\nTo: {response.headers.get('to')}\n"
        "Call-ID: st-call@127.0.0.1\nCSeq: 1 ACK\nContent-Length: 0\n\n"
    )


def establish(
    driver: CoreDriver, caller_se: str, callee_se: str | None, allow_update: bool = True
) -> tuple[Response, Request]:
    driver.receive(invite(caller_se), CALLER)
    (b_invite,) = driver.requests(CALLEE, "INVITE")
    assert b_invite.headers.get("session-expires") == caller_se.split(";")[0]
    driver.receive(answer(b_invite, callee_se, allow_update), CALLEE)
    ok = [r for r in driver.responses(CALLER) if r.status == 200]
    assert len(ok) == 1
    driver.receive(ack_for(ok[0]), CALLER)
    assert driver.requests(CALLEE, "ACK")
    return ok[0], b_invite


def test_caller_refreshes_callee_refreshes_nobody_does_then_both_legs_get_bye() -> None:
    driver = make_driver()
    ok, _ = establish(driver, "120;refresher=uac", "120;refresher=uas")
    assert ok.headers.get("session-expires") == "120;refresher=uac"
    assert "timer" in (ok.headers.get("require") or "")
    driver.advance(120 - 32 - 1)
    assert not driver.requests(CALLER, "BYE") and not driver.requests(CALLEE, "BYE")
    driver.advance(2)  # past interval - min(32, interval/3): no refresh came
    sent = driver.take()
    byes = {
        (m.call_id, m.cseq.number) for m in sent if isinstance(m, Request) and m.method == "BYE"
    }
    assert len(byes) == 2  # one BYE per leg (UDP retransmissions of them aside)
    assert len(driver.core.b2bua) == 0


@pytest.mark.parametrize("allow_update", [True, False])
def test_we_refresh_the_callee_leg_at_half_the_interval(allow_update: bool) -> None:
    driver = make_driver()
    establish(driver, "180;refresher=uas", "180;refresher=uac", allow_update)
    driver.advance(89)
    assert not driver.take(CALLEE)
    driver.advance(2)
    sent = [m for m in driver.take(CALLEE) if isinstance(m, Request)]
    method = "UPDATE" if allow_update else "INVITE"
    assert {m.method for m in sent} == {method}  # the request, and its UDP retransmissions
    assert sent[0].headers.get("session-expires") == "180;refresher=uac"
    assert len(driver.core.b2bua) == 1  # the call goes on


def test_interval_below_min_se_gets_422() -> None:
    driver = make_driver()
    driver.receive(invite("30"), CALLER)
    (response,) = [r for r in driver.responses(CALLER) if r.status >= 200]
    assert response.status == 422 and response.headers.get("min-se") == "90"
    assert not driver.requests(CALLEE, "INVITE")
