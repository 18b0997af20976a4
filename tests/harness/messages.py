"""Small builders of SIP requests for tests, written as wire text and parsed back.

Going through `parse_message` on purpose: the layer under test then sees messages exactly as
the io driver will hand them over, headers cached lazily and all.
"""

from __future__ import annotations

from callkeeper.sip.message import Request, Response
from callkeeper.sip.parser import parse_message


def build_request(
    method: str,
    *,
    branch: str | None = "z9hG4bK-test-1",
    uri: str = "sip:bob@b.example.com",
    via_host: str = "10.0.0.1",
    via_port: int | None = 5060,
    transport: str = "UDP",
    from_tag: str | None = "from-1",
    to_tag: str | None = None,
    call_id: str = "call-1@a.example.com",
    cseq: int = 1,
    cseq_method: str | None = None,
    extra: tuple[str, ...] = (),
    body: bytes = b"",
) -> Request:
    """A parsed request; `branch=None` makes an RFC 2543 style Via without a branch."""
    sent_by = via_host if via_port is None else f"{via_host}:{via_port}"
    via = f"SIP/2.0/{transport} {sent_by}" + (f";branch={branch}" if branch else "")
    from_value = "<sip:alice@a.example.com>" + (f";tag={from_tag}" if from_tag else "")
    to_value = "<sip:bob@b.example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: {from_value}",
        f"To: {to_value}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        *extra,
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    message = parse_message("\r\n".join(lines).encode() + body)
    assert isinstance(message, Request)
    return message


def reparse(message: Request | Response) -> Request | Response:
    """The message as the peer would parse it off the wire."""
    parsed = parse_message(message.to_bytes())
    assert isinstance(parsed, Request | Response)
    return parsed


def build_2xx_ack(invite: Request, response: Response, branch: str) -> Request:
    """The UAC core's ACK for a 2xx (RFC 3261 §13.2.2.4): a new branch, To from the 2xx."""
    via = invite.top_via
    sent_by = via.host if via.port is None else f"{via.host}:{via.port}"
    lines = [
        f"ACK {invite.uri} SIP/2.0",
        f"Via: SIP/2.0/{via.transport} {sent_by};branch={branch}",
        "Max-Forwards: 70",
        f"From: {invite.headers.get('from')}",
        f"To: {response.headers.get('to')}",
        f"Call-ID: {invite.call_id}",
        f"CSeq: {invite.cseq.number} ACK",
        "Content-Length: 0",
        "",
        "",
    ]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Request)
    return message
