"""Hand-written calls for the pure call manager (`CoreDriver`): alice at CALLER calls bob, a
static contact at CALLEE, through callkeeper."""

from __future__ import annotations

from typing import Any

from callkeeper.config import Config
from callkeeper.sip.message import Request, Response
from support.core_driver import CoreDriver

CALLER = ("127.0.0.1", 7001)
CALLEE = ("127.0.0.1", 7002)
SDP = "v=0\no=a 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0\n"
TIMER_F = 32.0  # 64·T1: a request nobody answers is given up by then


def make_driver(id_prefix: str = "t", **sections: Any) -> CoreDriver:
    """alice calls from a trusted source (not monitored); bob is a static contact (monitored).
    Another `id_prefix` stands for another callkeeper process (a restart)."""
    config = Config(
        sip={"listen": ["udp:127.0.0.1:5060"], "trusted_sources": ["127.0.0.1"]},
        users=[{"name": "bob", "static_contacts": [f"sip:bob@{CALLEE[0]}:{CALLEE[1]}"]}],
        **sections,
    )
    return CoreDriver(config, id_prefix=id_prefix)


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


def reply(request: Request, status: int) -> str:
    """A phone's bodiless answer to a request callkeeper sent it (To already tagged in-dialog)."""
    return (
        f"SIP/2.0 {status} Whatever\n"
        f"Via: {request.headers.get('via')}\n"
        f"From: {request.headers.get('from')}\nTo: {request.headers.get('to')}\n"
        f"Call-ID: {request.call_id}\nCSeq: {request.headers.get('cseq')}\n"
        "Content-Length: 0\n\n"
    )
