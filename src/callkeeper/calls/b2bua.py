"""The back-to-back user agent: every call is two dialogs that callkeeper owns.

An INVITE from a caller becomes the A leg (we are its UAS) and one INVITE per contact of the
callee (forked in parallel; we are their UAC). The first 2xx wins: the other forks are
CANCELled, and a 2xx that still arrives from one of them is ACKed and BYEd. Provisional and
final responses, ACKs, BYE, CANCEL and in-dialog requests (re-INVITE, UPDATE, INFO, NOTIFY ...)
are relayed between the legs in the order they arrive — one thread, one queue, so a 180 can
never overtake the 200 that followed it. Nothing of one leg's Call-ID, tags or branches leaks
into the other.

Pure: it reads no clock and opens no socket. It talks to the wire through the `SipEndpoint`
and keeps its own timers (2xx retransmission to the caller until ACKed, RFC 3261 §13.3.1.4).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from callkeeper.calls import session_timer
from callkeeper.calls.anchors import Anchor
from callkeeper.calls.dialing import SESSION_HEADER, build_invite, new_call_id
from callkeeper.calls.dialog_audit import DialogAudit, LegLost
from callkeeper.calls.events import CallAnswered, CallEnded, CallEvent, CallStarted
from callkeeper.calls.locals import LocalAddresses
from callkeeper.calls.model import Call, CallState, Leg, LegState, Relay
from callkeeper.sip.address import Address
from callkeeper.sip.capabilities import ALLOW, SUPPORTED
from callkeeper.sip.dialog import Dialog, DialogError, DialogId, DialogState
from callkeeper.sip.endpoint import SipEndpoint
from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Request, Response
from callkeeper.sip.timers import TimerHeap, TimerSettings, earliest
from callkeeper.sip.transaction_messages import IdSource, build_cancel
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import URI

# Headers of an in-dialog request that mean something end to end, so they cross the B2BUA.
_RELAYED_HEADERS = frozenset(
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
# The caller learns why the callee could not be reached; codes a caller cannot act on are
# mapped to what a caller understands (RFC 3261 §16.7 steps 6 and 7 for proxies, in spirit).
_FAILURE_MAP = {401: 480, 407: 480, 503: 480, 300: 480, 301: 480, 302: 480, 305: 480, 380: 480}


@dataclass(frozen=True, slots=True)
class Contact:
    """One destination for a B fork: the Request-URI and the flow it goes over."""

    uri: URI
    flow: Flow
    endpoint: str | None = None  # the registration key or static contact it stands for
    user: str | None = None


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


def _is_sdp(message: Request | Response) -> bool:
    return bool(message.body) and message.content_type == "application/sdp"


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
        self._by_dialog: dict[DialogId, tuple[Call, Leg]] = {}
        self._forks: dict[int, tuple[Call, Leg]] = {}  # B INVITE client transaction → fork
        self._invites: dict[int, Call] = {}  # A INVITE server transaction → call (for CANCEL)
        self._relays: dict[int, Relay] = {}  # relayed request's client transaction → relay
        self._refreshes: dict[int, tuple[Call, Leg]] = {}  # our session refreshes in flight
        self._own_call_ids: dict[str, Call] = {}
        self._timers: TimerHeap[tuple[str, str]] = TimerHeap()
        # A CANCELled INVITE that never gets its final response has no timer of its own in
        # RFC 3261: the TU gives up on it 64·T1 after the CANCEL (§9.1).
        self._abandon: TimerHeap[int] = TimerHeap()
        self._events: deque[CallEvent] = deque()
        self.audit = DialogAudit(endpoint, local, audit_interval)
        self.hooks: RecoveryHooks | None = None
        self.media: Anchor | None = None  # relay or rtpengine: SDP names our media ports

    # --- queries ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.calls)

    def next_event(self) -> CallEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return earliest(
            earliest(self._timers.next_deadline(), self._abandon.next_deadline()),
            self.audit.next_deadline(),
        )

    def is_own_call_id(self, call_id: str) -> bool:
        """A Call-ID we generated for a B leg: an INVITE carrying it has looped back to us."""
        return call_id in self._own_call_ids

    def knows_dialog(self, request: Request) -> bool:
        try:
            return DialogId.of_request(request) in self._by_dialog
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
        if self.validate_sdp is not None and _is_sdp(request):
            problem = self.validate_sdp(request.body)
            if problem is not None:
                self._reject(request, transaction_id, 488, now, warning=problem)
                return
        if not target.contacts:
            self._reject(request, transaction_id, 480, now)
            return
        if session_timer.too_small(request):
            response = request.create_response(422, to_tag=self.ids())
            response.headers.add("Min-SE", str(session_timer.MIN_SE))
            self.endpoint.send_response(response, now, transaction_id)
            return
        local_tag_source = self.ids
        try:
            a_dialog = Dialog.create_uas(
                request,
                local_tag_source,
                local_contact=self.local.contact(flow),
                over_tls=flow.transport == "tls",
            )
        except DialogError as error:
            self._reject(request, transaction_id, error.status, now, warning=error.reason)
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
            remote_sdp=request.body if _is_sdp(request) else None,
        )
        call = Call(id=self.ids(), a=a, created=now, callee=target.callee)
        self.calls[call.id] = call
        self._by_dialog[a_dialog.id] = (call, a)
        self._invites[transaction_id] = call
        endpoint.send_response(request.create_response(100), now, transaction_id)
        self._events.append(CallStarted(call.id, caller, target.callee, now))
        max_forwards = _max_forwards(request) - 1
        from_address = Address(
            URI("sip", user=caller or request.from_addr.uri.user, host=self.local.domain),
            request.from_addr.display_name,
        )
        for contact in target.contacts:
            self._fork(call, request, contact, target, from_address, max_forwards, now)

    def _fork(
        self,
        call: Call,
        a_invite: Request,
        contact: Contact,
        target: CallTarget,
        from_address: Address,
        max_forwards: int,
        now: float,
    ) -> None:
        fork = Leg(
            id=self.ids(),
            is_caller=False,
            flow=contact.flow,
            user=contact.user,
            endpoint=contact.endpoint,
            local_tag=self.ids(),
        )
        call_id = new_call_id(self.ids)
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
        if _is_sdp(a_invite):
            body = self.sdp_to(call, call.a, fork, body)
        if body:
            fork.local_sdp = body
        invite = build_invite(
            self.local,
            self.ids,
            uri=contact.uri,
            flow=contact.flow,
            from_address=from_address.with_tag(fork.local_tag),
            to_uri=target.to_uri,
            call_id=call_id,
            user_agent=self.user_agent,
            body=body,
            content_type=a_invite.headers.get("content-type") or "application/sdp",
            max_forwards=max_forwards,
            headers=headers,
        )
        fork.invite = invite
        fork.call_id = call_id
        call.forks.append(fork)
        self._own_call_ids[call_id] = call
        transaction_id = self.endpoint.send_request(invite, contact.flow, now)
        fork.invite_transaction = transaction_id
        self._forks[transaction_id] = (call, fork)

    def _reject(
        self, request: Request, transaction_id: int, status: int, now: float, warning: str = ""
    ) -> None:
        response = request.create_response(status, to_tag=self.ids())
        if warning:
            text = "".join(ch for ch in warning if ch.isprintable() and ch not in '"\\')[:120]
            response.headers.add("Warning", f'399 {self.user_agent} "{text}"')
        self.endpoint.send_response(response, now, transaction_id)

    # --- responses --------------------------------------------------------------------------------
    def receive_response(self, transaction_id: int, response: Response, now: float) -> bool:
        """A response to one of our requests; False when it is not the B2BUA's."""
        fork_entry = self._forks.get(transaction_id)
        if fork_entry is not None:
            call, fork = fork_entry
            self._fork_response(call, fork, response, now)
            return True
        relay = self._relays.get(transaction_id)
        if relay is not None:
            if response.status >= 200:
                del self._relays[transaction_id]
                self._relay_final(relay, response, now)
            return True
        refresh = self._refreshes.get(transaction_id)
        if refresh is not None:
            if response.status >= 200:
                del self._refreshes[transaction_id]
                self._refresh_answered(*refresh, response, now)
            return True
        if self.audit.owns(transaction_id):
            self._audit_found(self.audit.answered(transaction_id, response), now)
            return True
        return False

    def transaction_timed_out(self, transaction_id: int, now: float) -> None:
        """Timer B/F: no answer. A fork counts as a 408; a relayed request is answered 408."""
        fork_entry = self._forks.get(transaction_id)
        if fork_entry is not None:
            call, fork = fork_entry
            assert fork.invite is not None
            self._fork_response(call, fork, fork.invite.create_response(408), now)
            return
        relay = self._relays.pop(transaction_id, None)
        if relay is not None:
            self._relay_final(relay, relay.request.create_response(408), now)
        refresh = self._refreshes.pop(transaction_id, None)
        if refresh is not None:
            call, leg = refresh
            self._leg_broke(call, leg, now, "session refresh timed out")
        self._audit_found(self.audit.timed_out(transaction_id), now)

    def _audit_found(self, lost: LegLost | None, now: float) -> None:
        if lost is not None:
            # A silent leg may still hold its dialog: it gets a BYE too.
            self._leg_broke(
                lost.call,
                lost.leg,
                now,
                lost.reason,
                bye_it=not lost.dialog_lost,
                dialog_lost=lost.dialog_lost,
            )

    def transaction_terminated(self, transaction_id: int) -> None:
        self._abandon.cancel(transaction_id)
        entry = self._forks.pop(transaction_id, None)
        if entry is not None:
            call, fork = entry
            if fork is call.b:
                fork.ack = None  # no 2xx retransmission can reach us any more (Timer M ran out)
            elif call.b is not None:
                # A losing fork can send nothing more that needs its INVITE: let it go.
                call.forks.remove(fork)
                self._own_call_ids.pop(fork.call_id, None)
                if self.media is not None:
                    self.media.release_leg(fork)
        self._relays.pop(transaction_id, None)
        self._refreshes.pop(transaction_id, None)
        self._invites.pop(transaction_id, None)
        self.audit.forget(transaction_id)

    def _fork_response(self, call: Call, fork: Leg, response: Response, now: float) -> None:
        status = response.status
        if status == 100:
            return
        if status < 200:
            self._fork_provisional(call, fork, response, now)
        elif status < 300:
            self._fork_success(call, fork, response, now)
        else:
            self._fork_failure(call, fork, response, now)

    def _fork_provisional(self, call: Call, fork: Leg, response: Response, now: float) -> None:
        if call.state is not CallState.SETUP or fork.cancelled:
            return
        if response.to_addr.tag and fork.invite is not None:
            if fork.dialog is None:
                try:
                    fork.dialog = Dialog.create_uac(fork.invite, response, self.ids)
                except DialogError:
                    fork.dialog = None
            else:
                fork.dialog.receive_response(response)
        fork.state = LegState.EARLY
        if _is_sdp(response):
            fork.remote_sdp = response.body
        a = call.a
        assert a.invite is not None and a.invite_transaction is not None
        relayed = a.invite.create_response(response.status, response.reason, to_tag=a.local_tag)
        relayed.headers.add("Contact", str(self.local.contact(a.flow)))
        if _is_sdp(response):
            relayed.headers.add("Content-Type", "application/sdp")
            relayed.body = self.sdp_to(call, fork, a, response.body)
            a.local_sdp = relayed.body
            if self.media is not None:
                self.media.connect(a, fork)  # early media: ringback, announcements
        if a.dialog is not None:
            a.dialog.send_response(relayed)
        a.state = LegState.EARLY
        self.endpoint.send_response(relayed, now, a.invite_transaction)

    def _fork_success(self, call: Call, fork: Leg, response: Response, now: float) -> None:
        if fork is call.b:
            # A retransmitted 2xx: our ACK was lost; send it again (§13.2.2.4).
            if fork.ack is not None:
                self.endpoint.send_stateless(fork.ack, fork.flow)
            return
        if call.state is not CallState.SETUP or call.b is not None or fork.cancelled:
            self.ack_and_bye(fork, response, now)
            return
        assert fork.invite is not None
        try:
            if fork.dialog is not None and fork.dialog.id == DialogId.of_response(response):
                fork.dialog.receive_response(response)
            else:
                fork.dialog = Dialog.create_uac(fork.invite, response, self.ids)
        except (DialogError, ParseError):
            self.ack_and_bye(fork, response, now)
            return
        fork.state = LegState.CONFIRMED
        fork.remote_sdp = response.body if _is_sdp(response) else fork.remote_sdp
        fork.session = response.headers.get(SESSION_HEADER)
        call.b = fork
        self._by_dialog[fork.dialog.id] = (call, fork)
        for other in call.forks:
            if other is not fork:
                self._cancel_fork(other, now)
        a = call.a
        assert a.invite is not None and a.invite_transaction is not None
        answer = a.invite.create_response(200, to_tag=a.local_tag)
        headers = answer.headers
        headers.add("Contact", str(self.local.contact(a.flow)))
        headers.add("Allow", ALLOW)
        headers.add("Supported", SUPPORTED)
        headers.add("Server", self.user_agent)
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
            if _is_sdp(response):
                answer.body = self.sdp_to(call, fork, a, response.body)
                a.local_sdp = answer.body
        if self.media is not None:
            self.media.connect(a, fork)
        if a.dialog is not None:
            a.dialog.send_response(answer)
        a.state = LegState.CONFIRMED
        call.state = CallState.ACTIVE
        call.answered = now
        self.audit.start(call, now)
        self._expect_ack(call, a, fork, answer, now)
        self.endpoint.send_response(answer, now, a.invite_transaction)
        self._arm_session_timer(call, a, now)
        self._arm_session_timer(call, fork, now)
        self._events.append(CallAnswered(call.id, fork.endpoint, now, a.endpoint))

    def _fork_failure(self, call: Call, fork: Leg, response: Response, now: float) -> None:
        fork.final_response = response
        fork.state = LegState.TERMINATED
        if self.media is not None:
            self.media.release_leg(fork)  # it will send no media now
        if call.state is not CallState.SETUP or call.b is not None:
            return
        if all(f.state is LegState.TERMINATED for f in call.forks):
            best = _best_failure([f.final_response for f in call.forks if f.final_response])
            status = _FAILURE_MAP.get(best.status, best.status)
            a = call.a
            assert a.invite is not None and a.invite_transaction is not None
            reason = best.reason if status == best.status else None
            failure = a.invite.create_response(status, reason, to_tag=a.local_tag)
            if status == 422 and best.headers.get("min-se"):
                failure.headers.add("Min-SE", best.headers.get("min-se") or "")
            self.endpoint.send_response(failure, now, a.invite_transaction)
            self._end(call, f"{status} {failure.reason}", now)

    def _cancel_fork(self, fork: Leg, now: float) -> None:
        if fork.cancelled or fork.state is LegState.TERMINATED or fork.invite is None:
            return
        fork.cancelled = True
        self.endpoint.send_request(build_cancel(fork.invite), fork.flow, now)
        if fork.invite_transaction is not None:
            self._abandon.schedule(now + self.timers.timer_b, fork.invite_transaction)

    def ack_and_bye(self, fork: Leg, response: Response, now: float) -> None:
        """A 2xx nobody wants (a losing fork, a cancelled call): ACK it, then BYE it (§15)."""
        if fork.invite is None:
            return
        try:
            dialog = Dialog.create_uac(fork.invite, response, self.ids)
        except (DialogError, ParseError):
            return
        via = self.local.via(fork.flow)
        self.endpoint.send_stateless(dialog.create_ack(via), fork.flow)
        bye = dialog.create_request("BYE", via)
        self.endpoint.send_request(bye, fork.flow, now)

    # --- ACK, CANCEL, in-dialog requests ------------------------------------------------------------
    def receive_ack(self, request: Request, now: float) -> None:
        """An ACK for a 2xx: pass it on to the leg whose 2xx it answers (late SDP included)."""
        try:
            entry = self._by_dialog.get(DialogId.of_request(request))
        except ParseError:
            return
        if entry is None:
            return
        call, leg = entry
        if call.unacked_response is None or leg is not call.awaiting_ack_from:
            return
        call.unacked_response = None
        self._timers.cancel((call.id, "2xx"))
        target = call.ack_target
        call.awaiting_ack_from = None
        call.ack_target = None
        if target is None or target.dialog is None:
            return
        body = request.body
        if _is_sdp(request):
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
            self._cancel_fork(fork, now)
        self._end(call, "cancelled", now)

    def receive_in_dialog(
        self, request: Request, transaction_id: int, flow: Flow, now: float
    ) -> None:
        """A request inside one of our dialogs (not ACK): check it, then relay or act."""
        try:
            entry = self._by_dialog.get(DialogId.of_request(request))
        except ParseError:
            entry = None
        if entry is None:
            self._reply(request, transaction_id, 481, now)
            return
        call, leg = entry
        assert leg.dialog is not None
        rejected = leg.dialog.receive_request(request)
        if rejected is not None:
            self._reply(request, transaction_id, rejected, now)
            return
        if self.hooks is not None and self.hooks.in_dialog(call, leg, request, transaction_id, now):
            return
        if request.method == "BYE":
            self._reply(request, transaction_id, 200, now)
            self._hang_up(call, leg, now)
            return
        other = call.other(leg)
        if other is None or other.dialog is None or other.dialog.state is not DialogState.CONFIRMED:
            # The other side is not reachable inside a dialog (yet): nothing to relay to.
            status = 491 if request.method == "INVITE" else 481
            self._reply(request, transaction_id, status, now)
            return
        if request.method == "INVITE" and (
            call.unacked_response is not None or self._has_pending_invite(call)
        ):
            self._reply(request, transaction_id, 491, now)  # glare (RFC 3261 §14.2)
            return
        self._relay(call, leg, other, request, transaction_id, now)

    def _relay(
        self, call: Call, from_leg: Leg, to_leg: Leg, request: Request, server_txn: int, now: float
    ) -> None:
        assert to_leg.dialog is not None
        extra = [
            (name, value) for name, value in request.headers if name.lower() in _RELAYED_HEADERS
        ]
        content_type = request.headers.get("content-type") if request.body else None
        body = request.body
        if _is_sdp(request):
            body = self.sdp_to(call, from_leg, to_leg, body)
        outgoing = to_leg.dialog.create_request(
            request.method,
            self.local.via(to_leg.flow),
            body=body,
            content_type=content_type,
            headers=extra,
        )
        if request.method == "INVITE" and _is_sdp(request):
            from_leg.remote_sdp = request.body
            to_leg.local_sdp = body
        client_txn = self.endpoint.send_request(outgoing, to_leg.flow, now)
        self._relays[client_txn] = Relay(call, from_leg, to_leg, server_txn, request)

    def _has_pending_invite(self, call: Call) -> bool:
        return any(r.call is call and r.request.method == "INVITE" for r in self._relays.values())

    def _relay_final(self, relay: Relay, response: Response, now: float) -> None:
        call, from_leg, to_leg = relay.call, relay.from_leg, relay.to_leg
        if to_leg.dialog is not None:
            to_leg.dialog.receive_response(response)
        if call.state is CallState.ENDED:
            return
        status = _FAILURE_MAP.get(response.status, response.status)
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
            if _is_sdp(response):
                answer.body = self.sdp_to(call, to_leg, from_leg, response.body)
        for name, value in response.headers:
            if name.lower() in ("session-expires", "require", "event", "allow-events"):
                answer.headers.add(name, value)
        if 200 <= status < 300 and method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
            answer.headers.add("Contact", str(self.local.contact(from_leg.flow)))
        if method in ("INVITE", "UPDATE") and 200 <= status < 300:
            # A successful re-INVITE/UPDATE refreshes the session on both legs (RFC 4028 §10).
            renegotiated = session_timer.negotiate_as_uac(response)
            if renegotiated is not None:
                to_leg.session_timer = renegotiated
            self._arm_session_timer(call, to_leg, now)
            self._arm_session_timer(call, from_leg, now)
        if method == "INVITE" and 200 <= status < 300:
            if _is_sdp(response):
                to_leg.remote_sdp = response.body
                from_leg.local_sdp = answer.body
            self._expect_ack(call, from_leg, to_leg, answer, now)
        self.endpoint.send_response(answer, now, relay.server_transaction)
        if response.status == 481 and to_leg.dialog is not None:
            # The far side lost its dialog: the call is broken on that leg.
            self._leg_broke(call, to_leg, now, "481 on a relayed request", dialog_lost=True)

    # --- 2xx retransmission to the A side (RFC 3261 §13.3.1.4) --------------------------------------
    def answer(
        self, call: Call, leg: Leg, response: Response, transaction_id: int, now: float
    ) -> None:
        """Send our 2xx to an INVITE `leg` sent us, retransmitted until its ACK arrives."""
        self._expect_ack(call, leg, None, response, now)
        self.endpoint.send_response(response, now, transaction_id)

    def _expect_ack(
        self, call: Call, leg: Leg, ack_target: Leg | None, response: Response, now: float
    ) -> None:
        call.awaiting_ack_from = leg
        call.ack_target = ack_target
        call.unacked_response = response
        call.retransmit_deadline = now + self.timers.timer_h
        if leg.flow.reliable:
            call.retransmit_interval = 0.0
            self._timers.schedule(call.retransmit_deadline, (call.id, "2xx"))
        else:
            call.retransmit_interval = self.timers.t1
            self._timers.schedule(now + self.timers.t1, (call.id, "2xx"))

    def handle_timer(self, now: float) -> None:
        for transaction_id in self._abandon.pop_due(now):
            self.endpoint.abandon_transaction(transaction_id, now)
        self.audit.run_due(self.calls, now)
        for call_id, kind in self._timers.pop_due(now):
            call = self.calls.get(call_id)
            if call is None:
                continue
            if kind == "2xx":
                self._retransmit_2xx(call, now)
            elif kind.startswith("refresh:"):
                self._send_refresh(call, kind.removeprefix("refresh:"), now)
            elif kind.startswith("expire:"):
                leg = self._leg(call, kind.removeprefix("expire:"))
                if leg is not None:
                    self._leg_broke(call, leg, now, "session timer expired", bye_it=True)

    def _retransmit_2xx(self, call: Call, now: float) -> None:
        leg = call.awaiting_ack_from
        response = call.unacked_response
        if leg is None or response is None:
            return
        if now >= call.retransmit_deadline:
            # No ACK within 64·T1: the dialog is confirmed and then torn down (§13.3.1.4).
            call.unacked_response = None
            call.awaiting_ack_from = None
            self._hang_up(call, leg, now, reason="no ACK for our 2xx", bye_it=True)
            return
        self.endpoint.send_response(response, now)
        call.retransmit_interval = min(call.retransmit_interval * 2, self.timers.t2)
        self._timers.schedule(
            min(now + call.retransmit_interval, call.retransmit_deadline), (call.id, "2xx")
        )

    # --- session timers (RFC 4028) -------------------------------------------------------------------
    def _arm_session_timer(self, call: Call, leg: Leg, now: float) -> None:
        timer = leg.session_timer
        if timer is None:
            return
        if timer.we_refresh:
            self._timers.schedule(now + timer.refresh_after(), (call.id, f"refresh:{leg.id}"))
        else:
            self._timers.schedule(now + timer.expire_after(), (call.id, f"expire:{leg.id}"))

    @staticmethod
    def _leg(call: Call, leg_id: str) -> Leg | None:
        return next((leg for leg in call.legs() if leg.id == leg_id), None)

    def _send_refresh(self, call: Call, leg_id: str, now: float) -> None:
        leg = self._leg(call, leg_id)
        if leg is None or leg.dialog is None or leg.session_timer is None:
            return
        if leg.dialog.state is not DialogState.CONFIRMED or call.unacked_response is not None:
            self._timers.schedule(now + self.timers.t2, (call.id, f"refresh:{leg.id}"))
            return
        interval = int(leg.session_timer.interval)
        headers = [("Session-Expires", f"{interval};refresher=uac"), ("Supported", "timer")]
        via = self.local.via(leg.flow)
        if leg.allows_update or leg.local_sdp is None:
            request = leg.dialog.create_request("UPDATE", via, headers=headers)
        else:
            request = leg.dialog.create_request(
                "INVITE", via, body=leg.local_sdp, content_type="application/sdp", headers=headers
            )
        transaction_id = self.endpoint.send_request(request, leg.flow, now)
        self._refreshes[transaction_id] = (call, leg)

    def _refresh_answered(self, call: Call, leg: Leg, response: Response, now: float) -> None:
        if leg.dialog is not None:
            leg.dialog.receive_response(response)
        if call.state is CallState.ENDED:
            return
        if 200 <= response.status < 300:
            if response.cseq.method == "INVITE" and leg.dialog is not None:
                self.endpoint.send_stateless(
                    leg.dialog.create_ack(self.local.via(leg.flow)), leg.flow
                )
            renegotiated = session_timer.negotiate_as_uac(response)
            if renegotiated is not None:
                leg.session_timer = renegotiated
            self._arm_session_timer(call, leg, now)
        elif response.status in (408, 481):
            self._leg_broke(
                call,
                leg,
                now,
                f"session refresh failed: {response.status}",
                dialog_lost=response.status == 481,
            )
        else:
            # 491 glare, 5xx ...: try again a little later, within the interval.
            self._timers.schedule(now + 4 * self.timers.t1, (call.id, f"refresh:{leg.id}"))

    def sdp_to(self, call: Call, from_leg: Leg, to_leg: Leg, body: bytes) -> bytes:
        """An SDP body from `from_leg` as `to_leg` must get it: as is, or naming our relay."""
        media = self.media
        return body if media is None or not body else media.rewrite(call, from_leg, to_leg, body)

    # --- legs the recovery engine moves -------------------------------------------------------------
    def bind_leg(self, call: Call, leg: Leg) -> None:
        """Route `leg`'s in-dialog requests to `call` (a leg the recovery engine connected)."""
        if leg.dialog is not None:
            self._by_dialog[leg.dialog.id] = (call, leg)
        if not leg.is_caller and leg.call_id:
            self._own_call_ids[leg.call_id] = call

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
        if leg.dialog is not None and self._by_dialog.get(leg.dialog.id, (None, None))[1] is leg:
            del self._by_dialog[leg.dialog.id]
        if not leg.is_caller:
            self._own_call_ids.pop(leg.call_id, None)
        self._timers.cancel((call.id, f"refresh:{leg.id}"))
        self._timers.cancel((call.id, f"expire:{leg.id}"))
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
        self._end(call, reason, now)

    def _leg_broke(
        self,
        call: Call,
        leg: Leg,
        now: float,
        reason: str,
        *,
        bye_it: bool = False,
        dialog_lost: bool = False,
    ) -> None:
        hooks = self.hooks
        if hooks is not None and hooks.absorbs_failure(call, leg, reason, dialog_lost, now):
            return
        self._hang_up(call, leg, now, reason=reason, bye_it=bye_it)

    # --- ending ---------------------------------------------------------------------------------------
    def _hang_up(
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
                self._cancel_fork(leg, now)
        if from_leg.dialog is not None and from_leg.dialog.state is not DialogState.TERMINATED:
            from_leg.dialog.terminate()
        who = "caller" if from_leg is call.a else "callee"
        self._end(call, reason or f"{who} hung up", now)

    def _end(self, call: Call, reason: str, now: float) -> None:
        if call.state is CallState.ENDED:
            return
        call.state = CallState.ENDED
        call.ended = now
        call.end_reason = reason
        for leg in call.legs():
            leg.state = LegState.TERMINATED
            if leg.dialog is not None:
                self._by_dialog.pop(leg.dialog.id, None)
            if not leg.is_caller:
                self._own_call_ids.pop(leg.call_id, None)
        self._timers.cancel((call.id, "2xx"))
        self.audit.stop(call)
        for leg in call.legs():
            self._timers.cancel((call.id, f"refresh:{leg.id}"))
            self._timers.cancel((call.id, f"expire:{leg.id}"))
        del self.calls[call.id]
        if self.media is not None:
            self.media.release_call(call.id)
        connected = tuple(
            leg.endpoint for leg in (call.a, call.b) if leg is not None and leg.endpoint is not None
        )
        self._events.append(
            CallEnded(
                call.id, reason, now, call.answered is not None, connected if call.answered else ()
            )
        )

    def _reply(self, request: Request, transaction_id: int, status: int, now: float) -> None:
        self.endpoint.send_response(request.create_response(status), now, transaction_id)


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
