"""Client transactions (RFC 3261 §17.1, RFC 6026) on a fake clock: every timer and transition."""

from __future__ import annotations

import pytest

from callkeeper.sip.message import Request, Response
from callkeeper.sip.timers import TimerSettings
from callkeeper.sip.transaction import TransactionError
from callkeeper.sip.transaction_events import (
    ResponseReceived,
    SendMessage,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from callkeeper.sip.transaction_messages import build_cancel
from callkeeper.sip.transaction_states import State
from harness.layer_driver import LayerDriver
from harness.messages import build_request, reparse

BRANCH = "z9hG4bK-client-1"


def invite(**kwargs: object) -> Request:
    return build_request("INVITE", branch=BRANCH, **kwargs)  # type: ignore[arg-type]


def options() -> Request:
    return build_request("OPTIONS", branch=BRANCH)


def response(request: Request, status: int, tag: str | None = "uas-1") -> Response:
    """The response as it arrives from the peer (a fresh parse, so no shared objects)."""
    result = reparse(request.create_response(status, to_tag=tag))
    assert isinstance(result, Response)
    return result


def wire(driver: LayerDriver) -> list[bytes]:
    return [event.data for event in driver.of(SendMessage)]


# --- INVITE client ----------------------------------------------------------------------------


def test_invite_is_sent_and_timer_a_doubles_until_timer_b() -> None:
    driver = LayerDriver()
    request = invite()
    tid = driver.send_request(request)
    first = driver.of(SendMessage)[0]
    assert first.message is request and first.data == request.to_bytes()
    assert first.transaction_id == tid and not first.retransmission

    driver.advance(40)

    # Timer A: T1, 2T1, 4T1 ... with no cap; Timer B = 64*T1 = 32 s ends it.
    assert driver.times(SendMessage, retransmission=True) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(data is first.data for data in wire(driver))  # same bytes, serialized once
    assert driver.of(TransactionTimedOut) == [TransactionTimedOut(tid, "B")]
    assert driver.times(TransactionTimedOut) == [32.0]
    assert driver.of(TransactionTerminated) == [TransactionTerminated(tid)]
    assert len(driver.layer) == 0 and driver.layer.get_timer() is None


def test_invite_over_tcp_is_never_retransmitted_but_times_out() -> None:
    driver = LayerDriver(transport="tcp")
    tid = driver.send_request(invite(transport="TCP"))
    driver.advance(40)
    assert len(driver.of(SendMessage)) == 1
    assert driver.times(TransactionTimedOut) == [32.0]
    assert driver.layer.state_of(tid) is None


def test_provisional_stops_retransmissions_and_timer_b() -> None:
    driver = LayerDriver()
    request = invite()
    tid = driver.send_request(request)
    driver.advance(0.7)  # one retransmission at 0.5
    events = driver.receive_response(response(request, 180))
    assert [type(e) for e in events] == [ResponseReceived]
    assert driver.layer.state_of(tid) is State.PROCEEDING
    assert driver.layer.get_timer() is None  # Proceeding waits for the peer, without timers
    driver.advance(100)
    assert driver.times(SendMessage, retransmission=True) == [0.5]
    assert not driver.of(TransactionTimedOut)
    driver.receive_response(response(request, 183))
    assert [e.response.status for e in driver.of(ResponseReceived)] == [180, 183]


@pytest.mark.parametrize("provisional_first", [False, True])
def test_2xx_goes_to_accepted_and_timer_m_passes_further_2xx_up(provisional_first: bool) -> None:
    driver = LayerDriver()
    request = invite()
    tid = driver.send_request(request)
    if provisional_first:
        driver.receive_response(response(request, 100))
    driver.advance(1.0)
    driver.receive_response(response(request, 200))
    assert driver.layer.state_of(tid) is State.ACCEPTED
    # A 2xx retransmission and a forked 2xx with another tag both reach the TU (it ACKs them).
    driver.advance(2.0)
    driver.receive_response(response(request, 200))
    driver.receive_response(response(request, 200, tag="uas-fork"))
    driver.receive_response(response(request, 180))  # late provisional: absorbed
    driver.receive_response(response(request, 486))  # non-2xx after a 2xx: absorbed
    statuses = [e.response.status for e in driver.of(ResponseReceived)]
    assert statuses == ([100] if provisional_first else []) + [200, 200, 200]
    assert not [s for s in driver.of(SendMessage) if s.message.start_line().startswith("ACK")]
    driver.advance(30.0 - 0.001)  # Timer M = 64*T1 from the first 2xx at t=1.0
    assert driver.layer.state_of(tid) is State.ACCEPTED
    driver.advance(0.002)
    assert driver.times(TransactionTerminated) == [33.0]
    assert len(driver.layer) == 0


def test_non_2xx_final_is_acked_by_the_transaction_and_retransmissions_absorbed() -> None:
    driver = LayerDriver()
    request = invite(extra=("Route: <sip:proxy.example.com;lr>",))
    tid = driver.send_request(request)
    busy = response(request, 486)
    events = driver.receive_response(busy)
    assert [type(e) for e in events] == [ResponseReceived, SendMessage]
    ack_event = events[1]
    assert isinstance(ack_event, SendMessage) and ack_event.flow == driver.flow
    assert isinstance(ack_event.message, Request)
    ack = reparse(ack_event.message)
    assert isinstance(ack, Request)
    assert ack.method == "ACK" and str(ack.uri) == str(request.uri)
    assert ack.top_via.branch == BRANCH and len(ack.vias) == 1
    assert ack.to_addr.tag == "uas-1" and ack.from_addr.tag == request.from_addr.tag
    assert ack.call_id == request.call_id
    assert (ack.cseq.number, ack.cseq.method) == (request.cseq.number, "ACK")
    assert ack.headers.get("route") == "<sip:proxy.example.com;lr>"
    assert driver.layer.state_of(tid) is State.COMPLETED

    driver.advance(3.0)
    again = driver.receive_response(response(request, 486))
    assert [type(e) for e in again] == [SendMessage]  # not passed up; ACKed again
    assert isinstance(again[0], SendMessage) and again[0].retransmission
    assert again[0].data is ack_event.data
    assert len(driver.of(ResponseReceived)) == 1

    driver.advance(29.0 - 0.001)  # Timer D = 32 s on UDP
    assert driver.layer.state_of(tid) is State.COMPLETED
    driver.advance(0.002)
    assert driver.times(TransactionTerminated) == [32.0]
    assert driver.layer.stats.retransmissions == 1


def test_timer_d_is_zero_over_tcp() -> None:
    driver = LayerDriver(transport="tcp")
    request = invite(transport="TCP")
    tid = driver.send_request(request)
    events = driver.receive_response(response(request, 603))
    kinds = [type(e) for e in events]
    assert kinds == [ResponseReceived, SendMessage, TransactionTerminated]
    assert driver.layer.state_of(tid) is None and len(driver.layer) == 0


def test_custom_timer_d() -> None:
    driver = LayerDriver(TimerSettings(timer_d_unreliable=40.0))
    request = invite()
    driver.send_request(request)
    driver.receive_response(response(request, 404))
    driver.advance(100)
    assert driver.times(TransactionTerminated) == [40.0]


# --- non-INVITE client --------------------------------------------------------------------


def test_timer_e_doubles_up_to_t2_until_timer_f() -> None:
    driver = LayerDriver()
    tid = driver.send_request(options())
    driver.advance(40)
    expected = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert driver.times(SendMessage, retransmission=True) == expected
    assert driver.of(TransactionTimedOut) == [TransactionTimedOut(tid, "F")]
    assert driver.times(TransactionTimedOut) == [32.0]
    assert len(driver.layer) == 0


def test_provisional_keeps_e_and_f_running_with_e_at_t2() -> None:
    driver = LayerDriver()
    request = options()
    tid = driver.send_request(request)
    driver.advance(0.2)
    driver.receive_response(response(request, 100))
    assert driver.layer.state_of(tid) is State.PROCEEDING
    driver.advance(40)
    # E was due at 0.5 (scheduled in Trying); in Proceeding it restarts at T2 each time.
    expected = [0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5]
    assert driver.times(SendMessage, retransmission=True) == expected
    assert driver.times(TransactionTimedOut) == [32.0]  # F still from the start


@pytest.mark.parametrize("status", [200, 202, 404, 503])
def test_final_completes_and_timer_k_absorbs_retransmissions(status: int) -> None:
    driver = LayerDriver()
    request = options()
    tid = driver.send_request(request)
    driver.advance(0.1)
    driver.receive_response(response(request, 180))
    driver.receive_response(response(request, status))
    assert driver.layer.state_of(tid) is State.COMPLETED
    assert driver.receive_response(response(request, status)) == []  # absorbed
    assert driver.receive_response(response(request, 180)) == []
    driver.advance(10)
    assert [e.response.status for e in driver.of(ResponseReceived)] == [180, status]
    assert driver.times(TransactionTerminated) == [5.1]  # Timer K = T4
    assert not driver.times(SendMessage, retransmission=True)


def test_timer_k_is_zero_over_tcp() -> None:
    driver = LayerDriver(transport="tcp")
    request = build_request("REGISTER", branch=BRANCH, transport="TCP")
    tid = driver.send_request(request)
    events = driver.receive_response(response(request, 200))
    assert [type(e) for e in events] == [ResponseReceived, TransactionTerminated]
    assert driver.layer.state_of(tid) is None


def test_duplicated_responses_in_trying_reach_the_tu_once() -> None:
    driver = LayerDriver()
    request = options()
    driver.send_request(request)
    final = response(request, 200)
    driver.receive_response(final)
    driver.receive_response(final)
    assert len(driver.of(ResponseReceived)) == 1


# --- matching, CANCEL, errors -------------------------------------------------------------


def test_responses_match_by_branch_and_cseq_method() -> None:
    driver = LayerDriver()
    request = invite()
    invite_id = driver.send_request(request)
    cancel = build_cancel(request)
    cancel_id = driver.send_request(cancel)
    assert cancel_id != invite_id and len(driver.layer) == 2
    driver.receive_response(response(cancel, 200))
    driver.receive_response(response(request, 487))
    by_txn = {e.transaction_id: e.response.status for e in driver.of(ResponseReceived)}
    assert by_txn == {cancel_id: 200, invite_id: 487}

    stray = response(build_request("INVITE", branch="z9hG4bK-nobody"), 200)
    assert driver.receive_response(stray) == []
    assert driver.layer.stats.stray_responses == 1


def test_build_cancel_copies_what_9_1_requires() -> None:
    request = invite(extra=("Route: <sip:p1.example.com;lr>", "Route: <sip:p2.example.com;lr>"))
    cancel = reparse(build_cancel(request))
    assert isinstance(cancel, Request)
    assert cancel.method == "CANCEL" and str(cancel.uri) == str(request.uri)
    assert cancel.top_via.branch == BRANCH and len(cancel.vias) == 1
    assert cancel.headers.get_lines("route") == request.headers.get_lines("route")
    assert str(cancel.cseq) == f"{request.cseq.number} CANCEL"
    assert cancel.headers.get("to") == request.headers.get("to")
    assert cancel.body == b""


def test_response_without_branch_or_with_broken_headers_is_dropped() -> None:
    driver = LayerDriver()
    driver.send_request(options())
    no_branch = response(build_request("OPTIONS", branch=None), 200)
    assert driver.receive_response(no_branch) == []
    assert driver.layer.stats.stray_responses == 1
    assert driver.receive_response(Response(200, "OK")) == []  # no Via, no CSeq
    assert driver.layer.stats.malformed == 1


def test_transport_error_fails_the_transaction() -> None:
    driver = LayerDriver()
    tid = driver.send_request(invite())
    driver.layer.transport_error(tid, driver.now)
    assert driver.drain() == [TransportFailed(tid), TransactionTerminated(tid)]
    driver.layer.transport_error(tid, driver.now)  # already gone: ignored
    assert driver.drain() == [] and len(driver.layer) == 0


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (build_request("ACK", branch=BRANCH), "not a transaction"),
        (build_request("OPTIONS", branch=None), "branch"),
        (build_request("OPTIONS", branch="rfc2543-style"), "branch"),
    ],
)
def test_tu_errors_raise_transaction_error(request_: Request, message: str) -> None:
    driver = LayerDriver()
    with pytest.raises(TransactionError, match=message):
        driver.send_request(request_)
    assert len(driver.layer) == 0 and driver.drain() == []


