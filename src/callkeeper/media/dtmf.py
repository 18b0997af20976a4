"""DTMF in and out: RFC 4733 telephone-events over RTP, and SIP INFO bodies.

The calls core needs the digits a party presses — the recovery feature code (`*86`) during a
call, and the IVR's menus. Phones send them three ways: RTP telephone-events (RFC 4733, the
norm), or SIP INFO with an `application/dtmf-relay` or `application/dtmf` body (older and
Cisco-flavoured phones). This module turns each into one `DtmfDigit` per key press, and builds
the RTP packets that press a key towards a phone (an IVR prompt, a transfer to voicemail).

An RFC 4733 event is identified by its RTP timestamp (the event's start): every packet of one
key press carries the same timestamp with a growing duration, and the final packet (E bit set)
is sent three times. Any packet of the event may be lost, so the receiver reports a digit on
the first packet it sees of a new event, whichever one that is, and never again for that event.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from callkeeper.media.rtp import RtpPacket

EVENTS = "0123456789*#ABCD"
"""Telephone-event codes 0..15 (RFC 4733 §3.2) in order; 16 is hook flash."""
FLASH_EVENT = 16
FLASH_DIGIT = "!"
"""How a hook flash is written in a `DtmfDigit` (the SIPp / Asterisk convention)."""

DEFAULT_VOLUME = 10
"""-10 dBm0: the power level RFC 4733 §2.5.2.2 gives as typical for DTMF."""
END_PACKET_COUNT = 3
"""RFC 4733 §2.5.1.4: the final packet is sent three times."""
MAX_DURATION = 0xFFFF

_PAYLOAD = struct.Struct("!BBH")
_RECENT_EVENTS = 16  # how many finished events the receiver remembers to ignore late copies of


class DtmfError(ValueError):
    """A telephone-event payload or a SIP INFO body that does not carry a usable digit."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 §2.3 payload block. `duration` is in RTP timestamp units (samples)."""

    event: int
    end: bool
    volume: int
    duration: int

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise ValueError(f"event out of range: {self.event}")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"volume out of range: {self.volume}")
        if not 0 <= self.duration <= MAX_DURATION:
            raise ValueError(f"duration out of range: {self.duration}")

    def serialize(self) -> bytes:
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A key was pressed. `digit` is one of `0-9 * # A-D`, or `!` for hook flash.

    `duration_ms` is known for SIP INFO (when the phone says) and unknown for RTP events,
    which are reported as soon as they start.
    """

    digit: str
    duration_ms: int | None = None


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    """The first event block of a telephone-event payload.

    A payload may carry further blocks (RFC 4733 §2.5.1.5 redundancy for earlier events);
    they repeat what earlier packets said, so only the first — the current event — is read.
    The reserved bit is ignored as §2.3.4 asks.
    """
    if len(payload) < _PAYLOAD.size:
        raise DtmfError(f"telephone-event payload of {len(payload)} octets, needs 4")
    event, flags, duration = _PAYLOAD.unpack_from(payload)
    return TelephoneEvent(
        event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration
    )


def event_for_digit(digit: str) -> int:
    """The telephone-event code for a key (`0-9 * # A-D`, case-insensitive, or `!` for flash)."""
    if digit == FLASH_DIGIT:
        return FLASH_EVENT
    index = EVENTS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise DtmfError(f"not a DTMF key: {digit!r}")
    return index


def digit_for_event(event: int) -> str | None:
    """The key for a telephone-event code, or None for the non-DTMF events (tones, line events)."""
    if 0 <= event < len(EVENTS):
        return EVENTS[event]
    return FLASH_DIGIT if event == FLASH_EVENT else None


def telephone_event_packets(
    digit: str,
    *,
    ssrc: int,
    payload_type: int,
    first_sequence: int,
    timestamp: int,
    duration: int = 1600,
    packet_interval: int = 160,
    volume: int = DEFAULT_VOLUME,
) -> Iterator[RtpPacket]:
    """The RTP packets that press `digit` once, one per `packet_interval` of media time.

    Order per RFC 4733 §2.5.1: a first packet with the marker bit, updates whose duration grows
    by `packet_interval`, then the final packet (E bit) `END_PACKET_COUNT` times with the same
    duration. All share `timestamp` (the event's start); sequence numbers run on from
    `first_sequence`. `duration` and `packet_interval` are in samples (1600 = 200 ms at 8 kHz).
    The caller sends one packet per ptime and continues its stream's sequence after the last.
    """
    if not 0 < packet_interval <= duration <= MAX_DURATION:
        raise ValueError("need 0 < packet_interval <= duration <= 65535 samples")
    event = event_for_digit(digit)
    sequence = first_sequence
    reported = packet_interval
    blocks: list[TelephoneEvent] = []
    while reported < duration:
        blocks.append(TelephoneEvent(event, end=False, volume=volume, duration=reported))
        reported += packet_interval
    blocks.extend(
        [TelephoneEvent(event, end=True, volume=volume, duration=duration)] * END_PACKET_COUNT
    )
    for index, block in enumerate(blocks):
        yield RtpPacket(
            payload_type=payload_type,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=block.serialize(),
            marker=index == 0,
        )
        sequence = (sequence + 1) & 0xFFFF


class TelephoneEventReceiver:
    """Turns the telephone-event packets of one RTP stream into one `DtmfDigit` per key press.

    Feed it only packets of the negotiated telephone-event payload type. An event is new when
    its (SSRC, timestamp) has not been seen; the first packet of it that arrives — start, update
    or end — reports the digit, so a lost start packet delays nothing and lost end packets
    cost nothing. Retransmitted end packets and late, reordered packets of an earlier event
    are recognised by the timestamps of recent events and ignored. A long event that RFC 4733
    §2.5.1.3 splits into segments (a new timestamp = the previous one + its duration, same
    event, no end yet) continues the key press instead of starting a new one.
    """

    def __init__(self) -> None:
        self._ssrc: int | None = None
        self._current: tuple[int, int] | None = None  # (timestamp, event) of the open event
        self._current_duration = 0
        self._current_ended = False
        self._seen: deque[int] = deque(maxlen=_RECENT_EVENTS)

    def receive(self, packet: RtpPacket) -> DtmfDigit | None:
        """The digit this packet starts, or None (a repeat, a non-DTMF event, a bad payload)."""
        try:
            block = parse_telephone_event(packet.payload)
        except DtmfError:
            return None
        if packet.ssrc != self._ssrc:
            # A new stream (the phone restarted it, or the leg was re-bridged): forget the old.
            self._ssrc = packet.ssrc
            self._current = None
            self._seen.clear()
        if packet.timestamp in self._seen:
            if self._current is not None and packet.timestamp == self._current[0]:
                self._current_duration = max(self._current_duration, block.duration)
                self._current_ended = self._current_ended or block.end
            return None
        continues = self._continues_current(packet.timestamp, block.event)
        self._seen.append(packet.timestamp)
        self._current = (packet.timestamp, block.event)
        self._current_duration = block.duration
        self._current_ended = block.end
        if continues:
            return None
        digit = digit_for_event(block.event)
        return DtmfDigit(digit) if digit is not None else None

    def _continues_current(self, timestamp: int, event: int) -> bool:
        if self._current is None or self._current_ended:
            return False
        start, current_event = self._current
        return event == current_event and timestamp == (start + self._current_duration) & 0xFFFFFFFF


# SIP INFO ------------------------------------------------------------------------------------

DTMF_RELAY = "application/dtmf-relay"
DTMF = "application/dtmf"


def parse_info_body(content_type: str, body: bytes | str) -> DtmfDigit:
    """The key a SIP INFO reports, from its Content-Type (parameters allowed) and body.

    `application/dtmf-relay` (the Cisco format): `Signal=5` and optional `Duration=160`
    (milliseconds) lines, names case-insensitive. `application/dtmf`: the key itself, or its
    event code. Phones disagree on how to write `*`/`#`: both the characters and the codes
    10/11 are accepted. Raise `DtmfError` (answer the INFO 415/400) for anything else.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if media_type == DTMF:
        return DtmfDigit(_key(text.strip()))
    if media_type != DTMF_RELAY:
        raise DtmfError(f"not a DTMF body: {media_type or 'no content type'}")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    if "signal" not in fields:
        raise DtmfError("dtmf-relay body without a Signal line")
    duration = fields.get("duration")
    if duration is not None and not (duration.isascii() and duration.isdigit()):
        raise DtmfError(f"bad Duration: {duration!r}")
    return DtmfDigit(_key(fields["signal"]), int(duration) if duration is not None else None)


def _key(text: str) -> str:
    if text.isascii() and text.isdigit() and len(text) <= 2:
        digit = digit_for_event(int(text))
        if digit is not None:
            return digit
        raise DtmfError(f"not a DTMF event code: {text}")
    event_for_digit(text)  # validates, raises DtmfError
    return text.upper()
