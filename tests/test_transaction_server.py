"""Server transactions (RFC 3261 §17.2, RFC 6026) on a fake clock: every timer and transition,
request matching (§17.2.3 and the RFC 2543 fallback), CANCEL and merged requests (§8.2.2.2)."""

from __future__ import annotations

import weakref

import pytest

from callkeeper.sip.message import Request, Response
from callkeeper.sip.transaction import TransactionLayer
from callkeeper.sip.transaction_events import (
    CancelReceived,
    RequestReceived,
    SendMessage,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from callkeeper.sip.transaction_messages import build_cancel, build_non2xx_ack
from callkeeper.sip.transaction_states import State
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import parse_uri
from harness.layer_driver import LayerDriver
from harness.messages import build_request, reparse

BRANCH = "z9hG4bK-server-1"


def invite(**kwargs: object) -> Request:
    kwargs.setdefault("branch", BRANCH)
    return build_request("INVITE", **kwargs)  # type: ignore[arg-type]


def again(request: Request) -> Request:
    """A retransmission as it comes off the wire: equal bytes, a new object."""
    copy = reparse(request)
    assert isinstance(copy, Request)
    return copy


def ack_for(request: Request, final: Response) -> Request:
    ack = reparse(build_non2xx_ack(request, final))
    assert isinstance(ack, Request)
    return ack


def new_server(driver: LayerDriver, request: Request) -> int:
    events = driver.receive_request(request)
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    assert events[0].request is request and events[0].flow == driver.flow
    tid = events[0].transaction_id
    assert tid is not None
    return tid


def sent_statuses(driver: LayerDriver) -> list[tuple[float, int, bool]]:
    out = []
    for when, event in driver.log:
        if isinstance(event, SendMessage) and isinstance(event.message, Response):
            out.append((round(when, 6), event.message.status, event.retransmission))
    return out


# --- INVITE server: Proceeding and the 100 Trying timer --------------------------------------


def test_100_trying_is_sent_when_the_tu_is_silent_for_200_ms() -> None:
    driver = LayerDriver()
    request = invite()
    tid = new_server(driver, request)
    assert driver.layer.get_timer() == pytest.approx(0.2)
    driver.advance(0.199)
    assert sent_statuses(driver) == []
    driver.advance(0.002)
    assert sent_statuses(driver) == [(0.2, 100, False)]
    trying = driver.of(SendMessage)[0].message
    assert isinstance(trying, Response)
    assert trying.to_addr.tag is None and trying.top_via.branch == BRANCH
    assert trying.cseq == request.cseq
    # An INVITE retransmission in Proceeding gets the last provisional again.
    driver.advance(0.3)
    driver.receive_request(again(request))
    assert sent_statuses(driver)[-1] == (0.501, 100, True)
    assert driver.layer.state_of(tid) is State.PROCEEDING


def test_no_100_trying_when_the_tu_answers_in_time() -> None:
    driver = LayerDriver()
    request = invite()
    tid = new_server(driver, request)
    driver.advance(0.1)
    ringing = request.create_response(180, to_tag="t")
    assert driver.layer.send_response(ringing, driver.now) == tid
    driver.drain()
    assert driver.layer.get_timer() is None  # the 100 Trying timer was stopped
    driver.advance(1.0)
    assert sent_statuses(driver) == [(0.1, 180, False)]
    driver.receive_request(again(request))
    assert sent_statuses(driver)[-1] == (1.1, 180, True)


def test_retransmission_before_any_response_is_absorbed() -> None:
    driver = LayerDriver()
    request = invite()
    new_server(driver, request)
    driver.advance(0.05)
    assert driver.receive_request(again(request)) == []
    assert driver.layer.stats.absorbed == 0  # handled by the table: nothing to resend yet


# --- INVITE server: non-2xx final, Completed, Confirmed ------------------------------------


def test_non_2xx_final_is_retransmitted_by_timer_g_until_timer_h() -> None:
    driver = LayerDriver()
    request = invite()
    tid = new_server(driver, request)
    driver.send_response(request.create_response(486, to_tag="t"))
    assert driver.layer.state_of(tid) is State.COMPLETED
    driver.advance(40)
    resent = [when for when, status, again in sent_statuses(driver) if again]
    # Timer G: T1 doubling, capped at T2; Timer H = 64*T1 gives up waiting for the ACK.
    assert resent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert driver.of(TransactionTimedOut) == [TransactionTimedOut(tid, "H")]
    assert driver.times(TransactionTimedOut) == [32.0]
    assert driver.of(TransactionTerminated) == [TransactionTerminated(tid)]
    assert len(driver.layer) == 0


def test_ack_confirms_stops_g_and_timer_i_absorbs_ack_retransmissions() -> None:
    driver = LayerDriver()
    request = invite()
    tid = new_server(driver, request)
    final = request.create_response(404, to_tag="t")
    driver.send_response(final)
    driver.advance(1.0)  # one retransmission at 0.5
    driver.receive_request(again(request))  # INVITE retransmission: final resent
    assert sent_statuses(driver)[-1] == (1.0, 404, True)
    assert driver.receive_request(ack_for(request, final)) == []  # not passed to the TU
    assert driver.layer.state_of(tid) is State.CONFIRMED
    assert driver.receive_request(ack_for(request, final)) == []  # absorbed
    assert driver.receive_request(again(request)) == []  # absorbed in Confirmed
    driver.advance(4.999)
    assert driver.layer.state_of(tid) is State.CONFIRMED
    driver.advance(0.002)
    assert driver.times(TransactionTerminated) == [6.0]  # Timer I = T4 after the ACK
    assert [s for _, s, resend in sent_statuses(driver) if resend] == [404, 404]
    assert not driver.of(TransactionTimedOut)


def test_over_tcp_no_timer_g_and_the_ack_terminates_at_once() -> None:
    driver = LayerDriver(transport="tcp")
    request = invite(transport="TCP")
    tid = new_server(driver, request)
    final = request.create_response(480, to_tag="t")
    driver.send_response(final)
    driver.advance(10)
    assert [resend for *_, resend in sent_statuses(driver)] == [False]
    events = driver.receive_request(ack_for(request, final))
    assert events == [TransactionTerminated(tid)]  # Timer I = 0


def test_over_tcp_timer_h_still_runs() -> None:
    driver = LayerDriver(transport="tcp")
    request = invite(transport="TCP")
    tid = new_server(driver, request)
    driver.send_response(request.create_response(500, to_tag="t"))
    driver.advance(40)
    assert driver.of(TransactionTimedOut) == [TransactionTimedOut(tid, "H")]


# --- INVITE server: 2xx and the RFC 6026 Accepted state -----------------------------------


def test_2xx_moves_to_accepted_where_the_tu_retransmits_and_invites_are_absorbed() -> None:
    driver = LayerDriver()
    request = invite()
    tid = new_server(driver, request)
    ok = request.create_response(200, to_tag="t")
    driver.send_response(ok)
    assert driver.layer.state_of(tid) is State.ACCEPTED
    driver.advance(2.0)
    assert [s for _, s, resend in sent_statuses(driver) if resend] == []  # not on its own
    assert driver.receive_request(again(request)) == []  # absorbed, nothing resent
    first = driver.of(SendMessage)[-1]
    driver.send_response(ok)  # the TU's own 2xx retransmission goes out, same bytes
    resent = driver.of(SendMessage)[-1]
    assert resent.retransmission and resent.data is first.data
    # An ACK for the 2xx normally has its own branch: the TU gets it outside the transaction.
    ack = build_request("ACK", branch="z9hG4bK-ack-2xx", to_tag="t")
    assert driver.receive_request(ack) == [RequestReceived(None, ack, driver.flow)]
    # One that reuses the INVITE's branch matches the transaction and still goes to the TU.
    same_branch_ack = build_request("ACK", branch=BRANCH, to_tag="t")
    assert driver.receive_request(same_branch_ack) == [
        RequestReceived(tid, same_branch_ack, driver.flow)
    ]
    driver.send_response(request.create_response(486, to_tag="t"))  # too late: absorbed
    driver.advance(30.0 - 0.001)
    assert driver.layer.state_of(tid) is State.ACCEPTED
    driver.advance(0.002)
    assert driver.times(TransactionTerminated) == [32.0]  # Timer L = 64*T1 from the 2xx
    assert [s for _, s, _ in sent_statuses(driver)] == [200, 200]


def test_provisionals_then_2xx() -> None:
    driver = LayerDriver()
    request = invite()
    tid = new_server(driver, request)
    driver.send_response(request.create_response(100))
    driver.send_response(request.create_response(183, to_tag="t"))
    driver.send_response(request.create_response(200, to_tag="t"))
    assert [s for _, s, _ in sent_statuses(driver)] == [100, 183, 200]
    assert driver.layer.state_of(tid) is State.ACCEPTED


# --- non-INVITE server ---------------------------------------------------------------------


def test_non_invite_trying_absorbs_then_proceeding_and_completed_resend() -> None:
    driver = LayerDriver()
    request = build_request("REGISTER", branch=BRANCH)
    tid = new_server(driver, request)
    driver.advance(1.0)
    assert driver.layer.state_of(tid) is State.TRYING
    assert driver.receive_request(again(request)) == []  # nothing to resend yet
    assert sent_statuses(driver) == []  # and no 100 Trying for non-INVITE

    driver.send_response(request.create_response(100))
    assert driver.layer.state_of(tid) is State.PROCEEDING
    driver.receive_request(again(request))
    driver.send_response(request.create_response(401, to_tag="t"))
    assert driver.layer.state_of(tid) is State.COMPLETED
    driver.receive_request(again(request))
    driver.send_response(request.create_response(200, to_tag="t"))  # second final: absorbed
    assert [(s, r) for _, s, r in sent_statuses(driver)] == [
        (100, False),
        (100, True),
        (401, False),
        (401, True),
    ]
    driver.advance(31.999)
    assert driver.layer.state_of(tid) is State.COMPLETED
    driver.advance(0.002)
    assert driver.times(TransactionTerminated) == [33.0]  # Timer J = 64*T1 on UDP
    assert len(driver.layer) == 0


def test_non_invite_final_straight_from_trying() -> None:
    driver = LayerDriver()
    request = build_request("OPTIONS", branch=BRANCH)
    tid = new_server(driver, request)
    driver.send_response(request.create_response(200, to_tag="t"))
    assert driver.layer.state_of(tid) is State.COMPLETED


def test_timer_j_is_zero_over_tcp() -> None:
    driver = LayerDriver(transport="tcp")
    request = build_request("OPTIONS", branch=BRANCH, transport="TCP")
    tid = new_server(driver, request)
    events = driver.send_response(request.create_response(200, to_tag="t"))
    assert [type(e) for e in events] == [SendMessage, TransactionTerminated]
    assert driver.layer.state_of(tid) is None


# --- send_response matching ----------------------------------------------------------------


def test_send_response_needs_a_matching_server_transaction() -> None:
    driver = LayerDriver()
    request = build_request("OPTIONS", branch=BRANCH)
    tid = new_server(driver, request)
    other = build_request("OPTIONS", branch="z9hG4bK-other")
    assert driver.layer.send_response(other.create_response(200), driver.now) is None
    moved = build_request("OPTIONS", branch=BRANCH, via_host="10.9.9.9")
    assert driver.layer.send_response(moved.create_response(200), driver.now) is None
    assert driver.layer.send_response(Response(200, "OK"), driver.now) is None  # no Via
    assert driver.layer.send_response(request.create_response(200), driver.now, 999) is None
    client_id = driver.send_request(build_request("OPTIONS", branch="z9hG4bK-mine"))
    assert driver.layer.send_response(request.create_response(200), driver.now, client_id) is None
    assert driver.drain() == []
    assert driver.layer.send_response(request.create_response(200), driver.now, tid) == tid


def test_sent_by_is_part_of_the_key() -> None:
    driver = LayerDriver()
    first = new_server(driver, build_request("OPTIONS", branch=BRANCH, via_host="10.0.0.7"))
    second = new_server(
        driver,
        build_request("OPTIONS", branch=BRANCH, via_host="10.0.0.8", from_tag="other"),
    )
    third = new_server(
        driver, build_request("OPTIONS", branch=BRANCH, via_port=5070, from_tag="third")
    )
    assert len({first, second, third}) == 3 and len(driver.layer) == 3


def test_host_case_does_not_matter_but_port_does() -> None:
    driver = LayerDriver()
    tid = new_server(driver, build_request("OPTIONS", branch=BRANCH, via_host="Host.Example"))
    retransmission = build_request("OPTIONS", branch=BRANCH, via_host="host.example")
    assert driver.receive_request(retransmission) == []
    assert len(driver.layer) == 1 and driver.layer.state_of(tid) is State.TRYING


# --- CANCEL ------------------------------------------------------------------------------


def test_cancel_is_its_own_transaction_and_names_the_invite_it_cancels() -> None:
    driver = LayerDriver()
    request = invite()
    invite_id = new_server(driver, request)
    cancel = again(build_cancel(request))
    assert isinstance(cancel, Request)
    events = driver.receive_request(cancel)
    assert len(events) == 1 and isinstance(events[0], CancelReceived)
    received = events[0]
    assert received.cancelled_transaction_id == invite_id
    assert received.transaction_id != invite_id and received.request is cancel
    driver.send_response(cancel.create_response(200, to_tag="t"))
    driver.send_response(request.create_response(487, to_tag="t"))
    assert driver.layer.state_of(invite_id) is State.COMPLETED
    assert driver.layer.state_of(received.transaction_id) is State.COMPLETED
    assert driver.receive_request(again(cancel)) != []  # CANCEL retransmission: 200 again


def test_cancel_without_a_matching_invite() -> None:
    driver = LayerDriver()
    cancel = build_request("CANCEL", branch="z9hG4bK-unknown")
    events = driver.receive_request(cancel)
    assert len(events) == 1 and isinstance(events[0], CancelReceived)
    assert events[0].cancelled_transaction_id is None


# --- merged requests (§8.2.2.2) --------------------------------------------------------------


def test_merged_request_is_answered_482_by_the_layer() -> None:
    driver = LayerDriver()
    original = invite(branch="z9hG4bK-path-1")
    tid = new_server(driver, original)
    forked = invite(branch="z9hG4bK-path-2", via_host="10.0.0.9")
    events = driver.receive_request(forked)
    assert len(events) == 1 and isinstance(events[0], SendMessage)
    loop = events[0].message
    assert isinstance(loop, Response) and loop.status == 482
    assert loop.top_via.branch == "z9hG4bK-path-2" and loop.to_addr.tag is not None
    assert driver.layer.stats.merged_requests == 1
    # Its retransmission gets the 482 again; its ACK is absorbed; the TU never hears of it.
    resent = driver.receive_request(again(forked))
    assert [(type(e), getattr(e, "retransmission", None)) for e in resent] == [(SendMessage, True)]
    assert driver.receive_request(ack_for(forked, loop)) == []
    driver.advance(100)
    assert driver.of(TransactionTerminated) == []  # the original waits for its TU
    assert driver.layer.state_of(tid) is State.PROCEEDING
    assert len(driver.layer) == 1


def test_merged_request_timeout_is_not_reported() -> None:
    driver = LayerDriver()
    new_server(driver, invite(branch="z9hG4bK-path-1"))
    driver.receive_request(invite(branch="z9hG4bK-path-2"))
    driver.advance(40)  # no ACK for the 482: Timer H fires for a transaction the TU never saw
    assert driver.of(TransactionTimedOut) == [] and len(driver.layer) == 1


def test_requests_with_a_to_tag_are_never_merged() -> None:
    driver = LayerDriver()
    new_server(driver, build_request("BYE", branch="z9hG4bK-1", to_tag="x"))
    new_server(driver, build_request("BYE", branch="z9hG4bK-2", to_tag="x"))
    assert driver.layer.stats.merged_requests == 0 and len(driver.layer) == 2


def test_a_request_is_not_merged_once_the_first_transaction_is_gone() -> None:
    driver = LayerDriver()
    first = build_request("MESSAGE", branch="z9hG4bK-1")
    tid = new_server(driver, first)
    driver.send_response(first.create_response(200, to_tag="t"), tid)
    driver.advance(40)
    assert len(driver.layer) == 0
    new_server(driver, build_request("MESSAGE", branch="z9hG4bK-2"))
    assert driver.layer.stats.merged_requests == 0


def test_cancel_of_a_merged_invite_names_no_transaction() -> None:
    driver = LayerDriver()
    new_server(driver, invite(branch="z9hG4bK-path-1"))
    forked = invite(branch="z9hG4bK-path-2")
    driver.receive_request(forked)
    events = driver.receive_request(build_cancel(forked))
    assert len(events) == 1 and isinstance(events[0], CancelReceived)
    assert events[0].cancelled_transaction_id is None


# --- RFC 2543 fallback matching (no magic cookie) ---------------------------------------------


def test_rfc2543_invite_retransmission_response_and_ack_match() -> None:
    driver = LayerDriver()
    request = invite(branch=None)
    tid = new_server(driver, request)
    assert driver.receive_request(again(request)) == []  # matched, nothing to resend yet
    final = request.create_response(486, to_tag="t")
    assert driver.layer.send_response(final, driver.now) == tid  # matched without a branch
    driver.drain()
    assert driver.layer.state_of(tid) is State.COMPLETED
    wrong_tag = build_request("ACK", branch=None, to_tag="someone-else", cseq_method="ACK")
    assert driver.receive_request(wrong_tag) == [RequestReceived(None, wrong_tag, driver.flow)]
    assert driver.receive_request(ack_for(request, final)) == []
    assert driver.layer.state_of(tid) is State.CONFIRMED
    driver.advance(10)
    assert len(driver.layer) == 0


def test_rfc2543_requests_differing_in_cseq_are_different_transactions() -> None:
    driver = LayerDriver()
    new_server(driver, build_request("OPTIONS", branch=None, cseq=1))
    new_server(driver, build_request("OPTIONS", branch=None, cseq=2))
    assert len(driver.layer) == 2


def test_rfc2543_ack_before_any_response_is_absorbed() -> None:
    driver = LayerDriver()
    request = invite(branch=None)
    tid = new_server(driver, request)
    ack = build_request("ACK", branch=None, cseq_method="ACK")
    assert driver.receive_request(ack) == []  # matches the INVITE in Proceeding: absorbed
    assert driver.layer.state_of(tid) is State.PROCEEDING


# --- errors --------------------------------------------------------------------------------


def test_transport_error_on_a_server_transaction() -> None:
    driver = LayerDriver()
    request = build_request("OPTIONS", branch=BRANCH)
    tid = new_server(driver, request)
    driver.send_response(request.create_response(180, to_tag="t"))
    driver.layer.transport_error(tid, driver.now)
    assert driver.drain() == [TransportFailed(tid), TransactionTerminated(tid)]


def test_transport_error_in_accepted_is_reported_but_the_transaction_stays() -> None:
    driver = LayerDriver()
    request = invite()
    tid = new_server(driver, request)
    driver.send_response(request.create_response(200, to_tag="t"))
    driver.layer.transport_error(tid, driver.now)
    assert driver.drain() == [TransportFailed(tid)]
    assert driver.layer.state_of(tid) is State.ACCEPTED


def test_malformed_requests_are_dropped_without_an_exception() -> None:
    driver = LayerDriver()
    bare = Request("OPTIONS", parse_uri("sip:x@example.com"))  # no Via at all
    assert driver.receive_request(bare) == []
    assert driver.layer.stats.malformed == 1
    assert len(driver.layer) == 0


def test_transport_error_of_a_merged_request_is_not_reported() -> None:
    driver = LayerDriver()
    new_server(driver, invite(branch="z9hG4bK-path-1"))
    loop = driver.receive_request(invite(branch="z9hG4bK-path-2"))
    assert isinstance(loop[0], SendMessage) and loop[0].transaction_id is not None
    driver.layer.transport_error(loop[0].transaction_id, driver.now)
    assert driver.drain() == [] and len(driver.layer) == 1


def test_tu_can_destroy_a_server_transaction() -> None:
    driver = LayerDriver()
    request = invite()
    tid = new_server(driver, request)
    assert driver.layer.terminate(tid, driver.now)
    assert driver.drain() == [TransactionTerminated(tid)]
    assert driver.layer.send_response(request.create_response(200), driver.now) is None
    assert len(driver.layer) == 0 and driver.layer.get_timer() is None


def test_a_lingering_transaction_lets_go_of_what_it_no_longer_reads() -> None:
    """Accepted lasts 64*T1: it keeps the 2xx's bytes, not the parsed INVITE or the 2xx itself
    (a busy server holds tens of thousands of these). The TU's retransmission of the 2xx it
    still holds goes out as the same bytes."""
    layer = TransactionLayer()
    flow = Flow("udp", ("192.0.2.1", 5060), ("192.0.2.9", 5060))
    request = invite()
    layer.receive_request(request, flow, 0.0)
    received = layer.next_event()
    assert isinstance(received, RequestReceived) and received.transaction_id is not None
    tid = received.transaction_id
    ok = request.create_response(200, to_tag="t")
    layer.send_response(ok, 0.0, tid)
    sent = layer.next_event()
    assert isinstance(sent, SendMessage) and layer.next_event() is None
    assert layer.state_of(tid) is State.ACCEPTED
    layer.send_response(ok, 0.5)  # found by branch, as the TU's 2xx retransmissions are
    resent = layer.next_event()
    assert isinstance(resent, SendMessage)
    assert resent.retransmission and resent.data is sent.data
    request_ref, ok_ref = weakref.ref(request), weakref.ref(ok)
    del request, ok, received, sent, resent
    assert request_ref() is None and ok_ref() is None
    assert layer.state_of(tid) is State.ACCEPTED  # still absorbing INVITE retransmissions
    layer.receive_request(invite(), flow, 1.0)
    assert layer.next_event() is None
