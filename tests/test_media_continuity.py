"""The survivor sees one SSRC whose sequence and timestamp run on smoothly across re-bridges."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callkeeper.media import rtp
from callkeeper.media.continuity import StreamContinuity
from callkeeper.media.rtp import RtpPacket

OUT = 0x5EED


def stream(
    ssrc: int, sequence: int, timestamp: int, count: int, step: int = 160
) -> list[RtpPacket]:
    return [
        RtpPacket(
            0,
            (sequence + i) & 0xFFFF,
            (timestamp + i * step) & 0xFFFFFFFF,
            ssrc,
            bytes([i % 256]) * 4,
            marker=i == 0,
        )
        for i in range(count)
    ]


def feed(cont: StreamContinuity, packets: list[RtpPacket], start: float) -> list[RtpPacket]:
    out = []
    for i, packet in enumerate(packets):
        rewritten = cont.rewrite(packet, start + i * 0.02)
        if rewritten is not None:
            out.append(rewritten)
    return out


def test_before_any_switch_only_the_ssrc_changes() -> None:
    cont = StreamContinuity(ssrc=OUT)
    source = stream(0xA, 40000, 123456, 5)
    out = feed(cont, source, 0.0)
    assert [(p.sequence, p.timestamp, p.marker, p.payload) for p in out] == [
        (p.sequence, p.timestamp, p.marker, p.payload) for p in source
    ]
    assert {p.ssrc for p in out} == {OUT} and cont.switches == 0


def test_explicit_switch_continues_sequence_and_timestamp() -> None:
    cont = StreamContinuity(ssrc=OUT)
    before = feed(cont, stream(0xA, 65530, 0xFFFFFF00, 10), 0.0)  # wraps both counters
    cont.switch_source()
    # The new source's first packet arrives 0.5 s after the old one's last (at 0.18 s).
    after = feed(cont, stream(0xB, 7, 999, 5), 0.68)
    last = before[-1]
    assert after[0].sequence == (last.sequence + 1) & 0xFFFF
    assert after[0].timestamp == (last.timestamp + 4000) & 0xFFFFFFFF  # 0.5 s at 8 kHz
    assert after[0].marker and not any(p.marker for p in after[1:])
    assert [p.sequence for p in after] == [(after[0].sequence + i) & 0xFFFF for i in range(5)]
    assert [p.timestamp for p in after] == [
        (after[0].timestamp + 160 * i) & 0xFFFFFFFF for i in range(5)
    ]
    assert {p.ssrc for p in before + after} == {OUT}
    assert cont.switches == 1


def test_a_quick_switch_advances_at_least_one_frame() -> None:
    cont = StreamContinuity(ssrc=OUT)
    before = feed(cont, stream(0xA, 1, 1, 3, step=240), 0.0)  # 30 ms frames
    cont.switch_source()
    first = cont.rewrite(stream(0xB, 500, 500, 1)[0], 0.041)
    assert first is not None
    assert first.timestamp == before[-1].timestamp + 240  # learned frame size beats 8 samples


def test_a_new_ssrc_without_a_switch_is_a_restarted_stream() -> None:
    cont = StreamContinuity(ssrc=OUT)
    before = feed(cont, stream(0xA, 100, 100, 3), 0.0)
    after = feed(cont, stream(0xC, 9000, 70000, 2), 0.06)
    assert after[0].sequence == before[-1].sequence + 1 and after[0].marker
    assert after[0].timestamp == before[-1].timestamp + 160
    # Late packets of the replaced stream would land on numbers already played: dropped.
    assert cont.rewrite(stream(0xA, 103, 580, 1)[0], 0.1) is None
    assert cont.dropped == 1


def test_switching_back_to_an_earlier_source_is_allowed_when_told() -> None:
    cont = StreamContinuity(ssrc=OUT)
    feed(cont, stream(0xA, 100, 100, 3), 0.0)
    cont.switch_source()
    player = feed(cont, stream(0xB, 1, 1, 3), 0.06)
    cont.switch_source()
    resumed = feed(cont, stream(0xA, 200, 30000, 2), 0.12)  # the phone kept its SSRC
    assert resumed[0].sequence == player[-1].sequence + 1 and resumed[0].marker
    assert cont.switches == 2


def test_reordering_loss_and_duplicates_within_a_source_show_through() -> None:
    cont = StreamContinuity(ssrc=OUT)
    feed(cont, stream(0xA, 10, 0, 2), 0.0)
    cont.switch_source()
    packets = stream(0xB, 300, 5000, 6)
    order = [packets[0], packets[2], packets[1], packets[2], packets[5]]  # reorder, dup, loss
    out = [cont.rewrite(p, 1.0) for p in order]
    assert all(p is not None for p in out)
    seqs = [p.sequence for p in out if p is not None]
    assert seqs == [12, 14, 13, 14, 17]
    stamps = [p.timestamp for p in out if p is not None]
    assert [s - stamps[0] for s in stamps] == [0, 320, 160, 320, 800]


def test_packets_older_than_the_switch_are_dropped() -> None:
    cont = StreamContinuity(ssrc=OUT)
    feed(cont, stream(0xA, 10, 0, 2), 0.0)
    cont.switch_source()
    assert cont.rewrite(stream(0xB, 300, 0, 1)[0], 0.1) is not None
    assert cont.rewrite(stream(0xB, 299, 0, 1)[0], 0.1) is None
    assert cont.dropped == 1


def test_the_datagram_fast_path_keeps_everything_but_the_fixed_header() -> None:
    cont = StreamContinuity(ssrc=OUT)
    packet = RtpPacket(
        0, 5, 5, 0xA, b"abc", csrcs=(1, 2), extension=rtp.RtpExtension(1, b"wxyz"), padding=3
    )
    out = cont.rewrite_datagram(packet.serialize(), 0.0)
    assert out is not None
    assert rtp.parse(out) == RtpPacket(
        0, 5, 5, OUT, b"abc", csrcs=(1, 2), extension=rtp.RtpExtension(1, b"wxyz"), padding=3
    )
    cont.switch_source()
    assert cont.rewrite_datagram(b"\x00garbage", 0.1) is None
    assert cont.rewrite_datagram(stream(0xB, 1, 1, 1)[0].serialize(), 0.2) is not None
    assert cont.rewrite_datagram(stream(0xB, 0, 1, 1)[0].serialize(), 0.2) is None
    assert cont.dropped == 2


@pytest.mark.parametrize("gap", [0.0, 0.02, 0.5, 3.0])
def test_timestamp_gap_follows_the_wall_clock(gap: float) -> None:
    cont = StreamContinuity(ssrc=OUT)
    before = feed(cont, stream(0xA, 0, 0, 4), 0.0)
    cont.switch_source()
    first = cont.rewrite(stream(0xB, 77, 77, 1)[0], 0.06 + gap)
    assert first is not None
    assert first.timestamp - before[-1].timestamp == max(160, round(gap * 8000))


sources = st.lists(
    st.tuples(
        st.integers(0, 0xFFFFFFFF),  # SSRC
        st.integers(0, 0xFFFF),  # first sequence
        st.integers(0, 0xFFFFFFFF),  # first timestamp
        st.integers(1, 20),  # packets
        st.floats(0.0, 2.0),  # silence before the source starts
        st.booleans(),  # explicit switch (else: implicit, by SSRC)
    ),
    min_size=1,
    max_size=6,
)


@given(sources)
def test_any_chain_of_sources_looks_like_one_stream(
    chain: list[tuple[int, int, int, int, float, bool]],
) -> None:
    cont = StreamContinuity(ssrc=OUT)
    now = 0.0
    out: list[tuple[float, RtpPacket]] = []
    used: set[int] = set()
    for ssrc, sequence, timestamp, count, silence, explicit in chain:
        # The relay re-bridges explicitly; only a phone restarting its stream (a fresh SSRC)
        # switches implicitly, and a source that used an SSRC before needs an explicit switch.
        if explicit or ssrc in used:
            cont.switch_source()
        used.add(ssrc)
        now += silence
        for packet in stream(ssrc, sequence, timestamp, count):
            rewritten = cont.rewrite(packet, now)
            if rewritten is not None:
                out.append((now, rewritten))
            now += 0.02
    assert out and {p.ssrc for _, p in out} == {OUT}
    for (t0, a), (t1, b) in itertools.pairwise(out):
        assert b.sequence == (a.sequence + 1) & 0xFFFF
        step = (b.timestamp - a.timestamp) & 0xFFFFFFFF
        if b.marker:
            assert step == max(160, round((t1 - t0) * 8000))
        else:
            assert step == 160


def test_a_timestamp_that_does_not_move_is_no_frame_size() -> None:
    # Telephone-event packets repeat their event's timestamp: the frame size learned from the
    # audio before them must survive them.
    cont = StreamContinuity(ssrc=OUT)
    audio = feed(cont, stream(0xA, 1, 1000, 3, step=240), 0.0)
    events = [RtpPacket(101, 4 + i, 1720, 0xA, bytes(4)) for i in range(3)]
    feed(cont, events, 0.06)
    cont.switch_source()
    first = cont.rewrite(stream(0xB, 9, 9, 1)[0], 0.121)
    assert first is not None
    assert first.timestamp == audio[-1].timestamp + 240 + 240


def test_a_long_call_is_never_cut_by_the_stale_check() -> None:
    """More than 65,536 packets from one source (22 minutes at 50/s): every one goes through."""
    continuity = StreamContinuity(ssrc=0x1234)
    sequence, timestamp, now = 65000, 10, 0.0
    relayed = 0
    for _ in range(140_000):
        out = continuity.rewrite_fields(0xABCD, sequence, timestamp, False, now)
        relayed += out is not None
        sequence = (sequence + 1) & 0xFFFF
        timestamp = (timestamp + 160) & 0xFFFFFFFF
        now += 0.02
    assert relayed == 140_000 and continuity.dropped == 0
    # a packet from long before (older than the window) is still refused
    assert continuity.rewrite_fields(0xABCD, (sequence - 0x6000) & 0xFFFF, 0, False, now) is None
