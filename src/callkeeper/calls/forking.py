"""Call set-up: the caller's INVITE forked to the callee's contacts, the forks' answers relayed.

One job: from the A leg's INVITE to its final response. One INVITE per contact of the callee
goes out in parallel (we are their UAC); provisional responses reach the caller as they come
(early media included); the first 2xx wins and becomes the B leg, the other forks are
CANCELled, and a 2xx that still arrives from one of them is ACKed and BYEd. When every fork
failed, the caller gets the best of their failures (RFC 3261 §16.7).

A fork to a host name with several addresses (SRV targets, A records) fails over to the next
one (RFC 3263 §4.3, `_fail_over`) when the current one is unavailable: it answers 503, the
transport fails, or Timer B fires before it sent any response at all. Any other final response,
and a 503 after it rang (a provisional above 100), are its answer: the callee was reached.

Kept apart from the B2BUA (b2bua.py), which owns the calls and dispatches to here, and from
what happens once the call is up (in_dialog_relay.py, session_refresh.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callkeeper.calls import session_refresh, session_timer
from callkeeper.calls.dialing import SESSION_HEADER, build_invite, new_call_id, retarget_invite
from callkeeper.calls.events import CallAnswered
from callkeeper.calls.model import Call, CallState, Leg, LegState
from callkeeper.sip.address import Address
from callkeeper.sip.capabilities import ALLOW, SUPPORTED
from callkeeper.sip.dialog import Dialog, DialogError, DialogId
from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Request, Response
from callkeeper.sip.transaction_messages import build_cancel
from callkeeper.sip.uri import URI

if TYPE_CHECKING:
    from callkeeper.calls.b2bua import B2BUA, CallTarget, Contact

# The caller learns why the callee could not be reached; codes a caller cannot act on are
# mapped to what a caller understands (RFC 3261 §16.7 steps 6 and 7 for proxies, in spirit).
FAILURE_MAP = {401: 480, 407: 480, 503: 480, 300: 480, 301: 480, 302: 480, 305: 480, 380: 480}


def reject(
    b2bua: B2BUA, request: Request, transaction_id: int, status: int, now: float, warning: str = ""
) -> None:
    """Refuse the caller's INVITE before any fork went out (`warning` says why, in a Warning)."""
    response = request.create_response(status, to_tag=b2bua.ids())
    if warning:
        text = "".join(ch for ch in warning if ch.isprintable() and ch not in '"\\')[:120]
        response.headers.add("Warning", f'399 {b2bua.user_agent} "{text}"')
    b2bua.endpoint.send_response(response, now, transaction_id)


def fork_to(
    b2bua: B2BUA,
    call: Call,
    a_invite: Request,
    target: CallTarget,
    caller: str | None,
    now: float,
) -> None:
    """Send the caller's INVITE to every contact of `target`, from the caller's name at our
    domain."""
    max_forwards = _max_forwards(a_invite) - 1
    from_address = Address(
        URI("sip", user=caller or a_invite.from_addr.uri.user, host=b2bua.local.domain),
        a_invite.from_addr.display_name,
    )
    for contact in target.contacts:
        _fork(b2bua, call, a_invite, contact, target, from_address, max_forwards, now)


def _fork(
    b2bua: B2BUA,
    call: Call,
    a_invite: Request,
    contact: Contact,
    target: CallTarget,
    from_address: Address,
    max_forwards: int,
    now: float,
) -> None:
    fork = Leg(
        id=b2bua.ids(),
        is_caller=False,
        flow=contact.flow,
        user=contact.user,
        endpoint=contact.endpoint,
        local_tag=b2bua.ids(),
        alternates=contact.alternates,
    )
    call_id = new_call_id(b2bua.ids)
    headers: list[tuple[str, str]] = []
    asked = session_timer.parse_session_expires(a_invite)
    if asked is not None:
        # Offer the caller's interval to the callee; each leg settles its own refresher.
        headers.append(("Session-Expires", str(asked[0])))
        headers.append(("Min-SE", str(session_timer.min_se(a_invite))))
    for name in ("subject", "priority", "alert-info", "call-info"):
        value = a_invite.headers.get(name)
        if value is not None:
            headers.append((name.title(), value))
    body = a_invite.body
    if a_invite.has_sdp:
        body = b2bua.sdp_to(call, call.a, fork, body)
    if body:
        fork.local_sdp = body
    invite = build_invite(
        b2bua.local,
        b2bua.ids,
        uri=contact.uri,
        flow=contact.flow,
        from_address=from_address.with_tag(fork.local_tag),
        to_uri=target.to_uri,
        call_id=call_id,
        user_agent=b2bua.user_agent,
        body=body,
        content_type=a_invite.headers.get("content-type") or "application/sdp",
        max_forwards=max_forwards,
        headers=headers,
    )
    fork.invite = invite
    fork.call_id = call_id
    call.forks.append(fork)
    b2bua.own_call_ids[call_id] = call
    transaction_id = b2bua.endpoint.send_request(invite, contact.flow, now)
    fork.invite_transaction = transaction_id
    b2bua.forks[transaction_id] = (call, fork)


