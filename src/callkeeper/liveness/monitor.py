"""`LivenessMonitor`: one failure detector per endpoint, sans-IO, for tens of thousands of them.

Inputs are method calls that carry `now`; outputs are queued (`next_event()`, `next_command()`);
the clock is an input too (`get_timer()` / `handle_timer(now)`). See `settings` for why the
thresholds are what they are and `states` for the transition table.

How it stays cheap (issue 5: "a sweep never walks all endpoints"):

- `sign_of_life()` runs for every packet, so it is O(1) and touches no timer: it writes
  `last_seen` and returns. Each endpoint has at most one armed deadline (in a `TimerWheel`, or
  any `Timers`), armed for the *earliest* thing that could be due. When it fires, the
  endpoint's real deadlines are recomputed from its last sign of life; if nothing is due yet
  (it spoke in the meantime) the timer is re-armed and that is all — about once per interval
  per endpoint, whatever the packet rate. A deadline armed too early is harmless,
  one armed too late would delay detection, so a deadline is re-armed explicitly only when it
  moves *earlier*: on a state change, and when the interval shrinks (`set_in_call`).
- Probes follow a fixed per-endpoint grid (`spread`), so they stay spread forever.

Probe mode, precisely. Probes go out at `(k + phase) × interval`; a probe unanswered when the
next one is due is a miss. The DOWN rule is the same silence rule as for keep-alives — nothing
heard for `misses × interval + down_grace` — because on a fixed grid that window holds at least
`misses` probes sent after the last sign of life, all but the last of which had a full interval
to be answered (the last one at least `down_grace`). That keeps the acceptance bound
("DOWN within options_interval × misses + 1 s of the last sign of life") exact, where counting
deadline expiries would detect up to one interval later. A late answer still counts as life.

A transport error on a probe (ICMP unreachable, connection refused: `probe_failed`) is a miss,
not an instant DOWN: one ICMP error can be a router hiccup or a NAT binding being rebuilt, and
the phone may still be reachable over its registered flow a second later. It makes the endpoint
SUSPECT at once, and `misses` failures with no sign of life in between make it DOWN
(reason "probe-failed") — sooner than the silence rule would, because the failure is known.

In a call, an endpoint is watched at `min(its interval, in_call_interval)`; when that is
faster than its own keep-alives we probe it with OPTIONS too (a phone answers OPTIONS in a
call), so a keep-alive phone with Flow-Timer 30 is still found dead in seconds mid-call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from callkeeper.liveness.commands import LivenessCommand, SendProbe
from callkeeper.liveness.endpoint import EndpointKind, EndpointView, Mode, Watch
from callkeeper.liveness.events import (
    DownReason,
    EndpointAlive,
    EndpointDown,
    EndpointSuspect,
    LivenessEvent,
    SuspectReason,
)
from callkeeper.liveness.settings import LivenessSettings
from callkeeper.liveness.spread import PhaseFunction, hash_phase, next_slot
from callkeeper.liveness.states import TRANSITIONS, Emit, State, Trigger
from callkeeper.liveness.wheel import Timers, TimerWheel
from callkeeper.sip.transport import Flow

# Deadlines within this of `now` are due: keeps float rounding from re-arming a timer into the
# tick being processed (which would spin) and from firing a hair early.
EPSILON = 1e-6

# Enum member access through the class costs ~90 ns (a descriptor); the hot paths use these.
_ALIVE, _DOWN = State.ALIVE, State.DOWN

_DOWN_REASONS: dict[Trigger, DownReason] = {
    Trigger.SILENT: "timeout",
    Trigger.UNREACHABLE: "probe-failed",
    Trigger.CONNECTION_LOST: "connection-lost",
    Trigger.REGISTRATION_EXPIRED: "registration-expired",
    Trigger.RESET: "reset",
}


class LivenessMonitor:
    """Watches endpoints and reports `EndpointSuspect` / `EndpointDown` / `EndpointAlive`.

    Every input naming an `endpoint_id` the monitor does not watch is ignored and returns False:
    these calls are driven by network traffic (a keep-alive from a phone whose binding was just
    removed, a connection closing after `remove`), which must never raise.
    """

    def __init__(
        self,
        settings: LivenessSettings | None = None,
        *,
        phase: PhaseFunction = hash_phase,
        timers: Timers[Watch] | None = None,
    ) -> None:
        self.settings = settings or LivenessSettings()
        self._phase = phase
        self._timers: Timers[Watch] = (
            timers if timers is not None else TimerWheel(self.settings.resolution)
        )
        self._watches: dict[str, Watch] = {}
        self._counts = dict.fromkeys(State, 0)
        self._events: deque[LivenessEvent] = deque()
        self._commands: deque[LivenessCommand] = deque()
        self._probe_ids = 0

    # --- what is watched ----------------------------------------------------------------------
    def add(
        self,
        endpoint_id: str,
        kind: EndpointKind | str,
        flow: Flow,
        mode: Mode | str,
        now: float,
        interval: float | None = None,
    ) -> None:
        """Start watching `endpoint_id` (ALIVE: being added is its first sign of life).

        `interval` defaults to `flow_timer` (keepalive) or `options_interval` (probe). Adding
        an id that is already watched updates its kind, flow, mode and interval (a refresh over
        a new flow, a phone switching to outbound) and counts as a sign of life; its state and
        in-call flag carry over, so a DOWN endpoint re-adding reports `EndpointAlive`.
        """
        kind = EndpointKind(kind)
        mode = Mode(mode)
        if interval is None:
            settings = self.settings
            interval = settings.flow_timer if mode is Mode.KEEPALIVE else settings.options_interval
        if not interval > 0:
            raise ValueError(f"liveness: interval must be > 0, got {interval!r}")
        watch = self._watches.get(endpoint_id)
        if watch is None:
            watch = Watch(endpoint_id, kind, flow, mode, interval, self._phase(endpoint_id), now)
            self._watches[endpoint_id] = watch
            self._counts[State.ALIVE] += 1
            self._configure(watch, now)
            self._arm(watch)
            return
        watch.kind, watch.flow, watch.mode, watch.interval = kind, flow, mode, interval
        self._configure(watch, now)
        self.sign_of_life(endpoint_id, now)
        self._arm(watch)

    def remove(self, endpoint_id: str) -> bool:
        """Stop watching: no event or probe about this endpoint is queued after this returns
        (what was queued before stays queued: it happened)."""
        watch = self._watches.pop(endpoint_id, None)
        if watch is None:
            return False
        self._timers.cancel(watch)
        self._counts[watch.state] -= 1
        return True

    def __len__(self) -> int:
        return len(self._watches)

    def __contains__(self, endpoint_id: object) -> bool:
        return endpoint_id in self._watches

    # --- signs of life ------------------------------------------------------------------------
    def sign_of_life(self, endpoint_id: str, now: float) -> bool:
        """Anything heard from the endpoint: CRLF/STUN keep-alive, any SIP message, a REGISTER
        refresh, an OPTIONS answer. O(1) and timer-free unless the endpoint was not ALIVE."""
        watch = self._watches.get(endpoint_id)
        if watch is None:
            return False
        watch.last_seen = now
        watch.quiet_since = now
        watch.failed_probes = 0
        watch.pending_probe = None
        if watch.state is not _ALIVE:
            self._fire(watch, Trigger.SIGN_OF_LIFE, now)
            self._arm(watch)
        return True

    def probe_answered(self, endpoint_id: str, now: float) -> bool:
        """Any response to our OPTIONS, 2xx to 6xx, on time or late: the endpoint is alive."""
        return self.sign_of_life(endpoint_id, now)

    # --- failure signs ------------------------------------------------------------------------
    def probe_failed(self, endpoint_id: str, probe_id: int, now: float) -> bool:
        """Probe `probe_id` hit a transport error (see the module docstring: a miss, not DOWN).

        Only the endpoint's outstanding probe counts: a failure reported for an older probe, or
        after the endpoint spoke again, is stale and ignored (returns False).
        """
        watch = self._watches.get(endpoint_id)
        if watch is None or watch.pending_probe != probe_id:
            return False
        watch.pending_probe = None
        watch.failed_probes += 1
        failed = watch.failed_probes >= self.settings.misses
        self._fire(watch, Trigger.UNREACHABLE if failed else Trigger.PROBE_ERROR, now)
        self._arm(watch)
        return True

    def connection_lost(self, endpoint_id: str, now: float) -> bool:
        """Its TCP/TLS/WS connection closed or reset: DOWN at once (the flow is gone)."""
        return self._input(endpoint_id, Trigger.CONNECTION_LOST, now)

    def registration_expired(self, endpoint_id: str, now: float) -> bool:
        """Its registration ran out without a refresh: DOWN at once."""
        return self._input(endpoint_id, Trigger.REGISTRATION_EXPIRED, now)

    def reset(self, endpoint_id: str, now: float) -> bool:
        """It de-registered, or re-registered as the same instance with a new Call-ID, while in
        a call: the user rebooted the phone. DOWN at once; its next sign of life revives it."""
        return self._input(endpoint_id, Trigger.RESET, now)

    # --- calls --------------------------------------------------------------------------------
    def set_in_call(self, endpoint_id: str, in_call: bool, now: float) -> bool:
        """Watch it at `in_call_interval` while in a call (probing it if that is faster than its
        own keep-alives), and at its own interval again afterwards.

        When the interval shrinks, silence is counted from `now` for the new, shorter rule: an
        endpoint that pinged 20 s ago on a 30 s Flow-Timer is not 20 s overdue, and the first
        in-call probe has not even been sent yet. (`EndpointDown.detection_latency` still
        counts from the real last sign of life.)
        """
        watch = self._watches.get(endpoint_id)
        if watch is None:
            return False
        if watch.in_call == in_call:
            return True
        before = watch.watch_interval
        watch.in_call = in_call
        self._configure(watch, now)
        if watch.watch_interval < before:
            watch.quiet_since = max(watch.quiet_since, now)
        self._arm(watch)
        return True

    # --- the clock ----------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """When `handle_timer` must be called next (None: nothing to wait for)."""
        return self._timers.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Send the probes that are due and check the endpoints whose deadline passed."""
        for watch in self._timers.pop_due(now):
            self._check(watch, now)

    # --- outputs ------------------------------------------------------------------------------
    def next_event(self) -> LivenessEvent | None:
        return self._events.popleft() if self._events else None

    def next_command(self) -> LivenessCommand | None:
        return self._commands.popleft() if self._commands else None

    # --- views --------------------------------------------------------------------------------
    def state(self, endpoint_id: str) -> State | None:
        watch = self._watches.get(endpoint_id)
        return watch.state if watch is not None else None

    def view(self, endpoint_id: str) -> EndpointView | None:
        watch = self._watches.get(endpoint_id)
        return _view(watch) if watch is not None else None

    def views(self) -> Iterator[EndpointView]:
        """Every endpoint (for the API listing; O(n), never called on a timer)."""
        return (_view(watch) for watch in self._watches.values())

    def counts(self) -> dict[str, int]:
        """Endpoints per state, kept up to date incrementally: `callkeeper_endpoints{state=}`."""
        return {state.value: count for state, count in self._counts.items()}

    # --- internals ----------------------------------------------------------------------------
    def _input(self, endpoint_id: str, trigger: Trigger, now: float) -> bool:
        watch = self._watches.get(endpoint_id)
        if watch is None:
            return False
        self._fire(watch, trigger, now)
        self._arm(watch)
        return True

    def _configure(self, watch: Watch, now: float) -> None:
        """Derive the watch interval, probing and thresholds from mode, interval and in-call."""
        settings = self.settings
        probing = watch.mode is Mode.PROBE
        interval = watch.interval
        if watch.in_call and settings.in_call_interval < interval:
            interval = settings.in_call_interval
            probing = True
        was_probing = watch.probe_interval
        watch.watch_interval = interval
        watch.suspect_after = settings.suspect_after(interval)
        watch.down_after = settings.down_after(interval)
        # While ALIVE the next threshold is SUSPECT's, unless DOWN comes first (misses=1).
        watch.alive_after = min(watch.suspect_after, watch.down_after)
        if not probing:
            watch.probe_interval = None
            watch.pending_probe = None
        elif was_probing != interval:
            watch.probe_interval = interval
            watch.next_probe = next_slot(now, interval, watch.phase, EPSILON)

    def _check(self, watch: Watch, now: float) -> None:
        """`watch`'s timer fired: probe if due, apply the silence rule, re-arm.

        Most firings find an endpoint that spoke since the timer was armed; that path is kept
        short (one comparison, one re-arm) because it runs about once per endpoint per interval.
        """
        probe_interval = watch.probe_interval
        if probe_interval is not None and watch.next_probe <= now + EPSILON:
            self._probe_ids += 1
            watch.pending_probe = self._probe_ids
            self._commands.append(SendProbe(watch.endpoint_id, watch.flow, self._probe_ids))
            watch.next_probe = next_slot(now, probe_interval, watch.phase, EPSILON)
        silence = now - watch.quiet_since + EPSILON
        if silence >= watch.down_after:
            self._fire(watch, Trigger.SILENT, now)
        elif silence >= watch.suspect_after:
            self._fire(watch, Trigger.MISSED, now)  # absorbed unless ALIVE
        elif probe_interval is None and watch.state is _ALIVE:  # heard from in time
            self._timers.schedule(watch.quiet_since + watch.alive_after, watch)
            return
        self._arm(watch)

    def _arm(self, watch: Watch) -> None:
        """Arm the earliest of: the next probe, the next silence threshold of its state."""
        state = watch.state
        if state is _DOWN:
            deadline = None
        elif state is _ALIVE:
            deadline = watch.quiet_since + watch.alive_after
        else:
            deadline = watch.quiet_since + watch.down_after
        if watch.probe_interval is not None and (deadline is None or watch.next_probe < deadline):
            deadline = watch.next_probe
        if deadline is None:
            self._timers.cancel(watch)
        else:
            self._timers.schedule(deadline, watch)

    def _fire(self, watch: Watch, trigger: Trigger, now: float) -> None:
        """Look (state, trigger) up in the table, move, and queue the event it names."""
        was = watch.state
        state, emit = TRANSITIONS[was, trigger]
        if state is not was:
            watch.state = state
            self._counts[was] -= 1
            self._counts[state] += 1
        if emit is Emit.NOTHING:
            return
        if emit is Emit.SUSPECT:
            reason: SuspectReason = "probe-failed" if trigger is Trigger.PROBE_ERROR else "timeout"
            self._events.append(
                EndpointSuspect(watch.endpoint_id, watch.kind, reason, watch.last_seen, now)
            )
        elif emit is Emit.DOWN:
            self._events.append(
                EndpointDown(
                    watch.endpoint_id, watch.kind, _DOWN_REASONS[trigger], watch.last_seen, now
                )
            )
        else:
            self._events.append(EndpointAlive(watch.endpoint_id, watch.kind, was, now))


def _view(watch: Watch) -> EndpointView:
    return EndpointView(
        watch.endpoint_id,
        watch.kind,
        watch.mode,
        watch.flow,
        watch.state,
        watch.last_seen,
        watch.in_call,
        watch.watch_interval,
        watch.probe_interval is not None,
    )
