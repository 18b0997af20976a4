"""A fixed-bucket histogram the pure core fills and `/metrics` exports (Prometheus shape)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int]  # cumulative: counts[i] is the number of values <= bounds[i]
    total: float = 0.0
    count: int = 0

    @classmethod
    def with_bounds(cls, bounds: tuple[float, ...]) -> Histogram:
        return cls(bounds, [0] * len(bounds))

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1
