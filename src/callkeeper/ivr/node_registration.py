"""The IVR node's registration with the call manager: RFC 5626 outbound REGISTER, Digest, and
the STUN keep-alives that tell the node its flow is alive.

One job: staying reachable. The node registers as a device of the IVR user with `Supported:
outbound`, its `+sip.instance` and `reg-id=1`, answers a 401/407 with Digest (once per nonce:
a wrong password does not loop), refreshes at half the granted lifetime, and sends a STUN
Binding request every 0.8 × Flow-Timer (§4.4.1). When `FLOW_LOST_INTERVALS` go unanswered the
flow is lost: the calls are let go (their checkpoints kept) and the node registers anew. Kept
apart from the calls (node_calls.py), which only borrow the node's Via and Contact from here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from callkeeper.ivr import node_commands as nc
from callkeeper.ivr import node_runner
from callkeeper.ivr.node_model import ALLOW
from callkeeper.sip.address import Address
from callkeeper.sip.digest import DigestError, answer_challenge, choose_challenge, parse_challenge
from callkeeper.sip.errors import ParseError
from callkeeper.sip.headers import Headers
from callkeeper.sip.message import Request, Response
from callkeeper.sip.transport import Transmit
from callkeeper.sip.uri import URI
from callkeeper.sip.via import MAGIC_COOKIE, Via

if TYPE_CHECKING:
    from callkeeper.ivr.node import IvrNode

KEEPALIVE_FACTOR = 0.8  # RFC 5626 §4.4.1: between 0.8 and 1.0 of Flow-Timer
FLOW_LOST_INTERVALS = 4  # keep-alive intervals without an answer before the flow is lost
REGISTER_RETRY = 5.0  # seconds between attempts after a failed REGISTER
NO_FLOW_TIMER_KEEPALIVE = 25.0  # keep-alive interval when the server sent no Flow-Timer
_STUN_BINDING_REQUEST = 0x0001
_STUN_MAGIC = 0x2112A442


@dataclass(slots=True)
class RegistrationState:
    """The node's REGISTER dialog and its keep-alive bookkeeping."""

    call_id: str
    tag: str
    cseq: int = 0
    transaction: int | None = None
    answered: str | None = None  # the nonce we last answered
    nonce_counts: dict[str, int] = field(default_factory=dict)
    keepalive_interval: float | None = None
    last_pong: float | None = None
    stun_seq: int = 0


def via(node: IvrNode) -> Via:
    host, port = node.settings.local
    return Via("UDP", host, port, (("rport", None), ("branch", MAGIC_COOKIE + node.ids())))


def contact_uri(node: IvrNode) -> URI:
    host, port = node.settings.local
    return URI("sip", user=node.settings.user, host=host, port=port)


def register_request(node: IvrNode, expires: int, authorization: tuple[str, str] | None) -> Request:
    settings = node.settings
    node.registration.cseq += 1
    aor = URI("sip", user=settings.user, host=settings.domain)
    contact = (
        Address(contact_uri(node).with_param("ob"))
        .with_param("+sip.instance", f'"{settings.instance}"')
        .with_param("reg-id", "1")
        .with_param("expires", str(expires))
    )
    headers = Headers()
    headers.add("Via", str(via(node)))
    headers.add("Max-Forwards", "70")
    headers.add("From", str(Address(aor).with_tag(node.registration.tag)))
    headers.add("To", str(Address(aor)))
    headers.add("Call-ID", node.registration.call_id)
    headers.add("CSeq", f"{node.registration.cseq} REGISTER")
    headers.add("Contact", str(contact))
    headers.add("Supported", "outbound, path")
    headers.add("Allow", ALLOW)
    headers.add("User-Agent", settings.user_agent)
    if authorization is not None:
        headers.add(*authorization)
    return Request("REGISTER", URI("sip", host=settings.domain), headers)


def register(node: IvrNode, now: float, authorization: tuple[str, str] | None = None) -> None:
    if node.registration.transaction is not None and authorization is None:
        return  # one REGISTER at a time
    request = register_request(node, node.expires, authorization)
    node.registration.transaction = node.endpoint.send_request(request, node.flow, now)
    node.requests[node.registration.transaction] = ("register", "")


def unregister(node: IvrNode, now: float) -> None:
    if node.registered_until is None:
        return
    request = register_request(node, 0, None)
    node.requests[node.endpoint.send_request(request, node.flow, now)] = ("unregister", "")
    node.registered_until = None
    node.timers.cancel(("keepalive", ""))
    node.timers.cancel(("register", ""))


