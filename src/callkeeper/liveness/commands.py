"""What the liveness monitor asks the caller to do.

The monitor never builds SIP: `SendProbe` says "send an OPTIONS to this endpoint over this flow
now". The caller builds and sends it, then reports back: any response, even 4xx/5xx, with
`probe_answered()`; an immediate transport error (ICMP unreachable, connection refused) with
`probe_failed(endpoint_id, probe_id, now)`. A probe that gets no answer needs no report: the
monitor's own deadline counts it (the OPTIONS transaction's 32 s Timer F is far too slow for
liveness, so its timeout should *not* be reported as a failure).
"""

from __future__ import annotations

from dataclasses import dataclass

from callkeeper.sip.transport import Flow


@dataclass(frozen=True, slots=True)
class SendProbe:
    """Send an OPTIONS probe to `endpoint_id` over `flow`; `probe_id` identifies it in reports."""

    endpoint_id: str
    flow: Flow
    probe_id: int


LivenessCommand = SendProbe
