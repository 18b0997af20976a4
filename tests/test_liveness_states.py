"""Walk every (state, trigger) pair of the liveness state machine.

First the table itself: it is total, DOWN is left only by a sign of life, and a state change
always announces itself. Then every pair through the public API: an endpoint is brought into
the state by ordinary inputs, the trigger is produced by ordinary inputs (a keep-alive, a timer,
a failed probe, a lost connection...), and the resulting state and the events produced by the
triggering call must be exactly what the table says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from callkeeper.liveness import (
    TRANSITIONS,
    DownReason,
    Emit,
    EndpointAlive,
    EndpointDown,
    EndpointKind,
    EndpointSuspect,
    LivenessMonitor,
    LivenessSettings,
    SendProbe,
    State,
    SuspectReason,
    Trigger,
)
from test_liveness_harness import UDP, Sim

FAILURES = [t for t in Trigger if t is not Trigger.SIGN_OF_LIFE]
IMMEDIATE = [Trigger.CONNECTION_LOST, Trigger.REGISTRATION_EXPIRED, Trigger.RESET]


# --- the table ----------------------------------------------------------------------------------
def test_table_is_total() -> None:
    assert set(TRANSITIONS) == {(s, t) for s in State for t in Trigger}


@pytest.mark.parametrize("state", list(State))
def test_a_sign_of_life_always_means_alive(state: State) -> None:
    next_state, emit = TRANSITIONS[state, Trigger.SIGN_OF_LIFE]
    assert next_state is State.ALIVE
    assert emit is (Emit.NOTHING if state is State.ALIVE else Emit.ALIVE)


@pytest.mark.parametrize("trigger", FAILURES)
def test_down_is_left_only_by_a_sign_of_life(trigger: Trigger) -> None:
    assert TRANSITIONS[State.DOWN, trigger] == (State.DOWN, Emit.NOTHING)


@pytest.mark.parametrize("trigger", IMMEDIATE)
@pytest.mark.parametrize("state", [State.ALIVE, State.SUSPECT])
def test_immediate_failure_signs_go_down_from_anywhere(state: State, trigger: Trigger) -> None:
    assert TRANSITIONS[state, trigger] == (State.DOWN, Emit.DOWN)


def test_every_state_change_emits_the_event_for_the_new_state() -> None:
    expected = {State.ALIVE: Emit.ALIVE, State.SUSPECT: Emit.SUSPECT, State.DOWN: Emit.DOWN}
    for (state, _), (next_state, emit) in TRANSITIONS.items():
        assert emit is (Emit.NOTHING if next_state is state else expected[next_state])


# --- every pair through the public API ----------------------------------------------------------
# A probe-mode endpoint, options_interval 10 s, misses 3, phase 0.5: probes at 5, 15, 25, ...;
# SUSPECT after 15 s of silence, DOWN after 30.5 s.
PHASE = 0.5


@dataclass
class Walk:
    sim: Sim

    @property
    def monitor(self) -> LivenessMonitor:
        return self.sim.monitor

    def run_to_probe(self, when: float) -> int:
        """Run to `when`, where a probe goes out; its id."""
        self.sim.run_until(when)
        probe = self.sim.probes[-1]
        assert isinstance(probe, SendProbe) and self.sim.now == when
        return probe.probe_id

    def fail_probe_at(self, when: float) -> None:
        assert self.monitor.probe_failed("e", self.run_to_probe(when), self.sim.now)


def setup(state: State, misses: int) -> Walk:
    sim = Sim(LivenessSettings(options_interval=10, misses=misses), phase=lambda _: PHASE)
    sim.monitor.add("e", EndpointKind.STATIC, UDP, "probe", 0.0)
    walk = Walk(sim)
    if state is State.SUSPECT:
        walk.fail_probe_at(5.0)  # one failed probe: SUSPECT at t=5, failures=1
    elif state is State.DOWN:
        assert sim.monitor.reset("e", 0.0)
    sim.drain()
    assert sim.monitor.state("e") is state
    sim.take_events()
    return walk


def prepare_unreachable(walk: Walk, state: State) -> Callable[[], object]:
    """Fail probes until one more failure reaches `misses`; return that last failure."""
    failed_before = {State.ALIVE: 0, State.SUSPECT: 1, State.DOWN: 0}[state]
    times = [15.0, 25.0] if state is State.SUSPECT else [5.0, 15.0, 25.0]
    for when in times[: walk.sim.monitor.settings.misses - failed_before - 1]:
        walk.fail_probe_at(when)
    last = walk.run_to_probe(times[walk.sim.monitor.settings.misses - failed_before - 1])
    return lambda: walk.monitor.probe_failed("e", last, walk.sim.now)


def prepare(walk: Walk, state: State, trigger: Trigger) -> Callable[[], object]:
    """Ordinary inputs that make the next call produce exactly `trigger`; that call."""
    sim, monitor = walk.sim, walk.monitor
    if trigger is Trigger.SIGN_OF_LIFE:
        return lambda: monitor.sign_of_life("e", sim.now)
    if trigger is Trigger.MISSED:  # silence reaches 15 s at the t=15 timer
        sim.run_until(14.9)
        return lambda: sim.run_until(15.0)
    if trigger is Trigger.PROBE_ERROR:
        probe_id = walk.run_to_probe(15.0 if state is State.SUSPECT else 5.0)
        return lambda: monitor.probe_failed("e", probe_id, sim.now)
    if trigger is Trigger.SILENT:  # a driver that wakes up long after every deadline
        return lambda: sim.late_timer(100.0)
    if trigger is Trigger.UNREACHABLE:
        return prepare_unreachable(walk, state)
    method = {
        Trigger.CONNECTION_LOST: monitor.connection_lost,
        Trigger.REGISTRATION_EXPIRED: monitor.registration_expired,
        Trigger.RESET: monitor.reset,
    }[trigger]
    return lambda: method("e", sim.now)


DOWN_REASONS: dict[Trigger, DownReason] = {
    Trigger.SILENT: "timeout",
    Trigger.UNREACHABLE: "probe-failed",
    Trigger.CONNECTION_LOST: "connection-lost",
    Trigger.REGISTRATION_EXPIRED: "registration-expired",
    Trigger.RESET: "reset",
}


@pytest.mark.parametrize("trigger", list(Trigger), ids=lambda t: t.name)
@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
def test_walk_every_pair(state: State, trigger: Trigger) -> None:
    # With misses=3 the third failed probe can only come after the first made it SUSPECT, so
    # (ALIVE, UNREACHABLE) is the misses=1 case: the first failed probe is the last allowed.
    misses = 1 if (state, trigger) == (State.ALIVE, Trigger.UNREACHABLE) else 3
    walk = setup(state, misses)
    act = prepare(walk, state, trigger)
    assert walk.monitor.state("e") is state, "preparing must not change the state"
    walk.sim.take_events()

    act()
    walk.sim.drain()
    events = walk.sim.take_events()

    next_state, emit = TRANSITIONS[state, trigger]
    assert walk.monitor.state("e") is next_state
    assert walk.monitor.counts()[next_state.value] == 1
    now = walk.sim.now
    if emit is Emit.NOTHING:
        assert events == []
    elif emit is Emit.SUSPECT:
        reason: SuspectReason = "probe-failed" if trigger is Trigger.PROBE_ERROR else "timeout"
        assert events == [EndpointSuspect("e", EndpointKind.STATIC, reason, 0.0, now)]
    elif emit is Emit.DOWN:
        down = EndpointDown("e", EndpointKind.STATIC, DOWN_REASONS[trigger], 0.0, now)
        assert events == [down]
        assert down.detection_latency == now
    else:
        assert events == [EndpointAlive("e", EndpointKind.STATIC, state, now)]
