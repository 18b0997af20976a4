"""The recovery engine end to end through the pure call manager, with a fake clock.

A caller (trusted, as `carol`) calls alice; alice's phone then fails in the ways DESIGN.md
lists, and each test follows the SIP callkeeper sends: the survivor held (never BYEd), the
failed phone asked to reboot, then resume (same dialog, or a new INVITE after 481), transfer
down the fallback chain, or a clean end. The wire tests repeat the main paths with baresip.
"""

from __future__ import annotations

from typing import Any

import pytest

from callkeeper.calls.events import CallHeld, CallLost, CallRecovered, CallTransferring
from callkeeper.calls.model import CallState
from callkeeper.config import Config
from callkeeper.sip.message import Request, Response
from support.fake_phones import Dialog, Network, register, reply, sdp

CALLER = ("127.0.0.1", 7001)
ALICE1 = ("127.0.0.1", 7101)
ALICE2 = ("127.0.0.1", 7102)
TRUNK = ("127.0.0.1", 7201)
VOICEMAIL = ("127.0.0.1", 7301)
GRACE = 10.0
RING = 5.0


def make_network(
    *, second_device: bool = False, mobile: bool = False, voicemail: bool = False
) -> Network:
    statics = [f"sip:alice@{ALICE1[0]}:{ALICE1[1]}"]
    if second_device:
        statics.append(f"sip:alice@{ALICE2[0]}:{ALICE2[1]}")
    alice: dict[str, Any] = {"name": "alice", "static_contacts": statics, "voicemail": voicemail}
    if mobile:
        alice["mobile"] = "tel:+4915100001"
    config = Config(
        sip={"listen": ["udp:127.0.0.1:5060"], "trusted_sources": ["127.0.0.1"]},
        keepalive={"options_interval": 5, "in_call_interval": 1, "misses": 3},
        recovery={
            "grace": GRACE,
            "ring_timeout": RING,
            "voicemail_uri": f"sip:{VOICEMAIL[0]}:{VOICEMAIL[1]}",
        },
        users=[alice, {"name": "carol", "password": "x"}],
        trunks=[{"name": "pstn", "uri": f"sip:{TRUNK[0]}:{TRUNK[1]}", "match": "+49"}],
    )
    network = Network(config)
    network.up = {ALICE1, ALICE2}
    return network