def test_a_branch_cannot_be_reused_while_its_transaction_lives() -> None:
    driver = LayerDriver()
    driver.send_request(options())
    with pytest.raises(TransactionError, match="already used"):
        driver.send_request(options())


def test_new_branch_uses_the_injected_id_source() -> None:
    driver = LayerDriver()
    assert [driver.layer.new_branch() for _ in range(3)] == [
        "z9hG4bKt1",
        "z9hG4bKt2",
        "z9hG4bKt3",
    ]


def test_send_stateless_is_not_a_transaction() -> None:
    driver = LayerDriver()
    ack = build_request("ACK", branch="z9hG4bK-ack")
    driver.layer.send_stateless(ack, driver.flow)
    assert driver.drain() == [SendMessage(ack, driver.flow, ack.to_bytes())]
    assert len(driver.layer) == 0


def test_timers_due_at_the_same_instant_after_the_transaction_ended_are_skipped() -> None:
    # With T2 == T1, Timer E fires every T1 and lands exactly on Timer F (64*T1): F was
    # scheduled first, ends the transaction, and the E of the same instant finds nothing.
    driver = LayerDriver(TimerSettings(t1=0.5, t2=0.5))
    tid = driver.send_request(options())
    driver.advance(40)
    assert driver.times(TransactionTimedOut) == [32.0]
    assert driver.times(SendMessage, retransmission=True)[-1] == 31.5
    assert driver.layer.state_of(tid) is None and driver.layer.get_timer() is None


def test_tu_destroys_an_invite_stuck_in_proceeding() -> None:
    driver = LayerDriver()
    request = invite()
    tid = driver.send_request(request)
    driver.receive_response(response(request, 180))
    assert driver.layer.transaction_count == 1
    assert driver.layer.terminate(tid, driver.now) is True
    assert driver.drain() == [TransactionTerminated(tid)]
    assert driver.layer.terminate(tid, driver.now) is False
    assert driver.layer.transaction_count == 0 and driver.layer.get_timer() is None
    assert driver.receive_response(response(request, 200)) == []  # stray now
