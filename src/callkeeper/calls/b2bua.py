"""The back-to-back user agent: every call is two dialogs that callkeeper owns.

An INVITE from a caller becomes the A leg (we are its UAS) and one INVITE per contact of the
callee (forked in parallel; we are their UAC). The first 2xx wins: the other forks are
CANCELled, and a 2xx that still arrives from one of them is ACKed and BYEd. Provisional and
final responses, ACKs, BYE, CANCEL and in-dialog requests (re-INVITE, UPDATE, INFO, NOTIFY ...)
are relayed between the legs in the order they arrive — one thread, one queue, so a 180 can
never overtake the 200 that followed it. Nothing of one leg's Call-ID, tags or branches leaks
into the other.

This module owns the calls: their indexes (by dialog, by transaction, our own Call-IDs), the
dispatch of the SipEndpoint's events, ACK and CANCEL, our 2xx retransmitted until ACKed
(RFC 3261 §13.3.1.4), the legs the recovery engine moves, and the end of a call. The work of
each phase is in helpers that take the B2BUA as their first argument: `forking` (set-up: the
forks and their answers), `in_dialog_relay` (requests inside an established call) and
`session_refresh` (RFC 4028 refreshes and expiry); `dialog_audit` probes established calls.
The state they share is public here.

Pure: it reads no clock and opens no socket. It talks to the wire through the `SipEndpoint`
and keeps its own timers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from callkeeper.calls import forking, in_dialog_relay, session_refresh, session_timer
from callkeeper.calls.anchors import Anchor
from callkeeper.calls.dialing import answering_dialog
from callkeeper.calls.dialog_audit import DialogAudit, LegLost
from callkeeper.calls.events import CallEnded, CallEvent, CallStarted
from callkeeper.calls.locals import LocalAddresses
from callkeeper.calls.model import Call, CallState, Leg, LegState, Relay
from callkeeper.sip.dialog import DialogError, DialogId, DialogState
from callkeeper.sip.endpoint import SipEndpoint
from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Request, Response
from callkeeper.sip.timers import TimerHeap, TimerSettings, earliest
from callkeeper.sip.transaction_messages import IdSource
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import URI

# s after a restart before a restored call's first dialog audit (if audits are on)
RESTORED_AUDIT_AFTER = 2.0


@dataclass(frozen=True, slots=True)
class Contact:
    """One destination for a B fork: the Request-URI and the flow it goes over."""

    uri: URI
    flow: Flow
    endpoint: str | None = None  # the registration key or static contact it stands for
    user: str | None = None
    # A host name's other addresses, in RFC 3263 order: where the INVITE goes if `flow` fails.
    alternates: tuple[Flow, ...] = ()


@dataclass(frozen=True, slots=True)
class CallTarget:
    """Who a caller dialled: the name for the To header and the contacts to fork to."""

    callee: str  # a user name or a number
    to_uri: URI
    contacts: tuple[Contact, ...]


class RecoveryHooks(Protocol):
    """What the recovery engine decides inside the B2BUA's own handling of a call."""

    def in_dialog(
        self, call: Call, leg: Leg, request: Request, transaction_id: int, now: float
    ) -> bool:
        """Take an in-dialog request (not ACK) instead of relaying it; True when taken."""
        ...

    def absorbs_failure(
        self, call: Call, leg: Leg, reason: str, dialog_lost: bool, now: float
    ) -> bool:
        """A leg broke (refresh failed, session expired; `dialog_lost`: the far end answered
        481, it rebooted): True when the engine keeps the call alive instead of ending it."""
        ...


