"""The rtpengine anchor's plan (pure): slots, sides, the SDP the phones see, the NG commands queued."""

from __future__ import annotations

from callkeeper.calls.media_anchor import (
    CloseSide,
    MediaCommand,
    OpenSide,
    PortPool,
    Record,
    SetPeer,
)
from callkeeper.calls.model import Call, Leg
from callkeeper.calls.rtpengine_anchor import (
    DeleteSlot,
    Negotiate,
    PlayMedia,
    Recorder,
    RtpengineAnchor,
    RtpengineCommand,
    Slot,
    StopMedia,
)
from callkeeper.sdp import parse_sdp
from callkeeper.sip.transport import Flow

FLOW = Flow("udp", ("127.0.0.1", 5062))


def sdp(port: int, host: str = "192.0.2.10", version: int = 1) -> bytes:
    return (
        f"v=0\r\no=- 1 {version} IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        f"a=candidate:1 1 UDP 2130706431 {host} {port} typ host\r\n"
    ).encode()


def slot(n: int, created: float = 0.0) -> Slot:
    return Slot(f"slot-{n}", "203.0.113.5", (40000 + 4 * n, 40002 + 4 * n), created)


def leg(name: str, caller: bool = False) -> Leg:
    return Leg(id=name, is_caller=caller, flow=FLOW)


def a_call() -> tuple[Call, Leg]:
    a = leg("A", caller=True)
    return Call(id="call-1", a=a, created=0.0, callee="bob"), a


def commands(anchor: RtpengineAnchor) -> list[RtpengineCommand | MediaCommand]:
    out = []
    while (command := anchor.next_command()) is not None:
        out.append(command)
    return out


def target(body: bytes) -> tuple[str | None, int]:
    session = parse_sdp(body)
    media = session.media[0]
    return session.address_of(media), media.port


def test_an_offer_names_the_callee_side_and_tells_rtpengine_the_caller_sdp() -> None:
    anchor = RtpengineAnchor()
    anchor.add_slots([slot(1), slot(2)])
    call, a = a_call()
    b1, b2 = leg("B1"), leg("B2")
    offer = sdp(30000)
    to_b1 = anchor.rewrite(call, a, b1, offer)
    to_b2 = anchor.rewrite(call, a, b2, offer)  # a second fork of the same offer
    assert target(to_b1) == target(to_b2) == ("203.0.113.5", 40006)  # slot 1, side b
    assert b"candidate" not in to_b1  # ICE stripped: the phones must talk to rtpengine
    assert b"a=rtcp:40007" in to_b1
    # once per distinct SDP: forks share the caller's side
    assert commands(anchor) == [Negotiate("slot-1", "a", offer)]
    answer = sdp(31000, host="192.0.2.20")
    to_a = anchor.rewrite(call, b1, a, answer)
    assert target(to_a) == ("203.0.113.5", 40004)  # side a
    assert commands(anchor) == [Negotiate("slot-1", "b", answer)]
    anchor.rewrite(call, b1, a, answer)  # the 200 repeating the 183's SDP
    assert commands(anchor) == []
    assert anchor.free_slots == 1 and len(anchor) == 3  # A, B1, B2


def test_a_late_offer_from_the_callee_puts_each_leg_opposite_its_partner() -> None:
    anchor = RtpengineAnchor()
    anchor.add_slots([slot(1)])
    call, a = a_call()
    b = leg("B")
    to_a = anchor.rewrite(call, b, a, sdp(31000))  # the 200's offer, before A said anything
    assert target(to_a)[1] == 40004  # A's side is a
    anchor.rewrite(call, a, b, sdp(30000))  # the ACK's answer
    assert commands(anchor) == [
        Negotiate("slot-1", "b", sdp(31000)),
        Negotiate("slot-1", "a", sdp(30000)),
    ]


def test_re_bridging_the_survivor_keeps_its_side_and_negotiates_the_new_leg() -> None:
    anchor = RtpengineAnchor()
    anchor.add_slots([slot(1)])
    call, a = a_call()
    b, b_new = leg("B"), leg("B-new")
    offer = sdp(30000)
    anchor.rewrite(call, a, b, offer)
    anchor.rewrite(call, b, a, sdp(31000))
    commands(anchor)
    # B fails: A is held with prompts, then B's replacement is offered A's SDP
    assert anchor.play(a, ("reconnecting",), "music")
    to_new = anchor.rewrite(call, a, b_new, offer)
    assert target(to_new)[1] == 40006  # the failed leg's side: A's ports do not change
    anchor.learn(call, b_new, sdp(32000, host="192.0.2.30"))
    anchor.connect(a, b_new)
    assert commands(anchor) == [
        PlayMedia("slot-1", "a", ("reconnecting",), "music"),
        Negotiate("slot-1", "b", sdp(32000, host="192.0.2.30")),
        StopMedia("slot-1", "a"),
    ]
    anchor.connect(a, b_new)  # nothing playing any more: no NG traffic
    assert commands(anchor) == []


