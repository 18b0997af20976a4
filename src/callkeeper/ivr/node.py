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
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from callkeeper.ivr import commands as ic
from callkeeper.ivr import events as ie
from callkeeper.ivr import node_commands as nc
from callkeeper.ivr.errors import CheckpointError
from callkeeper.ivr.interpreter import Interpreter
from callkeeper.ivr.script import Script
from callkeeper.ivr.session import new_session
from callkeeper.media.dtmf import DtmfError, parse_info_body
from callkeeper.media.g711 import Codec
from callkeeper.sdp.errors import SdpError
from callkeeper.sdp.model import SessionDescription
from callkeeper.sdp.parser import parse_sdp
from callkeeper.sip.address import Address
from callkeeper.sip.dialog import Dialog, DialogError, DialogId, DialogState
from callkeeper.sip.digest import DigestError, answer_challenge, choose_challenge, parse_challenge
from callkeeper.sip.endpoint import (
    KeepaliveReceived,
    SipEndpoint,
    StatelessRequestReceived,
)
from callkeeper.sip.errors import ParseError
from callkeeper.sip.headers import Headers
from callkeeper.sip.message import Request, Response, has_to_tag
from callkeeper.sip.timers import TimerHeap, TimerSettings, earliest
from callkeeper.sip.transaction_events import (
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
    TransportFailed,
)
from callkeeper.sip.transaction_messages import IdSource
from callkeeper.sip.transport import Flow, Transmit
from callkeeper.sip.uri import URI
from callkeeper.sip.via import MAGIC_COOKIE, Via

SESSION_HEADER = "X-Callkeeper-Session"
"""The header the call manager carries a session id in (`callkeeper.calls.dialing`)."""
CHECKPOINT_NAMESPACE = "ivr"
"""The store namespace of IVR checkpoints (key: the session id)."""
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY, REFER"
KEEPALIVE_FACTOR = 0.8  # RFC 5626 §4.4.1: between 0.8 and 1.0 of Flow-Timer
FLOW_LOST_INTERVALS = 4  # keep-alive intervals without an answer before the flow is lost
REGISTER_RETRY = 5.0  # seconds between attempts after a failed REGISTER
NO_FLOW_TIMER_KEEPALIVE = 25.0  # keep-alive interval when the server sent no Flow-Timer
_STUN_BINDING_REQUEST = 0x0001
_STUN_MAGIC = 0x2112A442


# --- what is stored -----------------------------------------------------------------------------


class Envelope(msgspec.Struct, frozen=True):
    """What is stored per session: the interpreter's checkpoint and who wrote it.

    `script` lets a node refuse a session of another script (a foreign id); `owner` (node/call)
    lets a node delete only a checkpoint it wrote itself."""

    script: str
    owner: str
    node: str
    step: str | None
    data: bytes


def encode_envelope(envelope: Envelope) -> bytes:
    return msgspec.msgpack.encode(envelope)


def decode_envelope(data: bytes) -> Envelope:
    """Raises `msgspec.DecodeError` (a ValueError) for bytes that are not an Envelope."""
    return msgspec.msgpack.decode(data, type=Envelope)


# --- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeSettings:
    node: str  # the node's name (`--node`)
    user: str  # the IVR user it registers as
    password: str | None
    domain: str  # the call manager's SIP domain
    registrar: tuple[str, int]  # the call manager's UDP address
    local: tuple[str, int]  # our SIP socket
    media_host: str  # the address in our SDP
    expires: int = 300
    user_agent: str = "callkeeper-ivr"
    timers: TimerSettings = field(default_factory=TimerSettings)

    @property
    def instance(self) -> str:
        """`+sip.instance`: stable per node name, so a restarted node is the same endpoint."""
        return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'callkeeper-ivr:' + self.node)}>"


# --- calls ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaChoice:
    remote: tuple[str, int]
    codec: Codec
    payload_type: int
    telephone_event: int | None


