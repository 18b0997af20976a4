"""The per-endpoint failure detector as data: `ALIVE → SUSPECT → DOWN → ALIVE`.

One transition table `{(state, trigger): (next_state, emit)}` in the style of h2's
`H2StreamStateMachine` and `sip.transaction_states`: the whole protocol fits on one screen and
tests walk every pair. The table is total — every (state, trigger) pair is listed — and a pair
whose `emit` is `Emit.NOTHING` is absorbed: e.g. a second failure sign while DOWN does not
announce the failure twice. `LivenessMonitor` turns inputs and timers into triggers, looks the
pair up and queues the event `emit` names; this module only says what happens.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class State(enum.Enum):
    # Identity hashing (C) instead of Enum's hash-of-name: the table lookup sits on the packet
    # path whenever a quiet endpoint speaks again.
    __hash__ = object.__hash__

    ALIVE = "alive"
    SUSPECT = "suspect"
    DOWN = "down"


class Trigger(enum.Enum):
    """What can happen to an endpoint, as the state machine sees it."""

    __hash__ = object.__hash__

    SIGN_OF_LIFE = "sign of life"  # any keep-alive, SIP message, probe answer, REGISTER
    MISSED = "one interval missed"  # silence past the SUSPECT threshold
    PROBE_ERROR = "probe failed"  # a transport error on one probe (fewer than `misses` so far)
    SILENT = "misses intervals missed"  # silence past the DOWN threshold
    UNREACHABLE = "misses probes failed"  # transport errors on `misses` probes, nothing heard
    CONNECTION_LOST = "connection lost"  # its TCP/TLS/WS connection closed or reset
    REGISTRATION_EXPIRED = "registration expired"
    RESET = "reset"  # de-/re-registration of the same instance in a call: the phone rebooted


class Emit(enum.Enum):
    """Which event a transition queues."""

    __hash__ = object.__hash__

    NOTHING = "nothing"
    SUSPECT = "EndpointSuspect"
    DOWN = "EndpointDown"
    ALIVE = "EndpointAlive"


Transition = tuple[State, Emit]

# Short aliases keep the table readable; deleted below so they do not leak.
A, S, D = State.ALIVE, State.SUSPECT, State.DOWN
T = Trigger

TRANSITIONS: Mapping[tuple[State, Trigger], Transition] = {
    (A, T.SIGN_OF_LIFE): (A, Emit.NOTHING),
    (A, T.MISSED): (S, Emit.SUSPECT),
    (A, T.PROBE_ERROR): (S, Emit.SUSPECT),
    (A, T.SILENT): (D, Emit.DOWN),  # no SUSPECT stage (misses=1) or a late timer
    (A, T.UNREACHABLE): (D, Emit.DOWN),  # misses=1: the first failed probe
    (A, T.CONNECTION_LOST): (D, Emit.DOWN),
    (A, T.REGISTRATION_EXPIRED): (D, Emit.DOWN),
    (A, T.RESET): (D, Emit.DOWN),
    (S, T.SIGN_OF_LIFE): (A, Emit.ALIVE),
    (S, T.MISSED): (S, Emit.NOTHING),
    (S, T.PROBE_ERROR): (S, Emit.NOTHING),
    (S, T.SILENT): (D, Emit.DOWN),
    (S, T.UNREACHABLE): (D, Emit.DOWN),
    (S, T.CONNECTION_LOST): (D, Emit.DOWN),
    (S, T.REGISTRATION_EXPIRED): (D, Emit.DOWN),
    (S, T.RESET): (D, Emit.DOWN),
    (D, T.SIGN_OF_LIFE): (A, Emit.ALIVE),
    (D, T.MISSED): (D, Emit.NOTHING),
    (D, T.PROBE_ERROR): (D, Emit.NOTHING),
    (D, T.SILENT): (D, Emit.NOTHING),
    (D, T.UNREACHABLE): (D, Emit.NOTHING),
    (D, T.CONNECTION_LOST): (D, Emit.NOTHING),
    (D, T.REGISTRATION_EXPIRED): (D, Emit.NOTHING),
    (D, T.RESET): (D, Emit.NOTHING),
}

del A, S, D, T
