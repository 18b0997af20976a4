"""One continuous outgoing RTP stream for a leg whose source changes under it.

When the relay re-bridges a survivor from the failed phone to the hold player and then to the
returned (or a fallback) device, it does so without a re-INVITE: the survivor's phone is never
told. Its jitter buffer, though, is keyed on the SSRC and expects sequence numbers to advance by
one and timestamps to advance with time; a new SSRC with an unrelated random sequence and
timestamp base makes many phones mute, reset with a click, or drop packets as "too late" for
seconds. So every packet towards the survivor goes through a `StreamContinuity`, which keeps
one outgoing SSRC and maps each upstream source onto it with fixed offsets:

- within one source, offsets are constant, so upstream loss, reordering and duplication show
  through unchanged (the survivor's jitter buffer deals with them as usual);
- on a switch (an explicit `switch_source()`, or a packet with a new SSRC — a phone that
  restarted its stream), the first new packet continues the sequence at highest-sent + 1 and the
  timestamp at the last-sent timestamp plus the wall-clock time since it (at least one frame),
  and carries the marker bit so the receiver re-syncs its playout point (RFC 3551 §4.1);
- late packets of a replaced source, and packets older than the switch, are dropped: passed
  through they would land on sequence numbers the survivor has already played.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass

from callkeeper.media.rtp import RtpError, RtpPacket, parse, rewrite_fixed_header

DEFAULT_CLOCK_RATE = 8000
DEFAULT_FRAME_SAMPLES = 160
_MAX_FRAME_SAMPLES = 8000  # a timestamp step above 1 s between consecutive packets is no frame size
_RETIRED_SOURCES = 4


@dataclass(frozen=True, slots=True)
class RewrittenHeader:
    """The fields the survivor sees for one packet."""

    ssrc: int
    sequence: int
    timestamp: int
    marker: bool


# How far behind the newest packet a packet may come and still be relayed (sequence numbers;
# 16,384 packets = 5.5 minutes at 50 packets/s): older ones are from before the switch.
_STALE_WINDOW = 0x4000


@dataclass(slots=True)
class _Mapping:
    upstream_ssrc: int
    first_sequence: int
    sequence_offset: int
    timestamp_offset: int


class StreamContinuity:
    """Rewrites SSRC, sequence and timestamp of packets towards one leg (see the module doc).

    `ssrc` is the SSRC the leg sees throughout. Until the first switch the stream keeps its
    upstream sequence and timestamp numbering (only the SSRC is replaced), so a call that is
    never re-bridged is relayed with minimal change.
    """

    def __init__(self, *, ssrc: int, clock_rate: int = DEFAULT_CLOCK_RATE) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.switches = 0
        self.dropped = 0
        self._mapping: _Mapping | None = None
        self._switch_pending = False
        self._retired: deque[int] = deque(maxlen=_RETIRED_SOURCES)
        self._frame_samples = DEFAULT_FRAME_SAMPLES
        self._highest_sequence = -1  # the highest sequence sent; -1 before the first
        self._highest_timestamp = 0
        self._highest_at = 0.0

    def switch_source(self) -> None:
        """The next packet comes from a new source (the relay re-bridged this leg), whatever its
        SSRC — two sources may share one, and a phone resumed on its old dialog keeps its own."""
        self._switch_pending = True

    def rewrite_header(
        self, *, ssrc: int, sequence: int, timestamp: int, marker: bool, now: float
    ) -> RewrittenHeader | None:
        """The outgoing header for an upstream packet, or None to drop it (stale or retired)."""
        fields = self.rewrite_fields(ssrc, sequence, timestamp, marker, now)
        return None if fields is None else RewrittenHeader(*fields)

    def rewrite_fields(
        self, ssrc: int, sequence: int, timestamp: int, marker: bool, now: float
    ) -> tuple[int, int, int, bool] | None:
        """`rewrite_header` as a plain (ssrc, sequence, timestamp, marker) tuple: the relay's
        per-packet path. The steady case (the current source, no switch pending) is inline."""
        mapping = self._mapping
        if mapping is None or self._switch_pending or ssrc != mapping.upstream_ssrc:
            return self._rewrite_switch(ssrc, sequence, timestamp, marker, now)
        since_first = (sequence - mapping.first_sequence) & 0xFFFF
        if since_first >= 0x8000:
            self.dropped += 1  # sent before this source's first packet we relayed
            return None
        if since_first > _STALE_WINDOW:
            # Slide the mark along: "older than the first packet" only means something near a
            # switch; a fixed mark would drop half of every 65,536 packets of a long call.
            mapping.first_sequence = (sequence - _STALE_WINDOW) & 0xFFFF
        out_sequence = (sequence + mapping.sequence_offset) & 0xFFFF
        out_timestamp = (timestamp + mapping.timestamp_offset) & 0xFFFFFFFF
        # `_note_sent(..., estimate_frame=True)`, inline; a mapping means a packet was sent.
        ahead = (out_sequence - self._highest_sequence) & 0xFFFF
        if ahead and ahead < 0x8000:  # not a duplicate, nor a reordered older packet
            if ahead == 1:
                step = (out_timestamp - self._highest_timestamp) & 0xFFFFFFFF
                if 0 < step <= _MAX_FRAME_SAMPLES:
                    self._frame_samples = step
            self._highest_sequence = out_sequence
            self._highest_timestamp = out_timestamp
            self._highest_at = now
        return self.ssrc, out_sequence, out_timestamp, marker

    def _rewrite_switch(
        self, ssrc: int, sequence: int, timestamp: int, marker: bool, now: float
    ) -> tuple[int, int, int, bool] | None:
        """The first packet of a new source (or of the stream), or a late one of a retired one."""
        if not self._switch_pending and ssrc in self._retired:
            self.dropped += 1
            return None
        switched = self._highest_sequence >= 0
        mapping = self._start_mapping(ssrc, sequence, timestamp, now)
        out_sequence = (sequence + mapping.sequence_offset) & 0xFFFF
        out_timestamp = (timestamp + mapping.timestamp_offset) & 0xFFFFFFFF
        # The jump from the old source's last packet is a pause, not a frame size.
        self._note_sent(out_sequence, out_timestamp, now, estimate_frame=False)
        return self.ssrc, out_sequence, out_timestamp, marker or switched

    def rewrite(self, packet: RtpPacket, now: float) -> RtpPacket | None:
        """`packet` as the leg should see it, or None to drop it."""
        header = self.rewrite_header(
            ssrc=packet.ssrc,
            sequence=packet.sequence,
            timestamp=packet.timestamp,
            marker=packet.marker,
            now=now,
        )
        if header is None:
            return None
        return dataclasses.replace(
            packet,
            ssrc=header.ssrc,
            sequence=header.sequence,
            timestamp=header.timestamp,
            marker=header.marker,
        )

    def rewrite_datagram(self, data: bytes, now: float) -> bytes | None:
        """The relay's fast path: rewrite the 12-octet fixed header of a raw RTP datagram,
        leaving CSRCs, extension, payload and padding as they came. None for a datagram that is
        not RTP or is to be dropped."""
        try:
            packet = parse(data)
        except RtpError:
            self.dropped += 1
            return None
        header = self.rewrite_header(
            ssrc=packet.ssrc,
            sequence=packet.sequence,
            timestamp=packet.timestamp,
            marker=packet.marker,
            now=now,
        )
        if header is None:
            return None
        return rewrite_fixed_header(
            data,
            marker=header.marker,
            sequence=header.sequence,
            timestamp=header.timestamp,
            ssrc=header.ssrc,
        )

    def _start_mapping(self, ssrc: int, sequence: int, timestamp: int, now: float) -> _Mapping:
        if self._mapping is not None and self._mapping.upstream_ssrc != ssrc:
            self._retired.append(self._mapping.upstream_ssrc)
        if ssrc in self._retired:
            self._retired.remove(ssrc)  # an explicit switch back to an earlier source
        if self._highest_sequence < 0:
            out_sequence, out_timestamp = sequence, timestamp
        else:
            out_sequence = (self._highest_sequence + 1) & 0xFFFF
            elapsed = round((now - self._highest_at) * self.clock_rate)
            out_timestamp = self._highest_timestamp + max(self._frame_samples, elapsed)
            self.switches += 1
        self._mapping = _Mapping(
            upstream_ssrc=ssrc,
            first_sequence=sequence,
            sequence_offset=(out_sequence - sequence) & 0xFFFF,
            timestamp_offset=(out_timestamp - timestamp) & 0xFFFFFFFF,
        )
        self._switch_pending = False
        return self._mapping

    def _note_sent(
        self, sequence: int, timestamp: int, now: float, *, estimate_frame: bool
    ) -> None:
        if self._highest_sequence < 0:
            self._set_highest(sequence, timestamp, now)
            return
        ahead = (sequence - self._highest_sequence) & 0xFFFF
        if ahead == 0 or ahead >= 0x8000:
            return  # a duplicate or a reordered older packet: nothing advances
        if ahead == 1 and estimate_frame:
            step = (timestamp - self._highest_timestamp) & 0xFFFFFFFF
            if 0 < step <= _MAX_FRAME_SAMPLES:
                self._frame_samples = step
        self._set_highest(sequence, timestamp, now)

    def _set_highest(self, sequence: int, timestamp: int, now: float) -> None:
        self._highest_sequence = sequence
        self._highest_timestamp = timestamp
        self._highest_at = now
