"""The media anchor's plan: which relay ports each leg talks to, and what the relay must do.

With `media.mode = "relay"` every leg of a call sends its RTP to a port of ours (its *side*)
instead of to the other phone: each SDP body that crosses the B2BUA is rewritten to name the
side of the leg it goes to, and the address the body named is where that side sends to. The
relay (io/relay.py) carries out the commands queued here: open a side, point it at its phone,
connect two sides (forward both ways), play prompts into a side, close it.

Owning the media this way is what lets the recovery engine keep a survivor connected without
touching its phone: the survivor's side stays as it is, the announcement and music are played
into it, and when a new leg answers the relay connects the survivor's side to the new one — no
re-INVITE; the relay keeps the survivor's RTP stream continuous (one SSRC, sequence and
timestamps carried on) across the switch.

Pure: it allocates port numbers from `media.rtp_ports` but binds nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from callkeeper.calls.model import Call, Leg
from callkeeper.calls.sdp_offers import parse_or_none
from callkeeper.sdp import anchor_media
from callkeeper.sdp.model import SessionDescription

# Static RTP payload types the relay can play prompts in (G.711, RFC 3551).
PLAYABLE = {"0": "PCMU", "8": "PCMA"}


# --- commands for the relay ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OpenSide:
    """Bind `port` (RTP) and `port + 1` (RTCP) for one leg."""

    side: str
    port: int


@dataclass(frozen=True, slots=True)
class SetPeer:
    """Where the leg's phone receives (from its SDP). `latch_any`: it is behind NAT, so send to
    wherever its first packets come from instead (symmetric RTP)."""

    side: str
    address: tuple[str, int]
    latch_any: bool


@dataclass(frozen=True, slots=True)
class Connect:
    """Forward between two sides, both ways; any prompt playing into either stops."""

    side_a: str
    side_b: str


@dataclass(frozen=True, slots=True)
class Play:
    """Play `prompts` into the side's phone, then `loop` over and over (None: silence after).
    Nothing from the side is forwarded meanwhile."""

    side: str
    prompts: tuple[str, ...]
    loop: str | None
    payload_type: int


@dataclass(frozen=True, slots=True)
class Record:
    """Voicemail: play `greeting` into the side's phone, then record what it sends (16-bit
    8 kHz WAV with its metadata, under the voicemail directory) until the side is closed, or
    `max_seconds`, or `silence_seconds` of silence; the io layer then reports the message
    (`CallManager.voicemail_recorded`) and, when it stopped by itself, ends the call
    (`CallManager.recording_stopped`)."""

    side: str
    user: str  # whose mailbox
    caller: str | None
    call_id: str
    greeting: str
    payload_type: int
    max_seconds: float
    silence_seconds: float


@dataclass(frozen=True, slots=True)
class WatchDigits:
    """RFC 4733 telephone-events from the side's phone arrive with these payload types (the
    ones in the SDP it was sent): report each key to the core (and still forward them)."""

    side: str
    payload_types: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CloseSide:
    side: str


MediaCommand = OpenSide | SetPeer | Connect | Play | Record | WatchDigits | CloseSide


class PortPool:
    """Even RTP ports (RTCP on the odd one above) from a range, handed out round-robin so a
    port just released is not reused at once (late packets of the old call would reach the
    new one)."""

    def __init__(self, low: int, high: int) -> None:
        first = low + (low % 2)
        self._ports = range(first, high, 2)
        # Round-robin order; may also hold ports taken out of turn (`take`), skipped when met.
        self._free: deque[int] = deque(self._ports)
        self._used: set[int] = set()

    @classmethod
    def from_range(cls, text: str) -> PortPool:
        low, high = (int(part) for part in text.split("-"))
        return cls(low, high)

    def allocate(self) -> int | None:
        free, used = self._free, self._used
        while free:
            port = free.popleft()
            if port not in used:
                used.add(port)
                return port
        return None

    def take(self, port: int) -> bool:
        """Hand out this very port (a restored call's), if it is in the range and free."""
        if port not in self._ports or port in self._used:
            return False
        self._used.add(port)
        return True

    def release(self, port: int) -> None:
        if port in self._used:
            self._used.discard(port)
            self._free.append(port)

    def __len__(self) -> int:
        return len(self._ports) - len(self._used)


class MediaAnchor:
    def __init__(self, address: str, ports: PortPool) -> None:
        self.address = address
        self.ports = ports
        self._sides: dict[str, int] = {}  # leg id → its relay port
        self._by_call: dict[str, set[str]] = {}
        self._commands: deque[MediaCommand] = deque()
        self.exhausted = 0  # offers passed through unanchored: no port was free

    def next_command(self) -> MediaCommand | None:
        return self._commands.popleft() if self._commands else None

    def __len__(self) -> int:
        return len(self._sides)

    # --- SDP crossing the B2BUA ---------------------------------------------------------------
    def rewrite(self, call: Call, from_leg: Leg, to_leg: Leg, body: bytes) -> bytes:
        """`body` came from `from_leg` and goes to `to_leg`: learn where `from_leg` receives,
        and name `to_leg`'s side as where to send. Unparseable SDP passes through unchanged."""
        session = parse_or_none(body)
        if session is None:
            return body
        self.learn(call, from_leg, session)
        port = self._side(call, to_leg)
        if port is None:
            self.exhausted += 1
            return body
        ports = [port if media.port != 0 else 0 for media in session.media]
        try:
            anchored = anchor_media(
                session, self.address, ports, [p + 1 if p else None for p in ports]
            )
        except ValueError:
            return body
        events = telephone_event_types(session)
        if events:
            # `to_leg` sends its keys with the payload types this SDP gives it (RFC 3264).
            self._commands.append(WatchDigits(to_leg.id, events))
        return anchored.to_bytes()

    def learn(self, call: Call, leg: Leg, session: SessionDescription | bytes) -> None:
        """Point `leg`'s side at the first audio stream its SDP names."""
        if isinstance(session, bytes):
            parsed = parse_or_none(session)
            if parsed is None:
                return
            session = parsed
        port = self._side(call, leg)
        if port is None:
            return
        for media in session.media:
            host = session.address_of(media)
            if media.port == 0 or host is None:
                continue
            hidden = host in ("0.0.0.0", "::")  # RFC 2543 hold: keep the old target
            if not hidden:
                self._commands.append(SetPeer(leg.id, (host, media.port), latch_any=False))
            return

    def _side(self, call: Call, leg: Leg) -> int | None:
        port = self._sides.get(leg.id)
        if port is not None:
            return port
        port = self.ports.allocate()
        if port is None:
            return None
        self._sides[leg.id] = port
        self._by_call.setdefault(call.id, set()).add(leg.id)
        self._commands.append(OpenSide(leg.id, port))
        return port

    def has_side(self, leg: Leg) -> bool:
        return leg.id in self._sides

    def side_port(self, leg: Leg) -> int | None:
        return self._sides.get(leg.id)

    def restore_side(self, call: Call, leg: Leg, port: int) -> bool:
        if leg.id in self._sides or not self.ports.take(port):
            return False
        self._sides[leg.id] = port
        self._by_call.setdefault(call.id, set()).add(leg.id)
        self._commands.append(OpenSide(leg.id, port))
        if leg.remote_sdp:
            self.learn(call, leg, leg.remote_sdp)
        sent = parse_or_none(leg.local_sdp) if leg.local_sdp else None
        events = telephone_event_types(sent) if sent is not None else ()
        if events:
            self._commands.append(WatchDigits(leg.id, events))
        return True

    # --- what the calls core asks for -------------------------------------------------------------
    def connect(self, leg_a: Leg, leg_b: Leg) -> None:
        if leg_a.id in self._sides and leg_b.id in self._sides:
            self._commands.append(Connect(leg_a.id, leg_b.id))

    def play(self, leg: Leg, prompts: tuple[str, ...], loop: str | None) -> bool:
        """Play into `leg` in a codec its SDP offered us; False when there is none we can."""
        payload_type = playable_payload_type(leg.remote_sdp)
        if leg.id not in self._sides or payload_type is None:
            return False
        self._commands.append(Play(leg.id, prompts, loop, payload_type))
        return True

    def record(
        self, call: Call, leg: Leg, user: str, caller: str | None, limits: tuple[float, float]
    ) -> bool:
        """Take a voicemail message from `leg`; False when its codec cannot be recorded."""
        payload_type = playable_payload_type(leg.remote_sdp)
        if leg.id not in self._sides or payload_type is None:
            return False
        self._commands.append(voicemail_record(leg.id, call, user, caller, payload_type, limits))
        return True

    def release_leg(self, leg: Leg) -> None:
        port = self._sides.pop(leg.id, None)
        if port is None:
            return
        self.ports.release(port)
        self._commands.append(CloseSide(leg.id))
        for legs in self._by_call.values():
            legs.discard(leg.id)

    def release_call(self, call_id: str) -> None:
        for leg_id in self._by_call.pop(call_id, set()):
            port = self._sides.pop(leg_id, None)
            if port is not None:
                self.ports.release(port)
                self._commands.append(CloseSide(leg_id))


def voicemail_record(
    side: str,
    call: Call,
    user: str,
    caller: str | None,
    payload_type: int,
    limits: tuple[float, float],
) -> Record:
    """The relay's voicemail command for a side: greet, then record within `limits`
    (maximum length, silence that ends the message)."""
    max_seconds, silence_seconds = limits
    return Record(
        side=side,
        user=user,
        caller=caller,
        call_id=call.id,
        greeting="voicemail_greeting",
        payload_type=payload_type,
        max_seconds=max_seconds,
        silence_seconds=silence_seconds,
    )


def telephone_event_types(session: SessionDescription) -> tuple[int, ...]:
    """The payload types of `telephone-event` (RFC 4733) in the first audio stream."""
    for media in session.media:
        if media.kind != "audio" or media.port == 0:
            continue
        return tuple(
            codec.payload_type
            for codec in media.codecs()
            if codec.encoding.lower() == "telephone-event"
        )
    return ()


def playable_payload_type(body: bytes | None) -> int | None:
    """The first G.711 payload type of the first audio stream in `body`, if any."""
    session = parse_or_none(body)
    if session is None:
        return None
    for media in session.media:
        if media.kind != "audio" or media.port == 0:
            continue
        for fmt in media.formats:
            if fmt in PLAYABLE:
                return int(fmt)
            rtpmap = media.rtpmap(int(fmt)) if fmt.isdigit() else None
            if rtpmap is not None and rtpmap.encoding.upper() in PLAYABLE.values():
                return int(fmt)
        return None
    return None
