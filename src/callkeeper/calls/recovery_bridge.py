"""How a recovery ends: a leg that answered takes the failed side and is bridged to the survivor,
or nothing could take the call and the survivor is released.

One job: the outcome. `connect` puts the answering leg in the call (the relay re-bridges, or
the survivor is un-held by re-INVITE carrying the new SDP), `bridged` records the outcome
(`resumed`, `transferred`, `voicemail`), `lose` plays the goodbye and ends the call. Kept
apart from the ways a leg is found (recovery_resume.py, recovery_fallback.py), which all end
here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callkeeper.calls import handover, recovery_resume, sdp_offers
from callkeeper.calls.events import CallHeld, CallLost, CallRecovered
from callkeeper.calls.model import CallState, Leg
from callkeeper.calls.recovery_records import Recovery
from callkeeper.calls.recovery_states import Trigger, next_state

if TYPE_CHECKING:
    from callkeeper.calls.recovery import RecoveryEngine

# How long the relay plays the goodbye prompt before a lost call's survivor gets its BYE
# ("We could not reconnect your call. Goodbye." is about 3 s).
GOODBYE_SECONDS = 4.0


def connect(
    engine: RecoveryEngine,
    recovery: Recovery,
    leg: Leg,
    step: str,
    now: float,
    *,
    new_dialog: bool = True,
) -> None:
    """`leg` answered for the failed side: it takes that side; the survivor is un-held."""
    call, failed = recovery.call, recovery.failed
    recovery.winner = leg
    recovery.winner_step = step
    if new_dialog:
        handover.report_answered(engine, recovery, now)
        engine.b2bua.replace_leg(call, failed, leg)
        engine.b2bua.bye(failed, now)
        engine.unindex_call(failed.endpoint, call.id)
        engine.index_call(leg.endpoint, call.id)
        engine.routes.leg_moved(failed.endpoint, leg.endpoint, now)
    if recovery.survivor_down and call.state is CallState.RESUMING:
        wait_for_the_other_side(engine, recovery, leg, now)
        return
    media = engine.b2bua.media
    if media is not None and media.has_side(recovery.survivor) and media.has_side(leg):
        # The relay re-bridges: the survivor's phone keeps its session, no re-INVITE.
        media.learn(call, leg, leg.remote_sdp or b"")
        media.connect(recovery.survivor, leg)
        bridged(engine, recovery, now)
        return
    recovery_resume.reinvite_survivor(engine, recovery, "unhold", now)


def wait_for_the_other_side(
    engine: RecoveryEngine, recovery: Recovery, returned: Leg, now: float
) -> None:
    """Both parties failed and this one came back first (it was offered held media): it
    becomes the survivor, held, and the other side gets its own grace from when it failed."""
    call = recovery.call
    other = recovery.survivor
    recovery.failed, recovery.survivor = other, returned
    recovery.survivor_sdp = sdp_offers.sendrecv(returned.remote_sdp)
    recovery.survivor_down = False
    recovery.winner, recovery.winner_step, recovery.step = None, "", ""
    recovery.back_at = None
    recovery.reason = "both parties failed"
    recovery.user = other.user
    recovery.steps = list(engine.fallback) if other.user is not None else []
    recovery.keep_old_until_answer = False
    recovery.grace_deadline = recovery.survivor_down_at + engine.grace
    engine.move(call, Trigger.DOWN)  # resuming → holding, now for the other side
    engine.events.append(CallHeld(call.id, other.endpoint, recovery.reason, now))
    engine.timers.schedule(max(now, recovery.grace_deadline), (call.id, "grace"))


def bridged(engine: RecoveryEngine, recovery: Recovery, now: float) -> None:
    call = recovery.call
    if engine.move(call, Trigger.BRIDGED) is None:
        return
    engine.recoveries.pop(call.id, None)
    engine.release(recovery, now)
    winner = recovery.winner
    step = recovery.winner_step
    outcome = {"resume": "resumed", "voicemail": "voicemail"}.get(step, "transferred")
    resume_seconds = now - recovery.back_at if recovery.back_at is not None else None
    if outcome == "resumed" and resume_seconds is not None:
        engine.stats.resumed(resume_seconds)
    engine.stats.outcome(outcome)
    engine.events.append(
        CallRecovered(
            call.id,
            outcome,
            winner.endpoint if winner is not None else None,
            winner is not recovery.failed,
            now,
            now - recovery.started,
            resume_seconds if outcome == "resumed" else None,
        )
    )
    if recovery.pickup is not None:
        handover.answer_pickup(engine, recovery, now)


def lose(engine: RecoveryEngine, recovery: Recovery, reason: str, now: float) -> None:
    """Nothing can take the call: release the survivor (the B2BUA sets `ended`)."""
    call = recovery.call
    assert next_state(call.state, Trigger.EXHAUSTED) is CallState.ENDED
    engine.recoveries.pop(call.id, None)
    engine.release(recovery, now)
    engine.stats.outcome("lost")
    engine.events.append(CallLost(call.id, reason, now))
    media = engine.b2bua.media
    survivor = recovery.survivor
    if (
        media is not None
        and engine.announce
        and media.has_side(survivor)
        and media.play(survivor, ("goodbye",), None)
    ):
        # Tell the survivor before hanging up: the BYE follows the prompt.
        engine.ending[call.id] = (call, f"recovery failed: {reason}")
        engine.timers.schedule(now + GOODBYE_SECONDS, (call.id, "goodbye"))
        return
    engine.b2bua.end_call(call, f"recovery failed: {reason}", now)
