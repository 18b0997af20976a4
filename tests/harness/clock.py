"""A clock that moves only when a test (or the simulation loop) says so.

The pure core never reads time; it is handed `now`. Tests hand it this clock's value, so a
64*T1 timeout takes microseconds and every run sees the same instants.
"""

from __future__ import annotations


class FakeClock:
    """Monotonic fake time in seconds."""

    __slots__ = ("now",)

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("time does not run backwards")
        self.now += seconds
        return self.now

    def advance_to(self, when: float) -> float:
        """Move to `when`; a `when` in the past leaves the clock where it is."""
        self.now = max(self.now, when)
        return self.now
