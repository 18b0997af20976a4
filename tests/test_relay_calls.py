"""Calls through the media relay (`media.mode = "relay"`), driven through the pure core.

Every SDP that crosses callkeeper names a relay port of the leg it goes to, the relay is told
where each phone receives and which sides to connect; and in a recovery the survivor is not
re-INVITEd at all: it hears the announcement and music from the relay, and the new leg is
connected to its side. (The relay itself, with real RTP, is in the io tests.)
"""

from __future__ import annotations

import re

from callkeeper.calls.media_anchor import (
    CloseSide,
    Connect,
    OpenSide,
    Play,
    PortPool,
    Record,
    SetPeer,
    WatchDigits,
    playable_payload_type,
)
from callkeeper.calls.model import CallState
from callkeeper.config import Config
from callkeeper.sip.message import Request
from support.fake_phones import Dialog, Network, register, reply, sdp
from test_recovery_core import ALICE1, ALICE2, CALLER, GRACE, Call, caller_invite, events

RELAY_PORTS = "40000-40100"


def make_network(**alice: object) -> Network:
    config = Config(
        sip={"listen": ["udp:127.0.0.1:5060"], "trusted_sources": ["127.0.0.1"]},
        keepalive={"options_interval": 5, "in_call_interval": 1, "misses": 3},
        recovery={"grace": GRACE, "ring_timeout": 5.0},
        media={"mode": "relay", "rtp_ports": RELAY_PORTS},
        users=[
            {
                "name": "alice",
                "static_contacts": [f"sip:alice@{a[0]}:{a[1]}" for a in (ALICE1, ALICE2)],
                **alice,
            },
            {"name": "carol", "password": "x"},
        ],
    )
    network = Network(config)
    network.up = {ALICE1, ALICE2}
    return network


def media_lines(body: bytes) -> tuple[str, int]:
    text = body.decode()
    host = next(line[9:] for line in text.splitlines() if line.startswith("c=IN IP4 "))
    port = int(next(line.split()[1] for line in text.splitlines() if line.startswith("m=audio")))
    return host, port


def commands(network: Network) -> list[object]:
    taken, network.driver.commands = network.driver.commands, []
    return taken


def test_every_leg_talks_to_its_own_relay_port_and_the_sides_are_connected() -> None:
    network = make_network()
    network.up.discard(ALICE2)
    call = Call(network, devices=(ALICE1, ALICE2))
    host, port = media_lines(call.b_invite.body)
    assert host == "127.0.0.1" and 40000 <= port < 40100 and port % 2 == 0
    issued = commands(network)
    opened = {c.side: c.port for c in issued if isinstance(c, OpenSide)}
    assert port in opened.values() and len(opened) == 3  # the caller, and both forks
    peers = [c for c in issued if isinstance(c, SetPeer)]
    assert ("127.0.0.1", 5000) in [p.address for p in peers]  # the caller's own SDP
    assert ("127.0.0.1", 6000) in [p.address for p in peers]  # alice's answer
    (connect,) = {(c.side_a, c.side_b) for c in issued if isinstance(c, Connect)}
    assert set(connect) <= set(opened)
    closed = {c.side for c in issued if isinstance(c, CloseSide)}
    assert len(closed) == 1 and closed < set(opened)  # the losing fork's side


def test_in_a_recovery_the_relay_holds_the_survivor_without_a_reinvite() -> None:
    network = make_network()
    call = Call(network, devices=(ALICE1, ALICE2))
    commands(network)
    network.up.discard(ALICE1)
    while call.state is CallState.ACTIVE:
        network.run(0.1)
    assert not network.requests(CALLER, "INVITE")  # no hold re-INVITE
    (play,) = [c for c in commands(network) if isinstance(c, Play)]
    assert play.prompts == ("reconnecting",) and play.loop == "music" and play.payload_type == 0
    network.run(GRACE + 0.5)
    invite = network.one(ALICE2, "INVITE")
    host, port = media_lines(invite.body)
    assert host == "127.0.0.1" and 40000 <= port < 40100  # the new leg gets a relay port too
    issued = commands(network)
    assert any(isinstance(c, Play) and c.prompts == ("transferring",) for c in issued)
    network.send(reply(invite, 200, ALICE2, body=sdp(6100)), ALICE2)
    assert call.state is CallState.ACTIVE
    assert not network.requests(CALLER, "INVITE")  # still no re-INVITE: the relay re-bridges
    issued = commands(network)
    assert any(isinstance(c, SetPeer) and c.address == ("127.0.0.1", 6100) for c in issued)
    assert any(isinstance(c, Connect) for c in issued)
    assert any(isinstance(c, CloseSide) for c in issued)  # the failed leg's side
    network.send(call.caller.request("BYE"), CALLER)
    assert network.core.media is not None and len(network.core.media) == 0


def test_a_lost_call_hears_goodbye_before_its_bye() -> None:
    network = make_network()
    network.up.discard(ALICE2)
    call = Call(network, devices=(ALICE1, ALICE2))
    network.up.discard(ALICE1)
    network.run(GRACE + 4)  # grace, then the other device rings out (ring_timeout)
    assert network.requests(ALICE2, "INVITE")
    network.run(6)
    assert any(isinstance(c, Play) and c.prompts == ("goodbye",) for c in commands(network))
    assert not network.requests(CALLER, "BYE")
    network.run(4.5)
    assert network.requests(CALLER, "BYE")
    assert call.state is CallState.ENDED
    assert events(network)


