"""Fake-clock scenarios for `LivenessMonitor`: one behaviour per test, on both timer structures.

Settings used unless a test says otherwise: interval 10 s, misses 3, so SUSPECT after 15 s of
silence and DOWN after 30.5 s; the wheel rounds deadlines up by at most 0.05 s.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from callkeeper.liveness import (
    DownReason,
    EndpointAlive,
    EndpointDown,
    EndpointKind,
    EndpointSuspect,
    EndpointView,
    LivenessMonitor,
    LivenessSettings,
    Mode,
    SendProbe,
    State,
    TimerWheel,
)
from callkeeper.liveness.endpoint import Watch
from callkeeper.sip.timers import TimerHeap
from test_liveness_harness import TCP, UDP, Sim, make_timers

SETTINGS = LivenessSettings(flow_timer=10, options_interval=10, in_call_interval=2, misses=3)
RESOLUTION = SETTINGS.resolution


@pytest.fixture(params=["wheel", "heap"])
def sim(request: pytest.FixtureRequest) -> Sim:
    return Sim(SETTINGS, phase=lambda _: 0.5, timers=make_timers(request.param))


def keepalive(sim: Sim, endpoint_id: str = "e", at: float = 0.0, **kw: float) -> None:
    sim.monitor.add(endpoint_id, EndpointKind.CONTACT, UDP, Mode.KEEPALIVE, at, **kw)


def probe(sim: Sim, endpoint_id: str = "e", at: float = 0.0, **kw: float) -> None:
    sim.monitor.add(endpoint_id, EndpointKind.STATIC, UDP, Mode.PROBE, at, **kw)


class CountingTimers(TimerWheel[Watch]):
    """A wheel that counts how often the monitor (re-)arms a timer."""

    schedules = 0

    def schedule(self, when: float, key: Watch) -> None:
        type(self).schedules += 1
        super().schedule(when, key)


# --- adding and viewing -------------------------------------------------------------------------
def test_defaults_come_from_settings_and_strings_are_accepted(sim: Sim) -> None:
    sim.monitor.add("k", "contact", UDP, "keepalive", 0.0)
    sim.monitor.add("p", "trunk", TCP, "probe", 0.0, interval=7.0)
    sim.monitor.add("i", "ivr-node", UDP, "probe", 0.0)
    assert sim.monitor.view("k") == EndpointView(
        "k", EndpointKind.CONTACT, Mode.KEEPALIVE, UDP, State.ALIVE, 0.0, False, 10.0, False
    )
    trunk = sim.monitor.view("p")
    assert trunk is not None and trunk.interval == 7.0 and trunk.probing
    assert trunk.kind is EndpointKind.TRUNK and trunk.flow is TCP
    assert {v.endpoint_id for v in sim.monitor.views()} == {"k", "p", "i"}
    assert sim.monitor.counts() == {"alive": 3, "suspect": 0, "down": 0}
    assert len(sim.monitor) == 3 and "k" in sim.monitor and "x" not in sim.monitor


@pytest.mark.parametrize(
    ("kind", "mode", "interval"),
    [("phone", "keepalive", None), ("contact", "push", None), ("contact", "probe", 0.0)],
)
def test_bad_arguments_raise(kind: str, mode: str, interval: float | None) -> None:
    with pytest.raises(ValueError):
        LivenessMonitor().add("e", kind, UDP, mode, 0.0, interval=interval)


@pytest.mark.parametrize(
    "bad",
    [
        {"flow_timer": 0},
        {"options_interval": -1},
        {"in_call_interval": 0},
        {"resolution": 0},
        {"misses": 0},
        {"suspect_factor": 0.9},
        {"down_grace": -0.1},
    ],
)
def test_bad_settings_raise(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        LivenessSettings(**bad)  # type: ignore[arg-type]


def test_timer_wheel_rejects_a_zero_resolution() -> None:
    with pytest.raises(ValueError):
        TimerWheel(0.0)


def test_inputs_for_unknown_endpoints_are_ignored(sim: Sim) -> None:
    m = sim.monitor
    assert not m.sign_of_life("x", 1.0)
    assert not m.probe_answered("x", 1.0)
    assert not m.probe_failed("x", 1, 1.0)
    assert not m.connection_lost("x", 1.0)
    assert not m.registration_expired("x", 1.0)
    assert not m.reset("x", 1.0)
    assert not m.set_in_call("x", True, 1.0)
    assert not m.remove("x")
    assert m.state("x") is None and m.view("x") is None
    assert m.next_event() is None and m.next_command() is None and m.get_timer() is None


# --- keep-alive mode ----------------------------------------------------------------------------
def test_regular_keepalives_raise_nothing_and_do_not_touch_timers() -> None:
    CountingTimers.schedules = 0
    sim = Sim(SETTINGS, timers=CountingTimers(RESOLUTION))
    keepalive(sim)
    armed = CountingTimers.schedules
    for k in range(1, 1001):
        assert sim.monitor.sign_of_life("e", k * 0.01)  # 1000 packets in 10 s
    assert CountingTimers.schedules == armed, "sign_of_life must not arm timers"
    for k in range(1, 100):
        sim.at(10.0 + k * 9.0, lambda: sim.monitor.sign_of_life("e", sim.now))
    sim.run_until(905.0)  # the last keep-alive was at 901
    assert sim.events == []
    # Re-armed lazily: about once per keep-alive interval, not once per packet.
    assert CountingTimers.schedules - armed <= 100


def test_single_missed_keepalive_is_suspect_then_alive_never_down(sim: Sim) -> None:
    keepalive(sim)
    for t in (9.0, 18.0, 36.0, 45.0):  # the one at 27 was lost: a gap of 18 s
        sim.at(t, lambda: sim.monitor.sign_of_life("e", sim.now))
    sim.run_until(50.0)
    suspect, alive = sim.events
    assert isinstance(suspect, EndpointSuspect)
    assert suspect == EndpointSuspect("e", EndpointKind.CONTACT, "timeout", 18.0, suspect.at)
    assert 33.0 <= suspect.at <= 33.0 + RESOLUTION
    assert alive == EndpointAlive("e", EndpointKind.CONTACT, State.SUSPECT, 36.0)


def test_silent_keepalive_endpoint_is_suspect_then_down_on_time(sim: Sim) -> None:
    keepalive(sim)
    sim.at(9.0, lambda: sim.monitor.sign_of_life("e", sim.now))
    sim.run_until(200.0)
    suspect, down = sim.events
    assert isinstance(suspect, EndpointSuspect) and isinstance(down, EndpointDown)
    assert 9.0 + 15.0 <= suspect.at <= 9.0 + 15.0 + RESOLUTION
    assert down.reason == "timeout" and down.last_seen == 9.0
    assert 30.5 <= down.detection_latency <= 30.5 + RESOLUTION
    assert down.detection_latency <= 10 * 3 + 1  # the acceptance bound
    assert sim.monitor.get_timer() is None, "a DOWN keep-alive endpoint has nothing to wait for"


def test_misses_one_goes_down_without_a_suspect_stage() -> None:
    sim = Sim(LivenessSettings(flow_timer=10, misses=1))
    keepalive(sim)
    sim.run_until(100.0)
    assert [type(e) for e in sim.events] == [EndpointDown]
    assert sim.downs()[0].detection_latency == pytest.approx(10.5, abs=RESOLUTION)


@pytest.mark.parametrize(
    ("method", "reason"),
    [
        ("connection_lost", "connection-lost"),
        ("registration_expired", "registration-expired"),
        ("reset", "reset"),
    ],
)
def test_immediate_failures_go_down_at_once_and_only_once(
    sim: Sim, method: str, reason: DownReason
) -> None:
    keepalive(sim)
    sim.monitor.sign_of_life("e", 4.0)
    getattr(sim.monitor, method)("e", 6.0)
    getattr(sim.monitor, method)("e", 6.5)  # the second sign of the same failure is absorbed
    sim.monitor.connection_lost("e", 7.0)
    sim.drain()
    assert sim.events == [EndpointDown("e", EndpointKind.CONTACT, reason, 4.0, 6.0)]
    assert sim.downs()[0].detection_latency == 2.0
    assert sim.monitor.counts() == {"alive": 0, "suspect": 0, "down": 1}


def test_comes_back_alive_and_is_watched_again(sim: Sim) -> None:
    keepalive(sim)
    sim.monitor.connection_lost("e", 1.0)
    sim.at(50.0, lambda: sim.monitor.sign_of_life("e", sim.now))  # reconnected, re-registered
    sim.run_until(100.0)
    down, alive, suspect, down_again = sim.events
    assert isinstance(down, EndpointDown)
    assert alive == EndpointAlive("e", EndpointKind.CONTACT, State.DOWN, 50.0)
    assert isinstance(suspect, EndpointSuspect) and 65.0 <= suspect.at <= 65.0 + RESOLUTION
    assert isinstance(down_again, EndpointDown) and down_again.last_seen == 50.0


# --- probe mode ---------------------------------------------------------------------------------
def test_probes_follow_the_endpoints_phase_and_answers_keep_it_alive(sim: Sim) -> None:
    probe(sim, "a")
    sim.monitor.add("b", EndpointKind.TRUNK, TCP, Mode.PROBE, 0.0, interval=4.0)
    sim.on_probe = lambda p: sim.at(
        sim.now + 0.03, lambda: sim.monitor.probe_answered(p.endpoint_id, sim.now)
    )
    sim.run_until(40.0)
    a_times = [t for _, t in _probe_times(sim, "a")]
    b_times = [t for _, t in _probe_times(sim, "b")]
    assert a_times == pytest.approx([5.0, 15.0, 25.0, 35.0], abs=RESOLUTION)
    assert b_times == pytest.approx([2.0 + 4 * k for k in range(10)], abs=RESOLUTION)
    assert all(p.flow is TCP for p in sim.probes if p.endpoint_id == "b")
    assert len({p.probe_id for p in sim.probes}) == len(sim.probes), "probe ids are unique"
    assert sim.events == []


def _probe_times(sim: Sim, endpoint_id: str) -> list[tuple[SendProbe, float]]:
    return [
        (p, t)
        for p, t in zip(sim.probes, sim.probe_times, strict=True)
        if p.endpoint_id == endpoint_id
    ]


def test_unanswered_probes_make_it_down_within_the_bound(sim: Sim) -> None:
    probe(sim)
    sim.monitor.probe_answered("e", 5.02)  # the first probe (t=5) was answered
    sim.run_until(100.0)
    suspect, down = sim.events
    assert isinstance(suspect, EndpointSuspect) and isinstance(down, EndpointDown)
    assert down.reason == "timeout" and down.last_seen == 5.02
    assert 30.5 - 1e-9 <= down.detection_latency <= 10 * 3 + 1
    assert sim.probe_times[:3] == pytest.approx([5.0, 15.0, 25.0], abs=RESOLUTION)
    assert sim.monitor.get_timer() is not None, "a DOWN endpoint is still probed"


def test_a_late_answer_still_counts_as_life(sim: Sim) -> None:
    probe(sim)
    sim.run_until(33.0)  # probes at 5, 15, 25 unanswered: DOWN at 30.5
    assert [type(e) for e in sim.take_events()] == [EndpointSuspect, EndpointDown]
    sim.monitor.probe_answered("e", 33.0)  # the answer to the t=25 probe, 8 s late
    sim.drain()
    assert sim.events == [EndpointAlive("e", EndpointKind.STATIC, State.DOWN, 33.0)]


def test_probe_failures_count_as_misses_not_as_down(sim: Sim) -> None:
    probe(sim)
    ids = []
    for when in (5.0, 15.0, 25.0):
        sim.run_until(when)
        ids.append(sim.probes[-1].probe_id)
        assert not sim.monitor.probe_failed("e", ids[-1] + 1000, when), "unknown probe id"
        assert sim.monitor.probe_failed("e", ids[-1], when + 0.001)
        assert not sim.monitor.probe_failed("e", ids[-1], when + 0.002), "counted once"
        sim.drain()
    suspect, down = sim.events
    assert suspect == EndpointSuspect("e", EndpointKind.STATIC, "probe-failed", 0.0, 5.001)
    assert down == EndpointDown("e", EndpointKind.STATIC, "probe-failed", 0.0, 25.001)


def test_a_failure_after_the_endpoint_spoke_is_stale(sim: Sim) -> None:
    probe(sim)
    sim.run_until(5.0)
    stale = sim.probes[-1].probe_id
    sim.monitor.sign_of_life("e", 5.01)  # e.g. it sent a REGISTER
    assert not sim.monitor.probe_failed("e", stale, 5.02)
    sim.run_until(15.0)
    newer = sim.probes[-1].probe_id
    assert not sim.monitor.probe_failed("e", stale, 15.01), "an older probe's failure"
    assert sim.monitor.probe_failed("e", newer, 15.02)
    sim.drain()
    assert [type(e) for e in sim.events] == [EndpointSuspect]


# --- calls --------------------------------------------------------------------------------------
def test_in_call_a_keepalive_endpoint_is_probed_faster_then_not_after(sim: Sim) -> None:
    keepalive(sim, interval=30.0)
    sim.monitor.sign_of_life("e", 20.0)
    sim.at(29.0, lambda: sim.monitor.set_in_call("e", True, sim.now))
    sim.on_probe = lambda p: sim.at(
        sim.now + 0.02, lambda: sim.monitor.probe_answered("e", sim.now)
    )
    sim.run_until(41.0)
    # in_call_interval 2, phase 0.5: 29 (no probe: call just started) then 31, 33, ... 41
    assert sim.probe_times == pytest.approx([31.0 + 2 * k for k in range(6)], abs=RESOLUTION)
    view = sim.monitor.view("e")
    assert view is not None and view.in_call and view.interval == 2.0 and view.probing
    assert sim.monitor.set_in_call("e", True, 41.0), "idempotent"
    sim.monitor.set_in_call("e", False, 41.5)
    count = len(sim.probes)
    sim.at(60.0, lambda: sim.monitor.sign_of_life("e", sim.now))
    sim.run_until(70.0)
    assert len(sim.probes) == count, "no probes for a keep-alive endpoint out of a call"
    assert sim.events == []


def test_in_call_a_silent_endpoint_goes_down_fast(sim: Sim) -> None:
    keepalive(sim, interval=30.0)
    sim.monitor.sign_of_life("e", 25.0)
    sim.monitor.set_in_call("e", True, 25.0)
    sim.run_until(100.0)  # probes go unanswered
    down = sim.downs()[0]
    assert down.last_seen == 25.0
    assert down.detection_latency <= 2 * 3 + 1 < 30 * 3


def test_entering_a_call_does_not_blame_an_endpoint_for_its_own_long_interval(sim: Sim) -> None:
    keepalive(sim, interval=30.0)
    sim.monitor.sign_of_life("e", 0.0)
    sim.monitor.set_in_call("e", True, 25.0)  # 25 s quiet: fine at 30, way over 3 × 2 s
    sim.drain()
    assert sim.events == []
    sim.on_probe = lambda p: sim.at(
        sim.now + 0.02, lambda: sim.monitor.probe_answered("e", sim.now)
    )
    sim.run_until(60.0)
    assert sim.events == [], "the in-call probes are answered"


def test_in_call_probe_endpoint_uses_the_shorter_interval(sim: Sim) -> None:
    probe(sim)
    sim.monitor.set_in_call("e", True, 0.0)
    sim.run_until(10.0)
    assert sim.probe_times == pytest.approx([1.0, 3.0, 5.0, 7.0, 9.0], abs=RESOLUTION)
    sim.monitor.set_in_call("e", False, 10.0)
    sim.monitor.sign_of_life("e", 10.0)
    sim.run_until(30.0)
    assert sim.probe_times[5:] == pytest.approx([15.0, 25.0], abs=RESOLUTION)


def test_in_call_interval_not_shorter_changes_nothing(sim: Sim) -> None:
    keepalive(sim, interval=1.0)  # already faster than in_call_interval=2
    sim.monitor.set_in_call("e", True, 0.0)
    view = sim.monitor.view("e")
    assert view is not None and view.interval == 1.0 and not view.probing


# --- removal and re-adding ----------------------------------------------------------------------
def test_removed_endpoints_report_nothing_even_with_timers_pending(sim: Sim) -> None:
    keepalive(sim, "k")
    probe(sim, "p")
    sim.run_until(14.0)  # a probe is outstanding, the SUSPECT timers are armed
    assert sim.monitor.get_timer() is not None
    assert sim.monitor.remove("k") and sim.monitor.remove("p")
    sim.take_events()
    count = len(sim.probes)
    sim.run_until(1000.0)
    assert sim.events == [] and len(sim.probes) == count
    assert sim.monitor.get_timer() is None and len(sim.monitor) == 0
    assert sim.monitor.counts() == {"alive": 0, "suspect": 0, "down": 0}
    assert not sim.monitor.sign_of_life("k", 1000.0)


def test_re_adding_updates_the_flow_and_counts_as_life(sim: Sim) -> None:
    probe(sim)
    sim.monitor.reset("e", 1.0)
    sim.monitor.add("e", EndpointKind.CONTACT, TCP, Mode.PROBE, 2.0)  # re-registered over TCP
    sim.run_until(5.0)
    assert sim.probes[-1].flow is TCP
    assert sim.events[-1] == EndpointAlive("e", EndpointKind.CONTACT, State.DOWN, 2.0)
    sim.monitor.add("e", EndpointKind.CONTACT, TCP, Mode.KEEPALIVE, 6.0)  # now it pings us
    count = len(sim.probes)
    sim.at(15.0, lambda: sim.monitor.sign_of_life("e", sim.now))
    sim.run_until(20.0)
    assert len(sim.probes) == count
    assert len(sim.monitor) == 1


# --- timers -------------------------------------------------------------------------------------
def test_get_timer_is_none_with_nothing_to_watch() -> None:
    assert LivenessMonitor().get_timer() is None


def test_both_timer_structures_agree_on_the_event_sequence() -> None:
    runs = []
    timers: TimerHeap[Watch] | None
    for timers in (None, TimerHeap[Watch]()):
        s = Sim(SETTINGS, timers=timers)
        for i in range(50):
            (keepalive if i % 2 else probe)(s, f"e{i}", at=i * 0.1)
            s.at(i * 0.7, _speaks(s, f"e{i}"))
        s.run_until(200.0)
        runs.append([(type(e).__name__, e.endpoint_id) for e in s.events])
        assert len(s.downs()) == 50
    assert runs[0] == runs[1]


def _speaks(sim: Sim, endpoint_id: str) -> Callable[[], bool]:
    return lambda: sim.monitor.sign_of_life(endpoint_id, sim.now)
