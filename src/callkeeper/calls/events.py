"""What happened to calls: small frozen events for the API's event stream, logs and metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallStarted:
    call_id: str
    caller: str | None
    callee: str | None
    at: float


@dataclass(frozen=True, slots=True)
class CallAnswered:
    call_id: str
    endpoint: str | None  # the callee's endpoint that answered
    at: float
    caller_endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class CallEnded:
    call_id: str
    reason: str  # "caller hung up", "callee hung up", "cancelled", "486 Busy Here", ...
    at: float
    answered: bool
    endpoints: tuple[str, ...] = ()  # of the legs that were connected


CallEvent = CallStarted | CallAnswered | CallEnded
