"""RFC 4733 telephone-events (payload, sender, receiver over a lossy path) and SIP INFO bodies."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callkeeper.media import dtmf
from callkeeper.media.dtmf import DtmfDigit, DtmfError, TelephoneEvent, TelephoneEventReceiver
from callkeeper.media.rtp import RtpPacket

PT = 101


def test_payload_layout_matches_rfc4733_figure_1() -> None:
    # event 5, E=1, R=0, volume 10, duration 1600: 05 8a 06 40
    block = TelephoneEvent(event=5, end=True, volume=10, duration=1600)
    assert block.serialize() == bytes.fromhex("058a0640")
    assert dtmf.parse_telephone_event(bytes.fromhex("058a0640")) == block


def test_reserved_bit_and_trailing_redundant_blocks_are_ignored() -> None:
    payload = bytes.fromhex("0bca00a0") + bytes.fromhex("050a0320")
    assert dtmf.parse_telephone_event(payload) == TelephoneEvent(11, True, 10, 160)


@given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF))
def test_payload_round_trip(event: int, end: bool, volume: int, duration: int) -> None:
    block = TelephoneEvent(event, end, volume, duration)
    assert dtmf.parse_telephone_event(block.serialize()) == block


@given(st.binary(max_size=3))
def test_short_payloads_are_dtmf_errors(payload: bytes) -> None:
    with pytest.raises(DtmfError):
        dtmf.parse_telephone_event(payload)


@pytest.mark.parametrize(
    "kwargs", [{"event": 256}, {"volume": 64}, {"duration": 0x10000}, {"event": -1}]
)
def test_block_field_ranges(kwargs: dict[str, int]) -> None:
    fields = {"event": 1, "end": False, "volume": 10, "duration": 0} | kwargs
    with pytest.raises(ValueError):
        TelephoneEvent(**fields)  # type: ignore[arg-type]


def test_digit_event_mapping() -> None:
    for code, digit in enumerate("0123456789*#ABCD"):
        assert dtmf.event_for_digit(digit) == code
        assert dtmf.digit_for_event(code) == digit
    assert dtmf.event_for_digit("a") == 12
    assert dtmf.event_for_digit("!") == 16 and dtmf.digit_for_event(16) == "!"
    assert dtmf.digit_for_event(17) is None and dtmf.digit_for_event(-1) is None
    for bad in ("", "E", "12", " "):
        with pytest.raises(DtmfError):
            dtmf.event_for_digit(bad)


def press(
    digit: str, *, timestamp: int = 8000, sequence: int = 100, **kwargs: int
) -> list[RtpPacket]:
    return list(
        dtmf.telephone_event_packets(
            digit,
            ssrc=0x1234,
            payload_type=PT,
            first_sequence=sequence,
            timestamp=timestamp,
            **kwargs,
        )
    )


def test_sender_packet_sequence() -> None:
    packets = press("#", duration=800, packet_interval=160)
    blocks = [dtmf.parse_telephone_event(p.payload) for p in packets]
    # Start with marker, updates every 20 ms, then the end packet three times.
    assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)
    assert [b.duration for b in blocks] == [160, 320, 480, 640, 800, 800, 800]
    assert [b.end for b in blocks] == [False] * 4 + [True] * 3
    assert {b.event for b in blocks} == {11}
    assert {b.volume for b in blocks} == {dtmf.DEFAULT_VOLUME}
    assert {p.timestamp for p in packets} == {8000}
    assert {(p.ssrc, p.payload_type) for p in packets} == {(0x1234, PT)}
    assert [p.sequence for p in packets] == list(range(100, 107))
    assert [p.payload for p in packets[-3:]] == [packets[-1].payload] * 3


def test_sender_wraps_sequence_and_handles_a_short_press() -> None:
    packets = press("1", sequence=65535, duration=160, packet_interval=160)
    assert [p.sequence for p in packets] == [65535, 0, 1]
    assert all(dtmf.parse_telephone_event(p.payload).end for p in packets)
    assert packets[0].marker


@pytest.mark.parametrize(("duration", "interval"), [(0, 0), (100, 160), (70000, 160)])
def test_sender_rejects_impossible_durations(duration: int, interval: int) -> None:
    with pytest.raises(ValueError):
        press("1", duration=duration, packet_interval=interval)


def receive_all(receiver: TelephoneEventReceiver, packets: list[RtpPacket]) -> list[str]:
    digits = [receiver.receive(p) for p in packets]
    return [d.digit for d in digits if d is not None]


def test_receiver_reports_each_press_once() -> None:
    stream = (
        press("1", timestamp=0)
        + press("1", timestamp=3200, sequence=107)
        + press("9", timestamp=6400, sequence=114)
    )
    assert receive_all(TelephoneEventReceiver(), stream) == ["1", "1", "9"]


@given(st.data())
def test_receiver_over_a_lossy_duplicating_reordering_path(data: st.DataObject) -> None:
    """Whatever survives the path, each press whose packets are not all lost is reported once,
    in order, when reordering stays within one press (20 ms packets vs presses ≥ 100 ms apart)."""
    digits = data.draw(st.lists(st.sampled_from("0123456789*#ABCD"), min_size=1, max_size=8))
    expected: list[str] = []
    received: list[str] = []
    receiver = TelephoneEventReceiver()
    sequence = 0
    for index, digit in enumerate(digits):
        packets = press(digit, timestamp=index * 4000, sequence=sequence)
        sequence += len(packets)
        kept = [p for p in packets if data.draw(st.booleans(), label="delivered")]
        kept += [p for p in kept if data.draw(st.integers(0, 4)) == 0]  # duplicates
        kept = data.draw(st.permutations(kept), label="order")
        if kept:
            expected.append(digit)
        received += receive_all(receiver, kept)
    assert received == expected


def test_late_packets_of_an_earlier_event_are_ignored() -> None:
    first = press("4", timestamp=0)
    second = press("5", timestamp=4000, sequence=120)
    receiver = TelephoneEventReceiver()
    assert receive_all(receiver, first[:2] + second[:1] + first[-3:] + second[1:]) == ["4", "5"]


def test_a_long_press_split_into_segments_is_one_digit() -> None:
    # RFC 4733 §2.5.1.3: a press longer than 65535 samples continues in a new segment whose
    # timestamp is the old one plus the old duration; no marker, no end until the very end.
    first = [
        RtpPacket(PT, 1, 1000, 9, TelephoneEvent(6, False, 10, 65000).serialize(), marker=True),
        RtpPacket(PT, 2, 1000, 9, TelephoneEvent(6, False, 10, 65535).serialize()),
    ]
    segment = RtpPacket(PT, 3, 1000 + 65535, 9, TelephoneEvent(6, False, 10, 160).serialize())
    end = dataclasses.replace(
        segment, sequence=4, payload=TelephoneEvent(6, True, 10, 320).serialize()
    )
    assert receive_all(TelephoneEventReceiver(), [*first, segment, end, end]) == ["6"]


def test_the_same_key_again_after_an_end_is_a_new_press() -> None:
    ended = RtpPacket(PT, 1, 0, 9, TelephoneEvent(6, True, 10, 800).serialize())
    again = RtpPacket(PT, 2, 800, 9, TelephoneEvent(6, False, 10, 160).serialize(), marker=True)
    assert receive_all(TelephoneEventReceiver(), [ended, again]) == ["6", "6"]


def test_a_new_ssrc_starts_afresh_and_non_dtmf_events_are_silent() -> None:
    receiver = TelephoneEventReceiver()
    a = press("2", timestamp=500)
    b = [dataclasses.replace(p, ssrc=0x9999) for p in press("2", timestamp=500)]
    assert receive_all(receiver, a + b) == ["2", "2"]
    tone = RtpPacket(PT, 50, 9000, 0x9999, TelephoneEvent(70, False, 10, 160).serialize())
    garbage = RtpPacket(PT, 51, 9160, 0x9999, b"\x01")
    assert receiver.receive(tone) is None
    assert receiver.receive(garbage) is None


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n", DtmfDigit("5", 160)),
        (
            "Application/DTMF-Relay; charset=utf-8",
            b"signal= *\nduration = 250",
            DtmfDigit("*", 250),
        ),
        ("application/dtmf-relay", "Signal=#", DtmfDigit("#")),
        ("application/dtmf-relay", "Signal=11\r\nDuration=100", DtmfDigit("#", 100)),
        ("application/dtmf-relay", "Signal=10", DtmfDigit("*")),
        ("application/dtmf-relay", "Signal=d", DtmfDigit("D")),
        ("application/dtmf-relay", "Signal=16", DtmfDigit("!")),
        ("application/dtmf", "7", DtmfDigit("7")),
        ("application/dtmf", b"11\r\n", DtmfDigit("#")),
    ],
)
def test_sip_info_bodies(content_type: str, body: str | bytes, expected: DtmfDigit) -> None:
    assert dtmf.parse_info_body(content_type, body) == expected


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", "Signal=5"),
        ("", "Signal=5"),
        ("application/dtmf-relay", "Duration=160"),
        ("application/dtmf-relay", "Signal=5\r\nDuration=long"),
        ("application/dtmf-relay", "Signal=5\r\nDuration=²"),
        ("application/dtmf-relay", "Signal=E"),
        ("application/dtmf-relay", "Signal=99"),
        ("application/dtmf", ""),
        ("application/dtmf", "²"),
    ],
)
def test_bad_sip_info_bodies(content_type: str, body: str) -> None:
    with pytest.raises(DtmfError):
        dtmf.parse_info_body(content_type, body)


@given(st.text(max_size=40), st.sampled_from([dtmf.DTMF, dtmf.DTMF_RELAY]))
def test_info_bodies_give_a_digit_or_a_dtmf_error(body: str, content_type: str) -> None:
    try:
        digit = dtmf.parse_info_body(content_type, body)
    except DtmfError:
        return
    assert digit.digit in "0123456789*#ABCD!"
