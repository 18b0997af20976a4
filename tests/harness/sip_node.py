"""A SIP agent for the simulation: a TransactionLayer on the in-memory network, plus a TU hook.

`SipNode` parses what the network delivers, feeds it to its layer, puts `SendMessage` bytes on
the network and hands every other event to `tu(node, event, now)` (and records it in `events`).
Tests use it directly as a UAC/UAS, or give it a TU object from `harness.user_agents`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Message, Request, Response
from callkeeper.sip.parser import parse_message
from callkeeper.sip.timers import TimerSettings
from callkeeper.sip.transaction import TransactionLayer
from callkeeper.sip.transaction_events import SendMessage, TransactionEvent
from callkeeper.sip.transaction_messages import counter_ids
from callkeeper.sip.transport import Flow
from harness.adapter import SansIOAdapter
from harness.network import Address
from harness.simulation import Simulation

TU = Callable[["SipNode", TransactionEvent, float], None]
EventT = TypeVar("EventT")


class SipNode(SansIOAdapter[TransactionEvent]):
    def __init__(
        self,
        sim: Simulation,
        address: Address,
        *,
        name: str | None = None,
        transport: str = "udp",
        settings: TimerSettings | None = None,
        tu: TU | None = None,
    ) -> None:
        self.name = name or f"{address[0]}-{address[1]}"  # a token: it goes into branches
        self.layer = TransactionLayer(settings, ids=counter_ids(f"{self.name}-"))
        super().__init__(self.layer)
        self.sim = sim
        self.address = address
        self.transport = transport
        self.tu = tu
        self.events: list[tuple[float, TransactionEvent]] = []  # everything but SendMessage
        self.sent: list[SendMessage] = []
        self.unparsable = 0
        sim.network.attach(address, self)
        sim.add(self)

    def flow_to(self, remote: Address, transport: str | None = None) -> Flow:
        return Flow(transport or self.transport, remote=remote, local=self.address)

    # --- network side ----------------------------------------------------------------------
    def datagram_received(self, data: bytes, flow: Flow, now: float) -> None:
        try:
            message = parse_message(data)
        except ParseError:
            self.unparsable += 1
            return
        if isinstance(message, Request):
            self.layer.receive_request(message, flow, now)
        else:
            assert isinstance(message, Response)
            self.layer.receive_response(message, flow, now)
        self.flush(now)

    def on_event(self, event: TransactionEvent, now: float) -> None:
        if isinstance(event, SendMessage):
            self.sent.append(event)
            self.sim.network.send(event.data, event.flow, now)
            return
        self.events.append((now, event))
        if self.tu is not None:
            self.tu(self, event, now)

    # --- TU side ---------------------------------------------------------------------------
    def send_request(self, request: Request, remote: Address) -> int:
        now = self.sim.now
        transaction_id = self.layer.send_request(request, self.flow_to(remote), now)
        self.flush(now)
        return transaction_id

    def send_response(self, response: Response, transaction_id: int | None = None) -> int | None:
        now = self.sim.now
        result = self.layer.send_response(response, now, transaction_id)
        self.flush(now)
        return result

    def send_stateless(self, message: Message, flow: Flow) -> None:
        self.layer.send_stateless(message, flow)
        self.flush(self.sim.now)

    # --- what happened ---------------------------------------------------------------------
    def received(self, kind: type[EventT]) -> list[EventT]:
        return [event for _, event in self.events if isinstance(event, kind)]
