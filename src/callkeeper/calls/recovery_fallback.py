"""Ringing new legs for the failed side: the fallback chain, the built-in voicemail, and the
answers to our INVITEs.

One job: find someone to take the failed side. Each step of `recovery.fallback` in turn
(`devices` forked in parallel, `mobile` through its trunk, `voicemail`), each rung for
`ring_timeout`, offering the survivor's last SDP; the first 2xx wins, the rest are CANCELled
(a 2xx that crosses the CANCEL is ACKed and BYEd). The winner goes to recovery_bridge.py.
Kept apart from the engine (recovery.py), which decides when the chain starts, and from the
resume path (recovery_resume.py), which works on dialogs that already exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from callkeeper.calls import handover, recovery_bridge, recovery_resume, sdp_offers
from callkeeper.calls.b2bua import Contact
from callkeeper.calls.dialing import SESSION_HEADER, build_invite
from callkeeper.calls.events import CallTransferring
from callkeeper.calls.model import Leg, LegState
from callkeeper.calls.recovery_records import Attempt, Recovery
from callkeeper.calls.recovery_states import Trigger
from callkeeper.sip.address import Address
from callkeeper.sip.dialog import Dialog, DialogError
from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Response
from callkeeper.sip.transaction_messages import build_cancel
from callkeeper.sip.uri import URI

if TYPE_CHECKING:
    from callkeeper.calls.recovery import RecoveryEngine

# The built-in voicemail's limits: a message ends at this length, or after this much silence.
VOICEMAIL_MAX_SECONDS = 120.0
VOICEMAIL_SILENCE_SECONDS = 10.0


def grace_expired(engine: RecoveryEngine, recovery: Recovery, now: float) -> None:
    if recovery.survivor_down:
        recovery_bridge.lose(engine, recovery, "both parties failed", now)
        return
    if engine.move(recovery.call, Trigger.GRACE_EXPIRED) is not None:
        next_step(engine, recovery, now)


def next_step(engine: RecoveryEngine, recovery: Recovery, now: float) -> None:
    exclude = {recovery.failed.endpoint} if recovery.failed.endpoint is not None else set()
    while recovery.steps and recovery.user is not None:
        step = recovery.steps.pop(0)
        contacts = engine.routes.step_contacts(recovery.user, step, exclude)
        if contacts:
            ring(engine, recovery, contacts, step, now)
            return
        if step == "voicemail" and voicemail(engine, recovery, now):
            return
    recovery_bridge.lose(engine, recovery, "the fallback chain is exhausted", now)


def ring(
    engine: RecoveryEngine,
    recovery: Recovery,
    contacts: list[Contact],
    step: str,
    now: float,
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Fork INVITEs to `contacts`, offering the survivor's SDP; the first 2xx wins."""
    call = recovery.call
    recovery.step = step
    engine.events.append(CallTransferring(call.id, step, tuple(str(c.uri) for c in contacts), now))
    if step not in ("resume", "pickup", "target", "refer"):
        engine.announce_to(recovery.survivor, "transferring")
    survivor, failed = recovery.survivor, recovery.failed
    # The new party sees the call as coming from the survivor, addressed to its own user.
    caller = survivor.user or (call.callee if survivor is call.b else None) or "callkeeper"
    callee = failed.user or (call.callee if failed is call.b else None) or "callkeeper"
    body = recovery.survivor_sdp or b""
    if recovery.survivor_down:
        body = sdp_offers.held(body) or b""
    extra = list(headers)
    if failed.session is not None:
        extra.append((SESSION_HEADER, failed.session))
    for contact in contacts:
        leg = Leg(
            id=engine.ids(),
            is_caller=False,
            flow=contact.flow,
            user=contact.user or failed.user,
            endpoint=contact.endpoint,
            local_tag=engine.ids(),
            call_id=f"{engine.ids()}-{engine.ids()}@callkeeper",
            local_sdp=body or None,
        )
        invite = build_invite(
            engine.local,
            engine.ids,
            uri=contact.uri,
            flow=contact.flow,
            from_address=Address(URI("sip", user=caller, host=engine.local.domain)).with_tag(
                leg.local_tag
            ),
            to_uri=URI("sip", user=callee, host=engine.local.domain),
            call_id=leg.call_id,
            user_agent=engine.user_agent,
            body=body,
            headers=extra,
        )
        if body and engine.b2bua.media is not None:
            # Offer the new leg our relay port (its own side), not the survivor's address.
            invite.body = engine.b2bua.sdp_to(call, survivor, leg, body)
            leg.local_sdp = invite.body
        leg.invite = invite
        transaction_id = engine.endpoint.send_request(invite, contact.flow, now)
        leg.invite_transaction = transaction_id
        attempt = Attempt(leg, invite, step)
        recovery.attempts[transaction_id] = attempt
        engine.attempts[transaction_id] = (recovery, attempt)
    engine.timers.schedule(now + engine.ring_timeout, (call.id, "ring"))