def registration_answered(node: IvrNode, response: Response, now: float) -> None:
    node.registration.transaction = None
    status = response.status
    if status in (401, 407):
        authorization = authorization_for(node, response)
        if authorization is not None:
            register(node, now, authorization)
            return
        registration_failed(node, status, "credentials refused", now)
        return
    if status == 423:
        minimum = response.headers.get("min-expires") or ""
        if minimum.strip().isdigit():
            node.expires = int(minimum)
        register(node, now)
        return
    if not response.is_success:
        registration_failed(node, status, response.reason, now)
        return
    challenged = node.registration.answered is not None
    node.registration.answered = None
    expires = granted_expires(node, response)
    node.registered_until = now + expires
    node.timers.schedule(now + max(expires / 2, 1.0), ("register", ""))
    flow_timer = response.headers.get("flow-timer")
    node.flow_timer = int(flow_timer) if flow_timer and flow_timer.strip().isdigit() else None
    interval = KEEPALIVE_FACTOR * node.flow_timer if node.flow_timer else NO_FLOW_TIMER_KEEPALIVE
    if node.registration.keepalive_interval != interval or ("keepalive", "") not in node.timers:
        node.registration.keepalive_interval = interval
        node.timers.schedule(now + interval, ("keepalive", ""))
    node.registration.last_pong = now
    node.events.append(nc.Registered(expires, node.flow_timer, challenged))


def granted_expires(node: IvrNode, response: Response) -> int:
    ours = contact_uri(node)
    for contact in response_contacts(response):
        if contact.uri.host == ours.host and contact.uri.port == ours.port:
            value = contact.param("expires")
            if value is not None and value.isdigit():
                return int(value)
    header = response.headers.get("expires")
    if header is not None and header.strip().isdigit():
        return int(header)
    return node.expires


def registration_failed(node: IvrNode, status: int, reason: str, now: float) -> None:
    node.registration.answered = None
    node.events.append(nc.RegistrationFailed(status, reason, REGISTER_RETRY))
    node.timers.schedule(now + REGISTER_RETRY, ("register", ""))


def authorization_for(node: IvrNode, response: Response) -> tuple[str, str] | None:
    """The Authorization answering a 401/407, or None when it would be answered again with
    the very challenge we already answered (wrong password: do not loop)."""
    proxy = response.status == 407
    lines = response.headers.get_lines("proxy-authenticate" if proxy else "www-authenticate")
    value = choose_challenge(lines)
    password = node.settings.password
    if value is None or password is None:
        return None
    try:
        challenge = parse_challenge(value)
    except DigestError:
        return None
    if challenge.nonce == node.registration.answered and not challenge.stale:
        return None
    node.registration.answered = challenge.nonce
    count = node.registration.nonce_counts.get(challenge.nonce, 0) + 1
    node.registration.nonce_counts = {challenge.nonce: count}  # only the current nonce matters
    uri = str(URI("sip", host=node.settings.domain))
    answer = answer_challenge(
        value, "REGISTER", uri, node.settings.user, password, cnonce=node.ids(), nc=count
    )
    return ("Proxy-Authorization" if proxy else "Authorization", answer)


def keepalive(node: IvrNode, now: float) -> None:
    interval = node.registration.keepalive_interval
    if interval is None:
        return
    silent = now - (node.registration.last_pong if node.registration.last_pong is not None else now)
    if silent > FLOW_LOST_INTERVALS * interval:
        flow_lost(node, silent, now)
        return
    node.registration.stun_seq += 1
    transaction = (node.ids().encode()[-8:].rjust(8, b"0")) + struct.pack(
        "!I", node.registration.stun_seq
    )
    stun = struct.pack("!HHI", _STUN_BINDING_REQUEST, 0, _STUN_MAGIC) + transaction
    node.commands.append(Transmit(node.flow, stun))
    node.timers.schedule(now + interval, ("keepalive", ""))


def flow_lost(node: IvrNode, silent: float, now: float) -> None:
    node.events.append(nc.FlowLost(silent, len(node.calls)))
    for call in list(node.calls.values()):
        node_runner.end(node, call, now, "flow to the call manager lost", delete=False)
    node.registration.last_pong = now
    node.registration.keepalive_interval = None
    node.registered_until = None
    node.registration.transaction = None
    register(node, now)


def response_contacts(response: Response) -> list[Address]:
    try:
        return response.contacts
    except ParseError:
        return []
