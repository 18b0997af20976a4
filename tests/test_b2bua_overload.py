"""Calls end under overload orderings, driven through the pure call manager with a fake clock.

At 900 calls/s callkeeper reads its socket seconds late: the caller's INVITE arrives
retransmitted, the callee retransmits its 200 (each one re-ACKed), our 2xx to the caller is
retransmitted because its ACK waits unread in the socket, and the BYE comes after all that.
Whatever order they come in, the call ends when either side's BYE arrives, and the other
leg's silence only costs its BYE transaction's timeout, never the call.
"""

from __future__ import annotations

from callkeeper.sip.message import Request, Response
from support.core_calls import (
    CALLEE,
    CALLER,
    TIMER_F,
    callee_bye,
    callee_response,
    caller_request,
    invite,
    make_driver,
)
from support.core_driver import CoreDriver


def answered_late(driver: CoreDriver) -> tuple[Response, Request]:
    """Set-up as an overloaded callkeeper sees it: the caller's INVITE twice, the callee's 200
    three times (re-ACKed each time), and our 200 to the caller retransmitted (no ACK yet)."""
    driver.receive(invite(), CALLER)
    driver.receive(invite(), CALLER)  # its retransmission, read in the same burst
    (b_invite,) = driver.requests(CALLEE, "INVITE")
    driver.receive(callee_response(b_invite, 180), CALLEE)
    for _ in range(3):
        driver.receive(callee_response(b_invite, 200), CALLEE)
    ok = [r for r in driver.responses(CALLER) if r.status == 200]
    assert len(ok) == 1
    driver.advance(1.6)  # T1 and 2·T1 pass with the ACK still unread in the socket
    assert len([r for r in driver.responses(CALLER) if r.status == 200]) == 2
    assert len(driver.core.b2bua) == 1
    return ok[0], b_invite


def bye_answered(driver: CoreDriver, to: tuple[str, int]) -> bool:
    return any(r.status == 200 and r.cseq.method == "BYE" for r in driver.responses(to))


def test_the_callers_late_bye_ends_the_call_although_the_callee_never_answers_its_bye() -> None:
    driver = make_driver()
    ok, _ = answered_late(driver)
    driver.receive(caller_request("ACK", 1, ok), CALLER)
    driver.receive(caller_request("BYE", 2, ok), CALLER)
    assert bye_answered(driver, CALLER)
    assert len(driver.core.b2bua) == 0  # ended at once, not when the callee answers
    assert driver.requests(CALLEE, "BYE")
    driver.advance(TIMER_F + 1)  # the callee (it aborted the call) never answers the BYE
    assert driver.core.transaction_count == 0
    assert len(driver.core.b2bua) == 0


def test_a_bye_before_the_ack_ends_the_call_and_stops_the_2xx_retransmissions() -> None:
    driver = make_driver()
    ok, _ = answered_late(driver)
    driver.receive(caller_request("BYE", 2, ok), CALLER)  # the ACK was lost
    assert bye_answered(driver, CALLER)
    assert len(driver.core.b2bua) == 0
    driver.take()
    driver.advance(TIMER_F + 1)
    assert not [r for r in driver.responses(CALLER) if r.cseq.method == "INVITE"]
    driver.receive(caller_request("ACK", 1, ok), CALLER)  # very late: nothing to do any more
    assert len(driver.core.b2bua) == 0


def test_the_callees_bye_ends_the_call_although_the_caller_never_answers_its_bye() -> None:
    driver = make_driver()
    ok, b_invite = answered_late(driver)
    driver.receive(caller_request("ACK", 1, ok), CALLER)
    driver.receive(callee_bye(b_invite), CALLEE)
    assert bye_answered(driver, CALLEE)
    assert len(driver.core.b2bua) == 0
    assert driver.requests(CALLER, "BYE")
    driver.advance(TIMER_F + 1)
    assert driver.core.transaction_count == 0
