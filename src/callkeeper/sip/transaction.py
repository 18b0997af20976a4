"""The SIP transaction layer (RFC 3261 §17, RFC 6026) as a sans-IO object.

Why sans-IO: the same code runs under the asyncio driver, in the in-memory test network and in
benchmarks, and every timer is testable with a fake clock. Inputs are method calls that carry
`now`; outputs are events drained with `next_event()`; `get_timer()` says when `handle_timer()`
is due next (the aioquic/h11 shape):

    layer.receive_request(request, flow, now)      # from the wire
    layer.receive_response(response, flow, now)
    layer.send_request(request, flow, now) -> id   # from the TU: a new client transaction
    layer.send_response(response, now) -> id|None  # from the TU: answer a server transaction
    layer.send_stateless(message, flow)            # from the TU: the ACK for a 2xx
    layer.terminate(transaction_id, now)           # from the TU: give up on a transaction
    layer.transport_error(transaction_id, now)     # from the io driver: a send failed
    layer.handle_timer(now); layer.get_timer()
    layer.next_event() -> SendMessage | RequestReceived | ... | None   (transaction_events)

Transaction ids are ints unique for the layer's lifetime. Input from the network never raises
(a message too broken to match is counted in `stats.malformed` and dropped); a TU mistake
raises `TransactionError`.

What happens in each state lives in `transaction_states` as transition tables; this module
matches messages to transactions (§17.1.3, §17.2.3, with the RFC 2543 fallback), runs the
tables' actions, and keeps every index and timer in O(1)/O(log n) dicts and one heap, so the
cost per message does not grow with the number of transactions. A transaction's state is
released when it terminates; `len(layer)` counts the live ones.

Things the layer does on its own, as RFC 3261 gives them to the transaction and not the TU:
`100 Trying` for an INVITE the TU has not answered within `trying_delay`; the ACK for a non-2xx
final; absorbing retransmissions (resending the last response); and `482 Loop Detected` for a
merged request (§8.2.2.2: same From tag, Call-ID and CSeq as a live server transaction but
another branch — the same request forked back to us), which the TU never sees.
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

from callkeeper.sip.errors import ParseError, SipError
from callkeeper.sip.message import Message, Request, Response, has_to_tag
from callkeeper.sip.timers import TimerHeap, TimerSettings
from callkeeper.sip.transaction_events import (
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    TransactionEvent,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from callkeeper.sip.transaction_messages import (
    IdSource,
    build_non2xx_ack,
    counter_ids,
    make_branch,
)
from callkeeper.sip.transaction_states import (
    INVITE_CLIENT,
    INVITE_SERVER,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
    Action,
    Input,
    Machine,
    State,
)
from callkeeper.sip.transport import Flow
from callkeeper.sip.via import MAGIC_COOKIE


class TransactionError(SipError):
    """The TU asked for something the transaction layer cannot do (a bug in the caller).

    Raised only for TU inputs — e.g. a request without an RFC 3261 branch, an ACK passed to
    `send_request`, a branch already in use. Input from the network never raises.
    """


@dataclass(slots=True)
class TransactionStats:
    """Counters for metrics and tests; plain ints, cheap to bump on the hot path."""

    retransmissions: int = 0  # requests, responses and ACKs we sent again
    absorbed: int = 0  # inputs a transaction ignored in its state (mostly retransmissions)
    stray_responses: int = 0  # matched no client transaction; dropped (RFC 6026 §8.4)
    malformed: int = 0  # messages without the headers matching needs; dropped
    merged_requests: int = 0  # answered 482 (§8.2.2.2)


# Keys. Server keys made from an RFC 3261 branch have 4 items, RFC 2543 fallback keys 7, so the
# two kinds share one dict without colliding.
ClientKey = tuple[str, str]  # (branch, CSeq method)
ServerKey = tuple[object, ...]
MergeKey = tuple[str | None, str, int, str]  # (From tag, Call-ID, CSeq number, CSeq method)
TimerKey = tuple[int, Input]  # (transaction id, timer)


class _Transaction:
    """One transaction's state. Client and server share the record: most fields are common.

    Once a transaction has its final response it only lingers to absorb retransmissions
    (Completed, Confirmed, Accepted: up to 64*T1 = 32 s, so a busy server holds tens of
    thousands of them). `_linger` then drops what those states never read — the request and,
    in Accepted, the strong hold on the 2xx — keeping the wire bytes they resend.
    """

    __slots__ = (
        "ack",
        "ack_data",
        "flow",
        "id",
        "interval",
        "key",
        "legacy_response_key",
        "machine",
        "merge_key",
        "request",
        "request_data",
        "response",
        "response_data",
        "sent_2xx",
        "state",
        "visible",
    )

    def __init__(
        self, txn_id: int, machine: Machine, request: Request, flow: Flow, key: object
    ) -> None:
        self.id = txn_id
        self.machine = machine
        self.state = machine.initial
        # The request; None once the transaction lingers (no action there reads it).
        self.request: Request | None = request
        self.flow = flow
        self.key = key
        self.request_data = b""
        self.response: Response | None = None  # the last response sent (server side)
        self.response_data = b""
        # In Accepted (INVITE server): the TU's 2xx, held weakly — the TU retransmits that very
        # object until the ACK comes (same bytes again), then lets it go; so can we.
        self.sent_2xx: weakref.ref[Response] | None = None
        self.ack: Request | None = None  # the ACK for a non-2xx final (INVITE client)
        self.ack_data = b""
        self.interval = 0.0  # current retransmission interval of Timer A, E or G
        self.legacy_response_key: ServerKey | None = None
        self.merge_key: MergeKey | None = None
        self.visible = True  # False for transactions the TU never saw (a merged request's 482)


def _response_input(status: int, received: bool) -> Input:
    if status < 200:
        return Input.RESPONSE_1XX if received else Input.SEND_1XX
    if status < 300:
        return Input.RESPONSE_2XX if received else Input.SEND_2XX
    return Input.RESPONSE_FAILURE if received else Input.SEND_FAILURE


class TransactionLayer:
    """All client and server transactions of one SIP agent. See the module docstring."""

    def __init__(self, settings: TimerSettings | None = None, ids: IdSource | None = None) -> None:
        self.settings = settings if settings is not None else TimerSettings()
        self.stats = TransactionStats()
        self._ids = ids if ids is not None else counter_ids()
        self._next_id = 0
        self._events: deque[TransactionEvent] = deque()
        self._timers: TimerHeap[TimerKey] = TimerHeap()
        self._by_id: dict[int, _Transaction] = {}
        self._clients: dict[ClientKey, _Transaction] = {}
        self._servers: dict[ServerKey, _Transaction] = {}
        self._legacy_responses: dict[ServerKey, _Transaction] = {}
        self._merge: dict[MergeKey, _Transaction] = {}
        s = self.settings
        # Initial timer values by transport reliability; None: the timer does not run at all.
        unreliable: dict[Input, float | None] = {
            Input.TIMER_A: s.timer_a,
            Input.TIMER_B: s.timer_b,
            Input.TIMER_D: s.timer_d(False),
            Input.TIMER_E: s.timer_e,
            Input.TIMER_F: s.timer_f,
            Input.TIMER_G: s.timer_g,
            Input.TIMER_H: s.timer_h,
            Input.TIMER_I: s.timer_i(False),
            Input.TIMER_J: s.timer_j(False),
            Input.TIMER_K: s.timer_k(False),
            Input.TIMER_L: s.timer_l,
            Input.TIMER_M: s.timer_m,
            Input.TIMER_TRYING: s.trying_delay,
        }
        reliable = dict(unreliable)
        reliable.update(
            {
                Input.TIMER_A: None,
                Input.TIMER_E: None,
                Input.TIMER_G: None,
                Input.TIMER_D: s.timer_d(True),
                Input.TIMER_I: s.timer_i(True),
                Input.TIMER_J: s.timer_j(True),
                Input.TIMER_K: s.timer_k(True),
            }
        )
        self._initial_delays = (unreliable, reliable)

    # --- introspection -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def transaction_count(self) -> int:
        return len(self._by_id)

    def state_of(self, transaction_id: int) -> State | None:
        """The transaction's state, or None once it has terminated."""
        txn = self._by_id.get(transaction_id)
        return txn.state if txn is not None else None

    def new_branch(self) -> str:
        """A fresh RFC 3261 branch from the layer's id source, for the TU's top Via."""
        return make_branch(self._ids())

    # --- outputs ---------------------------------------------------------------------------
    def next_event(self) -> TransactionEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return self._timers.next_deadline()

    # --- inputs from the wire ------------------------------------------------------------------
    def receive_request(self, request: Request, flow: Flow, now: float) -> None:
        """A request from the network: a retransmission, an ACK, or a new server transaction."""
        try:
            is_ack = request.method == "ACK"
            key = self._server_key(request, "INVITE" if is_ack else request.method)
            txn = self._servers.get(key)
            if is_ack:
                if txn is not None and (len(key) == 4 or self._legacy_ack_matches(txn, request)):
                    self._input(txn, Input.ACK, request, flow, now)
                else:  # an ACK for a 2xx has a branch of its own: it is the TU's
                    self._events.append(RequestReceived(None, request, flow))
                return
            if txn is not None:
                self._input(txn, Input.REQUEST, request, flow, now)
                return
            self._new_server_transaction(request, flow, key, now)
        except ParseError:
            self.stats.malformed += 1

    def receive_response(self, response: Response, flow: Flow, now: float) -> None:
        """A response from the network, for the client transaction it matches (§17.1.3)."""
        try:
            branch = response.top_via.branch
            method = response.cseq.method
        except ParseError:
            self.stats.malformed += 1
            return
        txn = self._clients.get((branch, method)) if branch is not None else None
        if txn is None:
            self.stats.stray_responses += 1
            return
        self._input(txn, _response_input(response.status, True), response, flow, now)

    def transport_error(self, transaction_id: int, now: float) -> None:
        """The io driver could not send a message of this transaction (see `SendMessage`)."""
        txn = self._by_id.get(transaction_id)
        if txn is not None:
            self._input(txn, Input.TRANSPORT_ERROR, None, None, now)

    def handle_timer(self, now: float) -> None:
        for txn_id, timer in self._timers.pop_due(now):
            txn = self._by_id.get(txn_id)
            if txn is not None:  # None: an earlier timer of the same instant ended it
                self._input(txn, timer, None, None, now)

    # --- inputs from the TU ----------------------------------------------------------------
    def send_request(self, request: Request, flow: Flow, now: float) -> int:
        """Start a client transaction for `request` and send it; returns the transaction id.

        The request must carry its top Via with an RFC 3261 branch (see `new_branch`). A CANCEL
        uses the branch of the INVITE it cancels; it is still a transaction of its own.
        """
        method = request.method
        if method == "ACK":
            raise TransactionError("an ACK is not a transaction: send it with send_stateless()")
        branch = request.top_via.branch
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            raise TransactionError(f"{method} needs a top Via branch starting with {MAGIC_COOKIE}")
        key = (branch, method)
        if key in self._clients:
            raise TransactionError(f"branch {branch} is already used by a {method} transaction")
        machine = INVITE_CLIENT if method == "INVITE" else NON_INVITE_CLIENT
        txn = self._create(machine, request, flow, key)
        self._clients[key] = txn
        txn.request_data = request.to_bytes()
        self._events.append(SendMessage(request, flow, txn.request_data, txn.id))
        self._enter(txn, machine.initial, now)
        return txn.id

    def send_response(
        self, response: Response, now: float, transaction_id: int | None = None
    ) -> int | None:
        """Send the TU's response through the server transaction it answers.

        The transaction is found by `transaction_id` when given, else from the response's top
        Via branch, sent-by and CSeq method (§17.2.3). Returns the transaction's id, or None
        when no live server transaction matches (nothing is sent). A response the transaction
        cannot send in its state (a second final) is absorbed. Passing the same Response
        object again (the TU's 2xx retransmissions) resends the bytes serialized the first time.
        """
        if transaction_id is not None:
            txn = self._by_id.get(transaction_id)
        else:
            try:
                txn = self._find_server_for_response(response)
            except ParseError:
                return None
        if txn is None or txn.machine.client:
            return None
        self._input(txn, _response_input(response.status, False), response, txn.flow, now)
        return txn.id

    def terminate(self, transaction_id: int, now: float) -> bool:
        """Destroy a transaction the TU has given up on; True if it was still alive.

        RFC 3261 has no timer that ends an INVITE transaction in Proceeding: the UAC's TU
        CANCELs and, with no final response 64*T1 later, destroys the client transaction
        (§9.1); a UAS TU always answers. This is how a TU does either without leaking state.
        `TransactionTerminated` follows, as for any other end.
        """
        txn = self._by_id.get(transaction_id)
        if txn is None:
            return False
        self._enter(txn, State.TERMINATED, now)
        return True

    def send_stateless(self, message: Message, flow: Flow) -> None:
        """Send a message outside any transaction: the ACK for a 2xx (§13.2.2.4)."""
        self._events.append(SendMessage(message, flow, message.to_bytes()))

    # --- matching ----------------------------------------------------------------------------
    @staticmethod
    def _server_key(request: Request, method: str) -> ServerKey:
        """§17.2.3: branch + sent-by + method; the RFC 2543 fallback compares the rest."""
        via = request.top_via
        branch = via.branch
        if branch is not None and branch.startswith(MAGIC_COOKIE):
            return (branch, via.host.lower(), via.port, method)
        return (
            "",
            str(request.uri),
            request.from_addr.tag,
            request.call_id,
            request.cseq.number,
            str(via),
            method,
        )

    @staticmethod
    def _legacy_response_key(message: Message, method: str) -> ServerKey:
        # A response carries no Request-URI: match on what it copied from the request.
        return (
            "",
            message.from_addr.tag,
            message.call_id,
            message.cseq.number,
            str(message.top_via),
            method,
        )

    def _find_server_for_response(self, response: Response) -> _Transaction | None:
        via = response.top_via
        branch = via.branch
        method = response.cseq.method
        if branch is not None and branch.startswith(MAGIC_COOKIE):
            return self._servers.get((branch, via.host.lower(), via.port, method))
        return self._legacy_responses.get(self._legacy_response_key(response, method))

    @staticmethod
    def _legacy_ack_matches(txn: _Transaction, ack: Request) -> bool:
        """RFC 2543 ACKs also match on the To tag of the response they acknowledge."""
        sent = txn.response  # kept strongly for RFC 2543 transactions (see `_linger`)
        return sent is None or sent.to_addr.tag == ack.to_addr.tag

    # --- transaction lifecycle ----------------------------------------------------------------
    def _create(self, machine: Machine, request: Request, flow: Flow, key: object) -> _Transaction:
        self._next_id += 1
        txn = _Transaction(self._next_id, machine, request, flow, key)
        self._by_id[txn.id] = txn
        return txn

    def _new_server_transaction(
        self, request: Request, flow: Flow, key: ServerKey, now: float
    ) -> None:
        method = request.method
        machine = INVITE_SERVER if method == "INVITE" else NON_INVITE_SERVER
        merge_key: MergeKey | None = None
        merged = False
        if not has_to_tag(request):
            cseq = request.cseq
            merge_key = (request.from_addr.tag, request.call_id, cseq.number, cseq.method)
            merged = merge_key in self._merge
        legacy_key = self._legacy_response_key(request, method) if len(key) != 4 else None
        txn = self._create(machine, request, flow, key)
        self._servers[key] = txn
        if legacy_key is not None:
            txn.legacy_response_key = legacy_key
            self._legacy_responses[legacy_key] = txn
        if merged:
            # Same request, reached us again by another path: the first copy is being served.
            txn.visible = False
            self.stats.merged_requests += 1
            self._enter(txn, machine.initial, now)
            loop = request.create_response(482, to_tag=self._ids())
            self._input(txn, Input.SEND_FAILURE, loop, flow, now)
            return
        if merge_key is not None:
            txn.merge_key = merge_key
            self._merge[merge_key] = txn
        if method == "CANCEL":
            invite = self._servers.get(self._server_key(request, "INVITE"))
            cancelled = invite.id if invite is not None and invite.visible else None
            self._events.append(CancelReceived(txn.id, cancelled, request, flow))
        else:
            self._events.append(RequestReceived(txn.id, request, flow))
        self._enter(txn, machine.initial, now)

    def _release(self, txn: _Transaction) -> None:
        """Forget a terminated transaction everywhere: no state outlives it."""
        del self._by_id[txn.id]
        for timers in txn.machine.timers.values():
            for timer in timers:
                self._timers.cancel((txn.id, timer))
        index: dict[Any, _Transaction] = self._clients if txn.machine.client else self._servers
        del index[txn.key]  # keys are unique: a live key is never reused
        if txn.legacy_response_key is not None:
            self._legacy_responses.pop(txn.legacy_response_key, None)
        if txn.merge_key is not None:  # only the first of merged requests holds the key
            del self._merge[txn.merge_key]
        if txn.visible:
            self._events.append(TransactionTerminated(txn.id))

    # --- the state machine engine ----------------------------------------------------------
    def _input(
        self,
        txn: _Transaction,
        event: Input,
        message: Message | None,
        flow: Flow | None,
        now: float,
    ) -> None:
        transition = txn.machine.transitions.get((txn.state, event))
        if transition is None:
            self.stats.absorbed += 1
            return
        actions, next_state = transition
        for action in actions:
            self._perform(action, txn, event, message, flow, now)
        if next_state is not txn.state:
            self._enter(txn, next_state, now)

    def _enter(self, txn: _Transaction, state: State, now: float) -> None:
        """Move to `state`: stop the old state's timers, start the new state's (see
        `transaction_states`), fire zero-length ones at once, release on Terminated."""
        timers = txn.machine.timers
        previous = timers.get(txn.state, ())
        txn.state = state
        if state is State.TERMINATED:
            self._release(txn)
            return
        if state in _LINGERING:
            _linger(txn)
        running = timers.get(state, ())
        for timer in previous:
            if timer not in running:
                self._timers.cancel((txn.id, timer))
        delays = self._initial_delays[txn.flow.reliable]
        fire_now: list[Input] = []
        for timer in running:
            key = (txn.id, timer)
            if key in self._timers:
                continue  # keeps running across this transition (Timers E and F)
            delay = delays[timer]
            if delay is None:
                continue
            if timer in _RETRANSMIT_TIMERS:
                txn.interval = delay
            if delay > 0:
                self._timers.schedule(now + delay, key)
            else:
                fire_now.append(timer)
        for timer in fire_now:  # at most one per state: D, I, J or K, which all terminate
            self._input(txn, timer, None, None, now)

    # --- actions --------------------------------------------------------------------------
    def _perform(
        self,
        action: Action,
        txn: _Transaction,
        event: Input,
        message: Message | None,
        flow: Flow | None,
        now: float,
    ) -> None:
        """Do one `Action` of a transition; `event` and `message` are the input's."""
        if action is Action.SEND_RESPONSE:
            assert isinstance(message, Response)
            self._send_response(txn, message)
        elif action is Action.PASS_RESPONSE:
            assert isinstance(message, Response) and flow is not None
            self._events.append(ResponseReceived(txn.id, message, flow))
        elif action is Action.RESEND_RESPONSE:
            if txn.response is not None:
                self._send(txn, txn.response, txn.response_data, True)
        elif action is Action.RESEND_REQUEST:
            assert txn.request is not None  # Calling, Trying, Proceeding: not lingering yet
            self._send(txn, txn.request, txn.request_data, True)
        elif action is Action.RESTART_DOUBLED:
            self._restart(txn, event, now, txn.interval * 2)
        elif action is Action.RESTART_DOUBLED_UP_TO_T2:
            self._restart(txn, event, now, min(txn.interval * 2, self.settings.t2))
        elif action is Action.RESTART_AT_T2:
            self._restart(txn, event, now, self.settings.t2)
        elif action is Action.SEND_TRYING:  # the TU sent nothing: any response stops the timer
            assert txn.request is not None  # Proceeding
            self._send_response(txn, txn.request.create_response(100))
        elif action is Action.STOP_TRYING_TIMER:
            self._timers.cancel((txn.id, Input.TIMER_TRYING))
        elif action is Action.PASS_ACK:
            assert isinstance(message, Request) and flow is not None
            self._events.append(RequestReceived(txn.id, message, flow))
        elif action is Action.SEND_ACK:
            assert isinstance(message, Response) and txn.request is not None
            txn.ack = ack = build_non2xx_ack(txn.request, message)
            txn.ack_data = ack.to_bytes()
            self._send(txn, ack, txn.ack_data, False)
        elif action is Action.RESEND_ACK:
            assert txn.ack is not None
            self._send(txn, txn.ack, txn.ack_data, True)
        elif action is Action.REPORT_TIMEOUT:
            if txn.visible:
                self._events.append(TransactionTimedOut(txn.id, event.value))
        else:
            assert action is Action.REPORT_TRANSPORT_ERROR
            if txn.visible:
                self._events.append(TransportFailed(txn.id))

    def _send(self, txn: _Transaction, message: Message, data: bytes, again: bool) -> None:
        if again:
            self.stats.retransmissions += 1
        self._events.append(SendMessage(message, txn.flow, data, txn.id, again))

    def _send_response(self, txn: _Transaction, response: Response) -> None:
        sent_2xx = txn.sent_2xx
        if response is txn.response or (sent_2xx is not None and sent_2xx() is response):
            # the TU's own 2xx retransmission: same bytes again
            self._send(txn, response, txn.response_data, True)
            return
        txn.response = response
        txn.response_data = response.to_bytes()
        if txn.state is State.ACCEPTED:  # a second 2xx (another fork's): lingers like the first
            _linger(txn)
        self._send(txn, response, txn.response_data, False)

    def _restart(self, txn: _Transaction, timer: Input, now: float, interval: float) -> None:
        txn.interval = interval
        self._timers.schedule(now + interval, (txn.id, timer))


_RETRANSMIT_TIMERS = frozenset({Input.TIMER_A, Input.TIMER_E, Input.TIMER_G})

# The states a transaction only lingers in, after its final response (see `_Transaction`).
_LINGERING = frozenset({State.COMPLETED, State.CONFIRMED, State.ACCEPTED})


def _linger(txn: _Transaction) -> None:
    """Drop what a transaction in Completed, Confirmed or Accepted never reads again.

    What each keeps (the transition tables): a client its ACK for a non-2xx final (Completed:
    resent on a response retransmission); a server its last response and its bytes
    (Completed: resent on a request retransmission and by Timer G), in Accepted only the
    bytes, with the 2xx held weakly (the TU's own retransmissions of it) — strongly for an RFC
    2543 transaction, whose ACK matching reads the response's To tag; in Confirmed nothing.
    """
    txn.request = None
    txn.request_data = b""
    state = txn.state
    if state is State.CONFIRMED:
        txn.response = None
        txn.response_data = b""
    elif state is State.ACCEPTED and not txn.machine.client:
        response = txn.response
        if response is not None and txn.legacy_response_key is None:
            txn.sent_2xx = weakref.ref(response)
            txn.response = None