def test_reinvites_between_the_phones_are_anchored_both_ways() -> None:
    network = make_network()
    network.up.discard(ALICE2)
    call = Call(network, devices=(ALICE1, ALICE2))
    network.send(call.caller.request("INVITE", body=sdp(5002, origin="carol 7 8")), CALLER)
    relayed = network.one(ALICE1, "INVITE")
    assert media_lines(relayed.body)[0] == "127.0.0.1" and media_lines(relayed.body)[1] != 5002
    network.send(reply(relayed, 200, ALICE1, body=sdp(6002, origin="phone 1 2")), ALICE1)
    (ok,) = {id(m): m for m in network.take(CALLER, status=200)}.values()
    assert isinstance(ok, Request) is False
    assert media_lines(ok.body)[1] != 6002
    issued = commands(network)
    assert ("127.0.0.1", 5002) in [c.address for c in issued if isinstance(c, SetPeer)]
    assert ("127.0.0.1", 6002) in [c.address for c in issued if isinstance(c, SetPeer)]


def test_the_port_pool_hands_out_even_ports_round_robin() -> None:
    pool = PortPool(20001, 20010)
    ports = [pool.allocate() for _ in range(5)]
    assert ports == [20002, 20004, 20006, 20008, None]
    pool.release(20004)
    pool.release(12345)  # not ours: ignored
    assert pool.allocate() == 20004 and len(pool) == 0


def test_prompts_are_played_in_a_g711_codec_the_phone_offered() -> None:
    assert playable_payload_type(sdp(5000).encode()) == 0
    pcma = "v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 5 RTP/AVP 96 8\r\n"
    assert playable_payload_type(pcma.encode()) == 8
    dynamic = pcma.replace("96 8", "96") + "a=rtpmap:96 PCMA/8000\r\n"
    assert playable_payload_type(dynamic.encode()) == 96
    assert playable_payload_type(pcma.replace("96 8", "9").encode()) is None
    assert playable_payload_type(b"not sdp") is None


def test_the_built_in_voicemail_records_the_survivor_and_lights_the_lamp() -> None:
    network = make_network(voicemail=True)
    network.up.discard(ALICE2)
    call = Call(network, devices=(ALICE1, ALICE2))
    network.up.discard(ALICE1)
    network.run(GRACE + 4 + 6)  # grace, the other device rings out, then voicemail
    issued = commands(network)
    (record,) = [c for c in issued if isinstance(c, Record)]
    assert record.user == "alice" and record.caller == "carol" and record.payload_type == 0
    assert record.greeting == "voicemail_greeting" and record.call_id == call.call_id
    assert call.state is CallState.ACTIVE
    assert not network.requests(CALLER, "BYE")
    assert network.core.recovery.stats.outcomes["voicemail"] == 1
    # the relay stored the message: alice's phones hear about it
    network.core.voicemail_recorded("alice", 1, network.now)
    network.run(0.01)
    notifies = [
        n for n in network.requests(ALICE1, "NOTIFY") if n.headers.get("event") == "message-summary"
    ]
    assert len(notifies) == 1
    body = notifies[0].body.decode()
    assert "Messages-Waiting: yes" in body and "Voice-Message: 1/0" in body
    assert notifies[0].headers.get("content-type") == "application/simple-message-summary"
    # the recording stopped by itself (silence): the caller is released
    network.core.recording_stopped(call.call_id, network.now)
    network.run(0.01)
    assert network.requests(CALLER, "BYE")
    assert call.state is CallState.ENDED


def test_a_phone_that_registers_is_told_about_waiting_messages() -> None:
    network = make_network(voicemail=True)
    network.core.restore_voicemail({"alice": 2})
    alice3 = ("127.0.0.1", 7103)
    network.send(register("alice", alice3), alice3)
    assert network.take(alice3, status=200)
    notify = network.one(alice3, "NOTIFY")
    assert "Voice-Message: 2/0" in notify.body.decode()


def test_rfc4733_keys_seen_by_the_relay_make_the_feature_code() -> None:
    network = make_network()
    network.up.discard(ALICE2)
    head, body = caller_invite().split("\r\n\r\n", 1)
    body = body.replace(
        "m=audio 5000 RTP/AVP 0\r\n",
        "m=audio 5000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
    )
    head = re.sub(r"Content-Length: \d+", f"Content-Length: {len(body)}", head)
    network.send(f"{head}\r\n\r\n{body}", CALLER)
    invites = {device: network.one(device, "INVITE") for device in (ALICE1, ALICE2)}
    network.send(reply(invites[ALICE1], 200, ALICE1, body=sdp(6000)), ALICE1)
    ok = network.take(CALLER, status=200)[0]
    caller = Dialog(
        "rec-call@127.0.0.1", "<sip:carol@127.0.0.1>;tag=ct", str(ok.headers.get("to")), CALLER
    )
    network.send(caller.request("ACK"), CALLER)
    watched = [c for c in commands(network) if isinstance(c, WatchDigits)]
    (alice_side,) = [w.side for w in watched if w.payload_types == (101,)][:1]
    network.up.add(ALICE2)
    network.run(1)
    core = network.core
    for key in "*86":
        core.media_digit(alice_side, key, network.now)
    network.run(0.01)
    setup = invites[ALICE2].call_id  # the fork that lost at set-up is still retransmitted
    (invite,) = [r for r in network.requests(ALICE2, "INVITE") if r.call_id != setup]
    assert "127.0.0.1" in invite.body.decode()  # alice's side rings her other device
    (call_id,) = list(core.b2bua.calls)
    assert core.b2bua.calls[call_id].state is CallState.TRANSFERRING
