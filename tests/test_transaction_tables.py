"""Walk every (state, input) pair of every transaction machine.

For each machine and each live state, a transaction is driven into that state through the
public API (so the state is real, with its timers running), then every `Input` is fed to it.
A pair in the table must produce its next state and the evidence of each of its actions; any
other pair must be absorbed: no exception, no event, no state change, no timer change.
Also checks properties of the tables themselves (every running timer is handled, every
machine can finish).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from callkeeper.sip.message import Message, Request, Response
from callkeeper.sip.transaction import TransactionLayer
from callkeeper.sip.transaction_events import (
    RequestReceived,
    ResponseReceived,
    SendMessage,
    TransactionEvent,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from callkeeper.sip.transaction_messages import build_non2xx_ack
from callkeeper.sip.transaction_states import (
    INVITE_CLIENT,
    INVITE_SERVER,
    MACHINES,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
    TIMERS,
    Action,
    Input,
    Machine,
    State,
)
from harness.layer_driver import LayerDriver
from harness.messages import build_request, reparse

BRANCH = "z9hG4bK-walk"


def _response(request: Request, status: int) -> Response:
    parsed = reparse(request.create_response(status, to_tag="uas"))
    assert isinstance(parsed, Response)
    return parsed


def _setup(machine: Machine, state: State, transport: str) -> tuple[LayerDriver, int, Request]:
    """A transaction of `machine` brought into `state` by ordinary inputs."""
    driver = LayerDriver(transport=transport)
    method = "INVITE" if machine in (INVITE_CLIENT, INVITE_SERVER) else "OPTIONS"
    request = build_request(method, branch=BRANCH, transport=transport.upper())
    if machine.client:
        tid = driver.send_request(request)
        statuses: list[int] = {
            State.CALLING: [],
            State.TRYING: [],
            State.PROCEEDING: [180],
            State.COMPLETED: [486],
            State.ACCEPTED: [200],
        }[state]
        for status in statuses:
            driver.receive_response(_response(request, status))
    else:
        events = driver.receive_request(request)
        assert isinstance(events[0], RequestReceived) and events[0].transaction_id is not None
        tid = events[0].transaction_id
        server_steps: dict[State, list[int | str]] = {
            State.PROCEEDING: [100] if machine is NON_INVITE_SERVER else [],
            State.TRYING: [],
            State.COMPLETED: [486],
            State.CONFIRMED: [486, "ACK"],
            State.ACCEPTED: [200],
        }
        steps = server_steps[state]
        for step in steps:
            if isinstance(step, str):  # "ACK"
                last = driver.of(SendMessage)[-1].message
                assert isinstance(last, Response)
                driver.receive_request(build_non2xx_ack(request, last))
            else:
                driver.send_response(request.create_response(step, to_tag="uas"))
    assert driver.layer.state_of(tid) is state
    return driver, tid, request


def _message_for(event: Input, request: Request, driver: LayerDriver) -> Message | None:
    statuses = {
        Input.RESPONSE_1XX: 180,
        Input.RESPONSE_2XX: 200,
        Input.RESPONSE_FAILURE: 486,
        Input.SEND_1XX: 183,
        Input.SEND_2XX: 200,
        Input.SEND_FAILURE: 603,
    }
    if event in (Input.RESPONSE_1XX, Input.RESPONSE_2XX, Input.RESPONSE_FAILURE):
        return _response(request, statuses[event])
    if event in (Input.SEND_1XX, Input.SEND_2XX, Input.SEND_FAILURE):
        return request.create_response(statuses[event], to_tag="uas")
    if event is Input.REQUEST:
        return reparse(request)
    if event is Input.ACK:
        return build_non2xx_ack(request, _response(request, 486))
    return None


def _timers(layer: TransactionLayer, tid: int) -> dict[Input, float | None]:
    return {timer: layer._timers.deadline((tid, timer)) for timer in TIMERS}


RETRANSMIT_TIMERS = {Input.TIMER_A, Input.TIMER_E, Input.TIMER_G}
ZERO_OVER_TCP = {Input.TIMER_D, Input.TIMER_I, Input.TIMER_J, Input.TIMER_K}


def _transient_over_tcp(machine: Machine, state: State) -> bool:
    """States left at once over TCP: their wait timer is 0 there (tested in the unit tests)."""
    return bool(set(machine.timers.get(state, ())) & ZERO_OVER_TCP)


def _pairs() -> list[tuple[Machine, State, Input, str]]:
    # Timers A, E and G are never started on a reliable transport (see
    # test_retransmit_timers_never_run_over_tcp), so they cannot arrive there; and a state
    # whose only timer is 0 over TCP cannot be rested in.
    return [
        (machine, state, event, transport)
        for machine in MACHINES
        for state in sorted(machine.states - {State.TERMINATED}, key=lambda s: s.value)
        for event in Input
        for transport in ("udp", "tcp")
        if transport == "udp"
        or (event not in RETRANSMIT_TIMERS and not _transient_over_tcp(machine, state))
    ]


def _ids(pair: tuple[Machine, State, Input, str]) -> str:
    machine, state, event, transport = pair
    return f"{machine.name}-{state.name}-{event.name}-{transport}"


EvidenceCheck = Callable[[list[TransactionEvent], LayerDriver, int, Input], bool]


def _sends(events: list[TransactionEvent]) -> list[SendMessage]:
    return [e for e in events if isinstance(e, SendMessage)]


def _method(message: Message) -> str:
    return message.method if isinstance(message, Request) else ""


def _restarted(interval: Callable[[float, float], float]) -> EvidenceCheck:
    """The firing timer is due again after `interval(t1, t2)`."""

    def check(events: list[TransactionEvent], driver: LayerDriver, tid: int, event: Input) -> bool:
        deadline = driver.layer._timers.deadline((tid, event))
        settings = driver.layer.settings
        expected = interval(settings.t1, settings.t2)
        return deadline is not None and deadline - driver.now == pytest.approx(expected)

    return check


# What each action leaves behind (the transition fired in a fresh state, so the retransmit
# interval is the initial T1 and "doubled" means 2*T1).
EVIDENCE: dict[Action, EvidenceCheck] = {
    Action.PASS_RESPONSE: lambda ev, d, tid, i: any(
        isinstance(e, ResponseReceived) and e.transaction_id == tid for e in ev
    ),
    Action.PASS_ACK: lambda ev, d, tid, i: any(
        isinstance(e, RequestReceived) and e.transaction_id == tid for e in ev
    ),
    Action.SEND_ACK: lambda ev, d, tid, i: any(
        _method(s.message) == "ACK" and not s.retransmission for s in _sends(ev)
    ),
    Action.RESEND_ACK: lambda ev, d, tid, i: any(
        _method(s.message) == "ACK" and s.retransmission for s in _sends(ev)
    ),
    Action.RESEND_REQUEST: lambda ev, d, tid, i: any(
        isinstance(s.message, Request) and s.retransmission for s in _sends(ev)
    ),
    Action.SEND_RESPONSE: lambda ev, d, tid, i: any(
        isinstance(s.message, Response) and not s.retransmission for s in _sends(ev)
    ),
    # RESEND_RESPONSE resends the last response, if there is one: in the states where the
    # table has it (after SEND_RESPONSE once), there is.
    Action.RESEND_RESPONSE: lambda ev, d, tid, i: (
        any(isinstance(s.message, Response) and s.retransmission for s in _sends(ev))
        or not d.of(SendMessage)
        or all(isinstance(s.message, Request) for s in d.of(SendMessage))
    ),
    Action.SEND_TRYING: lambda ev, d, tid, i: any(
        isinstance(s.message, Response) and s.message.status == 100 for s in _sends(ev)
    ),
    Action.STOP_TRYING_TIMER: lambda ev, d, tid, i: (
        d.layer._timers.deadline((tid, Input.TIMER_TRYING)) is None
    ),
    Action.RESTART_DOUBLED: _restarted(lambda t1, t2: 2 * t1),
    Action.RESTART_DOUBLED_UP_TO_T2: _restarted(lambda t1, t2: min(2 * t1, t2)),
    Action.RESTART_AT_T2: _restarted(lambda t1, t2: t2),
    Action.REPORT_TIMEOUT: lambda ev, d, tid, i: (
        TransactionTimedOut(tid, i.value) in ev
        and i in (Input.TIMER_B, Input.TIMER_F, Input.TIMER_H)
    ),
    Action.REPORT_TRANSPORT_ERROR: lambda ev, d, tid, i: TransportFailed(tid) in ev,
}


def test_every_action_has_evidence() -> None:
    assert set(EVIDENCE) == set(Action)


@pytest.mark.parametrize("pair", _pairs(), ids=_ids)
def test_state_input_pair(pair: tuple[Machine, State, Input, str]) -> None:
    machine, state, event, transport = pair
    driver, tid, request = _setup(machine, state, transport)
    layer = driver.layer
    timers_before = _timers(layer, tid)
    absorbed_before = layer.stats.absorbed
    message = _message_for(event, request, driver)
    driver.clock.advance(0.01)

    layer._input(layer._by_id[tid], event, message, driver.flow, driver.now)
    events = driver.drain()

    transition = machine.transitions.get((state, event))
    if transition is None:
        assert events == []
        assert layer.state_of(tid) is state
        assert _timers(layer, tid) == timers_before
        assert layer.stats.absorbed == absorbed_before + 1
        return
    actions, next_state = transition
    if next_state is State.TERMINATED:
        assert layer.state_of(tid) is None
        assert TransactionTerminated(tid) in events
        assert len(layer) == 0 and layer.get_timer() is None
    elif layer.state_of(tid) is None:
        # A zero-length timer of the next state (D, I, J, K over TCP) ended it at once.
        assert transport == "tcp" and events[-1] == TransactionTerminated(tid)
    else:
        assert layer.state_of(tid) is next_state
        running = {t for t, when in _timers(layer, tid).items() if when is not None}
        assert running <= set(machine.timers.get(next_state, ())) | {Input.TIMER_TRYING}
    for action in actions:
        assert EVIDENCE[action](events, driver, tid, event), action
    if not actions:
        assert all(isinstance(e, TransactionTerminated) for e in events)


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_every_running_timer_is_handled_in_its_state(machine: Machine) -> None:
    for state, timers in machine.timers.items():
        for timer in timers:
            assert (state, timer) in machine.transitions, (state, timer)


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_timer_inputs_only_come_from_the_states_timers(machine: Machine) -> None:
    for (state, event), _ in machine.transitions.items():
        if event in TIMERS:
            assert event in machine.timers.get(state, ()), (state, event)


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_every_state_can_reach_terminated(machine: Machine) -> None:
    edges: dict[State, set[State]] = {}
    for (state, _), (_, next_state) in machine.transitions.items():
        edges.setdefault(state, set()).add(next_state)
    for start in machine.states - {State.TERMINATED}:
        seen, frontier = {start}, [start]
        while frontier:
            for nxt in edges.get(frontier.pop(), set()):
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert State.TERMINATED in seen, (machine.name, start)


def test_machine_states() -> None:
    assert INVITE_CLIENT.states == {
        State.CALLING,
        State.PROCEEDING,
        State.COMPLETED,
        State.ACCEPTED,
        State.TERMINATED,
    }
    assert INVITE_SERVER.states == {
        State.PROCEEDING,
        State.COMPLETED,
        State.CONFIRMED,
        State.ACCEPTED,
        State.TERMINATED,
    }
    for machine in (NON_INVITE_CLIENT, NON_INVITE_SERVER):
        assert machine.states == {
            State.TRYING,
            State.PROCEEDING,
            State.COMPLETED,
            State.TERMINATED,
        }
    assert Input.TIMER_A.is_timer and not Input.ACK.is_timer


TCP_RESTING_STATES = sorted(
    {(machine, state) for machine, state, _, transport in _pairs() if transport == "tcp"},
    key=lambda pair: (pair[0].name, pair[1].value),
)


@pytest.mark.parametrize(("machine", "state"), TCP_RESTING_STATES)
def test_retransmit_timers_never_run_over_tcp(machine: Machine, state: State) -> None:
    driver, tid, _ = _setup(machine, state, "tcp")
    running = {t for t, when in _timers(driver.layer, tid).items() if when is not None}
    assert not running & RETRANSMIT_TIMERS
