"""Drive one TransactionLayer by hand on a fake clock and keep everything it emitted.

For unit tests of single transactions, where a whole simulated network would hide which input
caused which output. `advance()` fires the layer's timers one deadline at a time, exactly at
their deadlines, so tests can assert retransmission instants to the microsecond.
"""

from __future__ import annotations

from typing import TypeVar

from callkeeper.sip.message import Request, Response
from callkeeper.sip.timers import TimerSettings
from callkeeper.sip.transaction import TransactionLayer
from callkeeper.sip.transaction_events import SendMessage, TransactionEvent
from callkeeper.sip.transaction_messages import counter_ids
from callkeeper.sip.transport import Flow
from harness.clock import FakeClock

EventT = TypeVar("EventT")

PEER = ("10.0.0.2", 5060)
LOCAL = ("10.0.0.1", 5060)


class LayerDriver:
    def __init__(self, settings: TimerSettings | None = None, transport: str = "udp") -> None:
        self.clock = FakeClock()
        self.layer = TransactionLayer(settings, ids=counter_ids("t"))
        self.flow = Flow(transport, remote=PEER, local=LOCAL)
        self.log: list[tuple[float, TransactionEvent]] = []

    @property
    def now(self) -> float:
        return self.clock.now

    def drain(self) -> list[TransactionEvent]:
        """Collect the layer's pending events (also appended to `log`); returns the new ones."""
        new: list[TransactionEvent] = []
        while (event := self.layer.next_event()) is not None:
            new.append(event)
            self.log.append((self.clock.now, event))
        return new

    def advance(self, seconds: float) -> list[TransactionEvent]:
        """Let `seconds` pass, firing every timer at its deadline; returns the events."""
        target = self.clock.now + seconds
        new = self.drain()
        while (deadline := self.layer.get_timer()) is not None and deadline <= target:
            self.clock.advance_to(deadline)
            self.layer.handle_timer(self.clock.now)
            new += self.drain()
        self.clock.advance_to(target)
        return new

    # --- inputs, each followed by a drain --------------------------------------------------
    def send_request(self, request: Request) -> int:
        transaction_id = self.layer.send_request(request, self.flow, self.now)
        self.drain()
        return transaction_id

    def receive_request(self, request: Request) -> list[TransactionEvent]:
        self.layer.receive_request(request, self.flow, self.now)
        return self.drain()

    def receive_response(self, response: Response) -> list[TransactionEvent]:
        self.layer.receive_response(response, self.flow, self.now)
        return self.drain()

    def send_response(
        self, response: Response, transaction_id: int | None = None
    ) -> list[TransactionEvent]:
        self.layer.send_response(response, self.now, transaction_id)
        return self.drain()

    # --- what happened ---------------------------------------------------------------------
    def of(self, kind: type[EventT]) -> list[EventT]:
        return [event for _, event in self.log if isinstance(event, kind)]

    def times(self, kind: type[object], retransmission: bool | None = None) -> list[float]:
        """When events of `kind` were emitted (for SendMessage: optionally only resends)."""
        return [
            round(when, 6)
            for when, event in self.log
            if isinstance(event, kind)
            and (
                retransmission is None
                or (isinstance(event, SendMessage) and event.retransmission == retransmission)
            )
        ]
