"""Symmetric RTP latching: every (state, origin) pair of the table, the drop reasons, RTCP."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callkeeper.media.latching import (
    _TRANSITIONS,
    AcceptedRtcp,
    AcceptedRtp,
    Action,
    Dropped,
    DropReason,
    LatchState,
    Origin,
    RtpLatch,
)
from callkeeper.media.rtp import RtpPacket

PHONE = ("192.0.2.10", 4000)
NAT = ("198.51.100.7", 61000)
ATTACKER = ("203.0.113.66", 4000)


def rtp(ssrc: int = 0x1111, sequence: int = 1) -> bytes:
    return RtpPacket(0, sequence, sequence * 160, ssrc, b"\xff" * 160).serialize()


def rtcp(ssrc: int = 0x1111) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


def test_the_table_covers_each_meaningful_pair() -> None:
    unlatched = {o for s, o in _TRANSITIONS if s is LatchState.UNLATCHED}
    latched = {o for s, o in _TRANSITIONS if s is LatchState.LATCHED}
    assert unlatched == {Origin.EXPECTED, Origin.UNEXPECTED}
    assert latched == {Origin.LATCHED_SOURCE, Origin.LATCHED_ADDRESS_NEW_SSRC, Origin.FOREIGN}
    # Only the first expected packet changes state; nothing but relatch() unlatches.
    changes = {k for k, (state, _) in _TRANSITIONS.items() if state is not k[0]}
    assert changes == {(LatchState.UNLATCHED, Origin.EXPECTED)}
    drops = {k for k, (_, action) in _TRANSITIONS.items() if action is Action.DROP}
    assert drops == {
        (LatchState.UNLATCHED, Origin.UNEXPECTED),
        (LatchState.LATCHED, Origin.FOREIGN),
    }


def test_latches_to_the_signalled_address_then_locks() -> None:
    latch = RtpLatch(PHONE)
    assert latch.receive(rtp(), ATTACKER) == Dropped(DropReason.FOREIGN_SOURCE)
    verdict = latch.receive(rtp(), PHONE)
    assert isinstance(verdict, AcceptedRtp) and verdict.latched and verdict.packet.ssrc == 0x1111
    assert (latch.state, latch.latched_address, latch.latched_ssrc) == (
        LatchState.LATCHED,
        PHONE,
        0x1111,
    )
    following = latch.receive(rtp(sequence=2), PHONE)
    assert (
        isinstance(following, AcceptedRtp) and not following.latched and not following.ssrc_changed
    )
    # The same SSRC from elsewhere is still a foreign source: only relatch() moves the latch.
    assert latch.receive(rtp(), ATTACKER) == Dropped(DropReason.FOREIGN_SOURCE)
    assert latch.receive(rtp(), NAT) == Dropped(DropReason.FOREIGN_SOURCE)
    assert latch.drops == {DropReason.FOREIGN_SOURCE: 3}


def test_behind_nat_latches_to_whoever_sends_first() -> None:
    latch = RtpLatch(PHONE, behind_nat=True)
    assert isinstance(latch.receive(rtp(), NAT), AcceptedRtp)
    assert latch.latched_address == NAT
    assert latch.receive(rtp(), PHONE) == Dropped(DropReason.FOREIGN_SOURCE)


def test_no_signalled_address_needs_nat_mode() -> None:
    assert isinstance(RtpLatch(None).receive(rtp(), PHONE), Dropped)
    assert isinstance(RtpLatch(None, behind_nat=True).receive(rtp(), PHONE), AcceptedRtp)


def test_a_new_ssrc_from_the_latched_address_is_adopted() -> None:
    latch = RtpLatch(PHONE)
    latch.receive(rtp(0x1111), PHONE)
    verdict = latch.receive(rtp(0x2222), PHONE)
    assert isinstance(verdict, AcceptedRtp) and verdict.ssrc_changed
    assert latch.latched_ssrc == 0x2222 and latch.ssrc_changes == 1
    assert latch.receive(rtp(0x3333), ATTACKER) == Dropped(DropReason.FOREIGN_SOURCE)
    assert latch.latched_ssrc == 0x2222


def test_relatch_follows_a_reinvite() -> None:
    latch = RtpLatch(PHONE)
    latch.receive(rtp(), PHONE)
    moved = ("192.0.2.99", 5000)
    latch.relatch(moved)
    assert latch.state is LatchState.UNLATCHED and latch.latched_address is None
    assert latch.receive(rtp(), PHONE) == Dropped(DropReason.FOREIGN_SOURCE)
    assert isinstance(latch.receive(rtp(0x4444), moved), AcceptedRtp)
    assert latch.latched_ssrc == 0x4444
    latch.relatch(None, behind_nat=True)
    assert latch.behind_nat and isinstance(latch.receive(rtp(), ATTACKER), AcceptedRtp)
    latch.relatch(PHONE)
    assert latch.behind_nat  # unchanged unless given


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", DropReason.TRUNCATED),
        (rtp()[:8], DropReason.TRUNCATED),
        (bytes([0x40]) + rtp()[1:], DropReason.WRONG_VERSION),
        (bytes([0xA0]) + rtp()[1:12] + b"\x09", DropReason.BAD_PADDING),
        (struct.pack("!BBHI", 0x80, 200, 9, 1), DropReason.TRUNCATED),  # RTCP, length too big
        (struct.pack("!BBH", 0x80, 200, 0), DropReason.TRUNCATED),  # RTCP header cut
    ],
)
def test_bad_datagrams_are_dropped_by_reason_in_any_state(data: bytes, reason: DropReason) -> None:
    for latched in (False, True):
        latch = RtpLatch(PHONE)
        if latched:
            latch.receive(rtp(), PHONE)
        assert latch.receive(data, PHONE) == Dropped(reason)
        assert latch.drops == {reason: 1}
        assert latch.state is (LatchState.LATCHED if latched else LatchState.UNLATCHED)


def test_muxed_rtcp_passes_from_the_media_source_and_never_latches() -> None:
    latch = RtpLatch(PHONE)
    assert latch.receive(rtcp(), ATTACKER) == Dropped(DropReason.FOREIGN_SOURCE)
    before = latch.receive(rtcp(), PHONE)
    assert isinstance(before, AcceptedRtcp) and not before.latched
    assert before.header.packet_type == 201 and before.data == rtcp()
    assert latch.state is LatchState.UNLATCHED
    assert isinstance(latch.receive(rtp(), PHONE), AcceptedRtp)
    assert isinstance(latch.receive(rtcp(), PHONE), AcceptedRtcp)
    assert latch.receive(rtcp(), ATTACKER) == Dropped(DropReason.FOREIGN_SOURCE)


def test_a_separate_rtcp_port_latches_on_rtcp() -> None:
    rtcp_port = ("192.0.2.10", 4001)
    latch = RtpLatch(rtcp_port, latch_rtcp=True)
    first = latch.receive(rtcp(), rtcp_port)
    assert isinstance(first, AcceptedRtcp) and first.latched
    second = latch.receive(rtcp(), rtcp_port)
    assert isinstance(second, AcceptedRtcp) and not second.latched
    assert latch.receive(rtcp(), ATTACKER) == Dropped(DropReason.FOREIGN_SOURCE)


@given(
    st.lists(
        st.tuples(st.binary(max_size=40), st.sampled_from([PHONE, NAT, ATTACKER])), max_size=30
    )
)
def test_garbage_never_raises_and_never_moves_the_latch(
    datagrams: list[tuple[bytes, tuple[str, int]]],
) -> None:
    latch = RtpLatch(PHONE)
    latch.receive(rtp(), PHONE)
    for data, source in datagrams:
        verdict = latch.receive(data, source)
        if source != PHONE:
            assert isinstance(verdict, Dropped)
    assert latch.latched_address == PHONE
    assert sum(latch.drops.values()) >= sum(1 for _, s in datagrams if s != PHONE)
