"""Playing audio into a leg: G.711 framing, RTP numbering, and "announcement, then music".

The relay holds a survivor by sending them RTP itself. Phones' jitter buffers are strict about
what they accept, so the stream must look like a phone's: 20 ms frames of 160 G.711 samples,
sequence +1 and timestamp +160 per packet, the marker bit on the first packet of each talkspurt
(RFC 3551 §4.1), one SSRC. `Player` is sans-IO: the io layer asks `next_packet(now)` until it
returns None, then sleeps until `get_timer()`. Frames are due on a fixed grid (start + n·20 ms,
computed from the frame count, so float error never accumulates); when the io layer falls far
behind (a stalled loop) the player does not burst the backlog into the phone's jitter buffer —
it resumes at the present with a timestamp that accounts for the gap and a marker bit, and the
announcement continues where it paused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from callkeeper.media.g711 import Codec, Pcm, encode
from callkeeper.media.rtp import RtpPacket

SAMPLE_RATE = 8000
PTIME_SECONDS = 0.020
SAMPLES_PER_FRAME = 160  # 20 ms at 8 kHz; G.711 carries one octet per sample
DEFAULT_MAX_LAG = 0.100
"""How late a frame may be before the player skips ahead instead of catching up (5 frames)."""


def encode_frames(
    pcm: Pcm, codec: Codec, samples_per_frame: int = SAMPLES_PER_FRAME
) -> tuple[bytes, ...]:
    """`pcm` cut into G.711 payloads of `samples_per_frame`; a partial last frame is padded with
    silence so every packet carries the same duration."""
    if samples_per_frame <= 0:
        raise ValueError("samples_per_frame must be positive")
    samples = np.asarray(pcm, dtype=np.int16)
    remainder = len(samples) % samples_per_frame
    if remainder:
        samples = np.concatenate([samples, np.zeros(samples_per_frame - remainder, dtype=np.int16)])
    payload = encode(samples, codec)
    return tuple(
        payload[i : i + samples_per_frame] for i in range(0, len(payload), samples_per_frame)
    )


class RtpPacketizer:
    """Numbers a stream of G.711 payloads: sequence +1 per packet, timestamp + samples.

    The first packet, and the first after `begin_talkspurt` or `skip`, carries the marker bit.
    `sequence` and `timestamp` are the first packet's; RFC 3550 wants them random, so the
    caller (who owns the randomness) passes them in.
    """

    def __init__(self, *, ssrc: int, payload_type: int, sequence: int, timestamp: int) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.next_sequence = sequence & 0xFFFF
        self.next_timestamp = timestamp & 0xFFFFFFFF
        self._marker = True

    def begin_talkspurt(self) -> None:
        """Mark the next packet as the start of a talkspurt (after silence or a source change)."""
        self._marker = True

    def skip(self, samples: int) -> None:
        """Advance the timestamp over media time that is not sent (a pause); sequence numbers
        stay contiguous, since no packet was lost, and the next packet starts a talkspurt."""
        self.next_timestamp = (self.next_timestamp + samples) & 0xFFFFFFFF
        self._marker = True

    def packetize(self, payload: bytes) -> RtpPacket:
        """The next packet carrying `payload` (G.711: one sample per octet)."""
        packet = RtpPacket(
            payload_type=self.payload_type,
            sequence=self.next_sequence,
            timestamp=self.next_timestamp,
            ssrc=self.ssrc,
            payload=payload,
            marker=self._marker,
        )
        self._marker = False
        self.next_sequence = (self.next_sequence + 1) & 0xFFFF
        self.next_timestamp = (self.next_timestamp + len(payload)) & 0xFFFFFFFF
        return packet


class Player:
    """Plays `announcement` once, then loops `music` forever (or ends when there is none).

    Both are sequences of encoded frames (`encode_frames`) in `codec`; the io layer encodes each
    prompt once and shares the frames between players. `start` is the `now` at which the first
    frame is due.
    """

    def __init__(
        self,
        *,
        codec: Codec,
        ssrc: int,
        sequence: int,
        timestamp: int,
        start: float,
        announcement: Sequence[bytes] = (),
        music: Sequence[bytes] = (),
        max_lag: float = DEFAULT_MAX_LAG,
    ) -> None:
        self._packetizer = RtpPacketizer(
            ssrc=ssrc, payload_type=int(codec), sequence=sequence, timestamp=timestamp
        )
        self._start = start
        self._announcement = announcement
        self._music = music
        self._max_lag = max_lag
        self._frame_index = 0  # frames of wall-clock time elapsed on the grid (sent or skipped)
        self._position = 0  # next frame within the current item
        self._in_music = not announcement
        self.packets_sent = 0
        self.frames_skipped = 0

    @property
    def finished(self) -> bool:
        """True once the announcement has played and there is no music to loop."""
        return self._in_music and not self._music

    @property
    def playing_music(self) -> bool:
        return self._in_music and bool(self._music)

    def get_timer(self) -> float | None:
        """When the next frame is due, or None when the player has finished."""
        if self.finished:
            return None
        return self._due(self._frame_index)

    def next_packet(self, now: float) -> RtpPacket | None:
        """The next packet if it is due at `now`, else None; call again until None."""
        if self.finished:
            return None
        due = self._due(self._frame_index)
        if now < due:
            return None
        if now - due > self._max_lag:
            behind = int((now - due) / PTIME_SECONDS)
            self._frame_index += behind
            self.frames_skipped += behind
            self._packetizer.skip(behind * SAMPLES_PER_FRAME)
        payload = self._next_frame()
        self._frame_index += 1
        self.packets_sent += 1
        return self._packetizer.packetize(payload)

    def _due(self, frame_index: int) -> float:
        return self._start + frame_index * PTIME_SECONDS

    def _next_frame(self) -> bytes:
        if self._in_music:
            frame = self._music[self._position]
            self._position = (self._position + 1) % len(self._music)
            return frame
        frame = self._announcement[self._position]
        self._position += 1
        if self._position == len(self._announcement):
            self._in_music = True
            self._position = 0
        return frame
