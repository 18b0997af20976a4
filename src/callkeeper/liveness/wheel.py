"""A hashed timer wheel: O(1) scheduling, deadlines rounded up to a fixed resolution.

Why not only `sip.timers.TimerHeap`: the liveness monitor re-arms about one timer per endpoint
per keep-alive interval — 20,000 re-arms a second at 20,000 endpoints pinging every second.
On a heap each re-arm is a tuple push and a log-n pop; here it is two dict operations, because
deadlines are bucketed into ticks of `resolution` seconds and only the (few hundred) distinct
ticks live in a heap. The rounding also batches wake-ups: the io driver is woken at most once
per tick with every endpoint due then, instead of once per endpoint. `tests/test_liveness_perf.py`
measures both structures on the same workload.

Deadlines are rounded *up*, so a timer never fires early (a false SUSPECT/DOWN can never come
from the wheel) and at most `resolution` late, which the detector's +1 s budget absorbs.
The interface is `TimerHeap`'s, so the monitor can run on either (`Timers`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)


class Timers(Protocol[K]):
    """What the monitor needs from a timer structure (`TimerHeap` and `TimerWheel` have it)."""

    def schedule(self, when: float, key: K) -> None: ...

    def cancel(self, key: K) -> bool: ...

    def next_deadline(self) -> float | None: ...

    def pop_due(self, now: float) -> list[K]: ...

    def __len__(self) -> int: ...


class TimerWheel(Generic[K]):
    """Keys bucketed by tick (`ceil(when / resolution)`); one deadline per key.

    Scheduling a key again moves it; cancelling removes it from its bucket at once (buckets are
    dicts), so a bucket that empties is dropped and `next_deadline()` is exact: it never names a
    tick with nothing due. The heap holds tick numbers only; a tick whose bucket was dropped is
    skipped when it surfaces.
    """

    __slots__ = ("_buckets", "_resolution", "_tick_of", "_ticks")

    def __init__(self, resolution: float = 0.05) -> None:
        if not resolution > 0:
            raise ValueError(f"timer wheel resolution must be > 0, got {resolution!r}")
        self._resolution = resolution
        self._buckets: dict[int, dict[K, None]] = {}
        self._tick_of: dict[K, int] = {}
        self._ticks: list[int] = []

    @property
    def resolution(self) -> float:
        return self._resolution

    def __len__(self) -> int:
        return len(self._tick_of)

    def __contains__(self, key: object) -> bool:
        return key in self._tick_of

    def deadline(self, key: K) -> float | None:
        """When `key` will fire (its deadline rounded up to the wheel's resolution)."""
        tick = self._tick_of.get(key)
        return tick * self._resolution if tick is not None else None

    def schedule(self, when: float, key: K) -> None:
        """Set `key`'s deadline to `when`, rounded up to a tick (replacing any earlier one)."""
        tick = math.ceil(when / self._resolution)
        old = self._tick_of.get(key)
        if old == tick:
            return
        if old is not None:
            self._discard(old, key)
        self._tick_of[key] = tick
        bucket = self._buckets.get(tick)
        if bucket is None:
            self._buckets[tick] = {key: None}
            heapq.heappush(self._ticks, tick)
        else:
            bucket[key] = None

    def cancel(self, key: K) -> bool:
        """Forget `key`'s deadline; True if it had one."""
        tick = self._tick_of.pop(key, None)
        if tick is None:
            return False
        self._discard(tick, key)
        return True

    def next_deadline(self) -> float | None:
        ticks = self._ticks
        while ticks:
            if ticks[0] in self._buckets:
                return ticks[0] * self._resolution
            heapq.heappop(ticks)  # its bucket emptied by cancellations
        return None

    def pop_due(self, now: float) -> list[K]:
        """Remove and return every key whose tick is at or before `now`, earliest tick first."""
        due: list[K] = []
        ticks = self._ticks
        buckets = self._buckets
        tick_of = self._tick_of
        resolution = self._resolution
        while ticks and ticks[0] * resolution <= now:
            bucket = buckets.pop(heapq.heappop(ticks), None)
            if bucket is not None:
                for key in bucket:
                    del tick_of[key]
                due.extend(bucket)
        return due

    def clear(self) -> None:
        self._buckets.clear()
        self._tick_of.clear()
        self._ticks.clear()

    def _discard(self, tick: int, key: K) -> None:
        bucket = self._buckets[tick]
        del bucket[key]
        if not bucket:
            del self._buckets[tick]
