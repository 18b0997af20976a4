"""Dialog audit: an in-dialog OPTIONS to each leg of an established call, every `interval`.

Why: nothing else finds a call that a phone forgot while it still looks alive.
- A phone that rebooted faster than the liveness monitor notices (a static contact probed every
  `in_call_interval`, a trusted PBX or trunk that is not monitored at all) no longer has the
  dialog and answers 481 (RFC 3261 §12.2.2); for a monitored phone the recovery engine then
  takes over as if it had gone silent, for anyone else the call ends.
- A call that both sides forgot (each lost the other's BYE under overload) would otherwise be
  held forever: no message will ever arrive for it.
Kamailio's dialog keep-alive and OpenSIPS's `dlg ping` do the same; RFC 4028 refreshes do it
for legs with a session timer, so those legs are left to their timer.

Only 481 means "no such dialog". Other answers — 200, 405, 501, even 486 (RFC 3261 §11.2 asks a
busy UA to answer OPTIONS as it would an INVITE) — prove the dialog is known. Silence is the
liveness monitor's to judge for a monitored phone; an unmonitored leg that stays silent for a
whole transaction (64·T1) is treated as gone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from callkeeper.calls.locals import LocalAddresses
from callkeeper.calls.model import Call, CallState, Leg
from callkeeper.sip.dialog import DialogState
from callkeeper.sip.endpoint import SipEndpoint
from callkeeper.sip.message import Response
from callkeeper.sip.timers import TimerHeap


@dataclass(frozen=True, slots=True)
class LegLost:
    """What an audit found: `leg` of `call` no longer holds its dialog (or cannot be reached)."""

    call: Call
    leg: Leg
    reason: str
    dialog_lost: bool  # it answered 481 (True) or stayed silent (False)


class DialogAudit:
    def __init__(self, endpoint: SipEndpoint, local: LocalAddresses, interval: float) -> None:
        self.endpoint = endpoint
        self.local = local
        self.interval = interval  # 0: off
        # Whether the liveness monitor watches an endpoint, so that its silence is the monitor's
        # to judge (the call manager points this at its EndpointWatch). A trunk leg has an
        # endpoint id but nobody watches it.
        self.is_watched: Callable[[str], bool] = lambda endpoint_id: True
        self._due: TimerHeap[str] = TimerHeap()  # call id → next audit
        self._pending: dict[int, tuple[Call, Leg]] = {}  # OPTIONS client transaction → leg
        self._audited: set[Leg] = set()  # legs with an OPTIONS in flight
        # Finished audits by what they found: answered, answered 481, or no answer at all.
        self.results = {"alive": 0, "gone": 0, "silent": 0}

    def next_deadline(self) -> float | None:
        return self._due.next_deadline()

    def owns(self, transaction_id: int) -> bool:
        return transaction_id in self._pending

    def start(self, call: Call, now: float, first_after: float | None = None) -> None:
        """The call was answered: audit it from `interval` on (from `first_after` when given:
        a call restored after a restart, which both phones may have ended meanwhile)."""
        if self.interval > 0:
            first = self.interval if first_after is None else min(first_after, self.interval)
            self._due.schedule(now + first, call.id)

    def stop(self, call: Call) -> None:
        self._due.cancel(call.id)

    def run_due(self, calls: dict[str, Call], now: float) -> None:
        for call_id in self._due.pop_due(now):
            call = calls.get(call_id)
            if call is None:
                continue
            if call.state is CallState.ACTIVE and call.unacked_response is None:
                # A call being recovered, or still waiting for its ACK, has its own deadlines.
                for leg in (call.a, call.b):
                    if leg is not None and self._needs_audit(leg):
                        self._send(call, leg, now)
            self._due.schedule(now + self.interval, call_id)

    def _needs_audit(self, leg: Leg) -> bool:
        if leg.dialog is None or leg.dialog.state is not DialogState.CONFIRMED:
            return False
        if leg.session_timer is not None:
            return False  # its refreshes, or their absence, already tell
        return leg not in self._audited

    def _send(self, call: Call, leg: Leg, now: float) -> None:
        assert leg.dialog is not None
        request = leg.dialog.create_request("OPTIONS", self.local.via(leg.flow))
        self._pending[self.endpoint.send_request(request, leg.flow, now)] = (call, leg)
        self._audited.add(leg)

    def answered(self, transaction_id: int, response: Response) -> LegLost | None:
        """A final answer to an audit; the lost leg when it was 481."""
        if response.status < 200:
            return None
        call, leg = self._finish(transaction_id)
        gone = response.status == 481
        self.results["gone" if gone else "alive"] += 1
        if not gone or not self._still_current(call, leg):
            return None
        return LegLost(call, leg, "dialog audit: 481, the dialog is gone", dialog_lost=True)

    def timed_out(self, transaction_id: int) -> LegLost | None:
        """No answer within 64·T1: lost, unless the liveness monitor watches that phone."""
        if transaction_id not in self._pending:
            return None
        call, leg = self._finish(transaction_id)
        self.results["silent"] += 1
        watched = leg.endpoint is not None and self.is_watched(leg.endpoint)
        if watched or not self._still_current(call, leg):
            return None
        return LegLost(call, leg, "dialog audit: no answer", dialog_lost=False)

    def forget(self, transaction_id: int) -> None:
        """The transaction ended without a final answer we saw (e.g. its transport failed)."""
        if transaction_id in self._pending:
            self._finish(transaction_id)

    def _finish(self, transaction_id: int) -> tuple[Call, Leg]:
        call, leg = self._pending.pop(transaction_id)
        self._audited.discard(leg)
        return call, leg

    @staticmethod
    def _still_current(call: Call, leg: Leg) -> bool:
        """The answer is about a leg the call still has (not one replaced by a recovery)."""
        return call.state is not CallState.ENDED and (leg is call.a or leg is call.b)
