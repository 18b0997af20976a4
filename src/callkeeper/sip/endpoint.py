"""The SIP stack of one agent, sans-IO: bytes in; wire commands and transaction events out.

It does what every SIP element does before the application sees a message: tells keep-alives
and STUN from SIP (RFC 5626, RFC 5389), parses, answers malformed requests with the right 4xx
or drops what cannot be answered (counted either way), stamps `received`/`rport` (RFC 3581),
runs the transaction layer (RFC 3261 §17), and routes responses per §18.2.2. The application
(the call manager) drains `next_event()` for requests, responses and timeouts, and answers
through `send_response()` / `send_request()`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from callkeeper.sip import keepalive, nat, stun
from callkeeper.sip.capabilities import ALLOWED_METHODS, KNOWN_UNSUPPORTED_METHODS
from callkeeper.sip.errors import MessageTooLarge, ParseError
from callkeeper.sip.message import Message, Request, Response, has_to_tag
from callkeeper.sip.parser import (
    FramingError,
    KeepAlivePing,
    KeepAlivePong,
    PartialRequestError,
    StreamItem,
    parse_message,
)
from callkeeper.sip.stats import SipStats
from callkeeper.sip.timers import TimerSettings
from callkeeper.sip.transaction import TransactionLayer
from callkeeper.sip.transaction_events import SendMessage, TransactionEvent
from callkeeper.sip.transaction_messages import IdSource
from callkeeper.sip.transport import CloseFlow, Flow, Transmit


@dataclass(frozen=True, slots=True)
class KeepaliveReceived:
    """Event: a CRLF or STUN keep-alive arrived over `flow` (a sign of life)."""

    flow: Flow
    kind: str  # "crlf", "udp-crlf" or "stun"


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """Event: the stream connection behind `flow` closed or failed."""

    flow: Flow


@dataclass(frozen=True, slots=True)
class StatelessRequestReceived:
    """Event: an out-of-dialog request of a method the application answers statelessly.

    Kamailio's `sl_send_reply` model: an OPTIONS keep-alive probe needs no transaction — the
    answer is immediate and the same for a retransmission — so it costs no state and no timers.
    Answer with `SipEndpoint.send_stateless_response()`.
    """

    request: Request
    flow: Flow


EndpointEvent = TransactionEvent | KeepaliveReceived | ConnectionClosed | StatelessRequestReceived
WireCommand = Transmit | CloseFlow


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


# Metric labels come from a fixed set: a method name straight from the network would let any
# peer grow the metrics without bound (PROTOS alone sends nearly 200 different ones).
_METHOD_LABELS = frozenset(ALLOWED_METHODS) | KNOWN_UNSUPPORTED_METHODS


def method_label(method: str) -> str:
    return method if method in _METHOD_LABELS else "other"


# A response must carry these, copied from the request (RFC 3261 §8.2.6.2); without them a
# malformed request cannot be answered in a way the sender could match.
_RESPONSE_HEADERS = ("via", "from", "to", "call-id", "cseq")


class SipEndpoint:
    def __init__(
        self,
        timers: TimerSettings,
        ids: IdSource,
        user_agent: str = "callkeeper",
        stateless_methods: frozenset[str] = frozenset(),
    ) -> None:
        self.transactions = TransactionLayer(timers, ids)
        self.stateless_methods = stateless_methods
        self.stats = SipStats()
        self.user_agent = user_agent
        self._ids = ids
        self._commands: deque[WireCommand] = deque()
        self._events: deque[EndpointEvent] = deque()

    # --- inputs -------------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, flow: Flow, now: float) -> None:
        kind = keepalive.classify(data)
        if kind is keepalive.Kind.SIP:
            try:
                message = parse_message(data)
            except PartialRequestError as error:
                self._reject(error, flow)
                return
            except ParseError:
                self.stats.dropped["unparseable"] += 1
                return
            self._receive_message(message, flow, now)
        elif kind is keepalive.Kind.STUN:
            reply = stun.handle_datagram(data, flow.remote, software=self.user_agent)
            self.stats.keepalives["stun"] += 1
            if reply is not None:
                self._commands.append(Transmit(flow, reply))
            self._events.append(KeepaliveReceived(flow, "stun"))
        elif kind is keepalive.Kind.UNKNOWN:
            self.stats.dropped["not-sip"] += 1
        else:  # CRLF keep-alive on UDP: a sign of life, answered with nothing (RFC 5626 §4.4.2)
            self.stats.keepalives["udp-crlf"] += 1
            self._events.append(KeepaliveReceived(flow, "udp-crlf"))

    def receive_stream_item(self, item: StreamItem, flow: Flow, now: float) -> None:
        if isinstance(item, Message):
            self._receive_message(item, flow, now)
        elif isinstance(item, KeepAlivePing):
            self.stats.keepalives["crlf"] += 1
            self._commands.append(Transmit(flow, keepalive.PONG))
            self._events.append(KeepaliveReceived(flow, "crlf"))
        elif isinstance(item, KeepAlivePong):
            self.stats.keepalives["crlf-pong"] += 1
            self._events.append(KeepaliveReceived(flow, "crlf"))
        elif isinstance(item, PartialRequestError):
            # Framing is intact (Content-Length was readable): answer and keep the connection.
            self._reject(item, flow)
        elif isinstance(item, FramingError | MessageTooLarge):
            # The stream cannot be framed any more: close it (§18.3).
            self.stats.dropped["unframeable-stream"] += 1
            self._commands.append(CloseFlow(flow))
        else:
            # One bad message (a garbled response, say) with its framing intact: drop it only.
            self.stats.dropped["unparseable"] += 1

    def connection_lost(self, flow: Flow, now: float) -> None:
        self._events.append(ConnectionClosed(flow))

    def handle_timer(self, now: float) -> None:
        self.transactions.handle_timer(now)
        self._drain_transactions()

    def get_timer(self) -> float | None:
        return self.transactions.get_timer()

    # --- outputs ------------------------------------------------------------------------------
    def next_command(self) -> WireCommand | None:
        return self._commands.popleft() if self._commands else None

    def next_event(self) -> EndpointEvent | None:
        return self._events.popleft() if self._events else None

    # --- the application's actions ----------------------------------------------------------------
    def send_response(
        self, response: Response, now: float, transaction_id: int | None = None
    ) -> None:
        self.transactions.send_response(response, now, transaction_id)
        self._drain_transactions()

    def send_request(self, request: Request, flow: Flow, now: float) -> int:
        transaction_id = self.transactions.send_request(request, flow, now)
        self._drain_transactions()
        return transaction_id

    def abandon_transaction(self, transaction_id: int, now: float) -> None:
        """Give up on a transaction RFC 3261 leaves without a timer (a CANCELled INVITE)."""
        self.transactions.terminate(transaction_id, now)
        self._drain_transactions()

    def send_stateless_response(self, response: Response, flow: Flow) -> None:
        """Answer a `StatelessRequestReceived` (routed per §18.2.2 like any response)."""
        try:
            target = self._response_flow(response, flow)
        except ParseError:
            self.stats.dropped["unroutable-response"] += 1
            return
        self._count_out(response)
        self._commands.append(Transmit(target, response.to_bytes()))

    def send_stateless(self, message: Message, flow: Flow) -> None:
        self.transactions.send_stateless(message, flow)
        self._drain_transactions()

    def new_tag(self) -> str:
        return self._ids()

    @property
    def transaction_count(self) -> int:
        return len(self.transactions)

    # --- internals ----------------------------------------------------------------------------------
    def _receive_message(self, message: Message, flow: Flow, now: float) -> None:
        stats = self.stats
        if isinstance(message, Request):
            stats.messages["in", "request", method_label(message.method)] += 1
            try:
                nat.stamp_request(message, flow)
            except ParseError:
                stats.dropped["bad-via"] += 1
                return
            if message.method in self.stateless_methods and not has_to_tag(message):
                self._events.append(StatelessRequestReceived(message, flow))
                return
            self.transactions.receive_request(message, flow, now)
        else:
            assert isinstance(message, Response)
            try:
                method = message.cseq.method
            except ParseError:
                stats.dropped["bad-response"] += 1
                return
            stats.messages["in", "response", method_label(method)] += 1
            stats.responses["in", _status_class(message.status)] += 1
            self.transactions.receive_response(message, flow, now)
        self._drain_transactions()

    def _reject(self, error: PartialRequestError, flow: Flow) -> None:
        """Answer a malformed request statelessly, or drop it when no answer can be routed."""
        request = error.request
        self.stats.messages["in", "request", method_label(request.method)] += 1
        if request.method == "ACK":
            self.stats.dropped["malformed-ack"] += 1
            return
        if any(name not in request.headers for name in _RESPONSE_HEADERS):
            self.stats.dropped["unanswerable"] += 1
            return
        try:
            response = request.create_response(error.status, to_tag=self._ids())
        except ParseError:
            response = request.create_response(error.status)  # To unparseable: copied as is
        response.headers.add("Warning", f'399 {self.user_agent} "{_warning_text(error.reason)}"')
        try:
            response.cseq  # noqa: B018 - the sender matches our answer by it: it must parse
            target = self._response_flow(response, flow)
        except ParseError:
            self.stats.dropped["unanswerable"] += 1
            return
        self.stats.rejected[error.status] += 1
        self._count_out(response)
        self._commands.append(Transmit(target, response.to_bytes()))

    def _drain_transactions(self) -> None:
        layer = self.transactions
        while (event := layer.next_event()) is not None:
            if type(event) is SendMessage:
                flow = event.flow
                message = event.message
                if isinstance(message, Response):
                    try:
                        flow = self._response_flow(message, flow)
                    except ParseError:
                        self.stats.dropped["unroutable-response"] += 1
                        continue
                if not event.retransmission:
                    self._count_out(message)
                self._commands.append(Transmit(flow, event.data))
            else:
                self._events.append(event)

    def _count_out(self, message: Message) -> None:
        if isinstance(message, Request):
            self.stats.messages["out", "request", method_label(message.method)] += 1
        else:
            assert isinstance(message, Response)
            self.stats.messages["out", "response", method_label(message.cseq.method)] += 1
            self.stats.responses["out", _status_class(message.status)] += 1

    def _response_flow(self, response: Response, flow: Flow) -> Flow:
        """§18.2.2 / RFC 3581: where a response goes, from its top Via and the request's flow."""
        if flow.reliable:
            return flow  # the connection the request came on
        target = nat.response_target(response.top_via, flow)
        if (target.host, target.port) == flow.remote:
            return flow
        return Flow("udp", (target.host, target.port), flow.local)


def _warning_text(reason: str) -> str:
    return "".join(ch for ch in reason if ch.isprintable() and ch not in '"\\')[:120]
