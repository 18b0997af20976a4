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

Pure: no clock, no sockets. It talks SIP through the `SipEndpoint`, moves legs through the
`B2BUA`, and asks `Routes` (the call manager) where endpoints and users can be reached.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from callkeeper.calls import handover, sdp_offers
from callkeeper.calls.b2bua import B2BUA, Contact
from callkeeper.calls.dialing import (
    AUTO_ANSWER_HEADERS,
    SESSION_HEADER,
    build_invite,
    build_reboot_notify,
)
from callkeeper.calls.events import (
    CallHeld,
    CallLost,
    CallRecovered,
    CallResuming,
    CallTransferring,
    RebootRequested,
    RecoveryEvent,
)
from callkeeper.calls.locals import LocalAddresses
from callkeeper.calls.model import Call, CallState, Leg, LegState
from callkeeper.calls.recovery_states import Trigger, next_state
from callkeeper.calls.recovery_stats import RecoveryStats
from callkeeper.sip.address import Address
from callkeeper.sip.dialog import Dialog, DialogError, DialogState
from callkeeper.sip.endpoint import SipEndpoint
from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Request, Response
from callkeeper.sip.timers import TimerHeap, TimerSettings, earliest
from callkeeper.sip.transaction_messages import IdSource, build_cancel
from callkeeper.sip.uri import URI

# How long the old dialog's re-INVITE may go unanswered before the returning endpoint is rung
# anew: a phone that kept its dialog answers at once; a rebooted one answers 481 at once; only
# a phone that is back on the network but frozen stays silent.
REINVITE_ANSWER_TIMEOUT = 2.0
# A re-INVITE that met glare (491) is retried after this (RFC 3261 §14.1: 0–2 s for the side
# that does not own the Call-ID; we pick the top so the peer's own retry wins).
GLARE_RETRY = 2.0
# DOWN reasons that need no reboot request: it was just sent one (the reboot API), it is
# rebooting already (re-registered as a new instance), or it left on purpose.
_NO_REBOOT_NEEDED = frozenset({"reset", "unregistered"})
# How long the relay plays the goodbye prompt before a lost call's survivor gets its BYE
# ("We could not reconnect your call. Goodbye." is about 3 s).
GOODBYE_SECONDS = 4.0
# Keys typed further apart than this do not make one feature code.
KEY_PAUSE = 3.0
# The built-in voicemail's limits: a message ends at this length, or after this much silence.
VOICEMAIL_MAX_SECONDS = 120.0
VOICEMAIL_SILENCE_SECONDS = 10.0


class Routes(Protocol):
    """Where endpoints and users can be reached right now (the call manager answers)."""

    def current_contact(self, endpoint_id: str) -> Contact | None: ...

    def step_contacts(self, user: str, step: str, exclude: Collection[str]) -> list[Contact]: ...

    def target_contacts(self, target: str) -> list[Contact]: ...

    def has_voicemail(self, user: str) -> bool: ...

    def leg_moved(self, old_endpoint: str | None, new_endpoint: str | None, now: float) -> None: ...


@dataclass(slots=True, eq=False)
class Attempt:
    """One INVITE ringing a candidate for the failed side."""

    leg: Leg
    invite: Request
    step: str
    done: bool = False  # a final response (or we gave up on it)


@dataclass(slots=True, eq=False)
class OwnReinvite:
    """A re-INVITE we sent inside a leg's dialog (hold, un-hold, resume)."""

    call_id: str
    leg: Leg
    purpose: str  # "hold", "unhold", "resume"
    ack: Request | None = None


