"""What the transaction layer reports: one small frozen class per thing that happened.

The layer never calls out; the caller drains these with `TransactionLayer.next_event()` (the
h11/aioquic shape). `SendMessage` is for the io driver, everything else for the transaction
user (TU: the dialog/UA core). Transaction ids are plain ints, unique for the layer's lifetime,
so a TU can key its own tables by them without caring about branches.
"""

from __future__ import annotations

from dataclasses import dataclass

from callkeeper.sip.message import Message, Request, Response
from callkeeper.sip.transport import Flow


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Put `data` (the serialized `message`) on the wire over `flow`.

    Retransmissions carry the very same `data` object, serialized once. `transaction_id` is the
    transaction that sent it (None for stateless sends), so the io driver can report a failed
    send back with `TransactionLayer.transport_error()`.
    """

    message: Message
    flow: Flow
    data: bytes
    transaction_id: int | None = None
    retransmission: bool = False


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request for the TU.

    A new request created server transaction `transaction_id`; answer it with
    `send_response()`. ACKs arrive here too: with the INVITE server transaction's id when that
    transaction is in the RFC 6026 Accepted state, otherwise (the usual ACK for a 2xx, which has
    its own branch) with `transaction_id=None`.
    """

    transaction_id: int | None
    request: Request
    flow: Flow


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL created server transaction `transaction_id` (answer it: 200, or 481 when
    `cancelled_transaction_id` is None because no INVITE server transaction matched, §9.2).

    Kept apart from `RequestReceived` so a TU's dispatch cannot forget that a CANCEL refers to
    another transaction, which it must also answer (487) when it is still pending.
    """

    transaction_id: int
    cancelled_transaction_id: int | None
    request: Request
    flow: Flow


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for client transaction `transaction_id`, retransmissions already absorbed."""

    transaction_id: int
    response: Response
    flow: Flow


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer B or F (no final response; the TU treats it as 408) or H (no ACK) fired."""

    transaction_id: int
    timer: str  # "B", "F" or "H"


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The io driver reported that a message of this transaction could not be sent."""

    transaction_id: int


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction is gone; its id will not appear again."""

    transaction_id: int


TransactionEvent = (
    SendMessage
    | RequestReceived
    | CancelReceived
    | ResponseReceived
    | TransactionTimedOut
    | TransportFailed
    | TransactionTerminated
)
