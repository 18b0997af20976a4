"""Requests inside an established call's dialogs, relayed from one leg to the other.

One job: the in-dialog traffic between the legs (re-INVITE, UPDATE, INFO, NOTIFY, REFER ...)
and its answers. A request is checked against its dialog, offered to the recovery engine
(which may take it), and otherwise sent on the other leg's dialog with only the headers that
mean something end to end; its final response comes back as the answer to the original. A BYE
ends the call; a re-INVITE that meets another INVITE in flight is refused with 491 (glare). A
successful re-INVITE/UPDATE refreshes both legs' session timers (session_refresh.py). The
2xx of a relayed re-INVITE is retransmitted until ACKed by the B2BUA (b2bua.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callkeeper.calls import session_refresh, session_timer
from callkeeper.calls.forking import FAILURE_MAP
from callkeeper.calls.model import Call, CallState, Leg, Relay
from callkeeper.sip.dialog import DialogId, DialogState
from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Request, Response

if TYPE_CHECKING:
    from callkeeper.calls.b2bua import B2BUA

# Headers of an in-dialog request that mean something end to end, so they cross the B2BUA.
RELAYED_HEADERS = frozenset(
    {
        "event",
        "subscription-state",
        "refer-to",
        "referred-by",
        "content-disposition",
        "info-package",
        "recv-info",
        "subject",
        "priority",
        "session-expires",
        "min-se",
        "allow-events",
        "accept",
    }
)


def receive(b2bua: B2BUA, request: Request, transaction_id: int, now: float) -> None:
    """A request inside one of our dialogs (not ACK): check it, then relay or act."""
    try:
        entry = b2bua.by_dialog.get(DialogId.of_request(request))
    except ParseError:
        entry = None
    if entry is None:
        b2bua.reply(request, transaction_id, 481, now)
        return
    call, leg = entry
    assert leg.dialog is not None
    rejected = leg.dialog.receive_request(request)
    if rejected is not None:
        b2bua.reply(request, transaction_id, rejected, now)
        return
    if b2bua.hooks is not None and b2bua.hooks.in_dialog(call, leg, request, transaction_id, now):
        return
    if request.method == "BYE":
        b2bua.reply(request, transaction_id, 200, now)
        b2bua.hang_up(call, leg, now)
        return
    other = call.other(leg)
    if other is None or other.dialog is None or other.dialog.state is not DialogState.CONFIRMED:
        # The other side is not reachable inside a dialog (yet): nothing to relay to.
        status = 491 if request.method == "INVITE" else 481
        b2bua.reply(request, transaction_id, status, now)
        return
    if request.method == "INVITE" and (
        call.unacked_response is not None or _has_pending_invite(b2bua, call)
    ):
        b2bua.reply(request, transaction_id, 491, now)  # glare (RFC 3261 §14.2)
        return
    _relay(b2bua, call, leg, other, request, transaction_id, now)


def _relay(
    b2bua: B2BUA,
    call: Call,
    from_leg: Leg,
    to_leg: Leg,
    request: Request,
    server_txn: int,
    now: float,
) -> None:
    assert to_leg.dialog is not None
    extra = [(name, value) for name, value in request.headers if name.lower() in RELAYED_HEADERS]
    content_type = request.headers.get("content-type") if request.body else None
    body = request.body
    if request.has_sdp:
        body = b2bua.sdp_to(call, from_leg, to_leg, body)
    outgoing = to_leg.dialog.create_request(
        request.method,
        b2bua.local.via(to_leg.flow),
        body=body,
        content_type=content_type,
        headers=extra,
    )
    if request.method == "INVITE" and request.has_sdp:
        from_leg.remote_sdp = request.body
        to_leg.local_sdp = body
    client_txn = b2bua.endpoint.send_request(outgoing, to_leg.flow, now)
    b2bua.relays[client_txn] = Relay(call, from_leg, to_leg, server_txn, request)


def _has_pending_invite(b2bua: B2BUA, call: Call) -> bool:
    return any(r.call is call and r.request.method == "INVITE" for r in b2bua.relays.values())


def relay_final(b2bua: B2BUA, relay: Relay, response: Response, now: float) -> None:
    """The final response to a relayed request (a timeout comes as a 408): answer the original."""
    call, from_leg, to_leg = relay.call, relay.from_leg, relay.to_leg
    if to_leg.dialog is not None:
        to_leg.dialog.receive_response(response)
    if call.state is CallState.ENDED:
        return
    status = FAILURE_MAP.get(response.status, response.status)
    if status in (408, 481):
        # Only the far leg is gone; 408/481 would make this side end its dialog too
        # (RFC 3261 §12.2.1.2) while the call is being recovered or ended with a BYE.
        status = 480
    answer = relay.request.create_response(
        status, response.reason if status == response.status else None
    )
    method = relay.request.method
    if response.body:
        answer.headers.add(
            "Content-Type", response.headers.get("content-type") or "application/sdp"
        )
        answer.body = response.body
        if response.has_sdp:
            answer.body = b2bua.sdp_to(call, to_leg, from_leg, response.body)
    for name, value in response.headers:
        if name.lower() in ("session-expires", "require", "event", "allow-events"):
            answer.headers.add(name, value)
    if 200 <= status < 300 and method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
        answer.headers.add("Contact", str(b2bua.local.contact(from_leg.flow)))
    if method in ("INVITE", "UPDATE") and 200 <= status < 300:
        # A successful re-INVITE/UPDATE refreshes the session on both legs (RFC 4028 §10).
        renegotiated = session_timer.negotiate_as_uac(response)
        if renegotiated is not None:
            to_leg.session_timer = renegotiated
        session_refresh.arm(b2bua, call, to_leg, now)
        session_refresh.arm(b2bua, call, from_leg, now)
        b2bua.changed_calls.append(call.id)  # new SDP, maybe a new remote target: save again
    if method == "INVITE" and 200 <= status < 300:
        if response.has_sdp:
            to_leg.remote_sdp = response.body
            from_leg.local_sdp = answer.body
        b2bua.expect_ack(call, from_leg, to_leg, answer, now)
    b2bua.endpoint.send_response(answer, now, relay.server_transaction)
    if response.status == 481 and to_leg.dialog is not None:
        # The far side lost its dialog: the call is broken on that leg.
        b2bua.leg_broke(call, to_leg, now, "481 on a relayed request", dialog_lost=True)