@dataclass(slots=True, eq=False)
class _Call:
    id: str  # the Call-ID
    dialog: Dialog
    flow: Flow
    local_port: int
    offer: SessionDescription | None
    media: MediaChoice | None
    invite: Request
    invite_transaction: int | None
    session: str | None = None
    runner: Interpreter | None = None
    step: str | None = None
    answer: Response | None = None  # our 2xx until its ACK arrives
    retransmit_interval: float = 0.0
    retransmit_deadline: float = 0.0
    sdp_version: int = 1
    ended: bool = False
    pending_digits: list[str] = field(default_factory=list)


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
        self.calls: dict[str, _Call] = {}
        self._commands: deque[Transmit | nc.NodeCommand | nc.StoreCommand] = deque()
        self._events: deque[nc.NodeEvent] = deque()
        self._timers: TimerHeap[tuple[str, str]] = TimerHeap()
        self._requests: dict[int, tuple[str, str]] = {}  # transaction → (purpose, call id)
        # registration
        self._reg_call_id = f"{ids()}-reg@{settings.node}"
        self._reg_tag = ids()
        self._reg_cseq = 0
        self._reg_transaction: int | None = None
        self._reg_answered: str | None = None  # the nonce we last answered
        self._nonce_counts: dict[str, int] = {}
        self.registered_until: float | None = None
        self.flow_timer: int | None = None
        self._keepalive_interval: float | None = None
        self._last_pong: float | None = None
        self._stun_seq = 0
        self.expires = settings.expires

    # --- inputs -----------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Register (and from then on re-register and keep alive on the node's own timers)."""
        self._register(now)

    def receive_datagram(self, data: bytes, source: tuple[str, int], now: float) -> None:
        self.endpoint.receive_datagram(data, Flow("udp", source, self.settings.local), now)
        self._drain_endpoint(now)

    def checkpoint_loaded(self, call_id: str, data: bytes | None, now: float) -> None:
        """The io layer read the checkpoint a `LoadCheckpoint` asked for (None: no such entry)."""
        call = self.calls.get(call_id)
        if call is None or call.ended or call.session is None:
            return
        asked = call.session
        reason = self._resume(call, asked, data, now)
        if reason is not None:
            call.session = self._new_session_id()
            self._events.append(nc.SessionRestarted(call.id, asked, call.session, reason))
            self._start_runner(call, now)
        self._answer(call, now, resumed=reason is None)
        self._drain_runner(call, now)

    def digit(self, call_id: str, digit: str, now: float, via: str = "rtp") -> None:
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return
        self._events.append(nc.DigitReceived(call.id, call.session, digit, via))
        if call.runner is None:
            call.pending_digits.append(digit)
            return
        call.runner.digit(digit, now)
        self._drain_runner(call, now)

    def prompt_progress(self, call_id: str, offset: float, now: float) -> None:
        """The prompt has played up to `offset` seconds into its file (checkpointed now and
        then, so a session resumed with `resume_from_offset` continues about there)."""
        call = self.calls.get(call_id)
        if call is None or call.ended or call.runner is None:
            return
        call.runner.prompt_progress(offset)
        self._drain_runner(call, now)

    def prompt_finished(self, call_id: str, now: float) -> None:
        call = self.calls.get(call_id)
        if call is None or call.ended or call.runner is None:
            return
        call.runner.prompt_finished(now)
        self._drain_runner(call, now)

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)
        self._drain_endpoint(now)
        for key in self._timers.pop_due(now):
            kind, call_id = key
            if kind == "register":
                self._register(now)
            elif kind == "keepalive":
                self._keepalive(now)
            elif kind == "2xx":
                self._retransmit_2xx(call_id, now)
        for call in list(self.calls.values()):
            runner = call.runner
            if runner is None or call.ended:
                continue
            due = runner.get_timer()
            if due is not None and due <= now:
                runner.handle_timer(now)
                self._drain_runner(call, now)

    def get_timer(self) -> float | None:
        runners = [c.runner.get_timer() for c in self.calls.values() if c.runner and not c.ended]
        return earliest(self.endpoint.get_timer(), self._timers.next_deadline(), *runners)

    def stop(self, now: float) -> None:
        """Shutting down: de-register and let the calls go without BYE, keeping their
        checkpoints. The call manager moves a device that de-registers mid-call down the
        fallback chain at once: each caller resumes on another node where they were."""
        for call in list(self.calls.values()):
            self._end(call, now, "node shutting down: handed over", delete=False)
        self._unregister(now)

    @property
    def unregistering(self) -> bool:
        """A de-registration is waiting for its answer."""
        return ("unregister", "") in self._requests.values()

    # --- outputs ----------------------------------------------------------------------------------
    def next_command(self) -> Transmit | nc.NodeCommand | nc.StoreCommand | None:
        wire = self.endpoint.next_command()
        while wire is not None and not isinstance(wire, Transmit):
            wire = self.endpoint.next_command()  # CloseFlow: UDP has no connections to close
        if wire is not None:
            return wire
        return self._commands.popleft() if self._commands else None

    def next_event(self) -> nc.NodeEvent | None:
        return self._events.popleft() if self._events else None

    # --- registration and keep-alive -------------------------------------------------------------
    def _via(self) -> Via:
        host, port = self.settings.local
        return Via("UDP", host, port, (("rport", None), ("branch", MAGIC_COOKIE + self.ids())))

    def _contact_uri(self) -> URI:
        host, port = self.settings.local
        return URI("sip", user=self.settings.user, host=host, port=port)

    def _register_request(self, expires: int, authorization: tuple[str, str] | None) -> Request:
        settings = self.settings
        self._reg_cseq += 1
        aor = URI("sip", user=settings.user, host=settings.domain)
        contact = (
            Address(self._contact_uri().with_param("ob"))
            .with_param("+sip.instance", f'"{settings.instance}"')
            .with_param("reg-id", "1")
            .with_param("expires", str(expires))
        )
        headers = Headers()
        headers.add("Via", str(self._via()))
        headers.add("Max-Forwards", "70")
        headers.add("From", str(Address(aor).with_tag(self._reg_tag)))
        headers.add("To", str(Address(aor)))
        headers.add("Call-ID", self._reg_call_id)
        headers.add("CSeq", f"{self._reg_cseq} REGISTER")
        headers.add("Contact", str(contact))
        headers.add("Supported", "outbound, path")
        headers.add("Allow", ALLOW)
        headers.add("User-Agent", settings.user_agent)
        if authorization is not None:
            headers.add(*authorization)
        return Request("REGISTER", URI("sip", host=settings.domain), headers)

    def _register(self, now: float, authorization: tuple[str, str] | None = None) -> None:
        if self._reg_transaction is not None and authorization is None:
            return  # one REGISTER at a time
        request = self._register_request(self.expires, authorization)
        self._reg_transaction = self.endpoint.send_request(request, self.flow, now)
        self._requests[self._reg_transaction] = ("register", "")

    def _unregister(self, now: float) -> None:
        if self.registered_until is None:
            return
        request = self._register_request(0, None)
        self._requests[self.endpoint.send_request(request, self.flow, now)] = ("unregister", "")
        self.registered_until = None
        self._timers.cancel(("keepalive", ""))
        self._timers.cancel(("register", ""))

    def _registration_answered(self, response: Response, now: float) -> None:
        self._reg_transaction = None
        status = response.status
        if status in (401, 407):
            authorization = self._authorization(response)
            if authorization is not None:
                self._register(now, authorization)
                return
            self._registration_failed(status, "credentials refused", now)
            return
        if status == 423:
            minimum = response.headers.get("min-expires") or ""
            if minimum.strip().isdigit():
                self.expires = int(minimum)
            self._register(now)
            return
        if not response.is_success:
            self._registration_failed(status, response.reason, now)
            return
        challenged = self._reg_answered is not None
        self._reg_answered = None
        expires = self._granted_expires(response)
        self.registered_until = now + expires
        self._timers.schedule(now + max(expires / 2, 1.0), ("register", ""))
        flow_timer = response.headers.get("flow-timer")
        self.flow_timer = int(flow_timer) if flow_timer and flow_timer.strip().isdigit() else None
        interval = (
            KEEPALIVE_FACTOR * self.flow_timer if self.flow_timer else NO_FLOW_TIMER_KEEPALIVE
        )
        if self._keepalive_interval != interval or ("keepalive", "") not in self._timers:
            self._keepalive_interval = interval
            self._timers.schedule(now + interval, ("keepalive", ""))
        self._last_pong = now
        self._events.append(nc.Registered(expires, self.flow_timer, challenged))

    def _granted_expires(self, response: Response) -> int:
        ours = self._contact_uri()
        for contact in _contacts(response):
            if contact.uri.host == ours.host and contact.uri.port == ours.port:
                value = contact.param("expires")
                if value is not None and value.isdigit():
                    return int(value)
        header = response.headers.get("expires")
        if header is not None and header.strip().isdigit():
            return int(header)
        return self.expires

    def _registration_failed(self, status: int, reason: str, now: float) -> None:
        self._reg_answered = None
        self._events.append(nc.RegistrationFailed(status, reason, REGISTER_RETRY))
        self._timers.schedule(now + REGISTER_RETRY, ("register", ""))

    def _authorization(self, response: Response) -> tuple[str, str] | None:
        """The Authorization answering a 401/407, or None when it would be answered again with
        the very challenge we already answered (wrong password: do not loop)."""
        proxy = response.status == 407
        lines = response.headers.get_lines("proxy-authenticate" if proxy else "www-authenticate")
        value = choose_challenge(lines)
        password = self.settings.password
        if value is None or password is None:
            return None
        try:
            challenge = parse_challenge(value)
        except DigestError:
            return None
        if challenge.nonce == self._reg_answered and not challenge.stale:
            return None
        self._reg_answered = challenge.nonce
        count = self._nonce_counts.get(challenge.nonce, 0) + 1
        self._nonce_counts = {challenge.nonce: count}  # only the current nonce matters
        uri = str(URI("sip", host=self.settings.domain))
        answer = answer_challenge(
            value, "REGISTER", uri, self.settings.user, password, cnonce=self.ids(), nc=count
        )
        return ("Proxy-Authorization" if proxy else "Authorization", answer)

    def _keepalive(self, now: float) -> None:
        interval = self._keepalive_interval
        if interval is None:
            return
        silent = now - (self._last_pong if self._last_pong is not None else now)
        if silent > FLOW_LOST_INTERVALS * interval:
            self._flow_lost(silent, now)
            return
        self._stun_seq += 1
        transaction = (self.ids().encode()[-8:].rjust(8, b"0")) + struct.pack("!I", self._stun_seq)
        stun = struct.pack("!HHI", _STUN_BINDING_REQUEST, 0, _STUN_MAGIC) + transaction
        self._commands.append(Transmit(self.flow, stun))
        self._timers.schedule(now + interval, ("keepalive", ""))

    def _flow_lost(self, silent: float, now: float) -> None:
        self._events.append(nc.FlowLost(silent, len(self.calls)))
        for call in list(self.calls.values()):
            self._end(call, now, "flow to the call manager lost", delete=False)
        self._last_pong = now
        self._keepalive_interval = None
        self.registered_until = None
        self._reg_transaction = None
        self._register(now)

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
                    self._last_pong = now
            elif isinstance(event, TransactionTimedOut | TransportFailed):
                self._request_failed(event.transaction_id, now)

    def _respond(
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
            self._respond(request, transaction_id, 400, now=now)
            return
        if not in_dialog:
            if method == "INVITE":
                self._invite(request, transaction_id, flow, now)
            elif method == "ACK":
                pass  # the ACK of a non-2xx: absorbed by the transaction layer
            elif method in ("NOTIFY", "OPTIONS"):
                self._respond(request, transaction_id, 200, now=now)
            else:
                self._respond(request, transaction_id, 405, headers=(("Allow", ALLOW),), now=now)
            return
        call = self.calls.get(call_id)
        if call is None or DialogId.of_request(request) != call.dialog.id:
            if method != "ACK":
                self._respond(request, transaction_id, 481, now=now)
            return
        if method == "ACK":
            if call.answer is not None and request.cseq.number == call.dialog.remote_seq:
                call.answer = None
                self._timers.cancel(("2xx", call.id))
            return
        rejected = call.dialog.receive_request(request)
        if rejected is not None:
            self._respond(request, transaction_id, rejected, now=now)
            return
        tag = call.dialog.id.local_tag
        if method == "BYE":
            self._respond(request, transaction_id, 200, to_tag=tag, now=now)
            self._end(call, now, "caller hung up", delete=True)
        elif method == "INFO":
            self._info(call, request, transaction_id, now)
        elif method == "INVITE":
            self._reinvite(call, request, transaction_id, now)
        elif method in ("NOTIFY", "OPTIONS", "UPDATE"):
            self._respond(request, transaction_id, 200, to_tag=tag, now=now)
            if method == "NOTIFY" and _refer_finished(request):
                # Our blind transfer reached its end (RFC 3515 sipfrag 2xx-6xx): the transferor
                # leaves the call (RFC 5589).
                self._hang_up(call, now, "transferred", delete=False)
        else:
            self._respond(
                request, transaction_id, 405, to_tag=tag, headers=(("Allow", ALLOW),), now=now
            )

    def _response(self, transaction_id: int, response: Response, now: float) -> None:
        purpose = self._requests.get(transaction_id)
        if purpose is None or response.is_provisional:
            return
        del self._requests[transaction_id]
        kind, call_id = purpose
        if kind == "register":
            self._registration_answered(response, now)
        elif kind == "unregister" and response.status in (401, 407):
            authorization = self._authorization(response)
            if authorization is not None:
                request = self._register_request(0, authorization)
                self._requests[self.endpoint.send_request(request, self.flow, now)] = purpose
        elif kind == "refer" and not response.is_success:
            call = self.calls.get(call_id)
            if call is not None:
                self._hang_up(call, now, f"transfer refused ({response.status})", delete=True)

    def _request_failed(self, transaction_id: int, now: float) -> None:
        purpose = self._requests.pop(transaction_id, None)
        if purpose is None:
            return
        if purpose[0] == "register":
            self._reg_transaction = None
            self._registration_failed(408, "no answer from the call manager", now)

    def _cancel(self, event: CancelReceived, now: float) -> None:
        status = 200 if event.cancelled_transaction_id is not None else 481
        self._respond(event.request, event.transaction_id, status, now=now)
        call = self.calls.get(event.request.call_id)
        # Once our 2xx is out (even after its ACK cleared `answer`) a CANCEL has no effect
        # (RFC 3261 §9.2): the call is confirmed and only a BYE ends it.
        if call is None or call.dialog.state is not DialogState.EARLY:
            return
        if call.invite_transaction is None:
            return
        if call.invite_transaction == event.cancelled_transaction_id:
            self._respond(call.invite, call.invite_transaction, 487, now=now)
            self._end(call, now, "cancelled", delete=False)

    # --- calls ----------------------------------------------------------------------------------------
    def _new_session_id(self) -> str:
        return f"{self.settings.node}-{self.ids()}"

    def _invite(self, request: Request, transaction_id: int | None, flow: Flow, now: float) -> None:
        if request.call_id in self.calls:
            return  # a retransmission the transaction layer already answered
        offer: SessionDescription | None = None
        if request.body:
            try:
                offer = parse_sdp(request.body)
            except SdpError:
                self._respond(request, transaction_id, 400, now=now)
                return
            media = choose_media(offer)
            if media is None:
                self._respond(request, transaction_id, 488, now=now)
                return
        else:
            media = None
        contact = Address(self._contact_uri())
        try:
            dialog = Dialog.create_uas(request, self.ids, local_contact=contact)
        except DialogError as error:
            self._respond(request, transaction_id, error.status or 400, now=now)
            return
        except ParseError:
            self._respond(request, transaction_id, 400, now=now)
            return
        call = _Call(
            id=request.call_id,
            dialog=dialog,
            flow=flow,
            local_port=self.media_port(request.call_id),
            offer=offer,
            media=media,
            invite=request,
            invite_transaction=transaction_id,
        )
        self.calls[call.id] = call
        asked = (request.headers.get(SESSION_HEADER) or "").strip()
        if asked:
            call.session = asked
            self._commands.append(nc.LoadCheckpoint(call.id, asked))
            return  # answered when the checkpoint is loaded
        call.session = self._new_session_id()
        self._start_runner(call, now)
        self._answer(call, now, resumed=False)
        self._drain_runner(call, now)

    def _resume(self, call: _Call, session: str, data: bytes | None, now: float) -> str | None:
        """Resume `session` from `data`; the reason when it cannot be (a fresh session then)."""
        if data is None:
            return "no checkpoint (unknown or expired session)"
        try:
            envelope = decode_envelope(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return "the checkpoint is damaged"
        if envelope.script != self.script.name:
            return f"the session belongs to script {envelope.script!r}"
        try:
            runner = Interpreter.resumed(self.script, envelope.data, now)
        except CheckpointError as error:
            return f"the checkpoint cannot be resumed: {error}"
        if runner.session.session_id != session:
            return "the checkpoint belongs to another session"
        call.runner = runner
        state = runner.session
        call.step = state.step
        self._events.append(
            nc.SessionResumed(
                call.id, session, state.step, state.digits, state.prompt_offset, envelope.node
            )
        )
        return None

    def _start_runner(self, call: _Call, now: float) -> None:
        assert call.session is not None
        caller = call.invite.from_addr.uri.user or ""
        state = new_session(call.session, self.script.name, self.script.start, {"caller": caller})
        call.runner = Interpreter(self.script, state)
        call.runner.start(now)

    def _answer(self, call: _Call, now: float, *, resumed: bool) -> None:
        assert call.session is not None
        response = call.invite.create_response(200, to_tag=call.dialog.id.local_tag)
        headers = response.headers
        headers.add("Contact", str(Address(self._contact_uri())))
        headers.add("Allow", ALLOW)
        headers.add("Supported", "outbound")
        headers.add("User-Agent", self.settings.user_agent)
        headers.add(SESSION_HEADER, call.session)
        if call.offer is not None and call.media is not None:
            response.body = self._sdp_answer(call, call.offer, call.media)
            headers.add("Content-Type", "application/sdp")
        elif call.offer is None:
            response.body = self._sdp_offer(call)
            headers.add("Content-Type", "application/sdp")
        call.dialog.send_response(response)
        call.answer = response
        call.retransmit_interval = self.settings.timers.t1
        call.retransmit_deadline = now + self.settings.timers.timer_h
        self._timers.schedule(now + call.retransmit_interval, ("2xx", call.id))
        if call.invite_transaction is not None:
            self.endpoint.send_response(response, now, call.invite_transaction)
        if call.media is not None:
            self._commands.append(
                nc.OpenMedia(
                    call.id,
                    call.local_port,
                    call.media.remote,
                    call.media.codec,
                    call.media.payload_type,
                    call.media.telephone_event,
                )
            )
        self._events.append(nc.CallAnswered(call.id, call.session, resumed))

    def _retransmit_2xx(self, call_id: str, now: float) -> None:
        call = self.calls.get(call_id)
        if call is None or call.answer is None:
            return
        if now >= call.retransmit_deadline:
            call.answer = None
            self._hang_up(call, now, "no ACK for our 2xx", delete=True)
            return
        self.endpoint.send_response(call.answer, now)
        call.retransmit_interval = min(call.retransmit_interval * 2, self.settings.timers.t2)
        self._timers.schedule(
            min(now + call.retransmit_interval, call.retransmit_deadline), ("2xx", call.id)
        )

    def _reinvite(
        self, call: _Call, request: Request, transaction_id: int | None, now: float
    ) -> None:
        tag = call.dialog.id.local_tag
        if not request.body:
            call.sdp_version += 1
            body = self._sdp_offer(call)
        else:
            try:
                offer = parse_sdp(request.body)
            except SdpError:
                self._respond(request, transaction_id, 400, to_tag=tag, now=now)
                return
            media = choose_media(offer)
            if media is None:
                self._respond(request, transaction_id, 488, to_tag=tag, now=now)
                return
            call.offer = offer
            call.sdp_version += 1
            body = self._sdp_answer(call, offer, media)
            if media != call.media:
                call.media = media
                self._commands.append(
                    nc.UpdateMedia(
                        call.id,
                        media.remote,
                        media.codec,
                        media.payload_type,
                        media.telephone_event,
                    )
                )
        response = request.create_response(200, to_tag=tag)
        response.headers.add("Contact", str(Address(self._contact_uri())))
        if call.session is not None:
            response.headers.add(SESSION_HEADER, call.session)
        response.headers.add("Content-Type", "application/sdp")
        response.body = body
        call.dialog.send_response(response)
        if transaction_id is not None:
            self.endpoint.send_response(response, now, transaction_id)

    def _info(self, call: _Call, request: Request, transaction_id: int | None, now: float) -> None:
        tag = call.dialog.id.local_tag
        content_type = request.headers.get("content-type") or ""
        if not request.body and not content_type:
            self._respond(request, transaction_id, 200, to_tag=tag, now=now)  # an INFO ping
            return
        try:
            pressed = parse_info_body(content_type, request.body)
        except DtmfError:
            status = 415 if "dtmf" not in content_type.lower() else 400
            self._respond(request, transaction_id, status, to_tag=tag, now=now)
            return
        self._respond(request, transaction_id, 200, to_tag=tag, now=now)
        self.digit(call.id, pressed.digit, now, via="info")

    # --- the interpreter's commands -------------------------------------------------------------------
    def _drain_runner(self, call: _Call, now: float) -> None:
        runner = call.runner
        if runner is None:
            return
        if call.pending_digits:
            digits, call.pending_digits = call.pending_digits, []
            for digit in digits:
                runner.digit(digit, now)
        while True:
            event = runner.next_event()
            if event is not None:
                self._report(call, event)
                continue
            command = runner.next_command()
            if command is None:
                break
            self._run(call, command, now)
            if call.ended:
                # a Hangup ends the call; the session's DiscardCheckpoint follows it
                while (command := runner.next_command()) is not None:
                    if isinstance(command, ic.DiscardCheckpoint):
                        self._run(call, command, now)
                while (event := runner.next_event()) is not None:
                    self._report(call, event)
                break

    def _report(self, call: _Call, event: ie.IvrEvent) -> None:
        session = event.session_id
        if isinstance(event, ie.StepEntered):
            call.step = event.step
            self._events.append(
                nc.StepEntered(call.id, session, event.step, event.kind, event.resumed)
            )
        elif isinstance(event, ie.DigitsCollected):
            self._events.append(
                nc.DigitsCollected(call.id, session, event.step, event.variable, event.value)
            )
        elif isinstance(event, ie.CollectFailed):
            self._events.append(
                nc.CollectFailed(call.id, session, event.step, event.cause, event.retries_left)
            )
        elif isinstance(event, ie.SessionEnded):
            self._events.append(
                nc.SessionEnded(
                    call.id, session, event.reason, dict(event.variables), event.transfer_target
                )
            )
        # SessionResumed is reported by `_resume` (it knows which node saved the checkpoint);
        # RecordingFinished shows in the StepEntered that follows.

    def _run(self, call: _Call, command: ic.IvrCommand, now: float) -> None:
        if isinstance(command, ic.PlayPrompt):
            self._commands.append(
                nc.PlayPrompt(call.id, command.name, command.file, command.from_offset)
            )
        elif isinstance(command, ic.StopPrompt):
            self._commands.append(nc.StopPrompt(call.id))
        elif isinstance(command, ic.StartCollect):
            session = call.session or ""
            self._events.append(nc.CollectStarted(call.id, session, command.step, command.digits))
        elif isinstance(command, ic.Checkpoint):
            envelope = Envelope(
                script=self.script.name,
                owner=self._owner(call),
                node=self.settings.node,
                step=command.step,
                data=command.data,
            )
            self._commands.append(nc.SaveCheckpoint(command.session_id, encode_envelope(envelope)))
        elif isinstance(command, ic.DiscardCheckpoint):
            self._commands.append(nc.DeleteCheckpoint(command.session_id, self._owner(call)))
        elif isinstance(command, ic.Transfer):
            self._transfer(call, command.target, now)
        elif isinstance(command, ic.Hangup):
            self._hang_up(call, now, command.reason, delete=False)
        elif isinstance(command, ic.StartRecord):
            self._commands.append(nc.StartRecord(call.id, command.file, command.max_seconds))
        else:
            assert isinstance(command, ic.StopRecord)
            self._commands.append(nc.StopRecord(call.id))

    def _owner(self, call: _Call) -> str:
        return f"{self.settings.node}/{call.id}"

    def _transfer(self, call: _Call, target: str, now: float) -> None:
        """Blind transfer through the call manager: REFER in the dialog (RFC 3515); the call
        manager rings the target and then BYEs us."""
        self._commands.append(nc.StopPrompt(call.id))
        if call.dialog.state is not DialogState.CONFIRMED:
            call.dialog.state = DialogState.CONFIRMED  # our 2xx is out; the ACK may lag
        if target.startswith(("sip:", "sips:", "tel:")):
            refer_to = f"<{target}>"
        else:
            refer_to = f"<sip:{target}@{self.settings.domain}>"
        request = call.dialog.create_request(
            "REFER",
            self._via(),
            headers=(("Refer-To", refer_to), ("Referred-By", f"<{self._contact_uri()}>")),
        )
        transaction = self.endpoint.send_request(request, call.flow, now)
        self._requests[transaction] = ("refer", call.id)

    def _hang_up(self, call: _Call, now: float, reason: str, *, delete: bool) -> None:
        if call.ended:
            return
        if call.dialog.state is not DialogState.TERMINATED:
            if call.dialog.state is DialogState.EARLY and call.answer is None:
                self._respond(call.invite, call.invite_transaction, 480, now=now)
            else:
                if call.dialog.state is DialogState.EARLY:
                    call.dialog.state = DialogState.CONFIRMED
                bye = call.dialog.create_request("BYE", self._via())
                transaction = self.endpoint.send_request(bye, call.flow, now)
                self._requests[transaction] = ("bye", call.id)
        self._end(call, now, reason, delete=delete)

    def _end(self, call: _Call, now: float, reason: str, *, delete: bool) -> None:
        if call.ended:
            return
        call.ended = True
        if call.dialog.state is not DialogState.TERMINATED:
            call.dialog.terminate()
        self._timers.cancel(("2xx", call.id))
        runner = call.runner
        if delete and runner is not None and not runner.finished:
            runner.hangup(now)  # the interpreter discards the checkpoint and reports the end
            while (command := runner.next_command()) is not None:
                if isinstance(command, ic.DiscardCheckpoint):
                    self._commands.append(
                        nc.DeleteCheckpoint(command.session_id, self._owner(call))
                    )
            while (event := runner.next_event()) is not None:
                self._report(call, event)
        call.runner = None
        self._commands.append(nc.CloseMedia(call.id))
        self._events.append(nc.CallEnded(call.id, reason))
        del self.calls[call.id]

    # --- SDP ---------------------------------------------------------------------------------------------
    def _sdp_head(self, call: _Call) -> list[str]:
        host = self.settings.media_host
        family = "IP6" if ":" in host else "IP4"
        session_id = zlib.crc32(call.id.encode())  # any number, fixed for the dialog
        return [
            "v=0",
            f"o=callkeeper-ivr {session_id} {call.sdp_version} IN {family} {host}",
            "s=callkeeper ivr",
            f"c=IN {family} {host}",
            "t=0 0",
        ]

    def _sdp_answer(self, call: _Call, offer: SessionDescription, media: MediaChoice) -> bytes:
        lines = self._sdp_head(call)
        audio_done = False
        for offered in offer.media:
            if audio_done or offered.kind != "audio" or offered.rejected or not offered.is_rtp:
                fmt = offered.formats[0] if offered.formats else "0"
                lines.append(f"m={offered.kind} 0 {offered.proto} {fmt}")
                continue
            audio_done = True
            formats = [str(media.payload_type)]
            if media.telephone_event is not None:
                formats.append(str(media.telephone_event))
            lines.append(f"m=audio {call.local_port} {offered.proto} {' '.join(formats)}")
            lines.append(f"a=rtpmap:{media.payload_type} {media.codec.name}/8000")
            if media.telephone_event is not None:
                lines.append(f"a=rtpmap:{media.telephone_event} telephone-event/8000")
                lines.append(f"a=fmtp:{media.telephone_event} 0-15")
            lines.append("a=ptime:20")
            direction = offer.direction_of(offered).value
            answered = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
            lines.append(f"a={answered.get(direction, 'sendrecv')}")
        return ("\r\n".join(lines) + "\r\n").encode()

    def _sdp_offer(self, call: _Call) -> bytes:
        lines = self._sdp_head(call)
        lines += [
            f"m=audio {call.local_port} RTP/AVP 0 8 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=ptime:20",
            "a=sendrecv",
        ]
        return ("\r\n".join(lines) + "\r\n").encode()


def _refer_finished(notify: Request) -> bool:
    """A NOTIFY of our REFER's subscription that reports a final status."""
    event = (notify.headers.get("event") or "").split(";", 1)[0].strip().lower()
    if event != "refer":
        return False
    frag = notify.body.decode("utf-8", "replace").strip()
    parts = frag.split(" ", 2)
    return len(parts) >= 2 and parts[0] == "SIP/2.0" and parts[1].isdigit() and parts[1] >= "200"


def _contacts(response: Response) -> list[Address]:
    try:
        return response.contacts
    except ParseError:
        return []


_G711 = {"pcmu": Codec.PCMU, "pcma": Codec.PCMA}


def choose_media(offer: SessionDescription) -> MediaChoice | None:
    """The first audio stream's first G.711 format (and its telephone-event), or None."""
    for media in offer.media:
        if media.kind != "audio" or media.rejected or not media.is_rtp:
            continue
        host = offer.address_of(media)
        if host is None:
            return None
        for payload_type in media.payload_types:
            rtpmap = media.rtpmap(payload_type)
            if rtpmap is None or rtpmap.clock_rate != 8000:
                continue
            codec = _G711.get(rtpmap.encoding.lower())
            if codec is not None:
                return MediaChoice((host, media.port), codec, payload_type, media.telephone_event)
        return None
    return None