def test_keys_reported_by_slot_and_tag_name_the_leg_on_that_side() -> None:
    anchor = RtpengineAnchor()
    anchor.add_slots([slot(1)])
    call, a = a_call()
    b, b_new = leg("B"), leg("B-new")
    anchor.rewrite(call, a, b, sdp(30000))
    anchor.rewrite(call, b, a, sdp(31000))
    assert (anchor.leg_on("slot-1", "a"), anchor.leg_on("slot-1", "b")) == ("A", "B")
    anchor.rewrite(call, a, b_new, sdp(30000))  # B failed; its replacement is offered A's SDP
    anchor.learn(call, b_new, sdp(32000))
    anchor.release_leg(b)
    assert anchor.leg_on("slot-1", "b") == "B-new"
    assert anchor.leg_on("slot-1", "c") is None and anchor.leg_on("slot-9", "a") is None
    anchor.release_call(call.id)
    assert anchor.leg_on("slot-1", "a") is None


def test_a_call_that_finds_no_slot_stays_unanchored_and_is_counted_once() -> None:
    anchor = RtpengineAnchor()
    call, a = a_call()
    b = leg("B")
    offer = sdp(30000)
    assert anchor.rewrite(call, a, b, offer) == offer
    anchor.add_slots([slot(1)])  # the pool refills before the callee answers
    answer = sdp(31000)
    assert anchor.rewrite(call, b, a, answer) == answer  # still direct: both ways or neither
    assert anchor.exhausted == 1 and commands(anchor) == [] and anchor.free_slots == 1
    assert not anchor.has_side(a) and not anchor.play(a, ("goodbye",), None)
    assert anchor.rewrite(call, a, b, b"not sdp") == b"not sdp"
    anchor.release_call(call.id)
    next_call, next_a = a_call()  # the same id again (a new call) takes the slot
    assert anchor.rewrite(next_call, next_a, b, offer) != offer


def test_releasing_the_call_deletes_its_slot_once() -> None:
    anchor = RtpengineAnchor()
    anchor.add_slots([slot(1)])
    call, a = a_call()
    b = leg("B")
    anchor.rewrite(call, a, b, sdp(30000))
    commands(anchor)
    anchor.release_leg(b)
    assert not anchor.has_side(b) and anchor.has_side(a)
    anchor.release_call(call.id)
    anchor.release_call(call.id)
    assert commands(anchor) == [DeleteSlot("slot-1")]
    assert len(anchor) == 0 and not anchor.has_side(a)


def test_voicemail_is_recorded_by_the_relay_through_the_opposite_side() -> None:
    recorder = Recorder("198.51.100.7", PortPool(50000, 50004))
    anchor = RtpengineAnchor(recorder)
    anchor.add_slots([slot(1)])
    call, a = a_call()
    a.remote_sdp = sdp(30000)
    b = leg("B")
    anchor.rewrite(call, a, b, a.remote_sdp)
    anchor.play(a, ("reconnecting",), "music")
    commands(anchor)
    assert anchor.record(call, a, "alice", "bob", (120.0, 10.0))
    assert not anchor.record(call, a, "alice", "bob", (120.0, 10.0))  # one message at a time
    queued = commands(anchor)
    assert queued[:3] == [
        StopMedia("slot-1", "a"),  # the music stops: the greeting comes from the relay
        OpenSide("A.voicemail", 50000),
        SetPeer("A.voicemail", ("203.0.113.5", 40006), False),  # rtpengine's side b
    ]
    negotiate, record = queued[3:]
    assert isinstance(negotiate, Negotiate) and negotiate.tag == "b"
    assert target(negotiate.sdp) == ("198.51.100.7", 50000)
    assert record == Record(
        "A.voicemail", "alice", "bob", "call-1", "voicemail_greeting", 0, 120.0, 10.0
    )
    anchor.release_call(call.id)
    assert commands(anchor) == [CloseSide("A.voicemail"), DeleteSlot("slot-1")]
    assert len(recorder.ports) == 2  # the relay port is free again


def test_voicemail_needs_a_recorder_and_a_g711_codec() -> None:
    anchor = RtpengineAnchor()
    anchor.add_slots([slot(1), slot(2)])
    call, a = a_call()
    a.remote_sdp = sdp(30000)
    anchor.rewrite(call, a, leg("B"), a.remote_sdp)
    assert not anchor.record(call, a, "alice", "bob", (60.0, 10.0))
    opus = RtpengineAnchor(Recorder("198.51.100.7", PortPool(50000, 50004)))
    opus.add_slots([slot(3)])
    a.remote_sdp = sdp(30000).replace(b"RTP/AVP 0 101", b"RTP/AVP 111")
    opus.rewrite(call, a, leg("B"), a.remote_sdp)
    assert not opus.record(call, a, "alice", "bob", (60.0, 10.0))


def test_stale_slots_are_handed_back_for_replacement() -> None:
    anchor = RtpengineAnchor()
    anchor.add_slots([slot(1, created=0.0), slot(2, created=10.0), slot(3, created=20.0)])
    stale = anchor.take_stale_slots(created_before=15.0)
    assert [s.id for s in stale] == ["slot-1", "slot-2"]
    assert anchor.free_slots == 1
    assert anchor.take_stale_slots(created_before=15.0) == []