class B2BUA:
    def __init__(
        self,
        endpoint: SipEndpoint,
        local: LocalAddresses,
        ids: IdSource,
        timers: TimerSettings,
        user_agent: str = "callkeeper",
        validate_sdp: Callable[[bytes], str | None] | None = None,
        audit_interval: float = 0.0,
    ) -> None:
        self.endpoint = endpoint
        self.local = local
        self.ids = ids
        self.timers = timers
        self.user_agent = user_agent
        self.validate_sdp = validate_sdp
        self.calls: dict[str, Call] = {}
        self.by_dialog: dict[DialogId, tuple[Call, Leg]] = {}  # every live leg's dialog
        self.forks: dict[int, tuple[Call, Leg]] = {}  # B INVITE client transaction → fork
        self._invites: dict[int, Call] = {}  # A INVITE server transaction → call (for CANCEL)
        self.relays: dict[int, Relay] = {}  # relayed request's client transaction → relay
        self.refreshes: dict[int, tuple[Call, Leg]] = {}  # our session refreshes in flight
        self.own_call_ids: dict[str, Call] = {}  # the Call-IDs of our B legs
        # (call id, "2xx" | "refresh:<leg id>" | "expire:<leg id>"): our 2xx retransmission
        # and the session timers (session_refresh.py).
        self.call_timers: TimerHeap[tuple[str, str]] = TimerHeap()
        # A CANCELled INVITE that never gets its final response has no timer of its own in
        # RFC 3261: the TU gives up on it 64·T1 after the CANCEL (§9.1).
        self.abandon: TimerHeap[int] = TimerHeap()
        self.events: deque[CallEvent] = deque()
        # Calls whose stored snapshot is out of date (a relayed re-INVITE or UPDATE succeeded):
        # the call manager hands them to its CallSaver.
        self.changed_calls: deque[str] = deque()
        self.audit = DialogAudit(endpoint, local, audit_interval)
        self.hooks: RecoveryHooks | None = None
        self.media: Anchor | None = None  # relay or rtpengine: SDP names our media ports
        # (address, seconds, now): a server answered 503 with Retry-After (resolved_targets.py).
        self.rest_target: Callable[[tuple[str, int], float, float], None] | None = None
        self.dns_failovers = 0  # INVITEs sent on to a host name's next address (forking.py)

    # --- queries ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.calls)

    def next_event(self) -> CallEvent | None:
        return self.events.popleft() if self.events else None

    def get_timer(self) -> float | None:
        return earliest(
            earliest(self.call_timers.next_deadline(), self.abandon.next_deadline()),
            self.audit.next_deadline(),
        )

    def is_own_call_id(self, call_id: str) -> bool:
        """A Call-ID we generated for a B leg: an INVITE carrying it has looped back to us."""
        return call_id in self.own_call_ids

    def knows_dialog(self, request: Request) -> bool:
        try:
            return DialogId.of_request(request) in self.by_dialog
        except ParseError:
            return False

    # --- call set-up ----------------------------------------------------------------------------
    def start_call(
        self,
        request: Request,
        transaction_id: int,
        flow: Flow,
        caller: str | None,
        target: CallTarget,
        now: float,
        caller_endpoint: str | None = None,
    ) -> None:
        """Take a new INVITE (already authorised and routed) and fork it to the target."""
        endpoint = self.endpoint
        if self.validate_sdp is not None and request.has_sdp:
            problem = self.validate_sdp(request.body)
            if problem is not None:
                forking.reject(self, request, transaction_id, 488, now, warning=problem)
                return
        if not target.contacts:
            forking.reject(self, request, transaction_id, 480, now)
            return
        if session_timer.too_small(request):
            response = request.create_response(422, to_tag=self.ids())
            response.headers.add("Min-SE", str(session_timer.MIN_SE))
            self.endpoint.send_response(response, now, transaction_id)
            return
        try:
            a_dialog = answering_dialog(self.local, self.ids, request, flow)
        except DialogError as error:
            forking.reject(self, request, transaction_id, error.status, now, warning=error.reason)
            return
        a = Leg(
            id=self.ids(),
            is_caller=True,
            flow=flow,
            user=caller,
            endpoint=caller_endpoint,
            state=LegState.TRYING,
            dialog=a_dialog,
            invite=request,
            invite_transaction=transaction_id,
            local_tag=a_dialog.id.local_tag,
            remote_sdp=request.body if request.has_sdp else None,
        )
        call = Call(id=self.ids(), a=a, created=now, callee=target.callee)
        self.calls[call.id] = call
        self.by_dialog[a_dialog.id] = (call, a)
        self._invites[transaction_id] = call
        endpoint.send_response(request.create_response(100), now, transaction_id)
        self.events.append(CallStarted(call.id, caller, target.callee, now))
        forking.fork_to(self, call, request, target, caller, now)

    # --- responses --------------------------------------------------------------------------------
    def receive_response(self, transaction_id: int, response: Response, now: float) -> bool:
        """A response to one of our requests; False when it is not the B2BUA's."""
        fork_entry = self.forks.get(transaction_id)
        if fork_entry is not None:
            call, fork = fork_entry
            forking.fork_response(self, call, fork, response, now)
            return True
        relay = self.relays.get(transaction_id)
        if relay is not None:
            if response.status >= 200:
                del self.relays[transaction_id]
                in_dialog_relay.relay_final(self, relay, response, now)
            return True
        refresh = self.refreshes.get(transaction_id)
        if refresh is not None:
            if response.status >= 200:
                del self.refreshes[transaction_id]
                session_refresh.refresh_answered(self, *refresh, response, now)
            return True
        if self.audit.owns(transaction_id):
            self._audit_found(self.audit.answered(transaction_id, response), now)
            return True
        return False

    def transaction_timed_out(self, transaction_id: int, now: float) -> None:
        """Timer B/F: no answer. A fork fails over or counts as a 408; a relayed request is
        answered 408."""
        fork_entry = self.forks.get(transaction_id)
        if fork_entry is not None:
            forking.fork_timed_out(self, *fork_entry, now)
            return
        relay = self.relays.pop(transaction_id, None)
        if relay is not None:
            in_dialog_relay.relay_final(self, relay, relay.request.create_response(408), now)
        refresh = self.refreshes.pop(transaction_id, None)
        if refresh is not None:
            call, leg = refresh
            self.leg_broke(call, leg, now, "session refresh timed out")
        self._audit_found(self.audit.timed_out(transaction_id), now)

    def transport_failed(self, transaction_id: int, now: float) -> None:
        """A fork's INVITE could not be sent: it fails over or counts as a 503."""
        fork_entry = self.forks.get(transaction_id)
        if fork_entry is not None:
            forking.fork_unreachable(self, *fork_entry, now)

    def connection_closed(self, flow: Flow, now: float) -> None:
        """A TCP/TLS connection we dialled closed (or could not be made): forks sent over it
        that heard nothing back had a transport failure (RFC 3263 §4.3). (A phone's own
        connection, `flow.connection` set, is left to Timer B as before.)"""
        for transaction_id, (call, fork) in list(self.forks.items()):
            if (
                fork.flow.connection is None
                and fork.state is LegState.TRYING
                and fork.provisional == 0
                and fork.flow.transport == flow.transport
                and fork.flow.remote == flow.remote
            ):
                self.endpoint.abandon_transaction(transaction_id, now)
                forking.fork_unreachable(self, call, fork, now)

    def _audit_found(self, lost: LegLost | None, now: float) -> None:
        if lost is not None:
            # A silent leg may still hold its dialog: it gets a BYE too.
            self.leg_broke(
                lost.call,
                lost.leg,
                now,
                lost.reason,
                bye_it=not lost.dialog_lost,
                dialog_lost=lost.dialog_lost,
            )

    def transaction_terminated(self, transaction_id: int) -> None:
        self.abandon.cancel(transaction_id)
        entry = self.forks.pop(transaction_id, None)
        if entry is not None:
            call, fork = entry
            if fork is call.b:
                fork.ack = None  # no 2xx retransmission can reach us any more (Timer M ran out)
            elif call.b is not None:
                # A losing fork can send nothing more that needs its INVITE: let it go.
                call.forks.remove(fork)
                self.own_call_ids.pop(fork.call_id, None)
                if self.media is not None:
                    self.media.release_leg(fork)
        self.relays.pop(transaction_id, None)
        self.refreshes.pop(transaction_id, None)
        self._invites.pop(transaction_id, None)
        self.audit.forget(transaction_id)

    def ack_and_bye(self, fork: Leg, response: Response, now: float) -> None:
        """A 2xx nobody wants (a losing fork, a cancelled call): ACK it, then BYE it (§15)."""
        forking.ack_and_bye(self, fork, response, now)

    # --- ACK, CANCEL, in-dialog requests ------------------------------------------------------------
    def receive_ack(self, request: Request, now: float) -> None:
        """An ACK for a 2xx: pass it on to the leg whose 2xx it answers (late SDP included)."""
        try:
            entry = self.by_dialog.get(DialogId.of_request(request))
        except ParseError:
            return
        if entry is None:
            return
        call, leg = entry
        if call.unacked_response is None or leg is not call.awaiting_ack_from:
            return
        call.unacked_response = None
        self.call_timers.cancel((call.id, "2xx"))
        target = call.ack_target
        call.awaiting_ack_from = None
        call.ack_target = None
        if target is None or target.dialog is None:
            return
        body = request.body
        if request.has_sdp:
            leg.remote_sdp = request.body
            body = self.sdp_to(call, leg, target, body)
            target.local_sdp = body
        if call.b is target and leg is call.a:
            # Set-up is over: the INVITEs were only needed to answer and cancel them. Keeping
            # them would double what an established call costs in memory.
            call.a.invite = None
            target.invite = None
        content_type = request.headers.get("content-type") if body else None
        ack = target.dialog.create_ack(
            self.local.via(target.flow), body=body, content_type=content_type
        )
        target.ack = ack
        self.endpoint.send_stateless(ack, target.flow)

    def receive_cancel(
        self, cancel_transaction: int, cancelled: int | None, request: Request, now: float
    ) -> None:
        endpoint = self.endpoint
        call = self._invites.get(cancelled) if cancelled is not None else None
        status = 200 if cancelled is not None else 481
        endpoint.send_response(
            request.create_response(status, to_tag=self.ids()), now, cancel_transaction
        )
        if call is None or call.state is not CallState.SETUP:
            return  # nothing pending any more: a CANCEL after the final response does nothing
        a = call.a
        assert a.invite is not None and a.invite_transaction is not None
        endpoint.send_response(
            a.invite.create_response(487, to_tag=a.local_tag), now, a.invite_transaction
        )
        for fork in call.forks:
            forking.cancel_fork(self, fork, now)
        self.forget_call(call, "cancelled", now)

    def receive_in_dialog(self, request: Request, transaction_id: int, now: float) -> None:
        """A request inside one of our dialogs (not ACK): check it, then relay or act."""
        in_dialog_relay.receive(self, request, transaction_id, now)

    # --- 2xx retransmission to the A side (RFC 3261 §13.3.1.4) --------------------------------------
    def answer(
        self, call: Call, leg: Leg, response: Response, transaction_id: int, now: float
    ) -> None:
        """Send our 2xx to an INVITE `leg` sent us, retransmitted until its ACK arrives."""
        self.expect_ack(call, leg, None, response, now)
        self.endpoint.send_response(response, now, transaction_id)

    def expect_ack(
        self, call: Call, leg: Leg, ack_target: Leg | None, response: Response, now: float
    ) -> None:
        """Our 2xx to `leg`'s INVITE is retransmitted until ACKed; the ACK goes on to
        `ack_target` (the leg whose 2xx we relayed), or nowhere."""
        call.awaiting_ack_from = leg
        call.ack_target = ack_target
        call.unacked_response = response
        call.retransmit_deadline = now + self.timers.timer_h
        if leg.flow.reliable:
            call.retransmit_interval = 0.0
            self.call_timers.schedule(call.retransmit_deadline, (call.id, "2xx"))
        else:
            call.retransmit_interval = self.timers.t1
            self.call_timers.schedule(now + self.timers.t1, (call.id, "2xx"))

    def handle_timer(self, now: float) -> None:
        for transaction_id in self.abandon.pop_due(now):
            self.endpoint.abandon_transaction(transaction_id, now)
        self.audit.run_due(self.calls, now)
        for call_id, kind in self.call_timers.pop_due(now):
            call = self.calls.get(call_id)
            if call is None:
                continue
            if kind == "2xx":
                self._retransmit_2xx(call, now)
            else:
                session_refresh.due(self, call, kind, now)

    def _retransmit_2xx(self, call: Call, now: float) -> None:
        leg = call.awaiting_ack_from
        response = call.unacked_response
        if leg is None or response is None:
            return
        if now >= call.retransmit_deadline:
            # No ACK within 64·T1: the dialog is confirmed and then torn down (§13.3.1.4).
            call.unacked_response = None
            call.awaiting_ack_from = None
            self.hang_up(call, leg, now, reason="no ACK for our 2xx", bye_it=True)
            return
        self.endpoint.send_response(response, now)
        call.retransmit_interval = min(call.retransmit_interval * 2, self.timers.t2)
        self.call_timers.schedule(
            min(now + call.retransmit_interval, call.retransmit_deadline), (call.id, "2xx")
        )

    def sdp_to(self, call: Call, from_leg: Leg, to_leg: Leg, body: bytes) -> bytes:
        """An SDP body from `from_leg` as `to_leg` must get it: as is, or naming our relay."""
        media = self.media
        return body if media is None or not body else media.rewrite(call, from_leg, to_leg, body)

    def adopt(self, call: Call, now: float) -> None:
        """A call restored from the store after a restart (call_snapshots.py): index its
        dialogs, arm its session timers, and audit it soon — both phones may have hung up
        while nobody was there to hear their BYEs."""
        self.calls[call.id] = call
        for leg in call.legs():
            self.bind_leg(call, leg)
            session_refresh.arm(self, call, leg, now)
        self.audit.start(call, now, first_after=RESTORED_AUDIT_AFTER)

    # --- legs the recovery engine moves -------------------------------------------------------------
    def bind_leg(self, call: Call, leg: Leg) -> None:
        """Route `leg`'s in-dialog requests to `call` (a leg the recovery engine connected)."""
        if leg.dialog is not None:
            self.by_dialog[leg.dialog.id] = (call, leg)
        if not leg.is_caller and leg.call_id:
            self.own_call_ids[leg.call_id] = call

    def replace_leg(self, call: Call, old: Leg, new: Leg) -> None:
        """`new` takes `old`'s side of the call; `old` is forgotten (its dialog, its timers)."""
        if call.a is old:
            call.a = new
        else:
            call.b = new
        if old in call.forks:
            call.forks.remove(old)
        self.forget_leg(call, old)
        self.bind_leg(call, new)

    def forget_leg(self, call: Call, leg: Leg) -> None:
        if leg.dialog is not None and self.by_dialog.get(leg.dialog.id, (None, None))[1] is leg:
            del self.by_dialog[leg.dialog.id]
        if not leg.is_caller:
            self.own_call_ids.pop(leg.call_id, None)
        session_refresh.disarm(self, call, leg)
        leg.state = LegState.TERMINATED
        if self.media is not None:
            self.media.release_leg(leg)

    def bye(self, leg: Leg, now: float) -> None:
        """Best-effort BYE of a confirmed leg; its dialog ends here either way."""
        if leg.dialog is None or leg.dialog.state is DialogState.TERMINATED:
            return
        if leg.dialog.state is DialogState.CONFIRMED:
            bye = leg.dialog.create_request("BYE", self.local.via(leg.flow))
            self.endpoint.send_request(bye, leg.flow, now)
        leg.dialog.terminate()

    def end_call(self, call: Call, reason: str, now: float) -> None:
        """End a call nobody hung up (the recovery chain ran out): BYE every live leg."""
        for leg in call.legs():
            self.bye(leg, now)
        self.forget_call(call, reason, now)

    def leg_broke(
        self,
        call: Call,
        leg: Leg,
        now: float,
        reason: str,
        *,
        bye_it: bool = False,
        dialog_lost: bool = False,
    ) -> None:
        """`leg` stopped working: the recovery engine may keep the call, else it is hung up."""
        hooks = self.hooks
        if hooks is not None and hooks.absorbs_failure(call, leg, reason, dialog_lost, now):
            return
        self.hang_up(call, leg, now, reason=reason, bye_it=bye_it)

    # --- ending ---------------------------------------------------------------------------------------
    def hang_up(
        self,
        call: Call,
        from_leg: Leg,
        now: float,
        reason: str | None = None,
        *,
        bye_it: bool = False,
    ) -> None:
        """`from_leg` ended the call (its BYE, or it broke): BYE every other confirmed leg.

        `bye_it` also sends `from_leg` a BYE: it went silent (a session timer expired, our 2xx
        was never ACKed) but its dialog may still exist on the other end.
        """
        for leg in call.legs():
            if leg.dialog is None or (leg is from_leg and not bye_it):
                continue
            if leg.dialog.state is DialogState.CONFIRMED:
                bye = leg.dialog.create_request("BYE", self.local.via(leg.flow))
                self.endpoint.send_request(bye, leg.flow, now)
                leg.dialog.terminate()
            elif not leg.is_caller:
                forking.cancel_fork(self, leg, now)
        if from_leg.dialog is not None and from_leg.dialog.state is not DialogState.TERMINATED:
            from_leg.dialog.terminate()
        who = "caller" if from_leg is call.a else "callee"
        self.forget_call(call, reason or f"{who} hung up", now)

    def forget_call(self, call: Call, reason: str, now: float) -> None:
        """The call is over (its BYEs, CANCELs or final response are sent): drop it and every
        index, timer and media port it held, and tell the manager (CallEnded)."""
        if call.state is CallState.ENDED:
            return
        call.state = CallState.ENDED
        call.ended = now
        call.end_reason = reason
        for leg in call.legs():
            leg.state = LegState.TERMINATED
            if leg.dialog is not None:
                self.by_dialog.pop(leg.dialog.id, None)
            if not leg.is_caller:
                self.own_call_ids.pop(leg.call_id, None)
        self.call_timers.cancel((call.id, "2xx"))
        self.audit.stop(call)
        for leg in call.legs():
            session_refresh.disarm(self, call, leg)
        del self.calls[call.id]
        if self.media is not None:
            self.media.release_call(call.id)
        connected = tuple(
            leg.endpoint for leg in (call.a, call.b) if leg is not None and leg.endpoint is not None
        )
        self.events.append(
            CallEnded(
                call.id, reason, now, call.answered is not None, connected if call.answered else ()
            )
        )

    def reply(self, request: Request, transaction_id: int, status: int, now: float) -> None:
        """Answer a request ourselves (not relayed), with no body."""
        self.endpoint.send_response(request.create_response(status), now, transaction_id)
