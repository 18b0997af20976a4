"""RFC 4028 session timers at work on a call's legs: refresh when we are the refresher, end
the leg when the peer's refresh is overdue.

One job: the timers per leg. Each leg has two possible deadlines in the B2BUA's call timers:
`refresh:<leg id>` (we refresh: an UPDATE, or a re-INVITE with the same SDP to a peer that
does not allow UPDATE, at half the interval) and `expire:<leg id>` (the peer refreshes: no
refresh by then means the leg is dead, §10). A refresh answered 408/481 breaks the leg; other
failures (491 glare, 5xx) are retried. What the interval is and who refreshes is negotiated in
session_timer.py, which stays free of calls and the B2BUA (model.py builds on it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callkeeper.calls import session_timer
from callkeeper.calls.model import Call, CallState, Leg
from callkeeper.sip.dialog import DialogState
from callkeeper.sip.message import Response

if TYPE_CHECKING:
    from callkeeper.calls.b2bua import B2BUA


def arm(b2bua: B2BUA, call: Call, leg: Leg, now: float) -> None:
    """Schedule `leg`'s next refresh or expiry (a session just started or was refreshed)."""
    timer = leg.session_timer
    if timer is None:
        return
    if timer.we_refresh:
        b2bua.call_timers.schedule(now + timer.refresh_after(), (call.id, f"refresh:{leg.id}"))
    else:
        b2bua.call_timers.schedule(now + timer.expire_after(), (call.id, f"expire:{leg.id}"))


def disarm(b2bua: B2BUA, call: Call, leg: Leg) -> None:
    """Forget `leg`'s refresh and expiry (the leg left the call, or the call ended)."""
    b2bua.call_timers.cancel((call.id, f"refresh:{leg.id}"))
    b2bua.call_timers.cancel((call.id, f"expire:{leg.id}"))


def due(b2bua: B2BUA, call: Call, kind: str, now: float) -> None:
    """A `refresh:` or `expire:` call timer fell due."""
    if kind.startswith("refresh:"):
        _send_refresh(b2bua, call, kind.removeprefix("refresh:"), now)
    elif kind.startswith("expire:"):
        leg = _leg(call, kind.removeprefix("expire:"))
        if leg is not None:
            b2bua.leg_broke(call, leg, now, "session timer expired", bye_it=True)


def _leg(call: Call, leg_id: str) -> Leg | None:
    return next((leg for leg in call.legs() if leg.id == leg_id), None)


def _send_refresh(b2bua: B2BUA, call: Call, leg_id: str, now: float) -> None:
    leg = _leg(call, leg_id)
    if leg is None or leg.dialog is None or leg.session_timer is None:
        return
    if leg.dialog.state is not DialogState.CONFIRMED or call.unacked_response is not None:
        b2bua.call_timers.schedule(now + b2bua.timers.t2, (call.id, f"refresh:{leg.id}"))
        return
    interval = int(leg.session_timer.interval)
    headers = [("Session-Expires", f"{interval};refresher=uac"), ("Supported", "timer")]
    via = b2bua.local.via(leg.flow)
    if leg.allows_update or leg.local_sdp is None:
        request = leg.dialog.create_request("UPDATE", via, headers=headers)
    else:
        request = leg.dialog.create_request(
            "INVITE", via, body=leg.local_sdp, content_type="application/sdp", headers=headers
        )
    transaction_id = b2bua.endpoint.send_request(request, leg.flow, now)
    b2bua.refreshes[transaction_id] = (call, leg)


def refresh_answered(b2bua: B2BUA, call: Call, leg: Leg, response: Response, now: float) -> None:
    """The final response to one of our refreshes."""
    if leg.dialog is not None:
        leg.dialog.receive_response(response)
    if call.state is CallState.ENDED:
        return
    if 200 <= response.status < 300:
        if response.cseq.method == "INVITE" and leg.dialog is not None:
            b2bua.endpoint.send_stateless(
                leg.dialog.create_ack(b2bua.local.via(leg.flow)), leg.flow
            )
        renegotiated = session_timer.negotiate_as_uac(response)
        if renegotiated is not None:
            leg.session_timer = renegotiated
        arm(b2bua, call, leg, now)
    elif response.status in (408, 481):
        b2bua.leg_broke(
            call,
            leg,
            now,
            f"session refresh failed: {response.status}",
            dialog_lost=response.status == 481,
        )
    else:
        # 491 glare, 5xx ...: try again a little later, within the interval.
        b2bua.call_timers.schedule(now + 4 * b2bua.timers.t1, (call.id, f"refresh:{leg.id}"))
