"""`TimerWheel` against a model, and its edge cases.

The model is a plain dict of key → deadline rounded up to the wheel's tick; a hypothesis state
machine drives both with random schedule/cancel/pop_due sequences and a clock that only moves
forward (as the io driver's does).
"""

from __future__ import annotations

import math

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from callkeeper.liveness import TimerWheel

RES = 0.25


def tick_time(when: float) -> float:
    return math.ceil(when / RES) * RES


def test_deadlines_round_up_and_never_fire_early() -> None:
    wheel: TimerWheel[str] = TimerWheel(RES)
    wheel.schedule(1.01, "a")
    assert wheel.resolution == RES
    assert wheel.deadline("a") == 1.25 and wheel.next_deadline() == 1.25
    assert wheel.pop_due(1.2) == []
    assert wheel.pop_due(1.25) == ["a"]
    assert wheel.deadline("a") is None and "a" not in wheel and len(wheel) == 0


def test_rescheduling_moves_a_key_and_same_tick_is_a_no_op() -> None:
    wheel: TimerWheel[str] = TimerWheel(RES)
    wheel.schedule(5.0, "a")
    wheel.schedule(4.9, "a")  # same tick (5.0)
    wheel.schedule(2.0, "a")
    assert len(wheel) == 1 and "a" in wheel
    assert wheel.pop_due(4.0) == ["a"]
    assert wheel.pop_due(10.0) == [], "the old tick must not fire it again"


def test_cancelled_keys_and_emptied_ticks_are_skipped() -> None:
    wheel: TimerWheel[str] = TimerWheel(RES)
    wheel.schedule(1.0, "a")
    wheel.schedule(2.0, "b")
    wheel.schedule(2.0, "c")
    assert wheel.cancel("a") and not wheel.cancel("a")
    assert wheel.next_deadline() == 2.0, "tick 1.0 emptied: not a deadline any more"
    wheel.cancel("b")
    assert wheel.pop_due(3.0) == ["c"]
    wheel.schedule(1.0, "a")  # a tick that was emptied and pushed again
    assert wheel.next_deadline() == 1.0 and wheel.pop_due(1.0) == ["a"]
    assert wheel.next_deadline() is None


def test_clear_forgets_everything() -> None:
    wheel: TimerWheel[int] = TimerWheel(RES)
    for i in range(10):
        wheel.schedule(i, i)
    wheel.clear()
    assert len(wheel) == 0 and wheel.next_deadline() is None and wheel.pop_due(100) == []


class WheelAgainstModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.wheel: TimerWheel[int] = TimerWheel(RES)
        self.model: dict[int, float] = {}
        self.now = 0.0

    @rule(key=st.integers(0, 8), delay=st.floats(0.0, 20.0))
    def schedule(self, key: int, delay: float) -> None:
        self.wheel.schedule(self.now + delay, key)
        self.model[key] = tick_time(self.now + delay)

    @rule(key=st.integers(0, 8))
    def cancel(self, key: int) -> None:
        assert self.wheel.cancel(key) == (self.model.pop(key, None) is not None)

    @rule(step=st.floats(0.0, 10.0))
    def advance(self, step: float) -> None:
        self.now += step
        due = self.wheel.pop_due(self.now)
        expected = sorted((t, k) for k, t in self.model.items() if t <= self.now)
        assert sorted(due) == sorted(k for _, k in expected)
        # earliest tick first
        assert [self.model[k] for k in due] == sorted(self.model[k] for k in due)
        for key in due:
            del self.model[key]

    @invariant()
    def agrees(self) -> None:
        assert len(self.wheel) == len(self.model)
        expected = min(self.model.values(), default=None)
        assert self.wheel.next_deadline() == expected
        for key, when in self.model.items():
            assert self.wheel.deadline(key) == when


WheelAgainstModel.TestCase.settings = settings(max_examples=200, stateful_step_count=40)
TestWheelAgainstModel = WheelAgainstModel.TestCase
