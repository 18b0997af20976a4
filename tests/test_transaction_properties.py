"""Property tests: any sequence of network input, TU input and time leaves no state behind.

Hypothesis throws retransmissions, duplicates, ACKs, late responses, transport errors and
arbitrary time steps at one client or server transaction. Whatever the order, the layer must
not raise, must pass each new request/final to the TU only as RFC 3261 allows, and — once the
TU has answered and the timers have run out — must hold no transaction, index entry or timer.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from callkeeper.sip.message import Request, Response
from callkeeper.sip.transaction_events import (
    RequestReceived,
    ResponseReceived,
    SendMessage,
    TransactionTerminated,
)
from callkeeper.sip.transaction_messages import build_non2xx_ack
from callkeeper.sip.transaction_states import State
from harness.layer_driver import LayerDriver
from harness.messages import build_request, reparse

BRANCH = "z9hG4bK-prop"
STATUSES = st.sampled_from([100, 180, 183, 200, 202, 302, 404, 486, 500, 603])

server_steps = st.lists(
    st.one_of(
        st.tuples(st.just("retransmit"), st.just(0)),
        st.tuples(st.just("ack"), st.just(0)),
        st.tuples(st.just("tu"), STATUSES),
        st.tuples(st.just("advance"), st.integers(0, 40_000)),  # milliseconds
        st.tuples(st.just("transport_error"), st.just(0)),
    ),
    max_size=30,
)
client_steps = st.lists(
    st.one_of(
        st.tuples(st.just("response"), STATUSES),
        st.tuples(st.just("advance"), st.integers(0, 40_000)),
        st.tuples(st.just("transport_error"), st.just(0)),
    ),
    max_size=30,
)


def _assert_empty(driver: LayerDriver) -> None:
    layer = driver.layer
    assert len(layer) == 0 and layer.transaction_count == 0
    assert layer.get_timer() is None and len(layer._timers) == 0
    assert not layer._clients and not layer._servers
    assert not layer._merge and not layer._legacy_responses


def _assert_wire_bytes(driver: LayerDriver) -> None:
    for event in driver.of(SendMessage):
        assert event.data == event.message.to_bytes()


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    transport=st.sampled_from(["udp", "tcp"]),
    legacy=st.booleans(),
    steps=server_steps,
)
def test_server_transaction_never_leaks(
    method: str, transport: str, legacy: bool, steps: list[tuple[str, int]]
) -> None:
    driver = LayerDriver(transport=transport)
    request = build_request(method, branch=None if legacy else BRANCH, transport=transport.upper())
    driver.receive_request(request)
    current = 1
    last_sent: Response | None = None
    for step, value in steps:
        if step == "retransmit":
            copy = reparse(request)
            assert isinstance(copy, Request)
            alive = driver.layer.state_of(current) is not None
            passed = [e for e in driver.receive_request(copy) if isinstance(e, RequestReceived)]
            if alive:  # a retransmission never reaches the TU while its transaction lives
                assert passed == []
            else:  # after the transaction ended, the same bytes are a new request
                assert len(passed) == 1 and passed[0].transaction_id is not None
                current = passed[0].transaction_id
        elif step == "ack" and method == "INVITE":
            final = last_sent or request.create_response(486, to_tag="x")
            driver.receive_request(build_non2xx_ack(request, final))
        elif step == "tu":
            last_sent = request.create_response(value, to_tag="uas")
            driver.send_response(last_sent)
        elif step == "advance":
            driver.advance(value / 1000)
        elif step == "transport_error":
            driver.layer.transport_error(current, driver.now)
            driver.drain()
    driver.send_response(request.create_response(500, to_tag="uas"))
    driver.advance(200)

    _assert_empty(driver)
    _assert_wire_bytes(driver)
    new = [e.transaction_id for e in driver.of(RequestReceived) if e.request.method == method]
    ended = [e.transaction_id for e in driver.of(TransactionTerminated)]
    assert new == ended == list(range(1, current + 1))


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    transport=st.sampled_from(["udp", "tcp"]),
    steps=client_steps,
)
def test_client_transaction_never_leaks(
    method: str, transport: str, steps: list[tuple[str, int]]
) -> None:
    driver = LayerDriver(transport=transport)
    request = build_request(method, branch=BRANCH, transport=transport.upper())
    tid = driver.send_request(request)
    for step, value in steps:
        if step == "response":
            response = reparse(request.create_response(value, to_tag="uas"))
            assert isinstance(response, Response)
            driver.receive_response(response)
        elif step == "advance":
            driver.advance(value / 1000)
        else:
            driver.layer.transport_error(tid, driver.now)
            driver.drain()
    driver.advance(200)
    if driver.layer.state_of(tid) is State.PROCEEDING:
        # An INVITE answered only provisionally waits for its TU, which CANCELs and then
        # destroys the transaction (RFC 3261 §9.1): nothing times it out on its own.
        assert method == "INVITE"
        assert driver.layer.terminate(tid, driver.now)
        assert not driver.layer.terminate(tid, driver.now)
        driver.drain()

    _assert_empty(driver)
    _assert_wire_bytes(driver)
    finals = [e.response.status for e in driver.of(ResponseReceived) if e.response.status >= 200]
    if method != "INVITE":
        assert len(finals) <= 1
    else:  # one non-2xx at most, and never a non-2xx after a 2xx or a 2xx after a non-2xx
        assert len([s for s in finals if s >= 300]) <= 1
        assert not (any(s < 300 for s in finals) and any(s >= 300 for s in finals))
    assert driver.of(TransactionTerminated) == [TransactionTerminated(tid)]