def fork_response(b2bua: B2BUA, call: Call, fork: Leg, response: Response, now: float) -> None:
    """A response to one fork's INVITE from the wire."""
    status = response.status
    if status < 200:
        fork.provisional = max(fork.provisional, status)
        if status > 100:
            _provisional(b2bua, call, fork, response, now)
    elif status < 300:
        _success(b2bua, call, fork, response, now)
    else:
        if status == 503:
            _rest_target(b2bua, fork, response, now)
            if fork.provisional <= 100 and _fail_over(b2bua, call, fork, now):
                return
        _failure(b2bua, call, fork, response, now)


def fork_timed_out(b2bua: B2BUA, call: Call, fork: Leg, now: float) -> None:
    """Timer B fired: the next address if this one never answered at all (RFC 3263 §4.3), else
    a 408. A 100 Trying means a server took the INVITE on: asking another could ring twice."""
    if fork.provisional == 0 and _fail_over(b2bua, call, fork, now):
        return
    assert fork.invite is not None
    _failure(b2bua, call, fork, fork.invite.create_response(408), now)


def fork_unreachable(b2bua: B2BUA, call: Call, fork: Leg, now: float) -> None:
    """The transport failed (ICMP error, TCP connect refused): the next address unless this one
    already rang, else a 503 as RFC 3261 §8.1.3.1 has the TU treat it."""
    if fork.provisional <= 100 and _fail_over(b2bua, call, fork, now):
        return
    assert fork.invite is not None
    _failure(b2bua, call, fork, fork.invite.create_response(503), now)


def _fail_over(b2bua: B2BUA, call: Call, fork: Leg, now: float) -> bool:
    """Send the fork's INVITE to its next address as a new client transaction; False when
    there is none or the fork is no longer wanted (cancelled, or another fork answered)."""
    if (
        not fork.alternates
        or fork.cancelled
        or fork.invite is None
        or call.state is not CallState.SETUP
        or call.b is not None
    ):
        return False
    flow, fork.alternates = fork.alternates[0], fork.alternates[1:]
    if fork.invite_transaction is not None:
        # The old transaction ends on its own (it ACKs a retransmitted 503); it no longer
        # speaks for this fork.
        b2bua.forks.pop(fork.invite_transaction, None)
    fork.invite = retarget_invite(b2bua.local, b2bua.ids, fork.invite, flow)
    fork.flow = flow
    fork.provisional = 0
    fork.state = LegState.TRYING
    b2bua.dns_failovers += 1
    fork.invite_transaction = b2bua.endpoint.send_request(fork.invite, flow, now)
    b2bua.forks[fork.invite_transaction] = (call, fork)
    return True


def _rest_target(b2bua: B2BUA, fork: Leg, response: Response, now: float) -> None:
    """A 503 with Retry-After: the server asks not to be sent requests for that long (RFC 3261
    §21.5.4); new calls try its address last until then."""
    value = (response.headers.get("retry-after") or "").strip()
    digits = value[: len(value) - len(value.lstrip("0123456789"))]
    if digits and b2bua.rest_target is not None:
        b2bua.rest_target(fork.flow.remote, float(digits), now)


def _provisional(b2bua: B2BUA, call: Call, fork: Leg, response: Response, now: float) -> None:
    if call.state is not CallState.SETUP or fork.cancelled:
        return
    if response.to_addr.tag and fork.invite is not None:
        if fork.dialog is None:
            try:
                fork.dialog = Dialog.create_uac(fork.invite, response, b2bua.ids)
            except DialogError:
                fork.dialog = None
        else:
            fork.dialog.receive_response(response)
    fork.state = LegState.EARLY
    if response.has_sdp:
        fork.remote_sdp = response.body
    a = call.a
    assert a.invite is not None and a.invite_transaction is not None
    relayed = a.invite.create_response(response.status, response.reason, to_tag=a.local_tag)
    relayed.headers.add("Contact", str(b2bua.local.contact(a.flow)))
    if response.has_sdp:
        relayed.headers.add("Content-Type", "application/sdp")
        relayed.body = b2bua.sdp_to(call, fork, a, response.body)
        a.local_sdp = relayed.body
        if b2bua.media is not None:
            b2bua.media.connect(a, fork)  # early media: ringback, announcements
    if a.dialog is not None:
        a.dialog.send_response(relayed)
    a.state = LegState.EARLY
    b2bua.endpoint.send_response(relayed, now, a.invite_transaction)


