"""Minimal transaction users (UA cores) for simulations: just enough RFC 3261 §13 to finish a call.

The transaction layer leaves two jobs to its TU that a lossy-network test cannot do without:
the UAS retransmits its 2xx to INVITE until the ACK arrives (§13.3.1.4), and the UAC sends an
ACK for every 2xx it receives (§13.2.2.4). `Uas` and `Uac` do those and record what happened.
They are TU callbacks for `SipNode(tu=...)`; `Uas` is also a simulation participant because it
keeps its own timers. They are not the dialog layer — only test scaffolding.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from callkeeper.sip.message import Request, Response
from callkeeper.sip.timers import TimerSettings
from callkeeper.sip.transaction_events import (
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    TransactionEvent,
    TransactionTimedOut,
)
from harness.messages import build_2xx_ack
from harness.network import Address
from harness.sip_node import SipNode


@dataclass
class _Retransmission:
    node: SipNode
    response: Response
    transaction_id: int
    interval: float
    due: float
    give_up: float


class Uas:
    """Answers every request: INVITE with 180 and then `final`, anything else with 200."""

    def __init__(self, final: int = 200, settings: TimerSettings | None = None) -> None:
        self.final = final
        self.settings = settings or TimerSettings()
        self.requests: list[Request] = []  # new requests, in arrival order
        self.acks: list[Request] = []
        self.cancels: list[CancelReceived] = []
        self.timeouts: list[int] = []
        self._tags = (f"uas-{n}" for n in itertools.count(1))
        self._retransmitting: dict[tuple[str, int], _Retransmission] = {}

    def __call__(self, node: SipNode, event: TransactionEvent, now: float) -> None:
        if isinstance(event, RequestReceived):
            request = event.request
            if request.method == "ACK":
                self.acks.append(request)
                self._retransmitting.pop((request.call_id, request.cseq.number), None)
            elif event.transaction_id is not None:
                self.requests.append(request)
                self._answer(node, event.transaction_id, request, now)
        elif isinstance(event, CancelReceived):
            self.cancels.append(event)
            node.send_response(event.request.create_response(200), event.transaction_id)
        elif isinstance(event, TransactionTimedOut):
            self.timeouts.append(event.transaction_id)

    def _answer(self, node: SipNode, transaction_id: int, request: Request, now: float) -> None:
        tag = next(self._tags)
        if request.method != "INVITE":
            node.send_response(request.create_response(200, to_tag=tag), transaction_id)
            return
        node.send_response(request.create_response(180, to_tag=tag), transaction_id)
        final = request.create_response(self.final, to_tag=tag)
        node.send_response(final, transaction_id)
        if final.is_success:
            t1 = self.settings.t1
            self._retransmitting[(request.call_id, request.cseq.number)] = _Retransmission(
                node, final, transaction_id, t1, now + t1, now + 64 * t1
            )

    # --- participant: 2xx retransmission timers ---------------------------------------------
    def get_timer(self) -> float | None:
        return min((r.due for r in self._retransmitting.values()), default=None)

    def handle_timer(self, now: float) -> None:
        for key, item in list(self._retransmitting.items()):
            if item.due > now:
                continue
            if now >= item.give_up:
                del self._retransmitting[key]  # §13.3.1.4: no ACK within 64*T1, give up
                continue
            item.node.send_response(item.response, item.transaction_id)
            item.interval = min(2 * item.interval, self.settings.t2)
            item.due = now + item.interval

    @property
    def retransmitting(self) -> int:
        return len(self._retransmitting)


class Uac:
    """Sends requests and ACKs every 2xx to INVITE; records finals and timeouts."""

    def __init__(self) -> None:
        self.requests: dict[int, Request] = {}
        self.finals: dict[int, Response] = {}  # first final response per transaction
        self.responses: list[ResponseReceived] = []
        self.timeouts: list[int] = []
        self.acks_sent = 0

    def send(self, node: SipNode, request: Request, remote: Address) -> int:
        transaction_id = node.send_request(request, remote)
        self.requests[transaction_id] = request
        return transaction_id

    def __call__(self, node: SipNode, event: TransactionEvent, now: float) -> None:
        if isinstance(event, ResponseReceived):
            self.responses.append(event)
            response = event.response
            if response.status >= 200:
                self.finals.setdefault(event.transaction_id, response)
            request = self.requests.get(event.transaction_id)
            if request is not None and request.method == "INVITE" and response.is_success:
                ack = build_2xx_ack(request, response, node.layer.new_branch())
                node.send_stateless(ack, node.flow_to(event.flow.remote))
                self.acks_sent += 1
        elif isinstance(event, TransactionTimedOut):
            self.timeouts.append(event.transaction_id)
