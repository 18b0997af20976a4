"""Re-INVITEs inside the dialogs a recovery keeps: the returning phone's resume and the
survivor's hold and un-hold (RFC 3261 §14).

One job: the old dialog. A phone that only lost the network still has its dialog, so it is
offered the call back on it (`resume`); the survivor is held and un-held on its own dialog, one
re-INVITE at a time, with glare (491) retried. What happens when the old dialog is gone (481,
no answer) is the fallback chain's (recovery_fallback.py): this module hands over there. Kept
apart from the engine (recovery.py), which decides *when*; this is *how*, on the wire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callkeeper.calls import recovery_bridge, recovery_fallback, sdp_offers
from callkeeper.calls.dialing import AUTO_ANSWER_HEADERS
from callkeeper.calls.events import CallResuming
from callkeeper.calls.model import Leg
from callkeeper.calls.recovery_records import OwnReinvite, Recovery
from callkeeper.calls.recovery_states import Trigger
from callkeeper.sip.dialog import DialogState
from callkeeper.sip.message import Response

if TYPE_CHECKING:
    from callkeeper.calls.recovery import RecoveryEngine

# How long the old dialog's re-INVITE may go unanswered before the returning endpoint is rung
# anew: a phone that kept its dialog answers at once; a rebooted one answers 481 at once; only
# a phone that is back on the network but frozen stays silent.
REINVITE_ANSWER_TIMEOUT = 2.0
# A re-INVITE that met glare (491) is retried after this (RFC 3261 §14.1: 0–2 s for the side
# that does not own the Call-ID; we pick the top so the peer's own retry wins).
GLARE_RETRY = 2.0


def reinvite_survivor(engine: RecoveryEngine, recovery: Recovery, purpose: str, now: float) -> None:
    """Hold or un-hold the survivor; one re-INVITE at a time (RFC 3261 §14.1)."""
    if recovery.survivor_reinvite is not None:
        recovery.survivor_owed = purpose
        return
    survivor = recovery.survivor
    if purpose == "hold":
        offer = sdp_offers.hold(survivor.local_sdp)
    else:
        winner = recovery.winner
        offer = sdp_offers.unhold(
            winner.remote_sdp if winner is not None else None, survivor.local_sdp
        )
    if offer is None or survivor.dialog is None:
        if purpose == "unhold":
            recovery_bridge.bridged(
                engine, recovery, now
            )  # nothing to renegotiate (no SDP on this call)
        return
    transaction_id = send_reinvite(engine, survivor, offer, now)
    if transaction_id is None:
        return
    recovery.survivor_reinvite = transaction_id
    engine.own_reinvites[transaction_id] = OwnReinvite(recovery.call.id, survivor, purpose)


def send_reinvite(engine: RecoveryEngine, leg: Leg, offer: bytes, now: float) -> int | None:
    if leg.dialog is None or leg.dialog.state is not DialogState.CONFIRMED:
        return None
    request = leg.dialog.create_request(
        "INVITE", engine.local.via(leg.flow), body=offer, content_type="application/sdp"
    )
    leg.local_sdp = offer
    return engine.endpoint.send_request(request, leg.flow, now)


def resume(engine: RecoveryEngine, recovery: Recovery, now: float) -> None:
    call, failed = recovery.call, recovery.failed
    if engine.move(call, Trigger.BACK) is None:
        return
    recovery.back_at = now
    engine.timers.cancel((call.id, "grace"))
    engine.events.append(CallResuming(call.id, failed.endpoint, now, now - recovery.started))
    send_resume_reinvite(engine, recovery, now)


def send_resume_reinvite(engine: RecoveryEngine, recovery: Recovery, now: float) -> None:
    call, failed = recovery.call, recovery.failed
    contact = engine.routes.current_contact(failed.endpoint) if failed.endpoint else None
    if contact is not None:
        failed.flow = contact.flow  # a phone back on a new connection answers on that one
    offer = sdp_offers.reoffer(recovery.survivor_sdp, failed.local_sdp)
    if offer is not None:
        offer = engine.b2bua.sdp_to(call, recovery.survivor, failed, offer)
    if recovery.survivor_down:
        offer = sdp_offers.held(offer)  # it comes back to a party that is still gone
    transaction_id = send_reinvite(engine, failed, offer, now) if offer is not None else None
    if transaction_id is None:
        dial_back(engine, recovery, now)
        return
    recovery.resume_reinvite = transaction_id
    engine.own_reinvites[transaction_id] = OwnReinvite(call.id, failed, "resume")
    engine.timers.schedule(now + REINVITE_ANSWER_TIMEOUT, (call.id, "reinvite"))


def old_dialog_lost(
    engine: RecoveryEngine, recovery: Recovery, now: float, *, answered: bool
) -> None:
    """The re-INVITE on the old dialog failed: ring the phone anew. When it answered (481:
    it rebooted) the old dialog is gone; when it stayed silent the dialog may linger on
    the phone, so it keeps it and gets a BYE once the new leg is up."""
    cancel_resume_reinvite(engine, recovery)
    failed = recovery.failed
    if answered and failed.dialog is not None:
        failed.dialog.terminate()
    dial_back(engine, recovery, now)


def cancel_resume_reinvite(engine: RecoveryEngine, recovery: Recovery) -> None:
    engine.timers.cancel((recovery.call.id, "reinvite"))
    if recovery.resume_reinvite is not None:
        own = engine.own_reinvites.get(recovery.resume_reinvite)
        if own is not None:
            own.call_id = ""  # a late 2xx is still ACKed, but moves nothing
        recovery.resume_reinvite = None


def dial_back(engine: RecoveryEngine, recovery: Recovery, now: float) -> None:
    failed = recovery.failed
    contact = engine.routes.current_contact(failed.endpoint) if failed.endpoint else None
    if contact is None:
        resume_failed(engine, recovery, now)
        return
    recovery_fallback.ring(engine, recovery, [contact], "resume", now, headers=AUTO_ANSWER_HEADERS)


def resume_failed(engine: RecoveryEngine, recovery: Recovery, now: float) -> None:
    if engine.move(recovery.call, Trigger.RESUME_FAILED) is not None:
        recovery_fallback.next_step(engine, recovery, now)


def own_response(
    engine: RecoveryEngine, transaction_id: int, own: OwnReinvite, response: Response, now: float
) -> None:
    status = response.status
    if status < 200:
        return
    leg = own.leg
    if status >= 300:
        own_failed(engine, transaction_id, own, status, now)
        return
    if own.ack is not None:  # a retransmitted 2xx: our ACK was lost
        engine.endpoint.send_stateless(own.ack, leg.flow)
        return
    if leg.dialog is not None and leg.dialog.state is not DialogState.TERMINATED:
        leg.dialog.receive_response(response)
        own.ack = leg.dialog.create_ack(engine.local.via(leg.flow))
        engine.endpoint.send_stateless(own.ack, leg.flow)
    if response.body:
        leg.remote_sdp = response.body
    recovery = engine.recoveries.get(own.call_id)
    if recovery is None:
        return
    if own.purpose == "resume":
        if transaction_id != recovery.resume_reinvite:
            return
        recovery.resume_reinvite = None
        engine.timers.cancel((recovery.call.id, "reinvite"))
        recovery_bridge.connect(engine, recovery, leg, "resume", now, new_dialog=False)
    elif transaction_id == recovery.survivor_reinvite:
        survivor_answered(engine, recovery, own.purpose, now)


def own_failed(
    engine: RecoveryEngine, transaction_id: int, own: OwnReinvite, status: int, now: float
) -> None:
    engine.own_reinvites.pop(transaction_id, None)
    recovery = engine.recoveries.get(own.call_id)
    if recovery is None:
        return
    call_id = recovery.call.id
    if own.purpose == "resume":
        if transaction_id != recovery.resume_reinvite:
            return
        recovery.resume_reinvite = None
        if status == 491:
            engine.timers.cancel((call_id, "reinvite"))
            engine.timers.schedule(now + GLARE_RETRY, (call_id, "retry-resume"))
        else:
            old_dialog_lost(engine, recovery, now, answered=status != 408)
        return
    if transaction_id != recovery.survivor_reinvite:
        return
    recovery.survivor_reinvite = None
    if status == 491:
        recovery.survivor_owed = recovery.survivor_owed or own.purpose
        engine.timers.schedule(now + GLARE_RETRY, (call_id, "retry-survivor"))
    elif status in (408, 481) and own.purpose == "unhold":
        recovery_bridge.lose(engine, recovery, f"the survivor is gone ({status})", now)
    else:
        # A survivor that will not be held still has its dialog: go on without the hold.
        survivor_answered(engine, recovery, own.purpose, now)


def survivor_answered(engine: RecoveryEngine, recovery: Recovery, purpose: str, now: float) -> None:
    recovery.survivor_reinvite = None
    owed, recovery.survivor_owed = recovery.survivor_owed, None
    if owed is not None:
        reinvite_survivor(engine, recovery, owed, now)
    elif purpose == "unhold":
        recovery_bridge.bridged(engine, recovery, now)
