"""RFC 3263 §4.3 failover in the pure core: a fork to a host name with several addresses goes on
to the next one when the current one answers 503, times out without any response, or cannot be
reached; any other answer ends it. Fake clock, hand-written responses."""

from __future__ import annotations

from callkeeper.config import Config
from callkeeper.sip.locate import Lookup
from callkeeper.sip.message import Request, Response
from callkeeper.sip.transport import Flow
from support.core_calls import CALLER, SDP
from support.core_driver import SERVER, CoreDriver

PBX = Lookup("pbx.test", "udp", None)
PBX_TCP = Lookup("pbx.test", "tcp", None)
BOB = Lookup("bob.test", "udp", 7002)
FIRST, SECOND, THIRD = ("192.0.2.7", 5060), ("192.0.2.8", 5070), ("192.0.2.9", 5060)
BOB_IP = ("192.0.2.50", 7003)
TIMER_B = 32.0  # 64·T1 with the default T1


def _driver(trunk_uri: str = "sip:pbx.test") -> CoreDriver:
    config = Config(
        sip={"listen": ["udp:127.0.0.1:5060"], "trusted_sources": ["127.0.0.1"]},
        users=[
            {
                "name": "bob",
                "static_contacts": ["sip:bob@bob.test:7002", f"sip:bob@{BOB_IP[0]}:{BOB_IP[1]}"],
            }
        ],
        trunks=[{"name": "pbx", "uri": trunk_uri}],
    )
    driver = CoreDriver(config)
    driver.core.add_local_address("tcp", SERVER)
    return driver


def _caller_invite(user: str = "+4930123", call: str = "a") -> str:
    body = SDP.replace("\n", "\r\n")
    return (
        f"INVITE sip:{user}@127.0.0.1:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-{call}\n"
        f"Max-Forwards: 70\nFrom: <sip:alice@127.0.0.1>;tag=at\nTo: <sip:{user}@127.0.0.1>\n"
        f"Call-ID: {call}-call\nCSeq: 1 INVITE\n"
        f"Contact: <sip:alice@{CALLER[0]}:{CALLER[1]}>\nContent-Type: application/sdp\n"
        f"Content-Length: {len(body)}\n\n"
    ) + SDP


def _caller_cancel() -> str:
    return (
        "CANCEL sip:+4930123@127.0.0.1:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-a\n"
        "Max-Forwards: 70\nFrom: <sip:alice@127.0.0.1>;tag=at\nTo: <sip:+4930123@127.0.0.1>\n"
        "Call-ID: a-call\nCSeq: 1 CANCEL\nContent-Length: 0\n\n"
    )


def _answer(driver: CoreDriver, invite: Request, status: int, source: tuple[str, int],
            extra: str = "") -> None:  # fmt: skip
    body = SDP.replace("\n", "\r\n") if status == 200 else ""
    tag = "" if status == 100 else ";tag=far"
    text = (
        f"SIP/2.0 {status} Whatever\n"
        f"Via: {invite.headers.get('via')}\nFrom: {invite.headers.get('from')}\n"
        f"To: {invite.headers.get('to')}{tag}\nCall-ID: {invite.call_id}\n"
        f"CSeq: {invite.headers.get('cseq')}\nContact: <sip:far@{source[0]}:{source[1]}>\n{extra}"
        + ("Content-Type: application/sdp\n" if body else "")
        + f"Content-Length: {len(body)}\n\n"
    )
    driver.receive(text + (SDP if body else ""), source)


def _invites(driver: CoreDriver, to: tuple[str, int]) -> list[Request]:
    """The INVITE transactions sent to `to` since the last look (retransmissions left out)."""
    by_branch = {r.top_via.branch: r for r in driver.requests(to, "INVITE")}
    return list(by_branch.values())


def _caller_finals(driver: CoreDriver) -> list[int]:
    return [
        m.status
        for m in driver.take(CALLER)
        if isinstance(m, Response) and m.status >= 200 and m.cseq.method == "INVITE"
    ]


def _call_to_pbx(driver: CoreDriver, addresses: list[tuple[str, int]]) -> Request:
    driver.core.set_resolved(PBX, addresses, driver.now)
    driver.receive(_caller_invite(), CALLER)
    (first,) = _invites(driver, addresses[0])
    return first


def test_a_503_sends_the_invite_to_the_next_address_as_a_new_transaction() -> None:
    driver = _driver()
    first = _call_to_pbx(driver, [FIRST, SECOND])
    _answer(driver, first, 503, FIRST)
    (second,) = _invites(driver, SECOND)
    # RFC 3263 §4.3: identical but for the Via branch (same Call-ID, From tag, CSeq, URI).
    assert first.top_via.branch != second.top_via.branch
    for name in ("call-id", "from", "to", "cseq", "contact"):
        assert first.headers.get(name) == second.headers.get(name)
    assert str(second.uri) == str(first.uri) == "sip:+4930123@pbx.test"
    assert second.body == first.body
    assert [r.method for r in driver.requests(FIRST, "ACK")] == ["ACK"]  # the 503's ACK
    assert _caller_finals(driver) == []
    _answer(driver, second, 200, SECOND)
    assert _caller_finals(driver) == [200]
    assert driver.core.b2bua.dns_failovers == 1


def test_a_timeout_without_any_response_fails_over() -> None:
    driver = _driver()
    _call_to_pbx(driver, [FIRST, SECOND])
    driver.advance(TIMER_B - 1)
    assert _invites(driver, SECOND) == []
    driver.advance(2)
    (second,) = _invites(driver, SECOND)
    _answer(driver, second, 200, SECOND)
    assert _caller_finals(driver) == [200]


