"""Established calls outlive a restart of callkeeper: written to the store, taken back.

Pure core with a fake clock: one CoreDriver plays the callkeeper that was killed, a second one
(another id prefix, as a new process draws another) the callkeeper that starts on the same
store. What the first wrote (`SaveCall`) is what the second restores.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from callkeeper.calls.b2bua import RESTORED_AUDIT_AFTER
from callkeeper.calls.call_saver import SAVE_DELAY
from callkeeper.calls.call_snapshots import (
    CSEQ_GAP,
    CallSnapshot,
    DeleteCall,
    SaveCall,
    decode_snapshot,
    encode_snapshot,
)
from callkeeper.calls.media_anchor import Connect, OpenSide, SetPeer
from callkeeper.calls.model import CallState
from callkeeper.sip.message import Request, Response
from support.core_calls import (
    CALLEE,
    CALLER,
    SDP,
    callee_bye,
    callee_response,
    caller_request,
    invite,
    make_driver,
    reply,
)
from support.core_driver import CoreDriver

RELAY = {"media": {"mode": "relay", "rtp_ports": "30000-30100"}}


def answered(driver: CoreDriver) -> tuple[Response, Request]:
    """alice calls bob, bob answers, alice ACKs: (our 200 to alice, our INVITE to bob)."""
    driver.receive(invite(), CALLER)
    (b_invite,) = driver.requests(CALLEE, "INVITE")
    driver.receive(callee_response(b_invite, 200), CALLEE)
    (ok,) = [r for r in driver.responses(CALLER) if r.status == 200]
    driver.receive(caller_request("ACK", 1, ok), CALLER)
    driver.take()
    return ok, b_invite


def saved(driver: CoreDriver) -> list[CallSnapshot]:
    return [c.snapshot for c in driver.commands if isinstance(c, SaveCall)]


def deleted(driver: CoreDriver) -> list[str]:
    return [c.call_id for c in driver.commands if isinstance(c, DeleteCall)]


def restarted(snapshots: list[CallSnapshot], **sections: Any) -> CoreDriver:
    """A new callkeeper on the same store: the snapshots go through their stored bytes."""
    driver = make_driver("r", **sections)
    stored = [decode_snapshot(encode_snapshot(snapshot)) for snapshot in snapshots]
    driver.core.start(driver.now)  # as `callkeeper serve` does: static contacts watched first
    assert driver.core.restore_calls(stored, driver.now) == len(stored)
    driver.collect()
    return driver


def test_an_answered_call_is_written_once_after_the_save_delay() -> None:
    driver = make_driver()
    answered(driver)
    driver.advance(SAVE_DELAY / 2)
    assert saved(driver) == []
    driver.advance(SAVE_DELAY)
    (snapshot,) = saved(driver)
    call = next(iter(driver.core.b2bua.calls.values()))
    assert snapshot.id == call.id
    assert snapshot.a.dialog.call_id == "ov-call@127.0.0.1"
    assert snapshot.b.dialog.remote_tag == "bt"
    assert snapshot.b.remote_sdp == SDP.replace("\n", "\r\n").encode()
    assert decode_snapshot(encode_snapshot(snapshot)) == snapshot
    driver.advance(600)
    assert len(saved(driver)) == 1  # nothing changed: not written again


def test_a_call_that_ends_before_its_first_write_costs_the_store_nothing() -> None:
    driver = make_driver()
    ok, _ = answered(driver)
    driver.receive(caller_request("BYE", 2, ok), CALLER)
    driver.advance(SAVE_DELAY * 3)
    assert saved(driver) == []
    assert deleted(driver) == []


def test_shutting_down_writes_the_calls_not_written_yet() -> None:
    driver = make_driver()
    answered(driver)
    driver.advance(SAVE_DELAY / 4)  # SIGTERM right after the answer
    driver.core.save_pending(driver.now)
    driver.collect()
    (snapshot,) = saved(driver)
    driver.advance(SAVE_DELAY * 2)
    assert saved(driver) == [snapshot]  # not written twice
    driver.core.save_pending(driver.now)
    driver.collect()
    assert saved(driver) == [snapshot]  # nothing changed since


def test_a_written_call_is_deleted_when_it_ends() -> None:
    driver = make_driver()
    ok, _ = answered(driver)
    driver.advance(SAVE_DELAY + 0.1)
    (snapshot,) = saved(driver)
    driver.receive(caller_request("BYE", 2, ok), CALLER)
    assert deleted(driver) == [snapshot.id]


def test_after_a_restart_the_callers_bye_reaches_the_callee_in_its_own_dialog() -> None:
    first = make_driver()
    ok, b_invite = answered(first)
    first.advance(SAVE_DELAY + 0.1)
    (snapshot,) = saved(first)

    second = restarted([snapshot])
    assert second.core.b2bua.calls[snapshot.id].state is CallState.ACTIVE
    second.receive(caller_request("BYE", 2, ok), CALLER)
    assert any(r.status == 200 and r.cseq.method == "BYE" for r in second.responses(CALLER))
    (bye,) = second.requests(CALLEE, "BYE")
    assert bye.call_id == b_invite.call_id
    assert bye.from_addr.tag == b_invite.from_addr.tag
    assert bye.to_addr.tag == "bt"
    assert bye.cseq.number > b_invite.cseq.number + CSEQ_GAP - 1  # past whatever went out since
    assert bye.uri.port == CALLEE[1]  # the remote target: bob's Contact
    assert len(second.core.b2bua) == 0
    assert deleted(second) == [snapshot.id]


def test_after_a_restart_the_callees_bye_reaches_the_caller() -> None:
    first = make_driver()
    _, b_invite = answered(first)
    first.advance(SAVE_DELAY + 0.1)
    second = restarted(saved(first))
    second.receive(callee_bye(b_invite), CALLEE)
    (bye,) = second.requests(CALLER, "BYE")
    assert bye.call_id == "ov-call@127.0.0.1"
    assert bye.to_addr.tag == "at"  # alice's tag: her dialog, as she knows it
    assert bye.uri.port == CALLER[1]


def test_a_restored_call_both_phones_forgot_is_ended_by_the_first_audit() -> None:
    first = make_driver()
    answered(first)
    first.advance(SAVE_DELAY + 0.1)
    second = restarted(saved(first))
    second.advance(RESTORED_AUDIT_AFTER + 0.01)  # long before the 60 s audit interval
    (to_caller,) = second.requests(CALLER, "OPTIONS")
    (to_callee,) = second.requests(CALLEE, "OPTIONS")
    second.receive(reply(to_caller, 481), CALLER)  # alice hung up while callkeeper was down
    assert len(second.core.b2bua) == 0
    assert second.requests(CALLEE, "BYE")
    assert to_callee.to_addr.tag == "bt"


def test_a_restored_calls_phone_that_stays_silent_is_detected_and_the_call_held() -> None:
    """bob's static contact died with callkeeper: the restarted one watches it as a phone in
    a call (in-call probing), finds it DOWN and holds alice, as for any call."""
    keepalive = {"keepalive": {"in_call_interval": 1.0, "options_interval": 30.0, "misses": 2}}
    first = make_driver(**keepalive)
    answered(first)
    first.advance(SAVE_DELAY + 0.1)
    second = restarted(saved(first), **keepalive)
    call = next(iter(second.core.b2bua.calls.values()))
    second.advance(10.0)  # bob answers none of the probes
    assert len(second.requests(CALLEE, "OPTIONS")) >= 3  # probed at the in-call pace
    assert call.state is CallState.HOLDING
    assert second.requests(CALLER, "INVITE")  # alice put on hold by re-INVITE (media off)


def test_a_relayed_reinvite_writes_the_call_again_with_the_new_sdp() -> None:
    driver = make_driver()
    ok, _b_invite = answered(driver)
    driver.advance(SAVE_DELAY + 0.1)
    new_sdp = SDP.replace("4000", "4010")
    body = new_sdp.replace("\n", "\r\n")
    reinvite = caller_request("INVITE", 2, ok).replace(
        "Content-Length: 0\n\n",
        f"Contact: <sip:alice@{CALLER[0]}:{CALLER[1]}>\nContent-Type: application/sdp\n"
        f"Content-Length: {len(body)}\n\n{new_sdp}",
    )
    driver.receive(reinvite, CALLER)
    (relayed,) = driver.requests(CALLEE, "INVITE")
    driver.receive(callee_response(relayed, 200), CALLEE)
    driver.advance(SAVE_DELAY + 0.1)
    assert len(saved(driver)) == 1  # not while our 200 to alice waits for her ACK
    ok2 = next(r for r in driver.responses(CALLER) if r.status == 200)  # and retransmissions
    driver.receive(caller_request("ACK", 2, ok2), CALLER)
    driver.advance(SAVE_DELAY + 0.1)
    first, second = saved(driver)
    assert b"4010" not in (first.a.remote_sdp or b"")
    assert b"4010" in (second.a.remote_sdp or b"")


def test_a_snapshot_of_another_format_is_deleted_not_restored() -> None:
    first = make_driver()
    answered(first)
    first.advance(SAVE_DELAY + 0.1)
    (snapshot,) = saved(first)
    driver = make_driver("r")
    old = msgspec.structs.replace(snapshot, format=snapshot.format + 1)
    assert driver.core.restore_calls([old], driver.now) == 0
    driver.collect()
    assert deleted(driver) == [snapshot.id]
    assert len(driver.core.b2bua) == 0


def test_with_the_relay_a_restored_call_gets_its_old_ports_back_connected() -> None:
    first = make_driver(**RELAY)
    answered(first)
    first.advance(SAVE_DELAY + 0.1)
    (snapshot,) = saved(first)
    assert snapshot.a.media_port is not None and snapshot.b.media_port is not None

    second = restarted([snapshot], **RELAY)
    opened = {c.side: c.port for c in second.commands if isinstance(c, OpenSide)}
    assert opened == {snapshot.a.id: snapshot.a.media_port, snapshot.b.id: snapshot.b.media_port}
    peers = {c.side: c.address for c in second.commands if isinstance(c, SetPeer)}
    assert peers == {snapshot.a.id: ("127.0.0.1", 4000), snapshot.b.id: ("127.0.0.1", 4000)}
    assert Connect(snapshot.a.id, snapshot.b.id) in second.commands
    # A new call does not get the restored call's ports.
    second.commands.clear()
    second.receive(invite().replace("ov-call@", "new-call@").replace("tag=at", "tag=n"), CALLER)
    new_ports = {c.port for c in second.commands if isinstance(c, OpenSide)}
    assert new_ports and not new_ports & {snapshot.a.media_port, snapshot.b.media_port}


@pytest.mark.parametrize("field", ["a", "b"])
def test_a_damaged_dialog_in_a_snapshot_is_refused(field: str) -> None:
    first = make_driver()
    answered(first)
    first.advance(SAVE_DELAY + 0.1)
    (snapshot,) = saved(first)
    leg = getattr(snapshot, field)
    broken_dialog = msgspec.structs.replace(leg.dialog, remote_target="not a uri")
    broken = msgspec.structs.replace(
        snapshot, **{field: msgspec.structs.replace(leg, dialog=broken_dialog)}
    )
    driver = make_driver("r")
    assert driver.core.restore_calls([broken], driver.now) == 0
    driver.collect()
    assert deleted(driver) == [snapshot.id]