def _success(b2bua: B2BUA, call: Call, fork: Leg, response: Response, now: float) -> None:
    if fork is call.b:
        # A retransmitted 2xx: our ACK was lost; send it again (§13.2.2.4).
        if fork.ack is not None:
            b2bua.endpoint.send_stateless(fork.ack, fork.flow)
        return
    if call.state is not CallState.SETUP or call.b is not None or fork.cancelled:
        ack_and_bye(b2bua, fork, response, now)
        return
    assert fork.invite is not None
    try:
        if fork.dialog is not None and fork.dialog.id == DialogId.of_response(response):
            fork.dialog.receive_response(response)
        else:
            fork.dialog = Dialog.create_uac(fork.invite, response, b2bua.ids)
    except (DialogError, ParseError):
        ack_and_bye(b2bua, fork, response, now)
        return
    fork.state = LegState.CONFIRMED
    fork.remote_sdp = response.body if response.has_sdp else fork.remote_sdp
    fork.session = response.headers.get(SESSION_HEADER)
    call.b = fork
    b2bua.by_dialog[fork.dialog.id] = (call, fork)
    for other in call.forks:
        if other is not fork:
            cancel_fork(b2bua, other, now)
    a = call.a
    assert a.invite is not None and a.invite_transaction is not None
    answer = a.invite.create_response(200, to_tag=a.local_tag)
    headers = answer.headers
    headers.add("Contact", str(b2bua.local.contact(a.flow)))
    headers.add("Allow", ALLOW)
    headers.add("Supported", SUPPORTED)
    headers.add("Server", b2bua.user_agent)
    a.allows_update = "UPDATE" in (a.invite.headers.get("allow") or "")
    fork.allows_update = "UPDATE" in (response.headers.get("allow") or "")
    negotiated = session_timer.negotiate_as_uas(a.invite)
    if negotiated is not None:
        a.session_timer, value = negotiated
        headers.add("Session-Expires", value)
        if not a.session_timer.we_refresh:
            headers.add("Require", "timer")
    fork.session_timer = session_timer.negotiate_as_uac(response)
    if response.body:
        headers.add("Content-Type", response.headers.get("content-type") or "application/sdp")
        answer.body = response.body
        if response.has_sdp:
            answer.body = b2bua.sdp_to(call, fork, a, response.body)
            a.local_sdp = answer.body
    if b2bua.media is not None:
        b2bua.media.connect(a, fork)
    if a.dialog is not None:
        a.dialog.send_response(answer)
    a.state = LegState.CONFIRMED
    call.state = CallState.ACTIVE
    call.answered = now
    b2bua.audit.start(call, now)
    b2bua.expect_ack(call, a, fork, answer, now)
    b2bua.endpoint.send_response(answer, now, a.invite_transaction)
    session_refresh.arm(b2bua, call, a, now)
    session_refresh.arm(b2bua, call, fork, now)
    b2bua.events.append(CallAnswered(call.id, fork.endpoint, now, a.endpoint))


def _failure(b2bua: B2BUA, call: Call, fork: Leg, response: Response, now: float) -> None:
    fork.final_response = response
    fork.state = LegState.TERMINATED
    if b2bua.media is not None:
        b2bua.media.release_leg(fork)  # it will send no media now
    if call.state is not CallState.SETUP or call.b is not None:
        return
    if all(f.state is LegState.TERMINATED for f in call.forks):
        best = _best_failure([f.final_response for f in call.forks if f.final_response])
        status = FAILURE_MAP.get(best.status, best.status)
        a = call.a
        assert a.invite is not None and a.invite_transaction is not None
        reason = best.reason if status == best.status else None
        failure = a.invite.create_response(status, reason, to_tag=a.local_tag)
        if status == 422 and best.headers.get("min-se"):
            failure.headers.add("Min-SE", best.headers.get("min-se") or "")
        b2bua.endpoint.send_response(failure, now, a.invite_transaction)
        b2bua.forget_call(call, f"{status} {failure.reason}", now)


def cancel_fork(b2bua: B2BUA, fork: Leg, now: float) -> None:
    """CANCEL a fork still ringing; its INVITE is given up 64·T1 later if nothing answers."""
    if fork.cancelled or fork.state is LegState.TERMINATED or fork.invite is None:
        return
    fork.cancelled = True
    b2bua.endpoint.send_request(build_cancel(fork.invite), fork.flow, now)
    if fork.invite_transaction is not None:
        b2bua.abandon.schedule(now + b2bua.timers.timer_b, fork.invite_transaction)


def ack_and_bye(b2bua: B2BUA, fork: Leg, response: Response, now: float) -> None:
    """A 2xx nobody wants (a losing fork, a cancelled call): ACK it, then BYE it (§15)."""
    if fork.invite is None:
        return
    try:
        dialog = Dialog.create_uac(fork.invite, response, b2bua.ids)
    except (DialogError, ParseError):
        return
    via = b2bua.local.via(fork.flow)
    b2bua.endpoint.send_stateless(dialog.create_ack(via), fork.flow)
    bye = dialog.create_request("BYE", via)
    b2bua.endpoint.send_request(bye, fork.flow, now)


def _max_forwards(request: Request) -> int:
    value = request.headers.get("max-forwards")
    return int(value) if value is not None and value.isdigit() else 70


def _best_failure(responses: list[Response]) -> Response:
    """RFC 3261 §16.7 step 6: a 6xx if any, else the lowest class, 408 last among equals."""
    for response in responses:
        if response.status >= 600:
            return response

    def rank(response: Response) -> tuple[int, int]:
        return (response.status // 100, 1 if response.status == 408 else 0)

    return min(responses, key=rank)