def stop_attempts(engine: RecoveryEngine, recovery: Recovery, now: float) -> None:
    """CANCEL every attempt still ringing; a 2xx that crosses the CANCEL is ACKed and BYEd."""
    engine.timers.cancel((recovery.call.id, "ring"))
    for transaction_id, attempt in recovery.attempts.items():
        if attempt.done:
            continue
        attempt.done = True
        engine.endpoint.send_request(build_cancel(attempt.invite), attempt.leg.flow, now)
        engine.abandon.schedule(now + engine.sip_timers.timer_b, transaction_id)
    recovery.attempts.clear()


def step_failed(engine: RecoveryEngine, recovery: Recovery, now: float) -> None:
    stop_attempts(engine, recovery, now)
    if recovery.step == "resume":
        recovery_resume.resume_failed(engine, recovery, now)
    elif recovery.step in ("target", "refer"):
        handover.not_taken(engine, recovery, now)
    else:
        next_step(engine, recovery, now)


def voicemail(engine: RecoveryEngine, recovery: Recovery, now: float) -> bool:
    """The built-in voicemail (needs the media relay): the relay greets the survivor and
    records its message; the call stays up, bridged to nobody, until the survivor hangs
    up or the relay stops recording (silence, maximum length)."""
    media = engine.b2bua.media
    call, survivor, user = recovery.call, recovery.survivor, recovery.user
    if media is None or user is None or not engine.routes.has_voicemail(user):
        return False
    caller = survivor.user or (call.callee if survivor is call.b else None)
    limits = (VOICEMAIL_MAX_SECONDS, VOICEMAIL_SILENCE_SECONDS)
    if not media.has_side(survivor) or not media.record(call, survivor, user, caller, limits):
        return False
    recovery.step = "voicemail"
    engine.events.append(CallTransferring(call.id, "voicemail", ("voicemail",), now))
    mailbox = Leg(
        id=engine.ids(),
        is_caller=False,
        flow=survivor.flow,  # no SIP: the relay is the other party
        user=user,
        endpoint="voicemail",
        state=LegState.CONFIRMED,
    )
    recovery_bridge.connect(engine, recovery, mailbox, "voicemail", now)
    return True


def attempt_response(
    engine: RecoveryEngine, recovery: Recovery, attempt: Attempt, response: Response, now: float
) -> None:
    status = response.status
    if status < 200:
        return
    if status >= 300:
        attempt_failed(engine, recovery, attempt, now)
        return
    leg = attempt.leg
    if leg is recovery.winner:
        if leg.ack is not None:  # our ACK was lost: the 2xx came again
            engine.endpoint.send_stateless(leg.ack, leg.flow)
        return
    live = engine.recoveries.get(recovery.call.id) is recovery
    if not live or attempt.done or recovery.winner is not None:
        engine.b2bua.ack_and_bye(attempt.leg, response, now)
        return
    try:
        leg.dialog = Dialog.create_uac(attempt.invite, response, engine.ids)
    except (DialogError, ParseError):
        attempt_failed(engine, recovery, attempt, now)
        return
    attempt.done = True
    leg.ack = leg.dialog.create_ack(engine.local.via(leg.flow))
    engine.endpoint.send_stateless(leg.ack, leg.flow)
    leg.state = LegState.CONFIRMED
    leg.remote_sdp = response.body if response.body else None
    leg.session = response.headers.get(SESSION_HEADER)
    leg.invite = None
    recovery.attempts.pop(leg.invite_transaction or -1, None)
    stop_attempts(engine, recovery, now)
    recovery_bridge.connect(engine, recovery, leg, attempt.step, now)


def attempt_failed(
    engine: RecoveryEngine, recovery: Recovery, attempt: Attempt, now: float
) -> None:
    if attempt.done:
        return
    attempt.done = True
    if engine.recoveries.get(recovery.call.id) is not recovery or recovery.winner is not None:
        return
    if all(a.done for a in recovery.attempts.values()):
        step_failed(engine, recovery, now)
