"""The call manager: the pure core that the io driver feeds.

It owns the SIP endpoint and decides what every request gets. For now that is the element-wide
policy of RFC 3261 §8.2 — 420 for an unsupported Require, 405/501 for methods we do not serve,
200 with our capabilities for OPTIONS, 481 for requests inside dialogs we do not have — on top of
which the registrar, the B2BUA and the recovery engine are built.
"""

from __future__ import annotations

from collections import deque

from callkeeper.config import Config
from callkeeper.sip import capabilities
from callkeeper.sip.endpoint import (
    ConnectionClosed,
    KeepaliveReceived,
    SipEndpoint,
    StatelessRequestReceived,
    WireCommand,
)
from callkeeper.sip.message import Request, Response
from callkeeper.sip.parser import StreamItem
from callkeeper.sip.stats import SipStats
from callkeeper.sip.timers import TimerSettings
from callkeeper.sip.transaction_events import (
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from callkeeper.sip.transaction_messages import IdSource
from callkeeper.sip.transport import Flow


class CallManager:
    def __init__(self, config: Config, ids: IdSource) -> None:
        self.config = config
        timers = TimerSettings(t1=config.sip.t1, t2=config.sip.t2, t4=config.sip.t4)
        self.endpoint = SipEndpoint(
            timers, ids, user_agent=config.sip.user_agent, stateless_methods=frozenset({"OPTIONS"})
        )
        self.local_addresses: dict[str, list[tuple[str, int]]] = {}
        self._commands: deque[object] = deque()

    @classmethod
    def from_config(cls, config: Config, ids: IdSource) -> CallManager:
        return cls(config, ids)

    def add_local_address(self, transport: str, address: tuple[str, int]) -> None:
        self.local_addresses.setdefault(transport, []).append(address)

    # --- views ----------------------------------------------------------------------------------
    @property
    def sip_stats(self) -> SipStats:
        return self.endpoint.stats

    @property
    def transaction_count(self) -> int:
        return self.endpoint.transaction_count

    # --- inputs (from the driver) -----------------------------------------------------------------
    def receive_datagram(self, data: bytes, flow: Flow, now: float) -> None:
        self.endpoint.receive_datagram(data, flow, now)
        self._process(now)

    def receive_stream_item(self, item: StreamItem, flow: Flow, now: float) -> None:
        self.endpoint.receive_stream_item(item, flow, now)
        self._process(now)

    def connection_lost(self, flow: Flow, now: float) -> None:
        self.endpoint.connection_lost(flow, now)
        self._process(now)

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)
        self._process(now)

    def get_timer(self) -> float | None:
        return self.endpoint.get_timer()

    def next_command(self) -> WireCommand | object | None:
        command = self.endpoint.next_command()
        if command is not None:
            return command
        return self._commands.popleft() if self._commands else None

    # --- event handling ---------------------------------------------------------------------------
    def _process(self, now: float) -> None:
        endpoint = self.endpoint
        while (event := endpoint.next_event()) is not None:
            event_type = type(event)
            if event_type is StatelessRequestReceived:
                assert isinstance(event, StatelessRequestReceived)
                response = self._policy_response(event.request)
                endpoint.send_stateless_response(response, event.flow)
            elif event_type is RequestReceived:
                assert isinstance(event, RequestReceived)
                if event.transaction_id is not None:
                    self._answer_request(event.request, event.transaction_id, now)
                # else: an ACK for a 2xx — no dialogs of ours yet to pass it to.
            elif event_type is CancelReceived:
                assert isinstance(event, CancelReceived)
                # Every INVITE is answered at once today, so there is never anything left to
                # cancel: the transaction layer already matched it or it did not exist (§9.2).
                status = 200 if event.cancelled_transaction_id is not None else 481
                response = event.request.create_response(status, to_tag=endpoint.new_tag())
                endpoint.send_response(response, now, event.transaction_id)
            elif event_type in (
                ResponseReceived,
                TransactionTimedOut,
                TransportFailed,
                TransactionTerminated,
                KeepaliveReceived,
                ConnectionClosed,
            ):
                pass  # no client transactions, liveness or flows to track yet

    def _answer_request(self, request: Request, transaction_id: int, now: float) -> None:
        self.endpoint.send_response(self._policy_response(request), now, transaction_id)

    def _policy_response(self, request: Request) -> Response:
        endpoint = self.endpoint
        tag = endpoint.new_tag()
        response = capabilities.extension_response(request, tag) or capabilities.method_response(
            request, tag
        )
        if response is None:
            if request.method == "OPTIONS" and request.to_addr.tag is None:
                response = capabilities.options_response(request, tag, endpoint.user_agent)
            elif request.to_addr.tag is not None:
                response = request.create_response(481)  # no dialogs exist yet
            elif request.method == "INVITE":
                response = request.create_response(480, to_tag=tag)
            else:
                response = request.create_response(403, to_tag=tag)
        return response