def test_a_100_trying_then_silence_does_not_fail_over() -> None:
    """RFC 3263 §4.3 counts a timeout only "without ever having received any response": a
    server that said 100 has the INVITE (and Timer B stops in Proceeding, RFC 3261 §17.1.1.2);
    another one could ring the callee a second time. The caller's CANCEL ends it, as before."""
    driver = _driver()
    first = _call_to_pbx(driver, [FIRST, SECOND])
    _answer(driver, first, 100, FIRST)
    driver.advance(TIMER_B + 1)
    assert _invites(driver, SECOND) == []
    assert _caller_finals(driver) == []
    driver.receive(_caller_cancel(), CALLER)
    assert 487 in _caller_finals(driver)
    assert len(driver.requests(FIRST, "CANCEL")) == 1


def test_a_503_after_ringing_does_not_fail_over() -> None:
    driver = _driver()
    first = _call_to_pbx(driver, [FIRST, SECOND])
    _answer(driver, first, 180, FIRST)
    _answer(driver, first, 503, FIRST)
    assert _invites(driver, SECOND) == []
    assert _caller_finals(driver) == [480]


def test_a_486_is_the_answer_no_failover() -> None:
    driver = _driver()
    first = _call_to_pbx(driver, [FIRST, SECOND])
    _answer(driver, first, 486, FIRST)
    assert _invites(driver, SECOND) == []
    assert _caller_finals(driver) == [486]
    assert driver.core.b2bua.dns_failovers == 0


def test_every_address_failing_gives_the_caller_the_last_failure_mapped() -> None:
    driver = _driver()
    first = _call_to_pbx(driver, [FIRST, SECOND, THIRD])
    _answer(driver, first, 503, FIRST)
    assert len(_invites(driver, SECOND)) == 1
    driver.advance(TIMER_B + 1)  # the second never answers
    (third,) = _invites(driver, THIRD)
    assert _caller_finals(driver) == []
    _answer(driver, third, 503, THIRD)
    assert _caller_finals(driver) == [480]  # 503 mapped as for any fork
    assert driver.core.b2bua.dns_failovers == 2
    assert len(driver.core.b2bua) == 0


def test_a_single_address_behaves_as_before() -> None:
    driver = _driver()
    first = _call_to_pbx(driver, [FIRST])
    _answer(driver, first, 503, FIRST)
    assert _caller_finals(driver) == [480]
    assert driver.core.b2bua.dns_failovers == 0


def test_cancel_during_failover_stops_it() -> None:
    driver = _driver()
    first = _call_to_pbx(driver, [FIRST, SECOND, THIRD])
    _answer(driver, first, 503, FIRST)
    (second,) = _invites(driver, SECOND)
    driver.receive(_caller_cancel(), CALLER)
    assert 487 in _caller_finals(driver)
    (cancel,) = driver.requests(SECOND, "CANCEL")
    assert cancel.top_via.branch == second.top_via.branch
    _answer(driver, second, 503, SECOND)  # a late 503 to the cancelled INVITE
    driver.advance(TIMER_B + 1)
    assert _invites(driver, THIRD) == []
    assert driver.core.b2bua.dns_failovers == 1


def test_a_refused_tcp_connection_fails_over_at_once() -> None:
    driver = _driver("sip:pbx.test;transport=tcp")
    driver.core.set_resolved(PBX_TCP, [FIRST, SECOND], driver.now)
    driver.receive(_caller_invite(), CALLER)
    assert len(_invites(driver, FIRST)) == 1
    # io/stream.py reports a failed connect as the loss of a flow to that address.
    driver.connection_lost(Flow("tcp", FIRST, connection=9))
    (second,) = _invites(driver, SECOND)
    _answer(driver, second, 200, SECOND)
    assert _caller_finals(driver) == [200]


def test_retry_after_puts_the_address_last_for_new_calls() -> None:
    driver = _driver()
    first = _call_to_pbx(driver, [FIRST, SECOND])
    _answer(driver, first, 503, FIRST, extra="Retry-After: 60\n")
    (second,) = _invites(driver, SECOND)
    _answer(driver, second, 486, SECOND)
    assert _caller_finals(driver) == [486]
    driver.receive(_caller_invite(call="b"), CALLER)
    (resting_last,) = _invites(driver, SECOND)
    assert _invites(driver, FIRST) == []
    _answer(driver, resting_last, 486, SECOND)
    driver.advance(61)  # rested long enough: back in its place
    driver.receive(_caller_invite(call="c"), CALLER)
    assert len(_invites(driver, FIRST)) == 1


def test_failover_is_per_fork_while_other_devices_ring() -> None:
    """bob has a static contact by name (two addresses) and one by IP: the named one fails
    over on its own; the IP one answering ends the call set-up and the retry is CANCELled."""
    driver = _driver()
    driver.core.set_resolved(BOB, [("192.0.2.60", 7002), ("192.0.2.61", 7002)], driver.now)
    driver.receive(_caller_invite("bob"), CALLER)
    (named,) = _invites(driver, ("192.0.2.60", 7002))
    (by_ip,) = _invites(driver, BOB_IP)
    _answer(driver, named, 503, ("192.0.2.60", 7002))
    (retry,) = _invites(driver, ("192.0.2.61", 7002))
    assert _caller_finals(driver) == []
    _answer(driver, by_ip, 200, BOB_IP)
    assert _caller_finals(driver) == [200]
    (cancel,) = driver.requests(("192.0.2.61", 7002), "CANCEL")
    assert cancel.top_via.branch == retry.top_via.branch
