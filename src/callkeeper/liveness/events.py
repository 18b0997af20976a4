"""What the liveness monitor reports: one small frozen class per state change.

Drained with `LivenessMonitor.next_event()` (the h11/aioquic shape). The recovery engine acts on
`EndpointDown` (hold the survivor) and `EndpointAlive` (re-attach); the API turns all three into
`endpoint.*` server-sent events; metrics take `EndpointDown.detection_latency` for the
`callkeeper_detection_seconds` histogram and count `EndpointDown` for
`callkeeper_endpoint_failures_total`. Times are the monitor's `now` (the driver's monotonic
clock), not wall-clock time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from callkeeper.liveness.endpoint import EndpointKind
from callkeeper.liveness.states import State

# "timeout": nothing heard for misses × interval (+ grace); "probe-failed": `misses` probes in a
# row failed at the transport (ICMP unreachable, connection refused).
DownReason = Literal["timeout", "probe-failed", "connection-lost", "registration-expired", "reset"]
SuspectReason = Literal["timeout", "probe-failed"]


@dataclass(frozen=True, slots=True)
class EndpointSuspect:
    """An interval went by with nothing heard (or a probe failed): not yet a failure."""

    endpoint_id: str
    kind: EndpointKind
    reason: SuspectReason
    last_seen: float
    at: float


@dataclass(frozen=True, slots=True)
class EndpointDown:
    """The endpoint is considered failed.

    `detection_latency` is `detected_at - last_seen`: the time from the last sign of life to
    this decision, which is what `callkeeper_detection_seconds` measures. For a timeout it is
    about `misses × interval + down_grace`; for a lost connection or a reset it is whatever
    the endpoint had been quiet for before.
    """

    endpoint_id: str
    kind: EndpointKind
    reason: DownReason
    last_seen: float
    detected_at: float
    detection_latency: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "detection_latency", self.detected_at - self.last_seen)


@dataclass(frozen=True, slots=True)
class EndpointAlive:
    """The endpoint spoke again after being SUSPECT or DOWN (`was`)."""

    endpoint_id: str
    kind: EndpointKind
    was: State
    at: float


LivenessEvent = EndpointSuspect | EndpointDown | EndpointAlive
