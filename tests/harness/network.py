"""An in-memory datagram/stream network with per-link loss, duplication, reordering and delay.

Why: the transaction layer's whole reason to exist is surviving a bad network, so the tests need
one that loses, duplicates and reorders on purpose — deterministically, from a seeded
`random.Random`, so a failure replays exactly. Delivery is scheduled on the fake clock; the
`Network` is itself a simulation participant (`get_timer`/`handle_timer`).

Reliable transports (tcp, tls, ws, wss — `Flow.reliable`) are never lossy: they keep order and
only see the link's delay, as a TCP connection would. Datagrams see everything.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Protocol

from callkeeper.sip.transport import Flow

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class LinkConditions:
    """How one direction of a link treats datagrams (probabilities in [0, 1], times in s)."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # probability a datagram is held back by `reorder_delay`
    delay: float = 0.005
    jitter: float = 0.0  # uniform extra delay in [0, jitter]
    reorder_delay: float = 0.05


PERFECT = LinkConditions()


class Receiver(Protocol):
    def datagram_received(self, data: bytes, flow: Flow, now: float) -> None: ...


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One datagram handed to the network, and what became of it."""

    sent: float
    source: Address
    destination: Address
    transport: str
    data: bytes
    fate: str  # "delivered", "lost", "duplicated" (the extra copy), "unroutable"
    delivered: float | None = None


@dataclass(order=True, slots=True)
class _Delivery:
    when: float
    sequence: int
    data: bytes = field(compare=False)
    flow: Flow = field(compare=False)  # as the receiver sees it
    receiver: Receiver = field(compare=False)
    trace_index: int = field(compare=False)


class Network:
    """Routes bytes between attached receivers by (host, port)."""

    def __init__(self, rng: random.Random, default: LinkConditions = PERFECT) -> None:
        self.rng = rng
        self.default = default
        self.trace: list[TraceEntry] = []
        self._receivers: dict[Address, Receiver] = {}
        self._links: dict[tuple[Address, Address], LinkConditions] = {}
        self._queue: list[_Delivery] = []
        self._sequence = 0
        self._stream_tail: dict[tuple[Address, Address], float] = {}  # keeps streams in order

    def attach(self, address: Address, receiver: Receiver) -> None:
        if address in self._receivers:
            raise ValueError(f"{address} is already attached")
        self._receivers[address] = receiver

    def detach(self, address: Address) -> None:
        """Unplug an agent: datagrams to it are lost from now on (a crashed endpoint)."""
        self._receivers.pop(address, None)

    def set_link(self, source: Address, destination: Address, conditions: LinkConditions) -> None:
        """Conditions for datagrams from `source` to `destination` (one direction)."""
        self._links[(source, destination)] = conditions

    def set_path(self, a: Address, b: Address, conditions: LinkConditions) -> None:
        """The same conditions in both directions between `a` and `b`."""
        self.set_link(a, b, conditions)
        self.set_link(b, a, conditions)

    def conditions(self, source: Address, destination: Address) -> LinkConditions:
        return self._links.get((source, destination), self.default)

    # --- sending -------------------------------------------------------------------------
    def send(self, data: bytes, flow: Flow, now: float) -> None:
        """Send `data` from `flow.local` to `flow.remote` (the sender's view of the flow)."""
        source, destination = flow.local, flow.remote
        receiver = self._receivers.get(destination)
        if receiver is None:
            self._record(now, flow, data, "unroutable")
            return
        inbound = Flow(flow.transport, remote=source, local=destination, connection=flow.connection)
        link = self.conditions(source, destination)
        if flow.reliable:
            # A stream: in order, no loss, no duplicates; only latency.
            when = max(now + link.delay, self._stream_tail.get((source, destination), 0.0))
            self._stream_tail[(source, destination)] = when
            self._schedule(
                when, data, inbound, receiver, self._record(now, flow, data, "delivered")
            )
            return
        rng = self.rng
        if rng.random() < link.loss:
            self._record(now, flow, data, "lost")
            return
        copies = 2 if rng.random() < link.duplicate else 1
        for copy in range(copies):
            when = now + link.delay + rng.uniform(0.0, link.jitter)
            if rng.random() < link.reorder:
                when += link.reorder_delay
            fate = "delivered" if copy == 0 else "duplicated"
            self._schedule(when, data, inbound, receiver, self._record(now, flow, data, fate))

    def _record(self, now: float, flow: Flow, data: bytes, fate: str) -> int:
        self.trace.append(TraceEntry(now, flow.local, flow.remote, flow.transport, data, fate))
        return len(self.trace) - 1

    def _schedule(
        self, when: float, data: bytes, flow: Flow, receiver: Receiver, trace_index: int
    ) -> None:
        self._sequence += 1
        heapq.heappush(
            self._queue, _Delivery(when, self._sequence, data, flow, receiver, trace_index)
        )

    # --- the participant interface -------------------------------------------------------
    def get_timer(self) -> float | None:
        return self._queue[0].when if self._queue else None

    def handle_timer(self, now: float) -> None:
        queue = self._queue
        while queue and queue[0].when <= now:
            delivery = heapq.heappop(queue)
            entry = self.trace[delivery.trace_index]
            if self._receivers.get(delivery.flow.local) is not delivery.receiver:
                self.trace[delivery.trace_index] = _replace_fate(entry, "lost")  # unplugged
                continue
            self.trace[delivery.trace_index] = _replace_fate(entry, entry.fate, now)
            delivery.receiver.datagram_received(delivery.data, delivery.flow, now)

    # --- what happened -------------------------------------------------------------------
    def count(self, fate: str) -> int:
        return sum(1 for entry in self.trace if entry.fate == fate)

    @property
    def in_flight(self) -> int:
        return len(self._queue)


def _replace_fate(entry: TraceEntry, fate: str, delivered: float | None = None) -> TraceEntry:
    return TraceEntry(
        entry.sent, entry.source, entry.destination, entry.transport, entry.data, fate, delivered
    )
