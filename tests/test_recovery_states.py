"""The recovery engine's transition table, walked pair by pair (h2's style of state tests)."""

from __future__ import annotations

import itertools

import pytest

from callkeeper.calls.model import CallState
from callkeeper.calls.recovery_states import RECOVERING, TRANSITIONS, Trigger, next_state

S, T = CallState, Trigger
EXPECTED = {
    (S.ACTIVE, T.DOWN): S.HOLDING,
    (S.ACTIVE, T.ASKED): S.TRANSFERRING,
    (S.ACTIVE, T.HUNG_UP): S.ENDED,
    (S.HOLDING, T.DOWN): S.HOLDING,
    (S.HOLDING, T.BACK): S.RESUMING,
    (S.HOLDING, T.GRACE_EXPIRED): S.TRANSFERRING,
    (S.HOLDING, T.ASKED): S.TRANSFERRING,
    (S.HOLDING, T.EXHAUSTED): S.ENDED,
    (S.HOLDING, T.HUNG_UP): S.ENDED,
    (S.RESUMING, T.DOWN): S.HOLDING,
    (S.RESUMING, T.RESUME_FAILED): S.TRANSFERRING,
    (S.RESUMING, T.ASKED): S.TRANSFERRING,
    (S.RESUMING, T.BRIDGED): S.ACTIVE,
    (S.RESUMING, T.HUNG_UP): S.ENDED,
    (S.TRANSFERRING, T.ASKED): S.TRANSFERRING,
    (S.TRANSFERRING, T.BRIDGED): S.ACTIVE,
    (S.TRANSFERRING, T.EXHAUSTED): S.ENDED,
    (S.TRANSFERRING, T.NOT_TAKEN): S.ACTIVE,
    (S.TRANSFERRING, T.HUNG_UP): S.ENDED,
}


@pytest.mark.parametrize(("state", "trigger"), list(itertools.product(CallState, Trigger)))
def test_every_state_and_trigger(state: CallState, trigger: Trigger) -> None:
    assert next_state(state, trigger) is EXPECTED.get((state, trigger))


def test_the_table_is_the_expected_one_and_nothing_leaves_ended_or_setup() -> None:
    assert TRANSITIONS == EXPECTED
    assert not any(state in (S.ENDED, S.SETUP) for state, _ in TRANSITIONS)


def test_every_recovering_state_can_reach_active_and_ended() -> None:
    for start in RECOVERING:
        reachable, frontier = {start}, [start]
        while frontier:
            state = frontier.pop()
            for (source, _), target in TRANSITIONS.items():
                if source is state and target not in reachable:
                    reachable.add(target)
                    frontier.append(target)
        assert {S.ACTIVE, S.ENDED} <= reachable
