"""The recovery engine: a call outlives the failure of one of its endpoints.

When an endpoint in an active call goes DOWN, the survivor keeps its dialog (no BYE): with no
media anchor it is held by re-INVITE (`a=sendonly`), and the failed endpoint is asked to
reboot (`NOTIFY Event: check-sync;reboot=true`). Then, per DESIGN.md:

- the endpoint returns within `recovery.grace` → `resuming`: a re-INVITE on the old dialog (a
  phone that only lost the network still has it); on 481/408/no answer a new INVITE to its
  current contact with auto-answer hints. Its answer is bridged to the survivor (an un-hold
  re-INVITE carrying the new SDP) → `active`, outcome `resumed`.
- grace runs out (or the returning phone rejects) → `transferring`: each step of
  `recovery.fallback` in turn (`devices` forked in parallel, `mobile` through its trunk,
  `voicemail`), each rung for `ring_timeout`; the first answer is bridged → `active`.
- nothing answers → the survivor is released, outcome `lost`.

Every transition goes through `recovery_states.next_state`, so the table there is the whole
protocol. New legs are offered the survivor's own last SDP (early offer, so trunks and
voicemail servers that need an offer get one); the answer becomes the survivor's un-hold
offer under the survivor's `o=` line. Asked-for moves (feature code, API, REFER) live in
`handover.py` and reuse the same machinery.

This module drives the state machine: it takes the inputs (liveness, registrar, the B2BUA's
questions, responses, the clock), keeps the index of calls per endpoint, starts recoveries and
releases them. The work on the wire is in three helpers that take the engine as their first
argument: `recovery_resume` (re-INVITEs in the old dialogs: resume, hold, un-hold),
`recovery_fallback` (ringing new legs down the chain, voicemail) and `recovery_bridge` (the
outcome: bridge the winner, or lose the call). The records live in `recovery_records`.

Pure: no clock, no sockets. It talks SIP through the `SipEndpoint`, moves legs through the
`B2BUA`, and asks `Routes` (the call manager) where endpoints and users can be reached.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from typing import Protocol

from callkeeper.calls import handover, recovery_fallback, recovery_resume
from callkeeper.calls.b2bua import B2BUA, Contact
from callkeeper.calls.dialing import build_reboot_notify
from callkeeper.calls.events import CallHeld, RebootRequested, RecoveryEvent
from callkeeper.calls.locals import LocalAddresses
from callkeeper.calls.model import Call, CallState, Leg, LegState
from callkeeper.calls.recovery_records import Attempt, OwnReinvite, Recovery
from callkeeper.calls.recovery_states import Trigger, next_state
from callkeeper.calls.recovery_stats import RecoveryStats
from callkeeper.sip.endpoint import SipEndpoint
from callkeeper.sip.message import Request, Response
from callkeeper.sip.timers import TimerHeap, TimerSettings, earliest
from callkeeper.sip.transaction_messages import IdSource

# DOWN reasons that need no reboot request: it was just sent one (the reboot API), it is
# rebooting already (re-registered as a new instance), or it left on purpose.
_NO_REBOOT_NEEDED = frozenset({"reset", "unregistered"})
# Keys typed further apart than this do not make one feature code.
KEY_PAUSE = 3.0


class Routes(Protocol):
    """Where endpoints and users can be reached right now (the call manager answers)."""

    def current_contact(self, endpoint_id: str) -> Contact | None: ...

    def step_contacts(self, user: str, step: str, exclude: Collection[str]) -> list[Contact]: ...

    def target_contacts(self, target: str) -> list[Contact]: ...

    def has_voicemail(self, user: str) -> bool: ...

    def leg_moved(self, old_endpoint: str | None, new_endpoint: str | None, now: float) -> None: ...


RecoveryKey = tuple[str, str]  # (call id, timer kind)


class RecoveryEngine:
    def __init__(
        self,
        b2bua: B2BUA,
        endpoint: SipEndpoint,
        local: LocalAddresses,
        ids: IdSource,
        timers: TimerSettings,
        routes: Routes,
        *,
        grace: float,
        fallback: Iterable[str],
        ring_timeout: float,
        announce: bool = True,
        ivr_user: str | None = None,
        feature_code: str = "*86",
        user_agent: str = "callkeeper",
    ) -> None:
        self.b2bua = b2bua
        self.endpoint = endpoint
        self.local = local
        self.ids = ids
        self.sip_timers = timers
        self.routes = routes
        self.grace = grace
        self.fallback = tuple(fallback)
        self.ring_timeout = ring_timeout
        self.announce = announce
        self.ivr_user = ivr_user
        self.feature_code = feature_code
        self.user_agent = user_agent
        self.stats = RecoveryStats()
        self.recoveries: dict[str, Recovery] = {}  # call id → its recovery in progress
        self._calls_on: dict[str, set[str]] = {}  # endpoint id → ids of established calls
        self.attempts: dict[int, tuple[Recovery, Attempt]] = {}  # INVITE transaction → attempt
        # our in-dialog re-INVITE transaction → purpose
        self.own_reinvites: dict[int, OwnReinvite] = {}
        self.timers: TimerHeap[RecoveryKey] = TimerHeap()
        self.abandon: TimerHeap[int] = TimerHeap()
        self.events: deque[RecoveryEvent] = deque()
        self.ending: dict[str, tuple[Call, str]] = {}  # lost calls playing their goodbye
        b2bua.hooks = self

    def configure(
        self, *, grace: float, fallback: Iterable[str], ring_timeout: float, announce: bool
    ) -> None:
        """SIGHUP: new settings apply to recoveries that start from now on."""
        self.grace, self.fallback, self.ring_timeout = grace, tuple(fallback), ring_timeout
        self.announce = announce

    # --- outputs ------------------------------------------------------------------------------
    def next_event(self) -> RecoveryEvent | None:
        return self.events.popleft() if self.events else None

    def get_timer(self) -> float | None:
        return earliest(self.timers.next_deadline(), self.abandon.next_deadline())

    def calls_on(self, endpoint_id: str) -> list[Call]:
        calls = self.b2bua.calls
        return [calls[c] for c in self._calls_on.get(endpoint_id, ()) if c in calls]

    # --- the calls the engine protects ----------------------------------------------------------
    def call_answered(self, call_id: str) -> None:
        call = self.b2bua.calls.get(call_id)
        if call is None:
            return
        for leg in (call.a, call.b):
            if leg is not None and leg.endpoint is not None:
                self._calls_on.setdefault(leg.endpoint, set()).add(call_id)

    def call_ended(self, call_id: str, endpoints: Iterable[str], now: float) -> None:
        """The B2BUA ended the call (a BYE, a timer): release whatever recovery was running."""
        self.ending.pop(call_id, None)
        self.timers.cancel((call_id, "goodbye"))
        recovery = self.recoveries.pop(call_id, None)
        forget = set(endpoints)
        if recovery is not None:
            forget.update(
                leg.endpoint for leg in (recovery.failed, recovery.survivor) if leg.endpoint
            )
            self.release(recovery, now)
            self.stats.outcome("abandoned")
        for endpoint_id in forget:
            self.unindex_call(endpoint_id, call_id)

    def keys_typed(self, leg: Leg, key: str, now: float) -> str:
        """The keys a leg typed lately (a pause of KEY_PAUSE starts over), this one included."""
        typed = leg.keys if now - leg.keys_at <= KEY_PAUSE else ""
        leg.keys = (typed + key)[-len(self.feature_code) :]
        leg.keys_at = now
        return leg.keys

    def index_call(self, endpoint_id: str | None, call_id: str) -> None:
        if endpoint_id is not None:
            self._calls_on.setdefault(endpoint_id, set()).add(call_id)

    def unindex_call(self, endpoint_id: str | None, call_id: str) -> None:
        if endpoint_id is None:
            return
        calls = self._calls_on.get(endpoint_id)
        if calls is not None:
            calls.discard(call_id)
            if not calls:
                del self._calls_on[endpoint_id]

    # --- inputs from the liveness monitor and the registrar -------------------------------------
    def endpoint_down(self, endpoint_id: str, reason: str, now: float) -> None:
        held = 0
        for call in self.calls_on(endpoint_id):
            recovery = self.recoveries.get(call.id)
            if recovery is None:
                leg = _leg_on(call, endpoint_id)
                if leg is not None and self.start(call, leg, reason, now) is not None:
                    held += 1
            elif recovery.survivor.endpoint == endpoint_id:
                if self.move(call, Trigger.DOWN) is not None and not recovery.survivor_down:
                    recovery.survivor_down = True
                    recovery.survivor_down_at = now
            elif (
                recovery.failed.endpoint == endpoint_id
                and call.state is CallState.RESUMING
                and reason != "reset"  # re-registered after a reboot: the resume copes (481)
            ):
                self.move(call, Trigger.DOWN)
                recovery_fallback.stop_attempts(self, recovery, now)
                recovery_resume.cancel_resume_reinvite(self, recovery)
                self.timers.schedule(max(now, recovery.grace_deadline), (call.id, "grace"))
            elif recovery.failed.endpoint == endpoint_id and recovery.keep_old_until_answer:
                # The leg an asked-for move was leaving failed while the target rings: hold
                # the survivor, and if the target does not answer, go down the chain.
                self._old_leg_failed(recovery, now)
                held += 1
        if held and reason not in _NO_REBOOT_NEEDED:
            self.request_reboot(endpoint_id, now)  # once per endpoint, however many calls

    def _old_leg_failed(self, recovery: Recovery, now: float) -> None:
        recovery.keep_old_until_answer = False
        recovery.steps = list(self.fallback) if recovery.user is not None else []
        survivor = recovery.survivor
        if not self.announce_to(survivor, "reconnecting") and survivor.local_sdp is not None:
            recovery_resume.reinvite_survivor(self, recovery, "hold", now)

    def endpoint_back(self, endpoint_id: str, now: float) -> None:
        """A sign of life (keep-alive, REGISTER, any request) from an endpoint."""
        for call in self.calls_on(endpoint_id):
            recovery = self.recoveries.get(call.id)
            if recovery is None:
                continue
            if recovery.survivor.endpoint == endpoint_id:
                recovery.survivor_down = False
            elif recovery.failed.endpoint == endpoint_id and call.state is CallState.HOLDING:
                recovery_resume.resume(self, recovery, now)

    def endpoint_left(self, endpoint_id: str, now: float) -> None:
        """The endpoint de-registered mid-call: it asks for its calls to move now."""
        for call in self.calls_on(endpoint_id):
            recovery = self.recoveries.get(call.id)
            if recovery is None:
                leg = _leg_on(call, endpoint_id)
                if leg is None:
                    continue
                recovery = self.start(call, leg, "unregistered", now)
                if recovery is None:
                    continue
            if recovery.failed.endpoint == endpoint_id and call.state is CallState.HOLDING:
                self.timers.cancel((call.id, "grace"))
                if self.move(call, Trigger.ASKED) is not None:
                    recovery_fallback.next_step(self, recovery, now)

    # --- holding ------------------------------------------------------------------------------
    def start(self, call: Call, failed: Leg, reason: str, now: float) -> Recovery | None:
        """`failed`'s side of an active call broke: hold the survivor, wait for it to return.

        The caller sends the failed endpoint its reboot request (once, for all its calls)."""
        survivor = call.other(failed)
        if survivor is None or self.move(call, Trigger.DOWN) is None:
            return None
        user = failed.user
        ivr = user is not None and user == self.ivr_user
        recovery = Recovery(
            call=call,
            failed=failed,
            survivor=survivor,
            started=now,
            reason=reason,
            survivor_sdp=survivor.remote_sdp,
            # A dead IVR node is not waited for: its session moves to another node at once.
            grace_deadline=now if ivr else now + self.grace,
            steps=["devices"] if ivr else list(self.fallback) if user is not None else [],
            user=user,
        )
        self.recoveries[call.id] = recovery
        call.recoveries += 1
        self.events.append(CallHeld(call.id, failed.endpoint, reason, now))
        if self.announce_to(survivor, "reconnecting"):
            pass  # the relay holds it: the survivor's phone is not touched
        elif survivor.local_sdp is not None:
            recovery_resume.reinvite_survivor(self, recovery, "hold", now)
        self.timers.schedule(recovery.grace_deadline, (call.id, "grace"))
        return recovery

    def ask(
        self, call: Call, side: Leg, contacts: list[Contact], step: str, now: float
    ) -> Recovery | None:
        """Someone asked for `side` of a working call to move to `contacts` (handover.py).

        The survivor is not held: it keeps talking to `side` until a new leg answers.
        """
        survivor = call.other(side)
        if survivor is None or self.move(call, Trigger.ASKED) is None:
            return None
        recovery = Recovery(
            call=call,
            failed=side,
            survivor=survivor,
            started=now,
            reason=step,
            survivor_sdp=survivor.remote_sdp,
            grace_deadline=now,
            steps=[],
            user=side.user,
            keep_old_until_answer=True,
        )
        self.recoveries[call.id] = recovery
        call.recoveries += 1
        if contacts:
            recovery_fallback.ring(self, recovery, contacts, step, now)
        return recovery

    def announce_to(self, survivor: Leg, prompt: str | None) -> bool:
        """With the media relay: play `prompt` (if announcing) then music to the survivor.
        False without a relay side for it (media off): the caller holds it by re-INVITE."""
        media = self.b2bua.media
        if media is None or not media.has_side(survivor):
            return False
        prompts = (prompt,) if prompt is not None and self.announce else ()
        return media.play(survivor, prompts, "music")

    def request_reboot(self, endpoint_id: str, now: float) -> bool:
        """Best effort: the phone may be gone; nobody waits for the NOTIFY's answer."""
        contact = self.routes.current_contact(endpoint_id)
        if contact is None:
            return False
        notify = build_reboot_notify(
            self.local, self.ids, uri=contact.uri, flow=contact.flow, user_agent=self.user_agent
        )
        self.endpoint.send_request(notify, contact.flow, now)
        self.events.append(RebootRequested(endpoint_id, now))
        return True

    # --- transferring -------------------------------------------------------------------------

    # --- answers ------------------------------------------------------------------------------
    def receive_response(self, transaction_id: int, response: Response, now: float) -> bool:
        """A response to an INVITE or re-INVITE of ours; False when it is not the engine's."""
        entry = self.attempts.get(transaction_id)
        if entry is not None:
            recovery_fallback.attempt_response(self, *entry, response, now)
            return True
        own = self.own_reinvites.get(transaction_id)
        if own is not None:
            recovery_resume.own_response(self, transaction_id, own, response, now)
            return True
        return False

    def transaction_timed_out(self, transaction_id: int, now: float) -> bool:
        entry = self.attempts.get(transaction_id)
        if entry is not None:
            recovery, attempt = entry
            recovery_fallback.attempt_failed(self, recovery, attempt, now)
            return True
        own = self.own_reinvites.get(transaction_id)
        if own is not None:
            recovery_resume.own_failed(self, transaction_id, own, 408, now)
            return True
        return False

    def transaction_terminated(self, transaction_id: int) -> None:
        self.attempts.pop(transaction_id, None)
        self.own_reinvites.pop(transaction_id, None)
        self.abandon.cancel(transaction_id)

    def interrupt(self, recovery: Recovery, now: float) -> None:
        """Someone asked to move the call: whatever this recovery was trying stops (its
        ringing, a resume re-INVITE, the grace timer); a late answer to it is hung up."""
        self.timers.cancel((recovery.call.id, "grace"))
        recovery_resume.cancel_resume_reinvite(self, recovery)
        recovery_fallback.stop_attempts(self, recovery, now)

    def give_up(self, recovery: Recovery, trigger: Trigger, now: float) -> None:
        """An asked-for move that did not happen: the call goes on as it was."""
        if self.move(recovery.call, trigger) is None:
            return
        self.recoveries.pop(recovery.call.id, None)
        self.release(recovery, now)

    def release(self, recovery: Recovery, now: float) -> None:
        """Stop everything the recovery had running: timers, ringing, our pending re-INVITEs."""
        call_id = recovery.call.id
        for kind in ("grace", "ring", "reinvite", "retry-resume", "retry-survivor"):
            self.timers.cancel((call_id, kind))
        recovery_fallback.stop_attempts(self, recovery, now)
        for own in list(self.own_reinvites.values()):
            if own.call_id == call_id and own.ack is None:
                own.call_id = ""  # its answer is still ACKed, but nobody acts on it

    # --- the B2BUA's questions (RecoveryHooks) ------------------------------------------------------
    def in_dialog(
        self, call: Call, leg: Leg, request: Request, transaction_id: int, now: float
    ) -> bool:
        return handover.in_dialog(self, call, leg, request, transaction_id, now)

    def absorbs_failure(
        self, call: Call, leg: Leg, reason: str, dialog_lost: bool, now: float
    ) -> bool:
        recovery = self.recoveries.get(call.id)
        if recovery is not None:
            # The failed side breaking again changes nothing; the survivor breaking ends it.
            return leg is recovery.failed
        if dialog_lost and call.state is CallState.ACTIVE and leg.endpoint is not None:
            # The phone answered 481: it rebooted before its silence was noticed. Recover it
            # like a silent one. (Silence itself is the liveness monitor's to judge.)
            return self.start(call, leg, reason, now) is not None
        return False

    # --- the clock -----------------------------------------------------------------------------
    def handle_timer(self, now: float) -> None:
        for transaction_id in self.abandon.pop_due(now):
            self.endpoint.abandon_transaction(transaction_id, now)
        for call_id, kind in self.timers.pop_due(now):
            if kind == "goodbye":
                ending = self.ending.pop(call_id, None)
                if ending is not None and ending[0].state is not CallState.ENDED:
                    self.b2bua.end_call(ending[0], ending[1], now)
                continue
            recovery = self.recoveries.get(call_id)
            if recovery is None:
                continue
            if kind == "grace":
                recovery_fallback.grace_expired(self, recovery, now)
            elif kind == "ring":
                recovery_fallback.step_failed(self, recovery, now)
            elif kind == "reinvite":
                recovery_resume.old_dialog_lost(self, recovery, now, answered=False)
            elif kind == "retry-resume":
                if recovery.call.state is CallState.RESUMING:
                    recovery_resume.send_resume_reinvite(self, recovery, now)
            elif kind == "retry-survivor":
                owed, recovery.survivor_owed = recovery.survivor_owed, None
                if owed is not None:
                    recovery_resume.reinvite_survivor(self, recovery, owed, now)

    # --- helpers --------------------------------------------------------------------------------
    def move(self, call: Call, trigger: Trigger) -> CallState | None:
        state = next_state(call.state, trigger)
        if state is not None:
            call.state = state
        return state


def _leg_on(call: Call, endpoint_id: str) -> Leg | None:
    for leg in (call.a, call.b):
        if leg is not None and leg.endpoint == endpoint_id and leg.state is LegState.CONFIRMED:
            return leg
    return None
