"""What `/metrics` reports about recoveries: outcomes and how long re-attaching took."""

from __future__ import annotations

from dataclasses import dataclass, field

from callkeeper.calls.histogram import Histogram

# `callkeeper_recoveries_total{outcome=}`: DESIGN.md's four, plus `abandoned` for a survivor
# who hung up while held (a human ended the call, so it is not `lost`).
OUTCOMES = ("resumed", "transferred", "voicemail", "lost", "abandoned")
# Upper bounds of `callkeeper_resume_seconds` (endpoint back → call bridged again).
RESUME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(slots=True)
class RecoveryStats:
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    resume: Histogram = field(default_factory=lambda: Histogram.with_bounds(RESUME_BUCKETS))

    def outcome(self, name: str) -> None:
        self.outcomes[name] = self.outcomes.get(name, 0) + 1

    def resumed(self, seconds: float) -> None:
        self.resume.observe(seconds)
