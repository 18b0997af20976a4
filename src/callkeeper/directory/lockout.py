"""Brute-force protection for digest authentication: too many failures → 403 for a while.

A phone with a wrong password retries forever, and a password guesser does the same on purpose;
both should stop costing us hashes and log lines. Consecutive failures are counted per
(username, source IP) — per pair, so a guesser at one address cannot lock the real user out from
theirs — and after `max_failures` of them within `failure_window` the pair is blocked for
`block_time`: every request with those credentials gets 403, even a correct one (otherwise the
block would not slow guessing down). A success outside a block clears the count.

The table is bounded (`max_entries`, oldest first out) because its keys come from the network:
a spray of made-up usernames must not grow memory without limit. Each call is O(1).
"""

from __future__ import annotations

from collections import OrderedDict

PairKey = tuple[str, str]  # (username, source IP)


class FailureLimiter:
    __slots__ = ("_entries", "block_time", "failure_window", "max_entries", "max_failures")

    def __init__(
        self,
        max_failures: int = 3,
        failure_window: float = 60.0,
        block_time: float = 300.0,
        max_entries: int = 10_000,
    ) -> None:
        if max_failures < 1 or max_entries < 1:
            raise ValueError("max_failures and max_entries must be at least 1")
        self.max_failures = max_failures
        self.failure_window = failure_window
        self.block_time = block_time
        self.max_entries = max_entries
        # key -> [consecutive failures, time of the last one, blocked until (0: not blocked)]
        self._entries: OrderedDict[PairKey, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def blocked(self, key: PairKey, now: float) -> bool:
        """True while `key` is blocked; a block that ran out is forgotten."""
        entry = self._entries.get(key)
        if entry is None or not entry[2]:
            return False
        if entry[2] > now:
            return True
        del self._entries[key]
        return False

    def failure(self, key: PairKey, now: float) -> bool:
        """Count a failure; True when it blocks the pair (this and later requests get 403)."""
        entry = self._entries.get(key)
        if entry is None:
            while len(self._entries) >= self.max_entries:
                self._entries.popitem(last=False)
            entry = self._entries[key] = [0.0, now, 0.0]
        elif now - entry[1] > self.failure_window:
            entry[0] = 0.0
        self._entries.move_to_end(key)
        entry[0] += 1
        entry[1] = now
        if entry[0] >= self.max_failures:
            entry[2] = now + self.block_time
            return True
        return False

    def success(self, key: PairKey) -> None:
        self._entries.pop(key, None)
