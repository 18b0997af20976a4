"""Liveness: know within seconds that an endpoint is dead, for tens of thousands of endpoints.

Pure (sans-IO): `now` comes in with every input, outputs are queued. Start with
`LivenessMonitor` (monitor.py); the state machine is `states.TRANSITIONS`, the thresholds and
why they are what they are in `settings`, the probe spreading in `spread`, the timer wheel in
`wheel`.
"""

from callkeeper.liveness.commands import LivenessCommand, SendProbe
from callkeeper.liveness.endpoint import EndpointKind, EndpointView, Mode
from callkeeper.liveness.events import (
    DownReason,
    EndpointAlive,
    EndpointDown,
    EndpointSuspect,
    LivenessEvent,
    SuspectReason,
)
from callkeeper.liveness.monitor import LivenessMonitor
from callkeeper.liveness.settings import LivenessSettings
from callkeeper.liveness.spread import hash_phase, next_slot, seeded_phase
from callkeeper.liveness.states import TRANSITIONS, Emit, State, Trigger
from callkeeper.liveness.wheel import Timers, TimerWheel

__all__ = [
    "TRANSITIONS",
    "DownReason",
    "Emit",
    "EndpointAlive",
    "EndpointDown",
    "EndpointKind",
    "EndpointSuspect",
    "EndpointView",
    "LivenessCommand",
    "LivenessEvent",
    "LivenessMonitor",
    "LivenessSettings",
    "Mode",
    "SendProbe",
    "State",
    "SuspectReason",
    "TimerWheel",
    "Timers",
    "Trigger",
    "hash_phase",
    "next_slot",
    "seeded_phase",
]
