"""Property tests: any sequence of inputs on a fake clock keeps the monitor's promises.

- Events per endpoint follow the transition table: SUSPECT only from ALIVE, DOWN only from ALIVE
  or SUSPECT, ALIVE only from SUSPECT/DOWN with `was` telling which; the monitor's state
  agrees with what its events said.
- `counts()` always matches the endpoints' states; nothing is reported about an endpoint that
  is not watched.
- A timeout DOWN is never early: at least `misses × interval + down_grace` after the last
  sign of life, for the shortest interval in play.
- A sign of life (or being added) always leaves the endpoint ALIVE; a lost connection, an
  expired registration or a reset always leave it DOWN.
- Nothing is forgotten: left alone long enough, every watched endpoint ends DOWN.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from callkeeper.liveness import (
    EndpointAlive,
    EndpointDown,
    EndpointSuspect,
    LivenessEvent,
    LivenessSettings,
    State,
)
from test_liveness_harness import TCP, UDP, Sim, make_timers

SETTINGS = LivenessSettings(flow_timer=6, options_interval=8, in_call_interval=2, misses=3)
IDS = ["a", "b", "c"]
OPS = [
    "add_keepalive",
    "add_probe",
    "remove",
    "sign_of_life",
    "connection_lost",
    "registration_expired",
    "reset",
    "call_start",
    "call_end",
    "fail_probe",
    "stale_failure",
]

IMMEDIATE_DOWN = ("connection_lost", "registration_expired", "reset")
REVIVING = ("add_keepalive", "add_probe", "sign_of_life")  # what follows "add" is watched

op = st.tuples(st.sampled_from(OPS), st.sampled_from(IDS), st.floats(0.0, 12.0))


def apply(sim: Sim, name: str, endpoint_id: str) -> None:
    m, now = sim.monitor, sim.now
    if name == "add_keepalive":
        m.add(endpoint_id, "contact", TCP, "keepalive", now)
    elif name == "add_probe":
        m.add(endpoint_id, "static", UDP, "probe", now)
    elif name == "remove":
        m.remove(endpoint_id)
    elif name in ("sign_of_life", "connection_lost", "registration_expired", "reset"):
        getattr(m, name)(endpoint_id, now)
    elif name in ("call_start", "call_end"):
        m.set_in_call(endpoint_id, name == "call_start", now)
    else:
        mine = [p.probe_id for p in sim.probes if p.endpoint_id == endpoint_id]
        if mine:
            m.probe_failed(endpoint_id, mine[-1] if name == "fail_probe" else mine[0], now)


def check_events(sim: Sim, events: list[LivenessEvent], shadow: dict[str, State]) -> None:
    shortest = SETTINGS.in_call_interval * SETTINGS.misses + SETTINGS.down_grace
    for event in events:
        was = shadow.get(event.endpoint_id)
        assert was is not None, f"event for an endpoint never reported alive: {event}"
        if isinstance(event, EndpointSuspect):
            assert was is State.ALIVE
            shadow[event.endpoint_id] = State.SUSPECT
        elif isinstance(event, EndpointDown):
            assert was is not State.DOWN
            assert event.detection_latency >= 0
            if event.reason == "timeout":
                assert event.detection_latency >= shortest - 1e-6, "DOWN too early"
            shadow[event.endpoint_id] = State.DOWN
        else:
            assert isinstance(event, EndpointAlive)
            assert event.was is was is not State.ALIVE
            shadow[event.endpoint_id] = State.ALIVE


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(op, max_size=40), timers=st.sampled_from(["wheel", "heap"]))
def test_any_input_sequence_keeps_the_promises(
    ops: list[tuple[str, str, float]], timers: str
) -> None:
    sim = Sim(SETTINGS, timers=make_timers(timers))
    shadow: dict[str, State] = {}
    for name, endpoint_id, dt in ops:
        sim.run_until(sim.now + dt)
        check_events(sim, sim.take_events(), shadow)
        watched = endpoint_id in sim.monitor
        apply(sim, name, endpoint_id)
        sim.drain()
        if name.startswith("add") and not watched:
            shadow[endpoint_id] = State.ALIVE
        check_events(sim, sim.take_events(), shadow)
        if name == "remove":
            shadow.pop(endpoint_id, None)
        if watched and name in IMMEDIATE_DOWN:
            assert sim.monitor.state(endpoint_id) is State.DOWN
        if name in REVIVING and (watched or name != "sign_of_life"):
            assert sim.monitor.state(endpoint_id) is State.ALIVE
        for eid in IDS:
            assert sim.monitor.state(eid) is shadow.get(eid)
        counts = sim.monitor.counts()
        assert sum(counts.values()) == len(sim.monitor) == len(shadow)
        for state in State:
            assert counts[state.value] == sum(s is state for s in shadow.values())
    sim.run_until(sim.now + 1000.0)
    check_events(sim, sim.take_events(), shadow)
    assert all(sim.monitor.state(eid) is State.DOWN for eid in shadow), "left alone: DOWN"
