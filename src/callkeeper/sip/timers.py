"""SIP timer values (RFC 3261 §17, Table 4; RFC 6026 Timers L and M) and a pure timer heap.

Why a module of its own: the transaction layer, the dialog layer (2xx retransmission) and the
liveness detector all need the same T1/T2/T4 arithmetic and the same "which deadline is next"
bookkeeping, and none of them may read a clock. `TimerSettings` derives every timer from T1, T2
and T4 so a test (or a LAN deployment) changes three numbers, not eleven. `TimerHeap` gives
O(log n) scheduling and O(1) cancellation, so nothing ever sweeps all transactions on a tick.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """T1/T2/T4 and the timers derived from them (seconds).

    `trying_delay` is how long an INVITE server transaction waits for the TU before it sends
    `100 Trying` itself (RFC 3261 §17.2.1: "200 ms"). `timer_d_unreliable` is Timer D's value on
    unreliable transports, which RFC 3261 gives as "> 32 s" rather than deriving it from T1.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    trying_delay: float = 0.2
    timer_d_unreliable: float = 32.0

    def __post_init__(self) -> None:
        if self.t1 <= 0 or self.t2 < self.t1 or self.t4 < 0 or self.trying_delay < 0:
            raise ValueError(f"inconsistent SIP timers: {self!r}")

    # Initial retransmission intervals; they only run on unreliable transports.
    @property
    def timer_a(self) -> float:
        """INVITE request retransmit interval (doubles each time, no cap)."""
        return self.t1

    @property
    def timer_e(self) -> float:
        """Non-INVITE request retransmit interval (doubles up to T2)."""
        return self.t1

    @property
    def timer_g(self) -> float:
        """INVITE non-2xx final response retransmit interval (doubles up to T2)."""
        return self.t1

    # Transaction timeouts: 64*T1 everywhere, on every transport.
    @property
    def timer_b(self) -> float:
        """INVITE client transaction timeout."""
        return 64 * self.t1

    @property
    def timer_f(self) -> float:
        """Non-INVITE client transaction timeout."""
        return 64 * self.t1

    @property
    def timer_h(self) -> float:
        """Wait time for the ACK of a non-2xx final response."""
        return 64 * self.t1

    @property
    def timer_l(self) -> float:
        """RFC 6026: INVITE server lingers in Accepted to absorb INVITE retransmissions."""
        return 64 * self.t1

    @property
    def timer_m(self) -> float:
        """RFC 6026: INVITE client lingers in Accepted to pass 2xx retransmissions up."""
        return 64 * self.t1

    # Wait timers that only exist to absorb retransmissions: zero on reliable transports.
    def timer_d(self, reliable: bool) -> float:
        """INVITE client: wait for response retransmissions after a non-2xx final."""
        return 0.0 if reliable else self.timer_d_unreliable

    def timer_i(self, reliable: bool) -> float:
        """INVITE server: wait for ACK retransmissions after the ACK (T4)."""
        return 0.0 if reliable else self.t4

    def timer_j(self, reliable: bool) -> float:
        """Non-INVITE server: wait for request retransmissions after the final (64*T1)."""
        return 0.0 if reliable else 64 * self.t1

    def timer_k(self, reliable: bool) -> float:
        """Non-INVITE client: wait for response retransmissions after the final (T4)."""
        return 0.0 if reliable else self.t4


K = TypeVar("K", bound=Hashable)


def earliest(*deadlines: float | None) -> float | None:
    """The soonest of some deadlines (None: no deadline), or None when there is none."""
    found = [deadline for deadline in deadlines if deadline is not None]
    return min(found) if found else None


class TimerHeap(Generic[K]):
    """Deadlines keyed by any hashable key; the earliest one is always at hand.

    Each key has at most one deadline: scheduling it again moves it. Cancellation is lazy — the
    key is forgotten at once, its heap entry is skipped when it surfaces — and the heap is
    rebuilt when stale entries outnumber live ones, so memory stays proportional to live timers.
    """

    __slots__ = ("_heap", "_live", "_sequence")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._live: dict[K, tuple[float, int]] = {}
        self._sequence = 0  # ties break in scheduling order, and keys are never compared

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def deadline(self, key: K) -> float | None:
        entry = self._live.get(key)
        return entry[0] if entry is not None else None

    def schedule(self, when: float, key: K) -> None:
        """Set `key`'s deadline to `when` (replacing any earlier deadline of that key)."""
        self._sequence += 1
        self._live[key] = (when, self._sequence)
        heapq.heappush(self._heap, (when, self._sequence, key))

    def cancel(self, key: K) -> bool:
        """Forget `key`'s deadline; True if it had one."""
        if self._live.pop(key, None) is None:
            return False
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._live):
            self._compact()
        return True

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            when, sequence, key = heap[0]
            entry = self._live.get(key)
            if entry is not None and entry[1] == sequence:
                return when
            heapq.heappop(heap)  # stale: cancelled or rescheduled
        return None

    def pop_due(self, now: float) -> list[K]:
        """Remove and return every key whose deadline is at or before `now`, earliest first."""
        due: list[K] = []
        heap = self._heap
        live = self._live
        while heap and heap[0][0] <= now:
            _, sequence, key = heapq.heappop(heap)
            entry = live.get(key)
            if entry is not None and entry[1] == sequence:
                del live[key]
                due.append(key)
        return due

    def clear(self) -> None:
        self._heap.clear()
        self._live.clear()

    def _compact(self) -> None:
        self._heap = [(when, sequence, key) for key, (when, sequence) in self._live.items()]
        heapq.heapify(self._heap)
