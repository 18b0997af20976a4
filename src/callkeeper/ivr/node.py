"""An IVR node's SIP user agent, sans-IO: it registers, keeps alive, answers calls and runs the
script for each of them, checkpointing the session so another node can resume it.

What the node does on the wire (the call manager is its only peer):

- **Registers** as a device of the IVR user (`[ivr] user`) with RFC 5626 outbound: `Supported:
  outbound`, a Contact with the node's `+sip.instance` (a UUID derived from the node's name, so a
  restarted node is the same endpoint) and `reg-id=1`. A 401/407 is answered with Digest
  (`sip.digest.answer_challenge`, qop=auth). The registration is refreshed at half its lifetime.
- **Keeps alive**: the 200's `Flow-Timer` is the interval the call manager watches; the node sends
  a STUN Binding request every 0.8 × Flow-Timer (RFC 5626 §4.4.1). When no keep-alive has been
  answered for `FLOW_LOST_INTERVALS` intervals, the flow is lost: the node registers anew and
  lets its calls go (without deleting their checkpoints) — by then the call manager has declared
  it DOWN and moved those callers to another node, and a node that kept running the sessions
  would overwrite the checkpoints that node resumes from.
- **Answers INVITEs** with a G.711 (PCMU/PCMA) answer, plus telephone-event when offered, on an
  RTP port from the io layer's port source, and names the session in `X-Callkeeper-Session`. An
  INVITE that carries a session id is a session moved here from a dead node: the 200 waits for
  the checkpoint to be read; a checkpoint that is missing or expired, or that another script
  wrote, starts a fresh session under a new id (reported as `SessionRestarted`).
- In the dialog: ACK (stops the 2xx retransmission), BYE (ends the session; its checkpoint is
  deleted), re-INVITE (answered on the same port), INFO `application/dtmf-relay` or
  `application/dtmf` (a digit), NOTIFY (the progress of our REFER), OPTIONS. Out of dialog:
  OPTIONS statelessly, NOTIFY (e.g. a reboot request) with 200.

Per call, an interpreter (`callkeeper.ivr.interpreter.Interpreter`) runs the script: its prompts
become `PlayPrompt`/`StopPrompt` for the io layer, `Checkpoint` becomes `SaveCheckpoint` (an
`Envelope` naming the script and the owner), `Transfer` a REFER to the call manager, `Hangup` a
BYE. Digits come from INFO here, or from RTP telephone-events via `digit()`.

This module is the node's front: the inputs the io layer feeds (datagrams, timers, loaded
checkpoints, digits, prompt progress), the outputs it drains, and the dispatch of SIP events.
The work is in helpers that take the node as their first argument: `node_registration`
(REGISTER, Digest, keep-alives), `node_calls` (answering and the dialog, SDP) and
`node_runner` (the interpreter's commands, checkpoint saves and deletes, the end of a call);
the shared records are in `node_model`, the stored format in `envelope`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from callkeeper.ivr import node_calls, node_registration, node_runner
from callkeeper.ivr import node_commands as nc
from callkeeper.ivr.node_model import ALLOW, IvrCall, NodeSettings
from callkeeper.ivr.node_registration import RegistrationState
from callkeeper.ivr.script import Script
from callkeeper.sip.dialog import DialogId, DialogState
from callkeeper.sip.endpoint import (
    KeepaliveReceived,
    SipEndpoint,
    StatelessRequestReceived,
)
from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Request, Response, has_to_tag
from callkeeper.sip.timers import TimerHeap, earliest
from callkeeper.sip.transaction_events import (
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
    TransportFailed,
)
from callkeeper.sip.transaction_messages import IdSource
from callkeeper.sip.transport import Flow, Transmit


class IvrNode:
    def __init__(
        self,
        settings: NodeSettings,
        ids: IdSource,
        script: Script,
        media_port: Callable[[str], int],
    ) -> None:
        self.settings = settings
        self.ids = ids
        self.script = script
        self.media_port = media_port
        self.endpoint = SipEndpoint(
            settings.timers,
            ids,
            user_agent=settings.user_agent,
            stateless_methods=frozenset({"OPTIONS"}),
        )
        self.flow = Flow("udp", settings.registrar, settings.local)
        self.calls: dict[str, IvrCall] = {}
        self.commands: deque[Transmit | nc.NodeCommand | nc.StoreCommand] = deque()
        self.events: deque[nc.NodeEvent] = deque()
        self.timers: TimerHeap[tuple[str, str]] = TimerHeap()
        self.requests: dict[int, tuple[str, str]] = {}  # transaction → (purpose, call id)
        self.registration = RegistrationState(call_id=f"{ids()}-reg@{settings.node}", tag=ids())
        self.registered_until: float | None = None
        self.flow_timer: int | None = None
        self.expires = settings.expires

    # --- inputs -----------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Register (and from then on re-register and keep alive on the node's own timers)."""
        node_registration.register(self, now)

    def receive_datagram(self, data: bytes, source: tuple[str, int], now: float) -> None:
        self.endpoint.receive_datagram(data, Flow("udp", source, self.settings.local), now)
        self._drain_endpoint(now)

    def checkpoint_loaded(self, call_id: str, data: bytes | None, now: float) -> None:
        """The io layer read the checkpoint a `LoadCheckpoint` asked for (None: no such entry)."""
        call = self.calls.get(call_id)
        if call is None or call.ended or call.session is None:
            return
        asked = call.session
        reason = node_calls.resume(self, call, asked, data, now)
        if reason is not None:
            call.session = node_calls.new_session_id(self)
            self.events.append(nc.SessionRestarted(call.id, asked, call.session, reason))
            node_calls.start_runner(self, call, now)
        node_calls.answer(self, call, now, resumed=reason is None)
        node_runner.drain_runner(self, call, now)

    def digit(self, call_id: str, digit: str, now: float, via: str = "rtp") -> None:
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return
        self.events.append(nc.DigitReceived(call.id, call.session, digit, via))
        if call.runner is None:
            call.pending_digits.append(digit)
            return
        call.runner.digit(digit, now)
        node_runner.drain_runner(self, call, now)

    def prompt_progress(self, call_id: str, offset: float, now: float) -> None:
        """The prompt has played up to `offset` seconds into its file (checkpointed now and
        then, so a session resumed with `resume_from_offset` continues about there)."""
        call = self.calls.get(call_id)
        if call is None or call.ended or call.runner is None:
            return
        call.runner.prompt_progress(offset)
        node_runner.drain_runner(self, call, now)

    def prompt_finished(self, call_id: str, now: float) -> None:
        call = self.calls.get(call_id)
        if call is None or call.ended or call.runner is None:
            return
        call.runner.prompt_finished(now)
        node_runner.drain_runner(self, call, now)

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)
        self._drain_endpoint(now)
        for key in self.timers.pop_due(now):
            kind, call_id = key
            if kind == "register":
                node_registration.register(self, now)
            elif kind == "keepalive":
                node_registration.keepalive(self, now)
            elif kind == "2xx":
                node_calls.retransmit_2xx(self, call_id, now)
        for call in list(self.calls.values()):
            runner = call.runner
            if runner is None or call.ended:
                continue
            due = runner.get_timer()
            if due is not None and due <= now:
                runner.handle_timer(now)
                node_runner.drain_runner(self, call, now)

    def get_timer(self) -> float | None:
        runners = [c.runner.get_timer() for c in self.calls.values() if c.runner and not c.ended]
        return earliest(self.endpoint.get_timer(), self.timers.next_deadline(), *runners)

    def stop(self, now: float) -> None:
        """Shutting down: de-register and let the calls go without BYE, keeping their
        checkpoints. The call manager moves a device that de-registers mid-call down the
        fallback chain at once: each caller resumes on another node where they were."""
        for call in list(self.calls.values()):
            node_runner.end(self, call, now, "node shutting down: handed over", delete=False)
        node_registration.unregister(self, now)

    @property
    def unregistering(self) -> bool:
        """A de-registration is waiting for its answer."""
        return ("unregister", "") in self.requests.values()

    # --- outputs ----------------------------------------------------------------------------------
    def next_command(self) -> Transmit | nc.NodeCommand | nc.StoreCommand | None:
        wire = self.endpoint.next_command()
        while wire is not None and not isinstance(wire, Transmit):
            wire = self.endpoint.next_command()  # CloseFlow: UDP has no connections to close
        if wire is not None:
            return wire
        return self.commands.popleft() if self.commands else None

    def next_event(self) -> nc.NodeEvent | None:
        return self.events.popleft() if self.events else None

    # --- registration and keep-alive -------------------------------------------------------------

    # --- SIP events ---------------------------------------------------------------------------------
    def _drain_endpoint(self, now: float) -> None:
        endpoint = self.endpoint
        while (event := endpoint.next_event()) is not None:
            if isinstance(event, RequestReceived):
                self._request(event.request, event.transaction_id, event.flow, now)
            elif isinstance(event, ResponseReceived):
                self._response(event.transaction_id, event.response, now)
            elif isinstance(event, CancelReceived):
                self._cancel(event, now)
            elif isinstance(event, StatelessRequestReceived):
                response = event.request.create_response(200, to_tag=self.ids())
                response.headers.add("Allow", ALLOW)
                endpoint.send_stateless_response(response, event.flow)
            elif isinstance(event, KeepaliveReceived):
                if event.flow.remote == self.settings.registrar:
                    self.registration.last_pong = now
            elif isinstance(event, TransactionTimedOut | TransportFailed):
                self._request_failed(event.transaction_id, now)

    def respond(
        self,
        request: Request,
        transaction_id: int | None,
        status: int,
        *,
        to_tag: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        now: float,
    ) -> None:
        if transaction_id is None:
            return
        response = request.create_response(status, to_tag=to_tag or self.ids())
        for name, value in headers:
            response.headers.add(name, value)
        self.endpoint.send_response(response, now, transaction_id)

    def _request(
        self, request: Request, transaction_id: int | None, flow: Flow, now: float
    ) -> None:
        method = request.method
        try:
            in_dialog = has_to_tag(request)
            call_id = request.call_id
        except ParseError:
            self.respond(request, transaction_id, 400, now=now)
            return
        if not in_dialog:
            if method == "INVITE":
                node_calls.invite(self, request, transaction_id, flow, now)
            elif method == "ACK":
                pass  # the ACK of a non-2xx: absorbed by the transaction layer
            elif method in ("NOTIFY", "OPTIONS"):
                self.respond(request, transaction_id, 200, now=now)
            else:
                self.respond(request, transaction_id, 405, headers=(("Allow", ALLOW),), now=now)
            return
        call = self.calls.get(call_id)
        if call is None or DialogId.of_request(request) != call.dialog.id:
            if method != "ACK":
                self.respond(request, transaction_id, 481, now=now)
            return
        if method == "ACK":
            if call.answer is not None and request.cseq.number == call.dialog.remote_seq:
                call.answer = None
                self.timers.cancel(("2xx", call.id))
            return
        rejected = call.dialog.receive_request(request)
        if rejected is not None:
            self.respond(request, transaction_id, rejected, now=now)
            return
        tag = call.dialog.id.local_tag
        if method == "BYE":
            self.respond(request, transaction_id, 200, to_tag=tag, now=now)
            node_runner.end(self, call, now, "caller hung up", delete=True)
        elif method == "INFO":
            node_calls.info(self, call, request, transaction_id, now)
        elif method == "INVITE":
            node_calls.reinvite(self, call, request, transaction_id, now)
        elif method in ("NOTIFY", "OPTIONS", "UPDATE"):
            self.respond(request, transaction_id, 200, to_tag=tag, now=now)
            if method == "NOTIFY" and _refer_finished(request):
                # Our blind transfer reached its end (RFC 3515 sipfrag 2xx-6xx): the transferor
                # leaves the call (RFC 5589).
                node_runner.hang_up(self, call, now, "transferred", delete=False)
        else:
            self.respond(
                request, transaction_id, 405, to_tag=tag, headers=(("Allow", ALLOW),), now=now
            )

    def _response(self, transaction_id: int, response: Response, now: float) -> None:
        purpose = self.requests.get(transaction_id)
        if purpose is None or response.is_provisional:
            return
        del self.requests[transaction_id]
        kind, call_id = purpose
        if kind == "register":
            node_registration.registration_answered(self, response, now)
        elif kind == "unregister" and response.status in (401, 407):
            authorization = node_registration.authorization_for(self, response)
            if authorization is not None:
                request = node_registration.register_request(self, 0, authorization)
                self.requests[self.endpoint.send_request(request, self.flow, now)] = purpose
        elif kind == "refer" and not response.is_success:
            call = self.calls.get(call_id)
            if call is not None:
                node_runner.hang_up(
                    self, call, now, f"transfer refused ({response.status})", delete=True
                )

    def _request_failed(self, transaction_id: int, now: float) -> None:
        purpose = self.requests.pop(transaction_id, None)
        if purpose is None:
            return
        if purpose[0] == "register":
            self.registration.transaction = None
            node_registration.registration_failed(self, 408, "no answer from the call manager", now)

    def _cancel(self, event: CancelReceived, now: float) -> None:
        status = 200 if event.cancelled_transaction_id is not None else 481
        self.respond(event.request, event.transaction_id, status, now=now)
        call = self.calls.get(event.request.call_id)
        # Once our 2xx is out (even after its ACK cleared `answer`) a CANCEL has no effect
        # (RFC 3261 §9.2): the call is confirmed and only a BYE ends it.
        if call is None or call.dialog.state is not DialogState.EARLY:
            return
        if call.invite_transaction is None:
            return
        if call.invite_transaction == event.cancelled_transaction_id:
            self.respond(call.invite, call.invite_transaction, 487, now=now)
            node_runner.end(self, call, now, "cancelled", delete=False)

    # --- calls ----------------------------------------------------------------------------------------

    # --- the interpreter's commands -------------------------------------------------------------------

    # SessionResumed is reported by `_resume` (it knows which node saved the checkpoint);
    # RecordingFinished shows in the StepEntered that follows.

    # --- SDP ---------------------------------------------------------------------------------------------


def _refer_finished(notify: Request) -> bool:
    """A NOTIFY of our REFER's subscription that reports a final status."""
    event = (notify.headers.get("event") or "").split(";", 1)[0].strip().lower()
    if event != "refer":
        return False
    frag = notify.body.decode("utf-8", "replace").strip()
    parts = frag.split(" ", 2)
    return len(parts) >= 2 and parts[0] == "SIP/2.0" and parts[1].isdigit() and parts[1] >= "200"
