"""The recovery engine's whole protocol on one screen: (call state, trigger) → next state.

A call is `active` until one side's endpoint fails; then the survivor is held while the failed
side is brought back (`resuming`) or replaced down the user's fallback chain (`transferring`).
Triggers are what happened to the call, not who noticed it. A pair missing from the table is
an input that does not move the call (a second DOWN of the same endpoint, a late answer), so
tests can walk every pair and a reader sees every path.
"""

from __future__ import annotations

from enum import Enum

from callkeeper.calls.model import CallState


class Trigger(Enum):
    DOWN = "down"  # an endpoint of the call failed
    BACK = "back"  # the failed endpoint showed a sign of life within grace
    GRACE_EXPIRED = "grace-expired"
    ASKED = "asked"  # someone asked for the call to move (feature code, API, REFER, de-register)
    RESUME_FAILED = "resume-failed"  # the returning endpoint rejected or did not answer
    BRIDGED = "bridged"  # a leg answered and the survivor is connected to it again
    EXHAUSTED = "exhausted"  # the fallback chain has nothing left (or nobody is left to keep)
    NOT_TAKEN = "not-taken"  # an asked-for target did not answer; the untouched call goes on
    HUNG_UP = "hung-up"  # a live party sent BYE, or the survivor could not be kept


_S = CallState
_T = Trigger

TRANSITIONS: dict[tuple[CallState, Trigger], CallState] = {
    (_S.ACTIVE, _T.DOWN): _S.HOLDING,
    (_S.ACTIVE, _T.ASKED): _S.TRANSFERRING,
    (_S.ACTIVE, _T.HUNG_UP): _S.ENDED,
    (_S.HOLDING, _T.DOWN): _S.HOLDING,  # the survivor failed too: both are held for grace
    (_S.HOLDING, _T.BACK): _S.RESUMING,
    (_S.HOLDING, _T.GRACE_EXPIRED): _S.TRANSFERRING,
    (_S.HOLDING, _T.ASKED): _S.TRANSFERRING,
    (_S.HOLDING, _T.EXHAUSTED): _S.ENDED,  # both parties failed and grace ran out
    (_S.HOLDING, _T.HUNG_UP): _S.ENDED,
    (_S.RESUMING, _T.DOWN): _S.HOLDING,  # it vanished again before answering
    (_S.RESUMING, _T.RESUME_FAILED): _S.TRANSFERRING,
    (_S.RESUMING, _T.ASKED): _S.TRANSFERRING,
    (_S.RESUMING, _T.BRIDGED): _S.ACTIVE,
    (_S.RESUMING, _T.HUNG_UP): _S.ENDED,
    (_S.TRANSFERRING, _T.ASKED): _S.TRANSFERRING,  # a new target replaces the chain
    (_S.TRANSFERRING, _T.BRIDGED): _S.ACTIVE,
    (_S.TRANSFERRING, _T.EXHAUSTED): _S.ENDED,
    (_S.TRANSFERRING, _T.NOT_TAKEN): _S.ACTIVE,
    (_S.TRANSFERRING, _T.HUNG_UP): _S.ENDED,
}

RECOVERING = frozenset({CallState.HOLDING, CallState.RESUMING, CallState.TRANSFERRING})


def next_state(state: CallState, trigger: Trigger) -> CallState | None:
    """The state `trigger` moves a call in `state` to, or None when it does not apply."""
    return TRANSITIONS.get((state, trigger))
