"""What is watched: endpoint kinds, watch modes, and the per-endpoint record.

`Watch` is deliberately a plain mutable slotted class, not a dataclass: it is touched on every
packet (`sign_of_life` writes two floats into it), its identity is its hash (it is the key in the
timer structure, so no string is hashed on a timer), and its derived thresholds are computed
once per interval change instead of once per check.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from callkeeper.liveness.states import State
from callkeeper.sip.transport import Flow


class EndpointKind(enum.Enum):
    """What the endpoint is; carried through to events so the API and logs can say it."""

    __hash__ = object.__hash__

    CONTACT = "contact"  # a registered contact / RFC 5626 flow
    STATIC = "static"  # a `static_contacts` URI: never registers
    TRUNK = "trunk"
    IVR_NODE = "ivr-node"


class Mode(enum.Enum):
    """Who speaks first.

    KEEPALIVE: the endpoint pings us (RFC 5626 outbound: CRLF or STUN every ~`flow_timer`).
    PROBE: it does not, so we send OPTIONS every `options_interval`; any answer is life.
    """

    __hash__ = object.__hash__

    KEEPALIVE = "keepalive"
    PROBE = "probe"


class Watch:
    """Everything the monitor knows about one endpoint (internal; see `EndpointView`)."""

    __slots__ = (
        "alive_after",
        "down_after",
        "endpoint_id",
        "failed_probes",
        "flow",
        "in_call",
        "interval",
        "kind",
        "last_seen",
        "mode",
        "next_probe",
        "pending_probe",
        "phase",
        "probe_interval",
        "quiet_since",
        "state",
        "suspect_after",
        "watch_interval",
    )

    def __init__(
        self,
        endpoint_id: str,
        kind: EndpointKind,
        flow: Flow,
        mode: Mode,
        interval: float,
        phase: float,
        now: float,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.kind = kind
        self.flow = flow
        self.mode = mode
        self.interval = interval  # the endpoint's own interval (flow timer or OPTIONS interval)
        self.phase = phase  # in [0, 1): where in each interval this endpoint's probes go
        self.in_call = False
        self.state = State.ALIVE
        self.last_seen = now  # last sign of life (being added counts as one)
        self.quiet_since = now  # what the silence thresholds count from (see monitor)
        self.failed_probes = 0  # transport failures since the last sign of life
        self.pending_probe: int | None = None
        self.next_probe = 0.0
        # Derived from the above by LivenessMonitor._configure():
        self.watch_interval = interval
        self.probe_interval: float | None = None
        self.suspect_after = 0.0
        self.down_after = 0.0
        self.alive_after = 0.0


@dataclass(frozen=True, slots=True)
class EndpointView:
    """A snapshot of one endpoint for the API (`GET /api/v1/endpoints`) and tests.

    `interval` is the interval it is currently watched at (the in-call one during a call);
    `probing` says whether we are sending it OPTIONS.
    """

    endpoint_id: str
    kind: EndpointKind
    mode: Mode
    flow: Flow
    state: State
    last_seen: float
    in_call: bool
    interval: float
    probing: bool
