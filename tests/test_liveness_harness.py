"""A fake-clock driver for `LivenessMonitor`, and simulated peers (shared by test_liveness_*).

`Sim` merges scheduled inputs (keep-alives, probe answers, failures) with the monitor's own
timers in time order, the way the io driver does with real packets and `call_at`: inputs due at
or before a deadline go first, then `handle_timer(deadline)` runs at exactly the deadline, and
everything the monitor queues is drained after each step. Hours of simulated time take
milliseconds, and every run with the same seed sees the same instants.

The peers model what the issue's acceptance tests run for real: a phone that pings every
0.8–1.0 × interval (RFC 5626 §4.4.1) or with ±30 % jitter, drops some keep-alives, goes silent
at a chosen time; and a device that answers OPTIONS after a round-trip time until it stops.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from callkeeper.liveness import (
    EndpointAlive,
    EndpointDown,
    EndpointSuspect,
    LivenessEvent,
    LivenessMonitor,
    LivenessSettings,
    SendProbe,
    Timers,
)
from callkeeper.liveness.endpoint import Watch
from callkeeper.liveness.spread import PhaseFunction, hash_phase
from callkeeper.sip.timers import TimerHeap
from callkeeper.sip.transport import Flow

UDP = Flow("udp", ("192.0.2.10", 5060), ("192.0.2.1", 5060))
TCP = Flow("tcp", ("192.0.2.11", 40000), ("192.0.2.1", 5060), connection=7)


def make_timers(kind: str) -> Timers[Watch] | None:
    """ "wheel" (the monitor's default) or "heap" (`sip.timers.TimerHeap`)."""
    return TimerHeap() if kind == "heap" else None


class Sim:
    """A monitor on a fake clock, with a queue of future inputs."""

    def __init__(
        self,
        settings: LivenessSettings | None = None,
        *,
        phase: PhaseFunction = hash_phase,
        timers: Timers[Watch] | None = None,
        start: float = 0.0,
    ) -> None:
        self.monitor = LivenessMonitor(settings, phase=phase, timers=timers)
        self.now = start
        self.events: list[LivenessEvent] = []
        self.probes: list[SendProbe] = []
        self.probe_times: list[float] = []  # when each of `probes` was sent
        self.on_probe: Callable[[SendProbe], None] | None = None
        self.wakeups = 0
        self._inputs: list[tuple[float, int, Callable[[], object]]] = []
        self._sequence = 0

    # --- scheduling inputs --------------------------------------------------------------------
    def at(self, when: float, action: Callable[[], object]) -> None:
        """Run `action` (an input to the monitor) at simulated time `when`."""
        self._sequence += 1
        heapq.heappush(self._inputs, (when, self._sequence, action))

    # --- running ------------------------------------------------------------------------------
    def run_until(self, end: float) -> None:
        """Deliver every input and fire every timer due up to and including `end`."""
        monitor = self.monitor
        inputs = self._inputs
        while True:
            deadline = monitor.get_timer()
            next_input = inputs[0][0] if inputs else None
            if (
                next_input is not None
                and next_input <= end
                and (deadline is None or next_input <= deadline)
            ):
                when, _, action = heapq.heappop(inputs)
                self.now = max(self.now, when)
                action()
            elif deadline is not None and deadline <= end:
                self.now = max(self.now, deadline)
                self.wakeups += 1
                monitor.handle_timer(self.now)
            else:
                break
            self.drain()
        self.now = max(self.now, end)

    def late_timer(self, when: float) -> None:
        """One `handle_timer(when)` without the deadlines before it: a driver that overslept."""
        self.now = when
        self.monitor.handle_timer(when)
        self.drain()

    def drain(self) -> None:
        monitor = self.monitor
        while (event := monitor.next_event()) is not None:
            self.events.append(event)
        while (command := monitor.next_command()) is not None:
            self.probes.append(command)
            self.probe_times.append(self.now)
            if self.on_probe is not None:
                self.on_probe(command)

    def take_events(self) -> list[LivenessEvent]:
        events, self.events = self.events, []
        return events

    # --- event helpers ------------------------------------------------------------------------
    def downs(self, endpoint_id: str | None = None) -> list[EndpointDown]:
        return [
            e
            for e in self.events
            if isinstance(e, EndpointDown) and endpoint_id in (None, e.endpoint_id)
        ]

    def suspects(self, endpoint_id: str | None = None) -> list[EndpointSuspect]:
        return [
            e
            for e in self.events
            if isinstance(e, EndpointSuspect) and endpoint_id in (None, e.endpoint_id)
        ]

    def alives(self, endpoint_id: str | None = None) -> list[EndpointAlive]:
        return [
            e
            for e in self.events
            if isinstance(e, EndpointAlive) and endpoint_id in (None, e.endpoint_id)
        ]


# --- peers --------------------------------------------------------------------------------------
@dataclass
class KeepalivePeer:
    """A phone that pings every `interval × U(low, high)` from `start` until `stop`.

    `lose(k)` decides whether the k-th keep-alive is lost on the way (default: never);
    `delay(k)` how late the k-th keep-alive arrives relative to when it was sent (e.g. a STUN
    retransmission that got through). `sent` / `delivered` record what happened.
    """

    endpoint_id: str
    interval: float
    rng: random.Random
    low: float = 0.8
    high: float = 1.0
    start: float = 0.0
    stop: float = float("inf")
    lose: Callable[[int], bool] = lambda k: False
    delay: Callable[[int], float] = lambda k: 0.0
    sent: list[float] = field(default_factory=list)
    delivered: list[bool] = field(default_factory=list)

    def schedule(self, sim: Sim, until: float) -> None:
        """Send keep-alives from now on until `min(until, stop)`.

        Each keep-alive queues the next one when it is sent, so the input queue holds one entry
        per phone rather than every keep-alive of a run of hours.
        """
        end = min(until, self.stop)
        rng, interval, low, high = self.rng, self.interval, self.low, self.high
        endpoint_id, monitor = self.endpoint_id, sim.monitor

        def send(t: float) -> None:
            k = len(self.sent)
            self.sent.append(t)
            lost = self.lose(k)
            self.delivered.append(not lost)
            if not lost:
                delay = self.delay(k)
                if delay:
                    sim.at(t + delay, lambda: monitor.sign_of_life(endpoint_id, sim.now))
                else:
                    monitor.sign_of_life(endpoint_id, t)
            following = t + interval * rng.uniform(low, high)
            if following < end:
                sim.at(following, lambda: send(following))

        first = self.start + interval * rng.uniform(low, high)
        if first < end:
            sim.at(first, lambda: send(first))

    @property
    def last_delivered(self) -> float | None:
        times = [t for t, ok in zip(self.sent, self.delivered, strict=True) if ok]
        return times[-1] if times else None


def _sign_of_life(sim: Sim, endpoint_id: str) -> Callable[[], bool]:
    return lambda: sim.monitor.sign_of_life(endpoint_id, sim.now)


class ProbeResponder:
    """Devices that answer OPTIONS after `rtt(probe)` seconds until their `stop` time.

    `answer(probe)` returns the delay until the answer arrives (None: no answer ever), so a test
    can model loss and retransmission; `answered` records (endpoint_id, time) of each answer.
    """

    def __init__(
        self, sim: Sim, answer: Callable[[SendProbe, float], float | None] | None = None
    ) -> None:
        self.sim = sim
        self.stop: dict[str, float] = {}
        self.answered: dict[str, list[float]] = {}
        self._answer = answer or (lambda probe, now: 0.02)
        sim.on_probe = self._probe

    def _probe(self, probe: SendProbe) -> None:
        sim = self.sim
        sent = sim.now
        delay = self._answer(probe, sent)
        if delay is None:
            return
        arrival = sent + delay
        if arrival > self.stop.get(probe.endpoint_id, float("inf")):
            return
        self.answered.setdefault(probe.endpoint_id, []).append(arrival)
        endpoint_id = probe.endpoint_id
        sim.at(arrival, lambda: sim.monitor.probe_answered(endpoint_id, sim.now))


# --- the harness's own checks -------------------------------------------------------------------
def test_inputs_at_a_deadline_go_before_the_timer() -> None:
    """A keep-alive arriving exactly at the SUSPECT deadline keeps the endpoint ALIVE."""
    sim = Sim(LivenessSettings(flow_timer=10, resolution=0.5))
    sim.monitor.add("e", "contact", UDP, "keepalive", 0.0)
    sim.at(15.0, _sign_of_life(sim, "e"))
    sim.run_until(15.0)
    assert sim.events == []
    sim.run_until(30.0)
    (suspect,) = sim.events
    assert isinstance(suspect, EndpointSuspect) and suspect.at == 30.0


def test_keepalive_peer_schedule_is_seeded_and_bounded() -> None:
    runs = []
    for _ in range(2):
        sim = Sim()
        peer = KeepalivePeer("e", 5.0, random.Random(7), stop=60.0)
        peer.schedule(sim, until=100.0)
        sim.run_until(100.0)
        runs.append(peer.sent)
    assert runs[0] == runs[1]
    gaps = [b - a for a, b in zip(runs[0], runs[0][1:], strict=False)]
    assert all(4.0 <= gap <= 5.0 for gap in gaps)
    assert runs[0][-1] < 60.0


def test_late_timer_runs_one_check_at_the_given_time() -> None:
    sim = Sim(LivenessSettings(flow_timer=10))
    sim.monitor.add("e", "contact", UDP, "keepalive", 0.0)
    sim.late_timer(100.0)
    assert [type(e) for e in sim.events] == [EndpointDown]
    assert sim.now == 100.0