def caller_invite() -> str:
    body = sdp(5000, origin="carol 7 7")
    return (
        "INVITE sip:alice@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-c1;rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:carol@127.0.0.1>;tag=ct\r\nTo: <sip:alice@127.0.0.1>\r\n"
        "Call-ID: rec-call@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:carol@{CALLER[0]}:{CALLER[1]}>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )


class Call:
    """The established call: the caller's and alice's phone's views of their dialogs."""

    def __init__(self, network: Network, devices: tuple[tuple[str, int], ...] = (ALICE1,)) -> None:
        self.network = network
        network.send(caller_invite(), CALLER)
        invites = {device: network.one(device, "INVITE") for device in devices}
        answered = devices[0]
        self.b_invite = invites[answered]
        network.send(reply(self.b_invite, 200, answered, body=sdp(6000)), answered)
        for device in devices[1:]:
            cancel = network.one(device, "CANCEL")
            network.send(reply(cancel, 200, device), device)
            network.send(reply(invites[device], 487, device), device)
        ok = network.take(CALLER, status=200)[0]
        self.caller = Dialog(
            "rec-call@127.0.0.1",
            "<sip:carol@127.0.0.1>;tag=ct",
            str(ok.headers.get("to")),
            CALLER,
        )
        network.send(self.caller.request("ACK"), CALLER)
        assert network.requests(answered, "ACK")
        network.take(CALLER)
        (self.call_id,) = list(network.core.b2bua.calls)

    @property
    def state(self) -> CallState:
        call = self.network.core.b2bua.calls.get(self.call_id)
        return call.state if call is not None else CallState.ENDED

    def answer_reinvite(self, port: int, direction: str = "sendrecv") -> Request:
        """The caller answers callkeeper's re-INVITE; returns it."""
        reinvite = self.network.one(CALLER, "INVITE")
        self.network.send(
            reply(reinvite, 200, CALLER, to_tag="ct", body=sdp(port, direction, "carol 7 8")),
            CALLER,
        )
        assert self.network.requests(CALLER, "ACK")
        return reinvite


def events(network: Network) -> list[object]:
    out = []
    while (event := network.core.next_event()) is not None:
        out.append(event)
    return out


def fail_alice1(network: Network, call: Call) -> Request:
    """Silence alice's phone until it is DOWN; return the hold re-INVITE the caller got."""
    network.up.discard(ALICE1)
    deadline = network.now + 6
    while call.state is CallState.ACTIVE and network.now < deadline:
        network.run(0.1)
    assert call.state is CallState.HOLDING
    hold = call.answer_reinvite(5000, "recvonly")
    assert "a=sendonly" in hold.body.decode()
    notify = network.one(ALICE1, "NOTIFY")
    assert notify.headers.get("event") == "check-sync;reboot=true"
    return hold


def test_a_partitioned_phone_is_resumed_on_its_old_dialog_by_reinvite() -> None:
    network = make_network()
    call = Call(network)
    network.run(2)
    hold = fail_alice1(network, call)
    network.run(GRACE / 2)
    assert call.state is CallState.HOLDING and not network.requests(CALLER, "BYE")
    network.up.add(ALICE1)  # the network is back: its next probe answer is a sign of life
    network.run(1.5)
    assert call.state is CallState.RESUMING
    reinvite = network.one(ALICE1, "INVITE")
    assert reinvite.call_id == call.b_invite.call_id  # the old dialog, not a new call
    assert "Call-Info" not in str(reinvite.headers)
    network.send(reply(reinvite, 200, ALICE1, body=sdp(6002, origin="alice 1 2")), ALICE1)
    assert network.requests(ALICE1, "ACK")
    unhold = call.answer_reinvite(5000)
    body = unhold.body.decode()
    assert "m=audio 6002" in body and "a=sendrecv" in body
    # the caller keeps its view of the session: same o= session id, version + 1
    assert _origin(unhold) == (_origin(hold)[0], _origin(hold)[1] + 1)
    assert call.state is CallState.ACTIVE
    recovered = [e for e in events(network) if isinstance(e, CallRecovered)]
    assert [(r.outcome, r.new_dialog) for r in recovered] == [("resumed", False)]
    assert network.core.recovery.stats.outcomes["resumed"] == 1
    assert network.core.recovery.stats.resume.count == 1
    assert not network.requests(CALLER, "BYE")


def _origin(request: Request) -> tuple[str, int]:
    """(session id, version) of the o= line."""
    line = next(line for line in request.body.decode().splitlines() if line.startswith("o="))
    _, session_id, version, *_ = line[2:].split()
    return session_id, int(version)


def test_a_rebooted_phone_answers_481_and_is_rung_anew_with_auto_answer() -> None:
    network = make_network()
    call = Call(network)
    fail_alice1(network, call)
    network.up.add(ALICE1)
    network.run(1.5)
    reinvite = network.one(ALICE1, "INVITE")
    network.send(reply(reinvite, 481, ALICE1), ALICE1)
    invite = network.one(ALICE1, "INVITE")
    assert invite.call_id != call.b_invite.call_id
    assert invite.headers.get("call-info") == "<sip:callkeeper>;answer-after=0"
    assert "alert-autoanswer" in str(invite.headers.get("alert-info"))
    assert "m=audio 5000" in invite.body.decode()  # offered the caller's own streams
    network.send(reply(invite, 200, ALICE1, to_tag="new", body=sdp(6004)), ALICE1)
    assert network.requests(ALICE1, "ACK")
    unhold = call.answer_reinvite(5000)
    assert "m=audio 6004" in unhold.body.decode()
    assert call.state is CallState.ACTIVE
    (recovered,) = [e for e in events(network) if isinstance(e, CallRecovered)]
    assert recovered.outcome == "resumed" and recovered.new_dialog
    # the caller's BYE now reaches the new leg
    network.send(call.caller.request("BYE"), CALLER)
    bye = network.one(ALICE1, "BYE")
    assert bye.call_id == invite.call_id
    assert call.state is CallState.ENDED


def test_after_grace_the_other_device_rings_and_takes_the_call() -> None:
    network = make_network(second_device=True)
    call = Call(network, devices=(ALICE1, ALICE2))
    fail_alice1(network, call)
    network.run(GRACE - 4)
    assert not network.requests(ALICE2, "INVITE")
    network.run(4.5)
    assert call.state is CallState.TRANSFERRING
    invite = network.one(ALICE2, "INVITE")
    assert "Call-Info" not in str(invite.headers)  # another device rings normally
    network.send(reply(invite, 180, ALICE2), ALICE2)
    network.send(reply(invite, 200, ALICE2, body=sdp(6100)), ALICE2)
    assert network.requests(ALICE2, "ACK")
    assert network.requests(ALICE1, "BYE")  # best effort, to the old device
    unhold = call.answer_reinvite(5000)
    assert "m=audio 6100" in unhold.body.decode()
    assert call.state is CallState.ACTIVE
    (recovered,) = [e for e in events(network) if isinstance(e, CallRecovered)]
    assert recovered.outcome == "transferred"
    view = network.core.call_view(call.call_id, lambda t: t)
    assert view is not None and view["recoveries"] == 1


def test_the_chain_goes_on_to_the_mobile_then_voicemail() -> None:
    network = make_network(mobile=True, voicemail=True)
    call = Call(network)
    fail_alice1(network, call)
    network.run(GRACE + 0.5)
    mobile = network.one(TRUNK, "INVITE")
    assert mobile.uri.user == "+4915100001"
    network.send(reply(mobile, 486, TRUNK), TRUNK)
    assert network.requests(TRUNK, "ACK")
    voicemail = network.one(VOICEMAIL, "INVITE")
    assert voicemail.uri.user == "alice"  # the mailbox
    network.send(reply(voicemail, 200, VOICEMAIL, body=sdp(6200)), VOICEMAIL)
    call.answer_reinvite(5000)
    assert call.state is CallState.ACTIVE
    steps = [e.step for e in events(network) if isinstance(e, CallTransferring)]
    assert steps == ["mobile", "voicemail"]
    assert network.core.recovery.stats.outcomes["voicemail"] == 1


def test_a_step_that_does_not_answer_within_ring_timeout_is_cancelled() -> None:
    network = make_network(mobile=True, voicemail=True)
    call = Call(network)
    fail_alice1(network, call)
    network.run(GRACE + 0.5)
    mobile = network.one(TRUNK, "INVITE")
    network.send(reply(mobile, 180, TRUNK), TRUNK)
    network.run(RING)
    assert network.one(TRUNK, "CANCEL")
    assert network.one(VOICEMAIL, "INVITE")
    # a 200 that crosses the CANCEL is ACKed and hung up, not bridged
    network.send(reply(mobile, 200, TRUNK, body=sdp(6300)), TRUNK)
    assert network.requests(TRUNK, "ACK") and network.requests(TRUNK, "BYE")
    assert call.state is CallState.TRANSFERRING


def test_an_exhausted_chain_releases_the_caller_with_outcome_lost() -> None:
    network = make_network()
    call = Call(network)
    fail_alice1(network, call)
    network.run(GRACE + 0.5)
    assert network.requests(CALLER, "BYE")
    assert call.state is CallState.ENDED
    lost = [e for e in events(network) if isinstance(e, CallLost)]
    assert len(lost) == 1
    assert network.core.recovery.stats.outcomes["lost"] == 1


@pytest.mark.parametrize("when", ["holding", "transferring"])
def test_the_survivor_hanging_up_releases_everything(when: str) -> None:
    network = make_network(mobile=True)
    call = Call(network)
    fail_alice1(network, call)
    if when == "transferring":
        network.run(GRACE + 0.5)
        mobile = network.one(TRUNK, "INVITE")
        network.send(reply(mobile, 180, TRUNK), TRUNK)
    network.send(call.caller.request("BYE"), CALLER)
    assert network.take(CALLER, status=200)
    assert call.state is CallState.ENDED
    engine = network.core.recovery
    assert not engine.recoveries and engine.timers.next_deadline() is None
    if when == "transferring":
        assert network.one(TRUNK, "CANCEL")
    network.take(ALICE1)
    network.up.add(ALICE1)
    network.run(GRACE * 4)
    for address in (ALICE1, TRUNK, VOICEMAIL, ALICE2):
        assert not network.requests(address, "INVITE")
    assert network.core.calls_view(lambda t: t) == []
    assert engine.stats.outcomes["abandoned"] == 1


def test_a_phone_that_lost_its_dialog_answers_481_to_a_relayed_reinvite() -> None:
    """Rebooted faster than the liveness monitor could notice: the 481 starts the recovery."""
    network = make_network()
    call = Call(network)
    network.send(call.caller.request("INVITE", body=sdp(5000, origin="carol 7 8")), CALLER)
    relayed = network.one(ALICE1, "INVITE")
    network.send(reply(relayed, 481, ALICE1), ALICE1)
    assert call.state is CallState.HOLDING
    assert any(isinstance(e, CallHeld) for e in events(network))
    assert not network.requests(CALLER, "BYE")


def alice_device_invite(uri_user: str, source: tuple[str, int], port: int) -> str:
    body = sdp(port, origin="alice2 3 3")
    return (
        f"INVITE sip:{uri_user}@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source[0]}:{source[1]};branch=z9hG4bK-p1;rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a2\r\n"
        f"To: <sip:{uri_user}@127.0.0.1>\r\nCall-ID: pickup@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:alice@{source[0]}:{source[1]}>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )


@pytest.mark.parametrize("held", [False, True])
def test_the_feature_code_pulls_the_call_to_the_dialling_device(held: bool) -> None:
    network = make_network(second_device=True)
    call = Call(network, devices=(ALICE1, ALICE2))
    if held:
        fail_alice1(network, call)
    network.send(alice_device_invite("*86", ALICE2, 6500), ALICE2)
    assert network.take(ALICE2, status=100)
    assert network.requests(ALICE1, "BYE")  # the old device lets go at once
    reinvite = network.one(CALLER, "INVITE")
    assert "m=audio 6500" in reinvite.body.decode() and "a=sendrecv" in reinvite.body.decode()
    network.send(
        reply(reinvite, 200, CALLER, to_tag="ct", body=sdp(5000, origin="carol 7 9")), CALLER
    )
    (ok,) = {id(m): m for m in network.take(ALICE2, status=200)}.values()
    assert isinstance(ok, Response) and "m=audio 5000" in ok.body.decode()
    phone = Dialog(
        "pickup@127.0.0.1", "<sip:alice@127.0.0.1>;tag=a2", str(ok.headers.get("to")), ALICE2
    )
    network.send(phone.request("ACK"), ALICE2)
    assert call.state is CallState.ACTIVE
    (recovered,) = [e for e in events(network) if isinstance(e, CallRecovered)]
    assert recovered.outcome == "transferred"
    network.send(call.caller.request("BYE"), CALLER)
    assert network.one(ALICE2, "BYE").call_id == "pickup@127.0.0.1"
    assert call.state is CallState.ENDED


def test_the_feature_code_without_a_call_is_404() -> None:
    network = make_network()
    network.send(alice_device_invite("*86", ALICE2, 6500), ALICE2)
    assert network.take(ALICE2, status=404)


def test_the_api_moves_a_working_call_to_the_users_other_device() -> None:
    network = make_network(second_device=True)
    call = Call(network, devices=(ALICE1, ALICE2))
    core = network.core
    assert core.recover_call("nope", "alice", network.now) == (404, "no such call")
    assert core.recover_call(call.call_id, "nobody-here", network.now)[0] == 422
    assert core.recover_call(call.call_id, "alice", network.now) == (202, "ringing")
    network.run(0.01)
    invite = network.one(ALICE2, "INVITE")
    assert call.state is CallState.TRANSFERRING
    assert not network.requests(CALLER, "INVITE")  # the caller is not held meanwhile
    network.send(reply(invite, 200, ALICE2, body=sdp(6600)), ALICE2)
    assert network.requests(ALICE1, "BYE")
    unhold = call.answer_reinvite(5000)
    assert "m=audio 6600" in unhold.body.decode()
    assert call.state is CallState.ACTIVE


def test_an_api_move_nobody_answers_leaves_the_call_as_it_was() -> None:
    network = make_network(second_device=True)
    call = Call(network, devices=(ALICE1, ALICE2))
    assert network.core.recover_call(call.call_id, "alice", network.now)[0] == 202
    network.run(0.01)
    invite = network.one(ALICE2, "INVITE")
    network.send(reply(invite, 486, ALICE2), ALICE2)
    assert call.state is CallState.ACTIVE
    assert not network.requests(ALICE1, "BYE") and not network.requests(CALLER, "INVITE")
    assert not network.core.recovery.recoveries


def test_a_refer_from_the_phone_hands_its_side_to_the_target() -> None:
    network = make_network()
    call = Call(network)
    b = call.b_invite
    phone = Dialog(b.call_id, f"{b.headers.get('to')};tag=ph", str(b.headers.get("from")), ALICE1)
    network.send(phone.request("REFER", extra=("Refer-To: <sip:+4915100001@127.0.0.1>",)), ALICE1)
    assert network.take(ALICE1, status=202)
    notify = network.one(ALICE1, "NOTIFY")
    assert notify.body.decode().startswith("SIP/2.0 100") and notify.headers.get("event") == "refer"
    network.send(reply(notify, 200, ALICE1), ALICE1)
    invite = network.one(TRUNK, "INVITE")
    assert invite.uri.user == "+4915100001"
    network.send(phone.request("BYE"), ALICE1)  # the transferor leaves before the answer
    assert network.take(ALICE1, status=200)
    assert call.state is CallState.TRANSFERRING
    network.send(reply(invite, 200, TRUNK, body=sdp(6700)), TRUNK)
    unhold = call.answer_reinvite(5000)
    assert "m=audio 6700" in unhold.body.decode()
    assert call.state is CallState.ACTIVE
    assert not network.requests(CALLER, "BYE")


def test_the_reboot_api_notifies_holds_and_resumes_when_the_phone_answers_again() -> None:
    network = make_network()
    call = Call(network)
    core = network.core
    assert not core.reboot_endpoint("no-such-endpoint", network.now)
    (endpoint,) = [
        leg["endpoint"]
        for leg in core.call_view(call.call_id, lambda t: t)["legs"]
        if leg["role"] == "callee"
    ]
    assert core.reboot_endpoint(endpoint, network.now)
    network.run(0.01)
    assert network.one(ALICE1, "NOTIFY").headers.get("event") == "check-sync;reboot=true"
    assert call.state is CallState.HOLDING
    call.answer_reinvite(5000, "recvonly")
    network.run(1.5)  # it answers its next probe: back
    reinvite = network.one(ALICE1, "INVITE")
    network.send(reply(reinvite, 200, ALICE1, body=sdp(6000)), ALICE1)
    call.answer_reinvite(5000)
    assert call.state is CallState.ACTIVE


def test_a_hold_that_meets_glare_is_retried() -> None:
    network = make_network()
    call = Call(network)
    network.up.discard(ALICE1)
    while call.state is CallState.ACTIVE:
        network.run(0.1)
    hold = network.one(CALLER, "INVITE")
    network.send(reply(hold, 491, CALLER, to_tag="ct"), CALLER)
    assert network.requests(CALLER, "ACK")
    network.run(2.5)
    again = call.answer_reinvite(5000, "recvonly")
    assert "a=sendonly" in again.body.decode()
    assert call.state is CallState.HOLDING


def test_requests_from_the_survivor_while_held_are_answered_not_relayed() -> None:
    network = make_network()
    call = Call(network)
    fail_alice1(network, call)
    network.send(call.caller.request("INVITE", body=sdp(5000, origin="carol 7 9")), CALLER)
    assert network.take(CALLER, status=491)
    network.send(call.caller.request("INFO"), CALLER)
    assert network.take(CALLER, status=200)
    assert not network.requests(ALICE1, "INVITE") and not network.requests(ALICE1, "INFO")


def test_de_registering_mid_call_moves_the_call_at_once() -> None:
    network = make_network(second_device=True)
    alice3 = ("127.0.0.1", 7103)
    network.up.add(alice3)

    network.send(register("alice", alice3), alice3)
    assert network.take(alice3, status=200)
    call = Call(network, devices=(alice3, ALICE1, ALICE2))
    network.send(register("alice", alice3, expires=0, cseq=2), alice3)
    assert call.state is CallState.TRANSFERRING
    assert "a=sendonly" in call.answer_reinvite(5000, "recvonly").body.decode()  # the hold
    invites = {device: network.one(device, "INVITE") for device in (ALICE1, ALICE2)}
    network.send(reply(invites[ALICE2], 200, ALICE2, body=sdp(6800)), ALICE2)
    assert network.one(ALICE1, "CANCEL")
    assert "m=audio 6800" in call.answer_reinvite(5000).body.decode()
    assert call.state is CallState.ACTIVE


def test_when_both_parties_fail_and_neither_returns_the_call_ends_cleanly() -> None:
    network = make_network()
    network.up.add(CALLER)
    network.send(register("carol", CALLER), CALLER)
    assert network.take(CALLER, status=200)
    call = Call(network)
    network.up.discard(CALLER)
    network.up.discard(ALICE1)
    deadline = network.now + 6
    while call.state is CallState.ACTIVE and network.now < deadline:
        network.run(0.1)
    assert call.state is CallState.HOLDING
    network.run(GRACE + 1)
    assert call.state is CallState.ENDED
    (lost,) = [e for e in events(network) if isinstance(e, CallLost)]
    assert lost.reason == "both parties failed"
    assert network.core.calls_view(lambda t: t) == []


def test_a_silent_old_dialog_is_given_two_seconds_then_the_phone_is_rung_anew() -> None:
    network = make_network()
    call = Call(network)
    fail_alice1(network, call)
    network.up.add(ALICE1)
    network.run(1.5)
    old = network.one(ALICE1, "INVITE")
    assert old.call_id == call.b_invite.call_id
    network.run(2.1)  # no answer to the old dialog's re-INVITE
    (new,) = [r for r in network.requests(ALICE1, "INVITE") if r.call_id != old.call_id]
    assert new.headers.get("call-info") == "<sip:callkeeper>;answer-after=0"
    network.send(reply(new, 200, ALICE1, to_tag="n2", body=sdp(6010)), ALICE1)
    assert network.one(ALICE1, "BYE").call_id == old.call_id  # the lingering old dialog
    call.answer_reinvite(5000)
    assert call.state is CallState.ACTIVE


def test_the_calls_view_shows_the_recovery_in_progress() -> None:
    network = make_network()
    call = Call(network)
    assert "recovery" not in network.core.call_view(call.call_id, lambda t: t)
    fail_alice1(network, call)
    view = network.core.call_view(call.call_id, lambda t: t)
    assert view["state"] == "holding" and view["recoveries"] == 1
    recovery = view["recovery"]
    assert recovery["reason"] == "timeout" and recovery["step"] is None
    assert recovery["grace_until"] == pytest.approx(recovery["since"] + GRACE)
    callee = next(leg for leg in view["legs"] if leg["role"] == "callee")
    assert recovery["failed_endpoint"] == callee["endpoint"]


def test_when_both_fail_whichever_returns_first_waits_held_for_the_other() -> None:
    network = make_network()
    network.up.add(CALLER)
    network.send(register("carol", CALLER), CALLER)
    assert network.take(CALLER, status=200)
    call = Call(network)
    fail_alice1(network, call)  # alice first: carol is held
    network.up.discard(CALLER)  # then carol goes silent too
    network.run(4)
    engine = network.core.recovery
    assert engine.recoveries[call.call_id].survivor_down
    network.up.add(ALICE1)  # alice comes back first: re-attached, but held (carol is gone)
    network.run(1.5)
    reinvite = network.one(ALICE1, "INVITE")
    assert "a=sendonly" in reinvite.body.decode()
    network.send(reply(reinvite, 200, ALICE1, body=sdp(6002, "recvonly", "alice 1 2")), ALICE1)
    assert call.state is CallState.HOLDING
    recovery = engine.recoveries[call.call_id]
    assert recovery.failed.endpoint is not None and recovery.failed is not recovery.survivor
    network.take(CALLER)
    network.up.add(CALLER)  # carol returns within her grace: resumed on her old dialog
    network.run(1.5)
    to_carol = network.one(CALLER, "INVITE")
    assert "a=sendrecv" in to_carol.body.decode() and "m=audio 6002" in to_carol.body.decode()
    network.send(
        reply(to_carol, 200, CALLER, to_tag="ct", body=sdp(5000, origin="carol 7 9")), CALLER
    )
    unhold = network.one(ALICE1, "INVITE")
    assert "a=sendrecv" in unhold.body.decode() and "m=audio 5000" in unhold.body.decode()
    network.send(reply(unhold, 200, ALICE1, body=sdp(6002, origin="alice 1 3")), ALICE1)
    assert call.state is CallState.ACTIVE
    held = [e for e in events(network) if isinstance(e, CallHeld)]
    assert [h.reason for h in held] == ["timeout", "both parties failed"]
    assert engine.stats.outcomes["resumed"] == 1 and engine.stats.outcomes["lost"] == 0


def test_a_dead_ivr_node_hands_its_session_to_another_node_at_once() -> None:
    node1, node2 = ("127.0.0.1", 7401), ("127.0.0.1", 7402)
    config = Config(
        sip={"listen": ["udp:127.0.0.1:5060"], "trusted_sources": ["127.0.0.1"]},
        keepalive={"options_interval": 5, "in_call_interval": 1, "misses": 3},
        recovery={"grace": 30},
        users=[
            {"name": "ivr", "static_contacts": [f"sip:ivr@{n[0]}:{n[1]}" for n in (node1, node2)]},
            {"name": "carol", "password": "x"},
        ],
    )
    network = Network(config)
    network.up = {node1, node2}
    network.send(caller_invite().replace("sip:alice@", "sip:ivr@"), CALLER)
    invites = {n: network.requests(n, "INVITE") for n in (node1, node2)}
    assert sorted(len(found) for found in invites.values()) == [0, 1]  # one node, not both
    first = node1 if invites[node1] else node2
    other = node2 if first == node1 else node1
    (invite,) = invites[first]
    answer = reply(invite, 200, first, body=sdp(6000), extra=("X-Callkeeper-Session: s-42",))
    network.send(answer, first)
    ok = network.take(CALLER, status=200)[0]
    caller = Dialog(
        "rec-call@127.0.0.1", "<sip:carol@127.0.0.1>;tag=ct", str(ok.headers.get("to")), CALLER
    )
    network.send(caller.request("ACK"), CALLER)
    network.up.discard(first)
    started = network.now
    moved: list[Request] = []
    while not moved and network.now < started + 6:
        network.run(0.1)
        moved = network.requests(other, "INVITE")
    (resumed,) = moved
    assert resumed.headers.get("x-callkeeper-session") == "s-42"
    assert network.now - started < 5  # detection (~3.5 s) and no grace
    network.send(
        reply(resumed, 200, other, body=sdp(6001), extra=("X-Callkeeper-Session: s-42",)), other
    )
    for _ in range(2):  # the caller was held, then is un-held towards the new node
        reinvite = network.requests(CALLER, "INVITE")[0]
        network.send(
            reply(reinvite, 200, CALLER, to_tag="ct", body=sdp(5000, origin="c 7 8")), CALLER
        )
    (recovered,) = [e for e in events(network) if isinstance(e, CallRecovered)]
    assert recovered.outcome == "transferred"


def test_the_feature_code_dialled_mid_call_rings_the_users_other_devices() -> None:
    network = make_network(second_device=True)
    call = Call(network, devices=(ALICE1, ALICE2))
    b = call.b_invite
    phone = Dialog(b.call_id, f"{b.headers.get('to')};tag=ph", str(b.headers.get("from")), ALICE1)
    for key in "*86":
        info = phone.request("INFO", extra=("Content-Type: application/dtmf-relay",))
        body = f"Signal={key}\r\nDuration=160\r\n"
        info = info.replace("Content-Length: 0", f"Content-Length: {len(body)}") + body
        network.send(info, ALICE1)
        relayed = network.one(CALLER, "INFO")  # the keys still reach the other party
        network.send(reply(relayed, 200, CALLER, to_tag="ct"), CALLER)
        network.run(0.5)
    invite = network.one(ALICE2, "INVITE")
    assert call.state is CallState.TRANSFERRING
    network.send(reply(invite, 200, ALICE2, body=sdp(6900)), ALICE2)
    assert network.requests(ALICE1, "BYE")
    assert "m=audio 6900" in call.answer_reinvite(5000).body.decode()
    assert call.state is CallState.ACTIVE


def test_feature_code_keys_too_far_apart_do_nothing() -> None:
    network = make_network(second_device=True)
    call = Call(network, devices=(ALICE1, ALICE2))
    b = call.b_invite
    phone = Dialog(b.call_id, f"{b.headers.get('to')};tag=ph", str(b.headers.get("from")), ALICE1)
    for key in "*86":
        body = f"Signal={key}\r\n"
        info = phone.request("INFO", extra=("Content-Type: application/dtmf-relay",))
        network.send(
            info.replace("Content-Length: 0", f"Content-Length: {len(body)}") + body, ALICE1
        )
        relayed = network.one(CALLER, "INFO")
        network.send(reply(relayed, 200, CALLER, to_tag="ct"), CALLER)
        network.run(3.5)
    assert not network.requests(ALICE2, "INVITE")
    assert call.state is CallState.ACTIVE


def test_while_an_asked_for_move_rings_the_call_keeps_working() -> None:
    network = make_network(second_device=True)
    call = Call(network, devices=(ALICE1, ALICE2))
    assert network.core.recover_call(call.call_id, "alice", network.now)[0] == 202
    network.run(0.01)
    assert network.one(ALICE2, "INVITE")
    info = call.caller.request("INFO", extra=("Content-Type: application/dtmf-relay",))
    body = "Signal=5\r\n"
    network.send(info.replace("Content-Length: 0", f"Content-Length: {len(body)}") + body, CALLER)
    relayed = network.one(ALICE1, "INFO")  # still relayed to the phone the call is on
    network.send(reply(relayed, 200, ALICE1), ALICE1)
    assert network.take(CALLER, status=200)


def test_the_leg_an_asked_for_move_leaves_can_fail_meanwhile() -> None:
    network = make_network(second_device=True, mobile=True)
    call = Call(network, devices=(ALICE1, ALICE2))
    assert network.core.recover_call(call.call_id, "alice", network.now)[0] == 202
    network.run(0.01)
    target = network.one(ALICE2, "INVITE")
    network.send(reply(target, 180, ALICE2), ALICE2)
    network.up.discard(ALICE1)  # the phone the call is on dies while alice's other one rings
    while not network.requests(CALLER, "INVITE"):
        network.run(0.1)
    network.run(RING)  # the target does not answer: the fallback chain takes over
    again = [r for r in network.requests(ALICE2, "INVITE") if r.call_id != target.call_id]
    assert len(again) == 1  # `devices`: her other device, as a fallback step this time
    network.run(RING)
    assert network.one(TRUNK, "INVITE")  # then her mobile
    assert call.state is CallState.TRANSFERRING
