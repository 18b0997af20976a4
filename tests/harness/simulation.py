"""The loop that runs sans-IO participants against each other on a fake clock.

Anything with `get_timer() -> float | None` and `handle_timer(now)` is a `Participant`: the
network, a `SipNode`, a test's TU with its own timers, later a dialog layer or the B2BUA. The
loop repeatedly jumps the clock to the earliest deadline of any participant and lets every
participant that is due handle it, until nothing is pending, a deadline passes `until`, or
`stop()` says so. Seconds of SIP timers run in milliseconds, and identically on every run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol, TypeVar

from harness.clock import FakeClock
from harness.network import PERFECT, LinkConditions, Network


class Participant(Protocol):
    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


P = TypeVar("P", bound=Participant)


class SimulationStuck(AssertionError):
    """A participant kept asking for a timer it did not consume: a bug under test."""


class Simulation:
    """A fake clock, a seeded lossy network, and the participants living on them."""

    def __init__(
        self, seed: int = 0, conditions: LinkConditions = PERFECT, start: float = 0.0
    ) -> None:
        self.clock = FakeClock(start)
        self.rng = random.Random(seed)
        self.network = Network(self.rng, conditions)
        self.participants: list[Participant] = [self.network]

    @property
    def now(self) -> float:
        return self.clock.now

    def add(self, participant: P) -> P:
        self.participants.append(participant)
        return participant

    def next_deadline(self) -> float | None:
        deadlines = [t for p in self.participants if (t := p.get_timer()) is not None]
        return min(deadlines) if deadlines else None

    def run(
        self,
        until: float | None = None,
        stop: Callable[[], bool] | None = None,
        max_steps: int = 1_000_000,
    ) -> float:
        """Advance time event by event; returns the time reached.

        Ends when `stop()` is true, when nothing is pending (everyone is idle), or when the next
        deadline lies beyond `until` (the clock is then left at `until`).
        """
        for _ in range(max_steps):
            if stop is not None and stop():
                return self.clock.now
            deadline = self.next_deadline()
            if deadline is None or (until is not None and deadline > until):
                if until is not None:
                    self.clock.advance_to(until)
                return self.clock.now
            now = self.clock.advance_to(deadline)
            for participant in list(self.participants):
                due = participant.get_timer()
                if due is not None and due <= now:
                    participant.handle_timer(now)
        raise SimulationStuck(f"no quiescence after {max_steps} steps at t={self.clock.now}")

    def run_for(self, seconds: float) -> float:
        return self.run(until=self.clock.now + seconds)
