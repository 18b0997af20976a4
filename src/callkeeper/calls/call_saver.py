"""When an established call's snapshot is written to the store, and when it is deleted.

One job: the timing of call persistence (call_snapshots.py is the format). A call is written
`SAVE_DELAY` after it was answered or changed (a relayed re-INVITE/UPDATE, a recovery that
moved or resumed it), not at once: most calls are short, and one that ends before its first
write costs the store nothing — Kamailio's dialog module writes in the same delayed way
(`db_mode=2`). Several changes within the delay make one write. A call that is being
recovered is not written (its last ACTIVE snapshot stands) until it is ACTIVE again.
The store keeps a snapshot `STORED_FOR` seconds and it is written again halfway through, so a
snapshot left behind by a crash at the wrong moment goes away by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from callkeeper.calls.call_snapshots import DeleteCall, SaveCall, snapshot_of
from callkeeper.calls.model import Call, CallState, Leg
from callkeeper.sip.timers import TimerHeap

SAVE_DELAY = 1.0  # s after an answer or a change
STORED_FOR = 24 * 3600.0  # s a snapshot lives in the store unless written again
RETRY_AFTER = 1.0  # s: a call under recovery is looked at again


class CallSaver:
    def __init__(self, media_port: Callable[[Leg], int | None]) -> None:
        self._media_port = media_port
        self._due: TimerHeap[str] = TimerHeap()  # call id → its next write
        self._saved: set[str] = set()  # calls with a snapshot in the store
        self._changed: set[str] = set()  # calls with a change not written yet
        self.writes = 0
        self.deletes = 0

    def next_deadline(self) -> float | None:
        return self._due.next_deadline()

    def changed(self, call_id: str, now: float) -> None:
        """The call was answered or changed: write it soon (once, however often it changes)."""
        self._changed.add(call_id)
        when = now + SAVE_DELAY
        scheduled = self._due.deadline(call_id)
        if scheduled is None or scheduled > when:
            self._due.schedule(when, call_id)

    def restored(self, call_id: str, now: float) -> None:
        """A call taken back from the store at start-up: its snapshot is there already."""
        self._saved.add(call_id)
        self._due.schedule(now + STORED_FOR / 2, call_id)

    def ended(self, call_id: str) -> DeleteCall | None:
        self._due.cancel(call_id)
        self._changed.discard(call_id)
        if call_id not in self._saved:
            return None  # ended before its first write: nothing to delete
        self._saved.discard(call_id)
        self.deletes += 1
        return DeleteCall(call_id)

    def due(self, calls: dict[str, Call], now: float) -> Iterator[SaveCall]:
        return self._write(self._due.pop_due(now), calls, now)

    def pending(self, calls: dict[str, Call], now: float) -> Iterator[SaveCall]:
        """Every write not made yet, now: callkeeper is shutting down (SIGTERM) and the calls
        are to come back when it starts again."""
        changed = list(self._changed)
        for call_id in changed:
            self._due.cancel(call_id)
        return self._write(changed, calls, now)

    def _write(self, call_ids: list[str], calls: dict[str, Call], now: float) -> Iterator[SaveCall]:
        for call_id in call_ids:
            call = calls.get(call_id)
            if call is None:
                continue
            if call.state is not CallState.ACTIVE or call.unacked_response is not None:
                self._due.schedule(now + RETRY_AFTER, call_id)  # mid-recovery, mid-re-INVITE
                continue
            snapshot = snapshot_of(call, self._media_port)
            if snapshot is None:
                continue
            self._saved.add(call_id)
            self._changed.discard(call_id)
            self.writes += 1
            self._due.schedule(now + STORED_FOR / 2, call_id)
            yield SaveCall(snapshot)
