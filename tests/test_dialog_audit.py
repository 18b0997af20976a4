"""Dialog audit (calls/dialog_audit.py): in-dialog OPTIONS find legs that forgot their call.

Driven through the pure call manager with a fake clock. alice calls from a trusted source, so
nothing watches her phone; bob is a static contact, watched by the liveness monitor (its own
probing is slowed down here so that only the audit speaks).
"""

from __future__ import annotations

from callkeeper.calls.model import Call, CallState
from callkeeper.sip.message import Request
from support.core_calls import (
    CALLEE,
    CALLER,
    TIMER_F,
    callee_response,
    caller_request,
    invite,
    make_driver,
    reply,
)
from support.core_driver import CoreDriver

INTERVAL = 20.0
QUIET_MONITOR = {"options_interval": 3600.0, "in_call_interval": 3600.0}


TRUNK = ("127.0.0.1", 7003)


def established(
    interval: float = INTERVAL, session_expires: int | None = None, callee: str = "bob"
) -> CoreDriver:
    """An answered, ACKed call alice → `callee` (bob, or a number that goes out through the
    trunk at TRUNK); everything sent so far is taken."""
    driver = make_driver(
        keepalive={"dialog_interval": interval, **QUIET_MONITOR},
        trunks=[{"name": "pstn", "uri": f"sip:{TRUNK[0]}:{TRUNK[1]}", "match": "0"}],
    )
    driver.core.start(driver.now)  # as `serve` does: bob's static contact is watched from now
    text = invite().replace("sip:bob@", f"sip:{callee}@")
    if session_expires is not None:
        text = text.replace(
            "Max-Forwards: 70\n",
            f"Max-Forwards: 70\nSession-Expires: {session_expires}\nSupported: timer\n",
        )
    driver.receive(text, CALLER)
    far = CALLEE if callee == "bob" else TRUNK
    (b_invite,) = driver.requests(far, "INVITE")
    driver.receive(callee_response(b_invite, 200), far)
    (ok,) = [r for r in driver.responses(CALLER) if r.status == 200]
    driver.receive(caller_request("ACK", 1, ok), CALLER)
    driver.take()
    return driver


def the_call(driver: CoreDriver) -> Call:
    (call,) = driver.core.b2bua.calls.values()
    return call


def audits(driver: CoreDriver, to: tuple[str, int]) -> list[Request]:
    """In-dialog OPTIONS sent to `to` since the last look (they carry the dialog's To tag)."""
    return [r for r in driver.requests(to, "OPTIONS") if r.to_addr.tag is not None]


def test_each_leg_is_audited_every_interval_and_any_answer_but_481_keeps_the_call() -> None:
    driver = established()
    call = the_call(driver)
    driver.advance(INTERVAL - 1)
    assert not driver.take()
    driver.advance(1)
    for status, to in ((200, CALLER), (405, CALLEE)):
        (options,) = audits(driver, to)
        leg = call.a if to == CALLER else call.b
        assert leg is not None and leg.dialog is not None
        assert options.call_id == leg.dialog.id.call_id
        driver.receive(reply(options, status), to)
    driver.advance(INTERVAL)
    (options,) = audits(driver, CALLER)
    driver.receive(reply(options, 486), CALLER)  # busy in a call: still its dialog
    (options,) = audits(driver, CALLEE)
    driver.receive(reply(options, 200), CALLEE)
    assert call.state is CallState.ACTIVE
    assert not driver.take()


def test_481_from_the_unwatched_caller_ends_the_call_with_a_bye_to_the_callee() -> None:
    driver = established()
    driver.advance(INTERVAL)
    (options,) = audits(driver, CALLER)
    driver.receive(reply(options, 481), CALLER)
    assert len(driver.core.b2bua) == 0
    assert driver.requests(CALLEE, "BYE")
    assert not driver.requests(CALLER, "BYE")  # its dialog is gone already


def test_481_from_a_watched_phone_starts_its_recovery_instead() -> None:
    driver = established()
    call = the_call(driver)
    driver.advance(INTERVAL)
    (options,) = audits(driver, CALLEE)
    driver.receive(reply(options, 481), CALLEE)
    assert call.state is CallState.HOLDING
    assert not driver.requests(CALLER, "BYE")


def test_an_unwatched_leg_that_never_answers_is_hung_up_after_timer_f() -> None:
    """Both phones forgot the call (e.g. each lost a BYE under overload) and stay silent."""
    driver = established()
    driver.advance(INTERVAL)
    assert audits(driver, CALLER) and audits(driver, CALLEE)
    driver.advance(TIMER_F - 1)
    assert len(driver.core.b2bua) == 1
    driver.advance(1)
    assert len(driver.core.b2bua) == 0
    assert driver.requests(CALLER, "BYE") and driver.requests(CALLEE, "BYE")


def test_a_watched_phones_silence_is_left_to_the_liveness_monitor() -> None:
    driver = established()
    call = the_call(driver)
    driver.advance(INTERVAL)
    (options,) = audits(driver, CALLER)
    driver.receive(reply(options, 200), CALLER)
    driver.advance(TIMER_F + 1)  # bob never answers his audit
    assert call.state is CallState.ACTIVE
    assert not driver.requests(CALLER, "BYE")


def test_a_silent_trunk_leg_is_hung_up_too_nobody_watches_a_trunk() -> None:
    driver = established(callee="0301234")
    driver.advance(INTERVAL)
    (options,) = audits(driver, CALLER)
    driver.receive(reply(options, 200), CALLER)
    assert audits(driver, TRUNK)
    driver.advance(TIMER_F)
    assert len(driver.core.b2bua) == 0
    assert driver.requests(CALLER, "BYE")


def test_off_at_zero_and_legs_with_a_session_timer_are_left_to_their_refreshes() -> None:
    driver = established(interval=0)
    driver.advance(10 * INTERVAL)
    assert not audits(driver, CALLER) and not audits(driver, CALLEE)

    driver = established(session_expires=1800)
    call = the_call(driver)
    assert call.a.session_timer is not None
    driver.advance(INTERVAL)
    assert not audits(driver, CALLER)