@dataclass(slots=True, eq=False)
class Recovery:
    call: Call
    failed: Leg  # the side being brought back or replaced
    survivor: Leg
    started: float
    reason: str
    survivor_sdp: bytes | None  # the survivor's SDP from before the hold: offered to new legs
    grace_deadline: float
    steps: list[str]
    user: str | None  # whose devices the fallback chain rings
    step: str = ""
    back_at: float | None = None
    attempts: dict[int, Attempt] = field(default_factory=dict)
    resume_reinvite: int | None = None
    winner: Leg | None = None
    winner_step: str = ""
    survivor_reinvite: int | None = None
    survivor_owed: str | None = None  # a re-INVITE to send once the one in flight completes
    survivor_down: bool = False  # both parties failed: the survivor is DOWN too
    survivor_down_at: float = 0.0
    # Asked-for moves (handover.py): the old leg stays connected until the new one answers.
    keep_old_until_answer: bool = False
    referred: bool = False  # started by the failed side's REFER: report progress to it
    pickup: Leg | None = None  # the device that dialled the feature code, answered on bridging


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
        self._attempts: dict[int, tuple[Recovery, Attempt]] = {}  # INVITE transaction → attempt
        self._own: dict[int, OwnReinvite] = {}  # our in-dialog re-INVITE transaction → purpose
        self._timers: TimerHeap[RecoveryKey] = TimerHeap()
        self._abandon: TimerHeap[int] = TimerHeap()
        self._events: deque[RecoveryEvent] = deque()
        self._ending: dict[str, tuple[Call, str]] = {}  # lost calls playing their goodbye
        b2bua.hooks = self

    def configure(
        self, *, grace: float, fallback: Iterable[str], ring_timeout: float, announce: bool
    ) -> None:
        """SIGHUP: new settings apply to recoveries that start from now on."""
        self.grace, self.fallback, self.ring_timeout = grace, tuple(fallback), ring_timeout
        self.announce = announce

    # --- outputs ------------------------------------------------------------------------------
    def next_event(self) -> RecoveryEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return earliest(self._timers.next_deadline(), self._abandon.next_deadline())

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
        self._ending.pop(call_id, None)
        self._timers.cancel((call_id, "goodbye"))
        recovery = self.recoveries.pop(call_id, None)
        forget = set(endpoints)
        if recovery is not None:
            forget.update(
                leg.endpoint for leg in (recovery.failed, recovery.survivor) if leg.endpoint
            )
            self._release(recovery, now)
            self.stats.outcome("abandoned")
        for endpoint_id in forget:
            self._unindex(endpoint_id, call_id)

    def keys_typed(self, leg: Leg, key: str, now: float) -> str:
        """The keys a leg typed lately (a pause of KEY_PAUSE starts over), this one included."""
        typed = leg.keys if now - leg.keys_at <= KEY_PAUSE else ""
        leg.keys = (typed + key)[-len(self.feature_code) :]
        leg.keys_at = now
        return leg.keys

    def _index(self, endpoint_id: str | None, call_id: str) -> None:
        if endpoint_id is not None:
            self._calls_on.setdefault(endpoint_id, set()).add(call_id)

    def _unindex(self, endpoint_id: str | None, call_id: str) -> None:
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
                self.stop_attempts(recovery, now)
                self._cancel_resume_reinvite(recovery)
                self._timers.schedule(max(now, recovery.grace_deadline), (call.id, "grace"))
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
        if not self._announce(survivor, "reconnecting") and survivor.local_sdp is not None:
            self._reinvite_survivor(recovery, "hold", now)

    def endpoint_back(self, endpoint_id: str, now: float) -> None:
        """A sign of life (keep-alive, REGISTER, any request) from an endpoint."""
        for call in self.calls_on(endpoint_id):
            recovery = self.recoveries.get(call.id)
            if recovery is None:
                continue
            if recovery.survivor.endpoint == endpoint_id:
                recovery.survivor_down = False
            elif recovery.failed.endpoint == endpoint_id and call.state is CallState.HOLDING:
                self._resume(recovery, now)

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
                self._timers.cancel((call.id, "grace"))
                if self.move(call, Trigger.ASKED) is not None:
                    self.next_step(recovery, now)

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
        self._events.append(CallHeld(call.id, failed.endpoint, reason, now))
        if self._announce(survivor, "reconnecting"):
            pass  # the relay holds it: the survivor's phone is not touched
        elif survivor.local_sdp is not None:
            self._reinvite_survivor(recovery, "hold", now)
        self._timers.schedule(recovery.grace_deadline, (call.id, "grace"))
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
            self.ring(recovery, contacts, step, now)
        return recovery

    def _announce(self, survivor: Leg, prompt: str | None) -> bool:
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
        self._events.append(RebootRequested(endpoint_id, now))
        return True

    def _reinvite_survivor(self, recovery: Recovery, purpose: str, now: float) -> None:
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
                self._bridged(recovery, now)  # nothing to renegotiate (no SDP on this call)
            return
        transaction_id = self._send_reinvite(survivor, offer, now)
        if transaction_id is None:
            return
        recovery.survivor_reinvite = transaction_id
        self._own[transaction_id] = OwnReinvite(recovery.call.id, survivor, purpose)

    def _send_reinvite(self, leg: Leg, offer: bytes, now: float) -> int | None:
        if leg.dialog is None or leg.dialog.state is not DialogState.CONFIRMED:
            return None
        request = leg.dialog.create_request(
            "INVITE", self.local.via(leg.flow), body=offer, content_type="application/sdp"
        )
        leg.local_sdp = offer
        return self.endpoint.send_request(request, leg.flow, now)

    # --- resuming -----------------------------------------------------------------------------
    def _resume(self, recovery: Recovery, now: float) -> None:
        call, failed = recovery.call, recovery.failed
        if self.move(call, Trigger.BACK) is None:
            return
        recovery.back_at = now
        self._timers.cancel((call.id, "grace"))
        self._events.append(CallResuming(call.id, failed.endpoint, now, now - recovery.started))
        self._send_resume_reinvite(recovery, now)

    def _send_resume_reinvite(self, recovery: Recovery, now: float) -> None:
        call, failed = recovery.call, recovery.failed
        contact = self.routes.current_contact(failed.endpoint) if failed.endpoint else None
        if contact is not None:
            failed.flow = contact.flow  # a phone back on a new connection answers on that one
        offer = sdp_offers.reoffer(recovery.survivor_sdp, failed.local_sdp)
        if offer is not None:
            offer = self.b2bua.sdp_to(call, recovery.survivor, failed, offer)
        if recovery.survivor_down:
            offer = sdp_offers.held(offer)  # it comes back to a party that is still gone
        transaction_id = self._send_reinvite(failed, offer, now) if offer is not None else None
        if transaction_id is None:
            self._dial_back(recovery, now)
            return
        recovery.resume_reinvite = transaction_id
        self._own[transaction_id] = OwnReinvite(call.id, failed, "resume")
        self._timers.schedule(now + REINVITE_ANSWER_TIMEOUT, (call.id, "reinvite"))

    def _old_dialog_lost(self, recovery: Recovery, now: float, *, answered: bool) -> None:
        """The re-INVITE on the old dialog failed: ring the phone anew. When it answered (481:
        it rebooted) the old dialog is gone; when it stayed silent the dialog may linger on
        the phone, so it keeps it and gets a BYE once the new leg is up."""
        self._cancel_resume_reinvite(recovery)
        failed = recovery.failed
        if answered and failed.dialog is not None:
            failed.dialog.terminate()
        self._dial_back(recovery, now)

    def _cancel_resume_reinvite(self, recovery: Recovery) -> None:
        self._timers.cancel((recovery.call.id, "reinvite"))
        if recovery.resume_reinvite is not None:
            own = self._own.get(recovery.resume_reinvite)
            if own is not None:
                own.call_id = ""  # a late 2xx is still ACKed, but moves nothing
            recovery.resume_reinvite = None

    def _dial_back(self, recovery: Recovery, now: float) -> None:
        failed = recovery.failed
        contact = self.routes.current_contact(failed.endpoint) if failed.endpoint else None
        if contact is None:
            self._resume_failed(recovery, now)
            return
        self.ring(recovery, [contact], "resume", now, headers=AUTO_ANSWER_HEADERS)

    def _resume_failed(self, recovery: Recovery, now: float) -> None:
        if self.move(recovery.call, Trigger.RESUME_FAILED) is not None:
            self.next_step(recovery, now)

    # --- transferring -------------------------------------------------------------------------
    def _grace_expired(self, recovery: Recovery, now: float) -> None:
        if recovery.survivor_down:
            self._lose(recovery, "both parties failed", now)
            return
        if self.move(recovery.call, Trigger.GRACE_EXPIRED) is not None:
            self.next_step(recovery, now)

    def next_step(self, recovery: Recovery, now: float) -> None:
        exclude = {recovery.failed.endpoint} if recovery.failed.endpoint is not None else set()
        while recovery.steps and recovery.user is not None:
            step = recovery.steps.pop(0)
            contacts = self.routes.step_contacts(recovery.user, step, exclude)
            if contacts:
                self.ring(recovery, contacts, step, now)
                return
            if step == "voicemail" and self._voicemail(recovery, now):
                return
        self._lose(recovery, "the fallback chain is exhausted", now)

    def ring(
        self,
        recovery: Recovery,
        contacts: list[Contact],
        step: str,
        now: float,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Fork INVITEs to `contacts`, offering the survivor's SDP; the first 2xx wins."""
        call = recovery.call
        recovery.step = step
        self._events.append(
            CallTransferring(call.id, step, tuple(str(c.uri) for c in contacts), now)
        )
        if step not in ("resume", "pickup", "target", "refer"):
            self._announce(recovery.survivor, "transferring")
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
                id=self.ids(),
                is_caller=False,
                flow=contact.flow,
                user=contact.user or failed.user,
                endpoint=contact.endpoint,
                local_tag=self.ids(),
                call_id=f"{self.ids()}-{self.ids()}@callkeeper",
                local_sdp=body or None,
            )
            invite = build_invite(
                self.local,
                self.ids,
                uri=contact.uri,
                flow=contact.flow,
                from_address=Address(URI("sip", user=caller, host=self.local.domain)).with_tag(
                    leg.local_tag
                ),
                to_uri=URI("sip", user=callee, host=self.local.domain),
                call_id=leg.call_id,
                user_agent=self.user_agent,
                body=body,
                headers=extra,
            )
            if body and self.b2bua.media is not None:
                # Offer the new leg our relay port (its own side), not the survivor's address.
                invite.body = self.b2bua.sdp_to(call, survivor, leg, body)
                leg.local_sdp = invite.body
            leg.invite = invite
            transaction_id = self.endpoint.send_request(invite, contact.flow, now)
            leg.invite_transaction = transaction_id
            attempt = Attempt(leg, invite, step)
            recovery.attempts[transaction_id] = attempt
            self._attempts[transaction_id] = (recovery, attempt)
        self._timers.schedule(now + self.ring_timeout, (call.id, "ring"))

    def stop_attempts(self, recovery: Recovery, now: float) -> None:
        """CANCEL every attempt still ringing; a 2xx that crosses the CANCEL is ACKed and BYEd."""
        self._timers.cancel((recovery.call.id, "ring"))
        for transaction_id, attempt in recovery.attempts.items():
            if attempt.done:
                continue
            attempt.done = True
            self.endpoint.send_request(build_cancel(attempt.invite), attempt.leg.flow, now)
            self._abandon.schedule(now + self.sip_timers.timer_b, transaction_id)
        recovery.attempts.clear()

    def _step_failed(self, recovery: Recovery, now: float) -> None:
        self.stop_attempts(recovery, now)
        if recovery.step == "resume":
            self._resume_failed(recovery, now)
        elif recovery.step in ("target", "refer"):
            handover.not_taken(self, recovery, now)
        else:
            self.next_step(recovery, now)

    def _voicemail(self, recovery: Recovery, now: float) -> bool:
        """The built-in voicemail (needs the media relay): the relay greets the survivor and
        records its message; the call stays up, bridged to nobody, until the survivor hangs
        up or the relay stops recording (silence, maximum length)."""
        media = self.b2bua.media
        call, survivor, user = recovery.call, recovery.survivor, recovery.user
        if media is None or user is None or not self.routes.has_voicemail(user):
            return False
        caller = survivor.user or (call.callee if survivor is call.b else None)
        limits = (VOICEMAIL_MAX_SECONDS, VOICEMAIL_SILENCE_SECONDS)
        if not media.has_side(survivor) or not media.record(call, survivor, user, caller, limits):
            return False
        recovery.step = "voicemail"
        self._events.append(CallTransferring(call.id, "voicemail", ("voicemail",), now))
        mailbox = Leg(
            id=self.ids(),
            is_caller=False,
            flow=survivor.flow,  # no SIP: the relay is the other party
            user=user,
            endpoint="voicemail",
            state=LegState.CONFIRMED,
        )
        self.connect(recovery, mailbox, "voicemail", now)
        return True

    # --- answers ------------------------------------------------------------------------------
    def receive_response(self, transaction_id: int, response: Response, now: float) -> bool:
        """A response to an INVITE or re-INVITE of ours; False when it is not the engine's."""
        entry = self._attempts.get(transaction_id)
        if entry is not None:
            self._attempt_response(*entry, response, now)
            return True
        own = self._own.get(transaction_id)
        if own is not None:
            self._own_response(transaction_id, own, response, now)
            return True
        return False

    def transaction_timed_out(self, transaction_id: int, now: float) -> bool:
        entry = self._attempts.get(transaction_id)
        if entry is not None:
            recovery, attempt = entry
            self._attempt_failed(recovery, attempt, now)
            return True
        own = self._own.get(transaction_id)
        if own is not None:
            self._own_failed(transaction_id, own, 408, now)
            return True
        return False

    def transaction_terminated(self, transaction_id: int) -> None:
        self._attempts.pop(transaction_id, None)
        self._own.pop(transaction_id, None)
        self._abandon.cancel(transaction_id)

    def _attempt_response(
        self, recovery: Recovery, attempt: Attempt, response: Response, now: float
    ) -> None:
        status = response.status
        if status < 200:
            return
        if status >= 300:
            self._attempt_failed(recovery, attempt, now)
            return
        leg = attempt.leg
        if leg is recovery.winner:
            if leg.ack is not None:  # our ACK was lost: the 2xx came again
                self.endpoint.send_stateless(leg.ack, leg.flow)
            return
        live = self.recoveries.get(recovery.call.id) is recovery
        if not live or attempt.done or recovery.winner is not None:
            self.b2bua.ack_and_bye(attempt.leg, response, now)
            return
        try:
            leg.dialog = Dialog.create_uac(attempt.invite, response, self.ids)
        except (DialogError, ParseError):
            self._attempt_failed(recovery, attempt, now)
            return
        attempt.done = True
        leg.ack = leg.dialog.create_ack(self.local.via(leg.flow))
        self.endpoint.send_stateless(leg.ack, leg.flow)
        leg.state = LegState.CONFIRMED
        leg.remote_sdp = response.body if response.body else None
        leg.session = response.headers.get(SESSION_HEADER)
        leg.invite = None
        recovery.attempts.pop(leg.invite_transaction or -1, None)
        self.stop_attempts(recovery, now)
        self.connect(recovery, leg, attempt.step, now)

    def _attempt_failed(self, recovery: Recovery, attempt: Attempt, now: float) -> None:
        if attempt.done:
            return
        attempt.done = True
        if self.recoveries.get(recovery.call.id) is not recovery or recovery.winner is not None:
            return
        if all(a.done for a in recovery.attempts.values()):
            self._step_failed(recovery, now)

    def _own_response(
        self, transaction_id: int, own: OwnReinvite, response: Response, now: float
    ) -> None:
        status = response.status
        if status < 200:
            return
        leg = own.leg
        if status >= 300:
            self._own_failed(transaction_id, own, status, now)
            return
        if own.ack is not None:  # a retransmitted 2xx: our ACK was lost
            self.endpoint.send_stateless(own.ack, leg.flow)
            return
        if leg.dialog is not None and leg.dialog.state is not DialogState.TERMINATED:
            leg.dialog.receive_response(response)
            own.ack = leg.dialog.create_ack(self.local.via(leg.flow))
            self.endpoint.send_stateless(own.ack, leg.flow)
        if response.body:
            leg.remote_sdp = response.body
        recovery = self.recoveries.get(own.call_id)
        if recovery is None:
            return
        if own.purpose == "resume":
            if transaction_id != recovery.resume_reinvite:
                return
            recovery.resume_reinvite = None
            self._timers.cancel((recovery.call.id, "reinvite"))
            self.connect(recovery, leg, "resume", now, new_dialog=False)
        elif transaction_id == recovery.survivor_reinvite:
            self._survivor_answered(recovery, own.purpose, now)

    def _own_failed(self, transaction_id: int, own: OwnReinvite, status: int, now: float) -> None:
        self._own.pop(transaction_id, None)
        recovery = self.recoveries.get(own.call_id)
        if recovery is None:
            return
        call_id = recovery.call.id
        if own.purpose == "resume":
            if transaction_id != recovery.resume_reinvite:
                return
            recovery.resume_reinvite = None
            if status == 491:
                self._timers.cancel((call_id, "reinvite"))
                self._timers.schedule(now + GLARE_RETRY, (call_id, "retry-resume"))
            else:
                self._old_dialog_lost(recovery, now, answered=status != 408)
            return
        if transaction_id != recovery.survivor_reinvite:
            return
        recovery.survivor_reinvite = None
        if status == 491:
            recovery.survivor_owed = recovery.survivor_owed or own.purpose
            self._timers.schedule(now + GLARE_RETRY, (call_id, "retry-survivor"))
        elif status in (408, 481) and own.purpose == "unhold":
            self._lose(recovery, f"the survivor is gone ({status})", now)
        else:
            # A survivor that will not be held still has its dialog: go on without the hold.
            self._survivor_answered(recovery, own.purpose, now)

    def _survivor_answered(self, recovery: Recovery, purpose: str, now: float) -> None:
        recovery.survivor_reinvite = None
        owed, recovery.survivor_owed = recovery.survivor_owed, None
        if owed is not None:
            self._reinvite_survivor(recovery, owed, now)
        elif purpose == "unhold":
            self._bridged(recovery, now)

    # --- bridging -----------------------------------------------------------------------------
    def connect(
        self, recovery: Recovery, leg: Leg, step: str, now: float, *, new_dialog: bool = True
    ) -> None:
        """`leg` answered for the failed side: it takes that side; the survivor is un-held."""
        call, failed = recovery.call, recovery.failed
        recovery.winner = leg
        recovery.winner_step = step
        if new_dialog:
            handover.report_answered(self, recovery, now)
            self.b2bua.replace_leg(call, failed, leg)
            self.b2bua.bye(failed, now)
            self._unindex(failed.endpoint, call.id)
            self._index(leg.endpoint, call.id)
            self.routes.leg_moved(failed.endpoint, leg.endpoint, now)
        if recovery.survivor_down and call.state is CallState.RESUMING:
            self._wait_for_the_other_side(recovery, leg, now)
            return
        media = self.b2bua.media
        if media is not None and media.has_side(recovery.survivor) and media.has_side(leg):
            # The relay re-bridges: the survivor's phone keeps its session, no re-INVITE.
            media.learn(call, leg, leg.remote_sdp or b"")
            media.connect(recovery.survivor, leg)
            self._bridged(recovery, now)
            return
        self._reinvite_survivor(recovery, "unhold", now)

    def _wait_for_the_other_side(self, recovery: Recovery, returned: Leg, now: float) -> None:
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
        recovery.steps = list(self.fallback) if other.user is not None else []
        recovery.keep_old_until_answer = False
        recovery.grace_deadline = recovery.survivor_down_at + self.grace
        self.move(call, Trigger.DOWN)  # resuming → holding, now for the other side
        self._events.append(CallHeld(call.id, other.endpoint, recovery.reason, now))
        self._timers.schedule(max(now, recovery.grace_deadline), (call.id, "grace"))

    def _bridged(self, recovery: Recovery, now: float) -> None:
        call = recovery.call
        if self.move(call, Trigger.BRIDGED) is None:
            return
        self.recoveries.pop(call.id, None)
        self._release(recovery, now)
        winner = recovery.winner
        step = recovery.winner_step
        outcome = {"resume": "resumed", "voicemail": "voicemail"}.get(step, "transferred")
        resume_seconds = now - recovery.back_at if recovery.back_at is not None else None
        if outcome == "resumed" and resume_seconds is not None:
            self.stats.resumed(resume_seconds)
        self.stats.outcome(outcome)
        self._events.append(
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
            handover.answer_pickup(self, recovery, now)

    def _lose(self, recovery: Recovery, reason: str, now: float) -> None:
        """Nothing can take the call: release the survivor (the B2BUA sets `ended`)."""
        call = recovery.call
        assert next_state(call.state, Trigger.EXHAUSTED) is CallState.ENDED
        self.recoveries.pop(call.id, None)
        self._release(recovery, now)
        self.stats.outcome("lost")
        self._events.append(CallLost(call.id, reason, now))
        media = self.b2bua.media
        survivor = recovery.survivor
        if (
            media is not None
            and self.announce
            and media.has_side(survivor)
            and media.play(survivor, ("goodbye",), None)
        ):
            # Tell the survivor before hanging up: the BYE follows the prompt.
            self._ending[call.id] = (call, f"recovery failed: {reason}")
            self._timers.schedule(now + GOODBYE_SECONDS, (call.id, "goodbye"))
            return
        self.b2bua.end_call(call, f"recovery failed: {reason}", now)

    def interrupt(self, recovery: Recovery, now: float) -> None:
        """Someone asked to move the call: whatever this recovery was trying stops (its
        ringing, a resume re-INVITE, the grace timer); a late answer to it is hung up."""
        self._timers.cancel((recovery.call.id, "grace"))
        self._cancel_resume_reinvite(recovery)
        self.stop_attempts(recovery, now)

    def give_up(self, recovery: Recovery, trigger: Trigger, now: float) -> None:
        """An asked-for move that did not happen: the call goes on as it was."""
        if self.move(recovery.call, trigger) is None:
            return
        self.recoveries.pop(recovery.call.id, None)
        self._release(recovery, now)

    def _release(self, recovery: Recovery, now: float) -> None:
        """Stop everything the recovery had running: timers, ringing, our pending re-INVITEs."""
        call_id = recovery.call.id
        for kind in ("grace", "ring", "reinvite", "retry-resume", "retry-survivor"):
            self._timers.cancel((call_id, kind))
        self.stop_attempts(recovery, now)
        for own in list(self._own.values()):
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
        for transaction_id in self._abandon.pop_due(now):
            self.endpoint.abandon_transaction(transaction_id, now)
        for call_id, kind in self._timers.pop_due(now):
            if kind == "goodbye":
                ending = self._ending.pop(call_id, None)
                if ending is not None and ending[0].state is not CallState.ENDED:
                    self.b2bua.end_call(ending[0], ending[1], now)
                continue
            recovery = self.recoveries.get(call_id)
            if recovery is None:
                continue
            if kind == "grace":
                self._grace_expired(recovery, now)
            elif kind == "ring":
                self._step_failed(recovery, now)
            elif kind == "reinvite":
                self._old_dialog_lost(recovery, now, answered=False)
            elif kind == "retry-resume":
                if recovery.call.state is CallState.RESUMING:
                    self._send_resume_reinvite(recovery, now)
            elif kind == "retry-survivor":
                owed, recovery.survivor_owed = recovery.survivor_owed, None
                if owed is not None:
                    self._reinvite_survivor(recovery, owed, now)

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
