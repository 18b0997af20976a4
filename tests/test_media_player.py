"""Packetizing G.711 at 20 ms, and the announcement-then-music player driven by a fake clock."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from callkeeper.media import g711
from callkeeper.media.g711 import Codec
from callkeeper.media.player import (
    PTIME_SECONDS,
    SAMPLES_PER_FRAME,
    Player,
    RtpPacketizer,
    encode_frames,
)
from callkeeper.media.rtp import RtpPacket


def tone(seconds: float, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (8000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


@given(arrays(np.int16, st.integers(0, 1000)), st.sampled_from(list(Codec)))
def test_frames_cover_the_pcm_and_pad_with_silence(pcm: np.ndarray, codec: Codec) -> None:
    frames = encode_frames(pcm, codec)
    assert len(frames) == -(-len(pcm) // SAMPLES_PER_FRAME)
    assert all(len(frame) == SAMPLES_PER_FRAME for frame in frames)
    joined = b"".join(frames)
    assert joined[: len(pcm)] == g711.encode(pcm, codec)
    assert joined[len(pcm) :] == bytes([codec.silence]) * (len(joined) - len(pcm))


def test_frame_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        encode_frames(tone(0.1), Codec.PCMU, samples_per_frame=0)


def test_packetizer_numbering_wraps_and_marks_talkspurts() -> None:
    packetizer = RtpPacketizer(ssrc=77, payload_type=8, sequence=65534, timestamp=0xFFFFFF00)
    frame = bytes(160)
    first, second, third = (packetizer.packetize(frame) for _ in range(3))
    assert [p.sequence for p in (first, second, third)] == [65534, 65535, 0]
    assert [p.timestamp for p in (first, second, third)] == [0xFFFFFF00, 0xFFFFFFA0, 0x40]
    assert [p.marker for p in (first, second, third)] == [True, False, False]
    assert {p.ssrc for p in (first, second, third)} == {77}
    assert {p.payload_type for p in (first, second, third)} == {8}
    packetizer.begin_talkspurt()
    fourth = packetizer.packetize(frame)
    assert fourth.marker and fourth.sequence == 1 and fourth.timestamp == 0xE0
    packetizer.skip(1600)
    fifth = packetizer.packetize(frame)
    assert fifth.marker and fifth.sequence == 2 and fifth.timestamp == 0xE0 + 160 + 1600


def drain(player: Player, now: float) -> list[RtpPacket]:
    packets = []
    while (packet := player.next_packet(now)) is not None:
        packets.append(packet)
    return packets


def run(player: Player, until: float, step: float = PTIME_SECONDS) -> list[tuple[float, RtpPacket]]:
    """Drive the player like the io layer: wake at get_timer() (or every `step`), drain."""
    sent: list[tuple[float, RtpPacket]] = []
    now = 0.0
    while now <= until:
        sent += [(now, p) for p in drain(player, now)]
        timer = player.get_timer()
        if timer is None:
            break
        now = max(timer, now + step) if step > PTIME_SECONDS else timer
    return sent


def make_player(**kwargs: object) -> Player:
    fields: dict[str, object] = {
        "codec": Codec.PCMU,
        "ssrc": 0xCAFE,
        "sequence": 1000,
        "timestamp": 50_000,
        "start": 0.0,
    }
    fields.update(kwargs)
    return Player(**fields)  # type: ignore[arg-type]


def test_announcement_then_looping_music() -> None:
    announcement = encode_frames(tone(0.25, 440), Codec.PCMU)  # 13 frames, the last padded
    music = encode_frames(tone(0.1, 660), Codec.PCMU)  # 5 frames
    player = make_player(announcement=announcement, music=music)
    sent = run(player, until=1.0)
    packets = [p for _, p in sent]
    assert len(packets) == 51  # frames due at 0, 20, ..., 1000 ms
    payloads = [p.payload for p in packets]
    assert payloads[:13] == list(announcement)
    assert payloads[13:] == [music[i % 5] for i in range(len(payloads) - 13)]
    assert [p.sequence for p in packets] == list(range(1000, 1051))
    assert [p.timestamp for p in packets] == [50_000 + 160 * i for i in range(51)]
    assert [p.marker for p in packets] == [True] + [False] * 50
    assert {(p.ssrc, p.payload_type) for p in packets} == {(0xCAFE, 0)}
    # Each packet left at exactly its due time on the 20 ms grid.
    assert [round(t / PTIME_SECONDS) for t, _ in sent] == list(range(51))
    assert player.playing_music and not player.finished and player.packets_sent == 51


def test_announcement_only_finishes() -> None:
    announcement = encode_frames(tone(0.06), Codec.PCMA)
    player = make_player(codec=Codec.PCMA, announcement=announcement)
    assert [p.payload for _, p in run(player, until=5.0)] == list(announcement)
    assert player.finished and not player.playing_music
    assert player.get_timer() is None and player.next_packet(10.0) is None


def test_nothing_to_play_is_finished_at_once() -> None:
    player = make_player()
    assert player.finished and player.get_timer() is None and player.next_packet(0.0) is None


def test_music_only_loops_from_the_start() -> None:
    music = encode_frames(tone(0.04), Codec.PCMU)
    player = make_player(music=music)
    assert [p.payload for p in drain(player, 0.1)] == [music[i % 2] for i in range(6)]


def test_not_due_yet() -> None:
    player = make_player(start=5.0, music=encode_frames(tone(0.02), Codec.PCMU))
    assert player.next_packet(4.999) is None
    assert player.get_timer() == 5.0
    assert player.next_packet(5.0) is not None
    assert player.get_timer() == pytest.approx(5.02)


def test_a_small_delay_is_caught_up_in_a_burst() -> None:
    player = make_player(music=encode_frames(tone(0.2), Codec.PCMU))
    packets = drain(player, 0.08)  # four frames late, within max_lag
    assert [p.timestamp - 50_000 for p in packets] == [0, 160, 320, 480, 640]
    assert player.frames_skipped == 0


def test_a_long_stall_pauses_instead_of_bursting() -> None:
    announcement = encode_frames(tone(0.2), Codec.PCMU)
    player = make_player(announcement=announcement)
    first = drain(player, 0.0)
    late = drain(player, 1.0)  # the loop stalled for a second
    # One packet, not fifty: the announcement resumes where it paused, the timestamp accounts
    # for the 980 ms that were not sent, and the marker tells the phone to re-sync.
    assert len(first) == 1 and len(late) == 1
    assert late[0].payload == announcement[1]
    assert late[0].sequence == first[0].sequence + 1
    assert late[0].timestamp - first[0].timestamp == 160 * 50
    assert late[0].marker
    assert player.frames_skipped == 49
    assert player.get_timer() == pytest.approx(1.02)
    assert drain(player, 1.02)[0].payload == announcement[2]


@given(st.lists(st.floats(0.0, 0.3), min_size=1, max_size=40))
def test_sequence_and_timestamp_stay_consistent_under_any_wakeups(gaps: list[float]) -> None:
    player = make_player(music=encode_frames(tone(0.3), Codec.PCMU))
    now = 0.0
    packets: list[RtpPacket] = []
    for gap in gaps:
        now += gap
        packets += drain(player, now)
        timer = player.get_timer()
        assert timer is not None and timer > now  # drained: nothing due is left behind
    for before, after in itertools.pairwise(packets):
        assert after.sequence == (before.sequence + 1) & 0xFFFF
        step = after.timestamp - before.timestamp
        assert step % 160 == 0 and step >= 160
        assert after.marker == (step > 160)
    # Media time never runs ahead of the wall clock by more than one frame.
    if packets:
        assert (packets[-1].timestamp - 50_000) / 8000 <= now + 1e-9
