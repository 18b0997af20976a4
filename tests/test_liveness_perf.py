"""Micro-benchmark: 20,000 endpoints, a keep-alive each every second, 60 simulated seconds.

The issue's stretch load, on the pure core alone: 1.2 million signs of life plus the timers
they imply, 1 % of the endpoints going silent at random instants. Prints CPU per keep-alive
(run with `-s`), the driver wake-ups each timer structure asks for, and the wheel against
`sip.timers.TimerHeap` on the same workload; asserts detection within the bound, zero false
DOWN, and a deliberately generous CPU bound (this machine is shared and noisy; `make bench`
is where ratios are tracked).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from callkeeper.liveness import EndpointDown, LivenessMonitor, LivenessSettings, TimerWheel
from callkeeper.liveness.endpoint import Watch
from callkeeper.liveness.wheel import Timers
from callkeeper.sip.timers import TimerHeap
from test_liveness_harness import UDP

ENDPOINTS = 20_000
SECONDS = 60
INTERVAL = 1.0
MISSES = 3
BOUND = INTERVAL * MISSES + 1.0
CPU_BOUND = 30.0  # seconds for the whole 60 s run: ~10× what it takes on a quiet machine


@dataclass
class Run:
    cpu: float
    keepalives: int
    wakeups: int
    downs: list[EndpointDown]


class NullMonitor:
    """The driver loop's own cost: same calls, nothing done."""

    def sign_of_life(self, endpoint_id: str, now: float) -> bool:
        return True

    def get_timer(self) -> float | None:
        return None


def workload(seed: int = 11) -> tuple[list[tuple[float, str]], dict[str, float]]:
    """Each endpoint's phase within the second (sorted), and when the silent 1 % stop."""
    rng = random.Random(seed)
    phases = sorted((rng.random(), f"ep{i:05d}") for i in range(ENDPOINTS))
    silent = rng.sample([eid for _, eid in phases], ENDPOINTS // 100)
    return phases, {eid: rng.uniform(5.0, SECONDS - 5.0) for eid in silent}


def drive(
    monitor: LivenessMonitor | NullMonitor,
    phases: list[tuple[float, str]],
    stops: dict[str, float],
    seconds: int,
) -> Run:
    """What the io driver does: deliver each packet, fire the timer when it is due."""
    downs: list[EndpointDown] = []
    keepalives = wakeups = 0
    sign_of_life, get_timer = monitor.sign_of_life, monitor.get_timer
    started = time.process_time()
    deadline = get_timer()
    for second in range(seconds):
        for phase, endpoint_id in phases:
            now = second + phase
            while deadline is not None and deadline <= now:
                assert isinstance(monitor, LivenessMonitor)
                monitor.handle_timer(deadline)
                wakeups += 1
                while (event := monitor.next_event()) is not None:
                    if isinstance(event, EndpointDown):
                        downs.append(event)
                deadline = get_timer()
            if now < stops.get(endpoint_id, seconds):
                sign_of_life(endpoint_id, now)
                keepalives += 1
                deadline = get_timer()
    return Run(time.process_time() - started, keepalives, wakeups, downs)


def monitor_with(timers: Timers[Watch]) -> LivenessMonitor:
    settings = LivenessSettings(flow_timer=INTERVAL, misses=MISSES)
    monitor = LivenessMonitor(settings, timers=timers)
    for i in range(ENDPOINTS):
        monitor.add(f"ep{i:05d}", "contact", UDP, "keepalive", 0.0)
    return monitor


def test_20000_endpoints_at_1s_for_60s() -> None:
    phases, stops = workload()
    baseline = drive(NullMonitor(), phases, stops, SECONDS)
    run = drive(monitor_with(TimerWheel(0.05)), phases, stops, SECONDS)
    cost = (run.cpu - baseline.cpu) / run.keepalives

    last_sent = {
        eid: max(s for s in range(SECONDS) if s + p < stops.get(eid, SECONDS)) + p
        for p, eid in phases
        if eid in stops
    }
    latencies = sorted(d.detected_at - last_sent[d.endpoint_id] for d in run.downs)
    print(
        f"\n{ENDPOINTS} endpoints × {SECONDS} s at {INTERVAL:g} s: {run.keepalives} keep-alives, "
        f"{run.cpu:.2f} s CPU ({baseline.cpu:.2f} s of it the driver loop) → "
        f"{cost * 1e6:.2f} µs per keep-alive incl. timers, {run.wakeups} wake-ups; "
        f"{len(run.downs)} DOWN, detection p50 {latencies[len(latencies) // 2]:.3f} s "
        f"p99 {latencies[int(len(latencies) * 0.99)]:.3f} s max {latencies[-1]:.3f} s"
    )
    assert sorted(d.endpoint_id for d in run.downs) == sorted(stops), "all silent, none else"
    assert all(d.last_seen == last_sent[d.endpoint_id] for d in run.downs)
    assert latencies[-1] <= BOUND
    assert run.cpu < CPU_BOUND


def test_sign_of_life_alone_and_wheel_against_heap() -> None:
    phases, stops = workload()
    monitor = monitor_with(TimerWheel(0.05))
    ids = [eid for _, eid in phases]
    sign_of_life = monitor.sign_of_life
    started = time.process_time()
    for k in range(10):
        now = 0.5 + k * 0.01
        for endpoint_id in ids:
            sign_of_life(endpoint_id, now)
    loop = time.process_time()
    for k in range(10):
        now = 0.5 + k * 0.01
        for _endpoint_id in ids:
            pass
    empty = time.process_time() - loop
    cost = (loop - started - empty) / (10 * len(ids))

    seconds = 20
    baseline = drive(NullMonitor(), phases, stops, seconds)
    results = {}
    for name, timers in (("wheel", TimerWheel[Watch](0.05)), ("heap", TimerHeap[Watch]())):
        run = drive(monitor_with(timers), phases, stops, seconds)
        results[name] = run
        assert (
            len(run.downs) == len([s for s in stops.values() if s < seconds - BOUND]) or run.downs
        )
    per = {n: (r.cpu - baseline.cpu) / r.keepalives for n, r in results.items()}
    print(
        f"\nsign_of_life alone: {cost * 1e9:.0f} ns; per keep-alive incl. timers over "
        f"{seconds} s: wheel {per['wheel'] * 1e6:.2f} µs ({results['wheel'].wakeups} wake-ups), "
        f"heap {per['heap'] * 1e6:.2f} µs ({results['heap'].wakeups} wake-ups); "
        f"heap/wheel = {per['heap'] / per['wheel']:.2f}"
    )
    assert cost < 20e-6
    assert results["wheel"].wakeups < results["heap"].wakeups
    downs = {n: sorted(d.endpoint_id for d in r.downs) for n, r in results.items()}
    assert downs["wheel"] == downs["heap"]
