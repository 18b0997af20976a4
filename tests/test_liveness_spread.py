"""Probe spreading: 10,000 endpoints added at once still probe evenly through the interval."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callkeeper.liveness import (
    LivenessSettings,
    hash_phase,
    next_slot,
    seeded_phase,
)
from test_liveness_harness import UDP, Sim


def test_phase_is_deterministic_uniform_and_keyed() -> None:
    ids = [f"{i:016x}" for i in range(10_000)]
    phases = [hash_phase(i) for i in ids]
    assert phases == [hash_phase(i) for i in ids], "same id, same phase, every run"
    assert all(0.0 <= p < 1.0 for p in phases)
    deciles = Counter(int(p * 10) for p in phases)
    assert all(900 <= deciles[d] <= 1100 for d in range(10))
    other = seeded_phase(b"node-2")
    assert other(ids[0]) == hash_phase(ids[0], b"node-2") != hash_phase(ids[0])


@given(
    now=st.floats(0.0, 1e7, allow_nan=False),
    interval=st.floats(0.01, 3600.0),
    phase=st.floats(0.0, 1.0, exclude_max=True),
)
def test_next_slot_is_the_next_grid_point(now: float, interval: float, phase: float) -> None:
    slot = next_slot(now, interval, phase)
    assert now < slot <= now + interval + 1e-6
    k = slot / interval - phase
    assert abs(k - round(k)) < 1e-6 * max(1.0, abs(k)), "on the endpoint's grid"


@pytest.mark.parametrize("interval", [30.0, 5.0])
def test_10000_endpoints_added_at_once_do_not_probe_at_once(interval: float) -> None:
    sim = Sim(LivenessSettings(options_interval=interval))
    for i in range(10_000):
        sim.monitor.add(f"static-{i}", "static", UDP, "probe", 0.0)
    sim.run_until(interval)
    # Probes go out on wheel ticks in (0, interval]; count them in 10 slices of whole ticks.
    resolution = sim.monitor.settings.resolution
    ticks_per_slice = round(interval / 10 / resolution)
    per_slice = Counter((round(t / resolution) - 1) // ticks_per_slice for t in sim.probe_times)
    mean = 10_000 / 10
    print(f"\nprobes per tenth of {interval:g} s: {sorted(per_slice.values())} (mean {mean:.0f})")
    assert len(sim.probes) == 10_000 and sorted(per_slice) == list(range(10))
    assert max(per_slice.values()) <= 1.15 * mean and min(per_slice.values()) >= 0.85 * mean


def test_a_mass_return_does_not_synchronise_the_probes() -> None:
    """Every endpoint DOWN, then all answering in the same instant: still spread next round."""
    sim = Sim(LivenessSettings(options_interval=10.0))
    for i in range(3000):
        sim.monitor.add(f"s{i}", "static", UDP, "probe", 0.0)
    sim.run_until(60.0)
    assert len(sim.downs()) == 3000
    for i in range(3000):
        sim.monitor.probe_answered(f"s{i}", 60.0)
    sim.drain()
    assert len(sim.alives()) == 3000
    start = len(sim.probes)
    sim.run_until(70.0)
    per_second = Counter(int(t) for t in sim.probe_times[start:])
    assert len(sim.probes) - start == 3000
    assert max(per_second.values()) <= 1.3 * 300
