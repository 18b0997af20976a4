"""The four transaction state machines of RFC 3261 §17, as RFC 6026 corrected them, as data.

Each machine is a transition table `{(state, input): (actions, next_state)}` in the style of
h2's `H2StreamStateMachine`: the whole protocol fits on one screen, tests walk every
(state, input) pair, and a pair that is not in the table is absorbed (the message or timer is
dropped, nothing changes) — which is what RFC 3261 asks for every retransmission and stray
event it does not mention. `TransactionLayer` executes the actions; this module only says what
happens.

Timers belong to states: `Machine.timers[state]` lists the timers that run while a transaction
is in `state`. Entering a state starts those that are not already running (so Timers E and F
keep going from Trying into Proceeding) and stops those of the previous state that do not run
in the new one (so Timer A stops at the first provisional response). A timer whose value is 0
on a reliable transport (D, I, J, K) fires at once; one that only exists on unreliable
transports (A, E, G) is not started on a reliable one.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class State(enum.Enum):
    # Members are singletons compared by identity; identity hashing (C) instead of Enum's
    # Python-level hash-of-name makes every transition and timer lookup cheaper.
    __hash__ = object.__hash__

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"  # RFC 6026
    TERMINATED = "Terminated"


class Input(enum.Enum):
    __hash__ = object.__hash__

    # from the wire
    REQUEST = "request retransmission"
    ACK = "ACK"
    RESPONSE_1XX = "1xx received"
    RESPONSE_2XX = "2xx received"
    RESPONSE_FAILURE = "300-699 received"
    # from the TU
    SEND_1XX = "1xx from TU"
    SEND_2XX = "2xx from TU"
    SEND_FAILURE = "300-699 from TU"
    # from the io driver
    TRANSPORT_ERROR = "transport error"
    # timers
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"
    TIMER_TRYING = "100 Trying"

    @property
    def is_timer(self) -> bool:
        return self in TIMERS


TIMERS = frozenset(
    {
        Input.TIMER_A,
        Input.TIMER_B,
        Input.TIMER_D,
        Input.TIMER_E,
        Input.TIMER_F,
        Input.TIMER_G,
        Input.TIMER_H,
        Input.TIMER_I,
        Input.TIMER_J,
        Input.TIMER_K,
        Input.TIMER_L,
        Input.TIMER_M,
        Input.TIMER_TRYING,
    }
)


class Action(enum.Enum):
    __hash__ = object.__hash__

    PASS_RESPONSE = "pass the response to the TU"
    PASS_ACK = "pass the ACK to the TU"
    SEND_ACK = "build the ACK for a non-2xx final and send it"
    RESEND_ACK = "resend that ACK"
    RESEND_REQUEST = "retransmit the request"
    SEND_RESPONSE = "send the TU's response and remember it"
    RESEND_RESPONSE = "retransmit the last response, if any"
    SEND_TRYING = "send 100 Trying unless the TU sent a response"
    STOP_TRYING_TIMER = "stop the 100 Trying timer"
    RESTART_DOUBLED = "restart the firing timer at twice its interval"
    RESTART_DOUBLED_UP_TO_T2 = "restart the firing timer at twice its interval, at most T2"
    RESTART_AT_T2 = "restart the firing timer at T2"
    REPORT_TIMEOUT = "tell the TU the transaction timed out"
    REPORT_TRANSPORT_ERROR = "tell the TU the transport failed"


Transition = tuple[tuple[Action, ...], State]


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: there are four
class Machine:
    name: str
    client: bool
    initial: State
    transitions: Mapping[tuple[State, Input], Transition]
    timers: Mapping[State, tuple[Input, ...]]
    states: frozenset[State] = field(init=False)

    def __post_init__(self) -> None:
        states = {self.initial, *self.timers}
        for (state, _), (_, next_state) in self.transitions.items():
            states.update((state, next_state))
        object.__setattr__(self, "states", frozenset(states))


# Short aliases keep the tables readable; deleted below so they do not leak.
C, T, P = State.CALLING, State.TRYING, State.PROCEEDING
CO, CF, AC, TE = State.COMPLETED, State.CONFIRMED, State.ACCEPTED, State.TERMINATED
I = Input  # noqa: E741
A = Action


# RFC 3261 Figure 5 with the RFC 6026 Accepted state (Timer M).
INVITE_CLIENT = Machine(
    "INVITE client",
    client=True,
    initial=C,
    transitions={
        (C, I.TIMER_A): ((A.RESEND_REQUEST, A.RESTART_DOUBLED), C),
        (C, I.TIMER_B): ((A.REPORT_TIMEOUT,), TE),
        (C, I.RESPONSE_1XX): ((A.PASS_RESPONSE,), P),
        (C, I.RESPONSE_2XX): ((A.PASS_RESPONSE,), AC),
        (C, I.RESPONSE_FAILURE): ((A.PASS_RESPONSE, A.SEND_ACK), CO),
        (C, I.TRANSPORT_ERROR): ((A.REPORT_TRANSPORT_ERROR,), TE),
        (P, I.RESPONSE_1XX): ((A.PASS_RESPONSE,), P),
        (P, I.RESPONSE_2XX): ((A.PASS_RESPONSE,), AC),
        (P, I.RESPONSE_FAILURE): ((A.PASS_RESPONSE, A.SEND_ACK), CO),
        (P, I.TRANSPORT_ERROR): ((A.REPORT_TRANSPORT_ERROR,), TE),
        (CO, I.RESPONSE_FAILURE): ((A.RESEND_ACK,), CO),  # absorbed, ACKed again
        (CO, I.TIMER_D): ((), TE),
        (CO, I.TRANSPORT_ERROR): ((A.REPORT_TRANSPORT_ERROR,), TE),
        (AC, I.RESPONSE_2XX): ((A.PASS_RESPONSE,), AC),  # the TU ACKs each 2xx itself
        (AC, I.TIMER_M): ((), TE),
    },
    timers={C: (I.TIMER_A, I.TIMER_B), CO: (I.TIMER_D,), AC: (I.TIMER_M,)},
)

# RFC 3261 Figure 6.
NON_INVITE_CLIENT = Machine(
    "non-INVITE client",
    client=True,
    initial=T,
    transitions={
        (T, I.TIMER_E): ((A.RESEND_REQUEST, A.RESTART_DOUBLED_UP_TO_T2), T),
        (T, I.TIMER_F): ((A.REPORT_TIMEOUT,), TE),
        (T, I.RESPONSE_1XX): ((A.PASS_RESPONSE,), P),
        (T, I.RESPONSE_2XX): ((A.PASS_RESPONSE,), CO),
        (T, I.RESPONSE_FAILURE): ((A.PASS_RESPONSE,), CO),
        (T, I.TRANSPORT_ERROR): ((A.REPORT_TRANSPORT_ERROR,), TE),
        (P, I.TIMER_E): ((A.RESEND_REQUEST, A.RESTART_AT_T2), P),
        (P, I.TIMER_F): ((A.REPORT_TIMEOUT,), TE),
        (P, I.RESPONSE_1XX): ((A.PASS_RESPONSE,), P),
        (P, I.RESPONSE_2XX): ((A.PASS_RESPONSE,), CO),
        (P, I.RESPONSE_FAILURE): ((A.PASS_RESPONSE,), CO),
        (P, I.TRANSPORT_ERROR): ((A.REPORT_TRANSPORT_ERROR,), TE),
        (CO, I.TIMER_K): ((), TE),
    },
    timers={T: (I.TIMER_E, I.TIMER_F), P: (I.TIMER_E, I.TIMER_F), CO: (I.TIMER_K,)},
)

# RFC 3261 Figure 7 with the RFC 6026 Accepted state (Timer L). 2xx retransmissions are the
# TU's job (§13.3.1.4): in Accepted the transaction only relays them, absorbs INVITE
# retransmissions and hands matching ACKs up. A transport error in Accepted is reported but the
# transaction stays, so it still absorbs INVITE retransmissions until Timer L.
INVITE_SERVER = Machine(
    "INVITE server",
    client=False,
    initial=P,
    transitions={
        (P, I.REQUEST): ((A.RESEND_RESPONSE,), P),
        (P, I.TIMER_TRYING): ((A.SEND_TRYING,), P),
        (P, I.SEND_1XX): ((A.STOP_TRYING_TIMER, A.SEND_RESPONSE), P),
        (P, I.SEND_2XX): ((A.SEND_RESPONSE,), AC),
        (P, I.SEND_FAILURE): ((A.SEND_RESPONSE,), CO),
        (P, I.TRANSPORT_ERROR): ((A.REPORT_TRANSPORT_ERROR,), TE),
        (CO, I.REQUEST): ((A.RESEND_RESPONSE,), CO),
        (CO, I.ACK): ((), CF),
        (CO, I.TIMER_G): ((A.RESEND_RESPONSE, A.RESTART_DOUBLED_UP_TO_T2), CO),
        (CO, I.TIMER_H): ((A.REPORT_TIMEOUT,), TE),
        (CO, I.TRANSPORT_ERROR): ((A.REPORT_TRANSPORT_ERROR,), TE),
        (CF, I.TIMER_I): ((), TE),
        (AC, I.ACK): ((A.PASS_ACK,), AC),
        (AC, I.SEND_2XX): ((A.SEND_RESPONSE,), AC),
        (AC, I.TIMER_L): ((), TE),
        (AC, I.TRANSPORT_ERROR): ((A.REPORT_TRANSPORT_ERROR,), AC),
    },
    timers={P: (I.TIMER_TRYING,), CO: (I.TIMER_G, I.TIMER_H), CF: (I.TIMER_I,), AC: (I.TIMER_L,)},
)

# RFC 3261 Figure 8. A retransmission in Trying is absorbed: there is nothing to resend yet.
NON_INVITE_SERVER = Machine(
    "non-INVITE server",
    client=False,
    initial=T,
    transitions={
        (T, I.SEND_1XX): ((A.SEND_RESPONSE,), P),
        (T, I.SEND_2XX): ((A.SEND_RESPONSE,), CO),
        (T, I.SEND_FAILURE): ((A.SEND_RESPONSE,), CO),
        (P, I.REQUEST): ((A.RESEND_RESPONSE,), P),
        (P, I.SEND_1XX): ((A.SEND_RESPONSE,), P),
        (P, I.SEND_2XX): ((A.SEND_RESPONSE,), CO),
        (P, I.SEND_FAILURE): ((A.SEND_RESPONSE,), CO),
        (P, I.TRANSPORT_ERROR): ((A.REPORT_TRANSPORT_ERROR,), TE),
        (CO, I.REQUEST): ((A.RESEND_RESPONSE,), CO),
        (CO, I.TIMER_J): ((), TE),
        (CO, I.TRANSPORT_ERROR): ((A.REPORT_TRANSPORT_ERROR,), TE),
    },
    timers={CO: (I.TIMER_J,)},
)

MACHINES = (INVITE_CLIENT, NON_INVITE_CLIENT, INVITE_SERVER, NON_INVITE_SERVER)

del C, T, P, CO, CF, AC, TE, I, A
