"""The built-in RTP relay (`media.mode = "relay"`): UDP sockets that carry out the media anchor's plan.

`calls/media_anchor.py` decides (pure) which relay port each leg talks to and queues
`MediaCommand`s; the driver hands them to `MediaRelay.__call__` (a `driver.extra_sinks` entry).
Per *side* (one leg) the relay binds an RTP socket on the anchor's port and an RTCP socket on
the port above, and keeps:

- two `RtpLatch`es (RTP, and RTCP on its own port): symmetric RTP — media is accepted only from
  the phone's signalled address (or its first source when behind NAT) and sent back to where it
  really comes from; a new `SetPeer` with another address re-latches;
- a `StreamContinuity` for what goes *to* the side's phone: whatever feeds it (the connected
  side's phone, the hold player, the next leg after a re-bridge), the phone sees one SSRC with
  sequence numbers and timestamps that carry on;
- the side it is connected to, or a `Player` (announcement, then music) while it is held;
- for the built-in voicemail (`Record`), a `Recording` fed with what the phone sends once the
  greeting has played; when it ends, `on_recorded` is told (the server stores the message).

The sans-IO pieces (`callkeeper.media`) do the judging and numbering; this module owns only the
sockets, the clock and the timers. The sockets are plain non-blocking ones in an `epoll` of the
relay's own (relay_poller.py), itself one reader of the event loop: each time the loop finds it
readable, one datagram is taken from every ready socket (`recvfrom`) and forwarded with `sendto`,
with no asyncio transport or protocol callback per datagram. Packets take a fast path when they are
what a phone sends (first octet 0x80: version 2, no padding, extension or CSRCs) from the
latched source: the 12-octet header is read with one `struct` call and rewritten in one copy of
the datagram, without building an `RtpPacket`. Everything else goes through `RtpLatch.receive`,
which parses fully and says why a datagram is dropped; drops are counted by reason for
`/metrics`.

We write the relay ourselves (the design's "embedded default"; rtpengine is the backend for
scale): no maintained asyncio RTP relay exists, and aiortc's RTP lives inside its WebRTC stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

import structlog

from callkeeper.calls.media_anchor import (
    CloseSide,
    Connect,
    OpenSide,
    Play,
    Record,
    SetPeer,
    WatchDigits,
)
from callkeeper.io.prompts import load_prompt_samples
from callkeeper.io.relay_poller import RelayPoller, RelaySocket
from callkeeper.io.voicemail import Recording
from callkeeper.media.continuity import StreamContinuity
from callkeeper.media.dtmf import DtmfError, TelephoneEventReceiver
from callkeeper.media.g711 import Codec, Pcm
from callkeeper.media.latching import AcceptedRtcp, AcceptedRtp, Dropped, LatchState, RtpLatch
from callkeeper.media.player import SAMPLES_PER_FRAME, Player, encode_frames
from callkeeper.media.prompts import PROMPT_NAMES, PromptError
from callkeeper.media.rtp import RTCP_PACKET_TYPES, RtpError
from callkeeper.media.rtp import parse as parse_rtp

log = structlog.get_logger(__name__)

Address = tuple[str, int]
RecordedHandler = Callable[[Record, Recording, bool], None]
"""Told of a finished voicemail recording: the command, what was recorded, and whether it
stopped by itself (silence, maximum length) rather than because its side closed."""

_FIXED = struct.Struct("!BBHII")
# The fast path's: the fixed header after its first octet (checked before), read and rewritten.
_unpack_header = struct.Struct("!xBHII").unpack_from
_pack_header = struct.Struct("!BHII").pack_into
_LATCHED = LatchState.LATCHED
_PLAIN_RTP_FIRST_OCTET = 0x80  # version 2, no padding, no extension, no CSRCs
_SOCKET_BUFFER = 1 << 20

# Drop reasons the relay adds to the latch's (metric label values).
UNBRIDGED = "unbridged"  # accepted, but the side is held or connected to nothing
STALE = "stale"  # a late packet of a source the receiving side was switched away from
SEND_ERROR = "send-error"


@dataclass(eq=False)
class _Side:
    id: str
    port: int
    rtp: RelaySocket[_Side] | None = None
    rtcp: RelaySocket[_Side] | None = None
    latch: RtpLatch = field(default_factory=lambda: RtpLatch(None))
    rtcp_latch: RtpLatch = field(default_factory=lambda: RtpLatch(None, latch_rtcp=True))
    continuity: StreamContinuity = field(
        default_factory=lambda: StreamContinuity(ssrc=secrets.randbits(32))
    )
    peer: str | None = None  # the side it is connected to
    source: str | None = None  # what feeds `continuity`: a side id, or PLAYER
    player: Player | None = None
    player_payload_type: int = 0
    timer: asyncio.TimerHandle | None = None
    record: Record | None = None  # a voicemail message is being taken from this side
    recording: Recording | None = None
    digit_types: frozenset[int] = frozenset()  # telephone-event payload types it sends
    digits: TelephoneEventReceiver | None = None

    def rtp_destination(self) -> Address | None:
        """Where this side's phone receives RTP: its latched source, else its SDP's address."""
        return self.latch.latched_address or self.latch.signalled

    def rtcp_destination(self) -> Address | None:
        if self.rtcp_latch.latched_address is not None:
            return self.rtcp_latch.latched_address
        signalled = self.rtp_destination()
        return None if signalled is None else (signalled[0], signalled[1] + 1)


PLAYER = "\0player"  # a `_Side.source` that is no side id


class MediaRelay:
    """Carries out `MediaCommand`s with real sockets; call it with each command."""

    def __init__(
        self,
        address: str,
        loop: asyncio.AbstractEventLoop | None = None,
        on_recorded: RecordedHandler | None = None,
    ) -> None:
        self.address = address
        self.on_recorded = on_recorded
        self.on_digit: Callable[[str, str], None] | None = None  # (side id, key) to the core
        self.loop = loop or asyncio.get_running_loop()
        # The clock the relay reads per packet (`now` for the continuity): the loop's, without
        # a Python method call when the loop is asyncio's own (whose time() is monotonic()).
        self._clock: Callable[[], float] = (
            time.monotonic
            if getattr(type(self.loop), "time", None) is asyncio.BaseEventLoop.time
            else self.loop.time
        )
        self.sides: dict[str, _Side] = {}
        self.packets_in = 0
        self.packets_out = 0
        self.packets_played = 0
        self.bind_failures = 0
        self.dropped: Counter[str] = Counter()
        self._frames: dict[tuple[str, Codec], tuple[bytes, ...]] = {}
        self._silence: dict[Codec, tuple[bytes, ...]] = {}
        self._poller: RelayPoller[_Side] | None = None  # made with the first socket

    # --- commands ---------------------------------------------------------------------------
    def __call__(self, command: object) -> None:
        """A driver sink: anything that is not a media command is someone else's."""
        kind = type(command)
        if kind is OpenSide:
            self.open_side(cast(OpenSide, command))
        elif kind is SetPeer:
            self.set_peer(cast(SetPeer, command))
        elif kind is Connect:
            self.connect(cast(Connect, command))
        elif kind is Play:
            self.play(cast(Play, command))
        elif kind is Record:
            self.record(cast(Record, command))
        elif kind is WatchDigits:
            self.watch_digits(cast(WatchDigits, command))
        elif kind is CloseSide:
            self.close_side(cast(CloseSide, command).side)

    def open_side(self, command: OpenSide) -> None:
        if command.side in self.sides:
            self.close_side(command.side)
        side = _Side(command.side, command.port)
        self.sides[side.id] = side
        try:
            side.rtp = self._bind(command.port, side, rtcp=False)
            side.rtcp = self._bind(command.port + 1, side, rtcp=True)
        except OSError as error:
            # The call still goes on (the phones hear nothing through this side); say why.
            self.bind_failures += 1
            log.warning(
                "media port cannot be bound",
                side=side.id,
                address=f"{self.address}:{command.port}",
                error=error.strerror or str(error),
            )
            self._close_sockets(side)

    def watch_digits(self, command: WatchDigits) -> None:
        side = self.sides.get(command.side)
        if side is not None:
            side.digit_types = frozenset(command.payload_types)
            side.digits = side.digits or TelephoneEventReceiver()

    def _tap_digit(self, side: _Side, data: bytes) -> None:
        """An RFC 4733 packet on its way through: tell the core about a new key press."""
        receiver = side.digits
        if receiver is None or self.on_digit is None:
            return
        try:
            digit = receiver.receive(parse_rtp(data))
        except (RtpError, DtmfError):
            return
        if digit is not None:
            try:
                self.on_digit(side.id, digit.digit)
            except Exception:  # a bug in the handler must not take the relay down
                log.exception("digit handler failed", side=side.id)

    def set_peer(self, command: SetPeer) -> None:
        side = self.sides.get(command.side)
        if side is None:
            return
        latch = side.latch
        if latch.signalled == command.address and latch.behind_nat == command.latch_any:
            return  # the same SDP again (a session refresh): keep the latched source
        latch.relatch(command.address, behind_nat=command.latch_any)
        host, port = command.address
        side.rtcp_latch.relatch((host, port + 1), behind_nat=command.latch_any)

    def connect(self, command: Connect) -> None:
        a = self.sides.get(command.side_a)
        b = self.sides.get(command.side_b)
        if a is None or b is None or a is b:
            return
        for side, other in ((a, b), (b, a)):
            self._finish_recording(side, stopped=False)
            self._stop_player(side)
            old = side.peer
            if old is not None and old != other.id:
                previous = self.sides.get(old)
                if previous is not None and previous.peer == side.id:
                    previous.peer = None
            side.peer = other.id
            if side.source != other.id:
                if side.source is not None:
                    side.continuity.switch_source()
                side.source = other.id

    def play(self, command: Play) -> None:
        side = self.sides.get(command.side)
        if side is None:
            return
        self._stop_player(side)
        codec = Codec.PCMA if command.payload_type == Codec.PCMA else Codec.PCMU
        announcement = self._announcement(command.prompts, codec)
        music = self._prompt_frames(command.loop, codec) if command.loop else ()
        if not music:
            music = self._silence_frames(codec)  # keep RTP (and NAT bindings) flowing
        side.player = Player(
            codec=codec,
            ssrc=secrets.randbits(32),
            sequence=secrets.randbits(16),
            timestamp=secrets.randbits(32),
            start=self.loop.time(),
            announcement=announcement,
            music=music,
        )
        side.player_payload_type = command.payload_type
        if side.source is not None:
            side.continuity.switch_source()
        side.source = PLAYER
        self._play_due(side)

    def record(self, command: Record) -> None:
        """Voicemail: the greeting, then what the side's phone sends goes into a `Recording`
        (silence is played meanwhile) until it stops by itself or the side closes."""
        side = self.sides.get(command.side)
        if side is None:
            return
        self._finish_recording(side, stopped=False)
        self.play(Play(command.side, (command.greeting,), None, command.payload_type))
        codec = Codec.PCMA if command.payload_type == Codec.PCMA else Codec.PCMU
        side.record = command
        side.recording = Recording(codec, command.max_seconds, command.silence_seconds)

    def _take_message(self, side: _Side, payload_type: int, payload: bytes) -> None:
        player = side.player
        if player is not None and not player.playing_music:
            return  # still greeting: what the caller says now is not the message
        record = side.record
        recording = side.recording
        if record is None or recording is None or payload_type != record.payload_type:
            return  # DTMF, comfort noise: not audio to keep
        if recording.feed(payload):
            self._finish_recording(side, stopped=True)

    def _finish_recording(self, side: _Side, *, stopped: bool) -> None:
        record, recording = side.record, side.recording
        side.record = side.recording = None
        if record is None or recording is None:
            return
        if stopped:
            self._stop_player(side)
        if self.on_recorded is not None:
            try:
                self.on_recorded(record, recording, stopped)
            except Exception:  # a bug in the handler must not take the relay down
                log.exception("voicemail handler failed", side=side.id)

    def close_side(self, side_id: str) -> None:
        side = self.sides.pop(side_id, None)
        if side is None:
            return
        self._finish_recording(side, stopped=False)
        self._stop_player(side)
        self._close_sockets(side)
        if side.peer is not None:
            other = self.sides.get(side.peer)
            if other is not None and other.peer == side.id:
                other.peer = None

    def close(self) -> None:
        for side_id in list(self.sides):
            self.close_side(side_id)
        if self._poller is not None:
            self._poller.close()
            self._poller = None

    # --- prompts ----------------------------------------------------------------------------
    def preload(self, names: Iterable[str] = PROMPT_NAMES) -> None:
        """Decode and encode the prompts now (start-up), not when the first call is held."""
        for name in names:
            for codec in Codec:
                self._prompt_frames(name, codec)

    def add_prompt(self, name: str, samples: Pcm) -> None:
        """Make `name` playable from these 8 kHz samples (a custom prompt, or a test's)."""
        for codec in Codec:
            self._frames[(name, codec)] = encode_frames(samples, codec)

    def _prompt_frames(self, name: str, codec: Codec) -> tuple[bytes, ...]:
        frames = self._frames.get((name, codec))
        if frames is None:
            try:
                frames = encode_frames(load_prompt_samples(name), codec)
            except (KeyError, OSError, PromptError) as error:
                log.warning("prompt cannot be played", prompt=name, error=str(error))
                frames = ()
            self._frames[(name, codec)] = frames
        return frames

    def _announcement(self, names: tuple[str, ...], codec: Codec) -> tuple[bytes, ...]:
        if len(names) == 1:
            return self._prompt_frames(names[0], codec)
        return tuple(frame for name in names for frame in self._prompt_frames(name, codec))

    def _silence_frames(self, codec: Codec) -> tuple[bytes, ...]:
        frames = self._silence.get(codec)
        if frames is None:
            frames = self._silence[codec] = (bytes([codec.silence]) * SAMPLES_PER_FRAME,)
        return frames

    # --- the player's clock -----------------------------------------------------------------
    def _stop_player(self, side: _Side) -> None:
        side.player = None
        if side.timer is not None:
            side.timer.cancel()
            side.timer = None

    def _play_due(self, side: _Side) -> None:
        side.timer = None
        player = side.player
        if player is None:
            return
        now = self.loop.time()
        destination = side.rtp_destination()
        continuity = side.continuity
        payload_type = side.player_payload_type
        while (packet := player.next_packet(now)) is not None:
            if destination is None or side.rtp is None:
                continue  # nowhere to send yet: the frames pass, as time does
            header = continuity.rewrite_header(
                ssrc=packet.ssrc,
                sequence=packet.sequence,
                timestamp=packet.timestamp,
                marker=packet.marker,
                now=now,
            )
            if header is None:
                continue
            second = (0x80 if header.marker else 0) | payload_type
            data = (
                _FIXED.pack(
                    _PLAIN_RTP_FIRST_OCTET, second, header.sequence, header.timestamp, header.ssrc
                )
                + packet.payload
            )
            self._send(side.rtp, data, destination)
            self.packets_out += 1
            self.packets_played += 1
        deadline = player.get_timer()
        if deadline is not None:
            side.timer = self.loop.call_at(deadline, self._play_due, side)

    # --- packets ----------------------------------------------------------------------------
    def _bind(self, port: int, side: _Side, *, rtcp: bool) -> RelaySocket[_Side]:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.address, port))
            sock.setblocking(False)
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):  # capped by net.core.rmem_max: fine
                    sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        except OSError:
            sock.close()
            raise
        endpoint = RelaySocket(sock, side, self.receive_rtcp if rtcp else self.receive_rtp)
        if self._poller is None:
            self._poller = RelayPoller(self.loop, self._send_failed)
        self._poller.add(endpoint)
        return endpoint

    def _close_sockets(self, side: _Side) -> None:
        for endpoint in (side.rtp, side.rtcp):
            if endpoint is not None:
                if self._poller is not None:
                    self._poller.remove(endpoint)
                endpoint.sock.close()
        side.rtp = side.rtcp = None

    def _send(
        self, endpoint: RelaySocket[_Side], data: bytes | bytearray, address: Address
    ) -> None:
        """Counted out either way (as sent); a send that fails is counted as a drop too."""
        try:
            endpoint.sendto(data, address)
        except OSError:  # a full buffer, no route, an ICMP error from an earlier packet
            self.dropped[SEND_ERROR] += 1

    def _send_failed(self) -> None:
        self.dropped[SEND_ERROR] += 1

    def receive_rtp(self, side: _Side, data: bytes, source: Address) -> None:
        self.packets_in += 1
        latch = side.latch
        if (
            len(data) >= 12
            and data[0] == _PLAIN_RTP_FIRST_OCTET
            and latch.state is _LATCHED
            and source == latch.latched_address
        ):
            second, sequence, timestamp, ssrc = _unpack_header(data)
            if ssrc == latch.latched_ssrc and second not in RTCP_PACKET_TYPES:
                if side.recording is not None:
                    self._take_message(side, second & 0x7F, data[12:])
                    return
                self._forward_rtp(side, data, second, sequence, timestamp, ssrc)
                return
        verdict = latch.receive(data, source)
        if type(verdict) is AcceptedRtp:
            packet = verdict.packet
            if side.recording is not None:
                self._take_message(side, packet.payload_type, packet.payload)
                return
            second = (0x80 if packet.marker else 0) | packet.payload_type
            self._forward_rtp(side, data, second, packet.sequence, packet.timestamp, packet.ssrc)
        elif type(verdict) is AcceptedRtcp:
            self._forward_rtcp(side, verdict.data)  # RTCP multiplexed on the RTP port
        else:
            self.dropped[cast(Dropped, verdict).reason.value] += 1

    def receive_rtcp(self, side: _Side, data: bytes, source: Address) -> None:
        self.packets_in += 1
        verdict = side.rtcp_latch.receive(data, source)
        if type(verdict) is AcceptedRtcp:
            self._forward_rtcp(side, verdict.data)
        elif type(verdict) is AcceptedRtp:
            self.dropped[UNBRIDGED] += 1  # RTP on the RTCP port: not ours to relay
        else:
            self.dropped[cast(Dropped, verdict).reason.value] += 1

    def _forward_rtp(
        self, side: _Side, data: bytes, second: int, sequence: int, timestamp: int, ssrc: int
    ) -> None:
        if side.digit_types and (second & 0x7F) in side.digit_types:
            self._tap_digit(side, data)
        peer = side.peer
        target = self.sides.get(peer) if peer is not None else None
        if target is None or side.player is not None or target.player is not None:
            self.dropped[UNBRIDGED] += 1
            return
        latch = target.latch
        destination = latch.latched_address or latch.signalled  # target.rtp_destination()
        endpoint = target.rtp
        if destination is None or endpoint is None:
            self.dropped[UNBRIDGED] += 1
            return
        fields = target.continuity.rewrite_fields(
            ssrc, sequence, timestamp, second > 0x7F, self._clock()
        )
        if fields is None:
            self.dropped[STALE] += 1
            return
        out_ssrc, out_sequence, out_timestamp, marker = fields
        out = bytearray(data)
        _pack_header(
            out, 1, (second & 0x7F) | (0x80 if marker else 0), out_sequence, out_timestamp, out_ssrc
        )
        self.packets_out += 1
        try:  # `_send`, inline
            endpoint.sendto(out, destination)
        except OSError:
            self.dropped[SEND_ERROR] += 1

    def _forward_rtcp(self, side: _Side, data: bytes) -> None:
        target = self.sides.get(side.peer) if side.peer is not None else None
        if target is None or side.player is not None or target.player is not None:
            self.dropped[UNBRIDGED] += 1
            return
        destination = target.rtcp_destination()
        if destination is None or target.rtcp is None:
            self.dropped[UNBRIDGED] += 1
            return
        self._send(target.rtcp, data, destination)
        self.packets_out += 1

    # --- for /metrics -----------------------------------------------------------------------
    @property
    def players(self) -> int:
        return sum(1 for side in self.sides.values() if side.player is not None)
