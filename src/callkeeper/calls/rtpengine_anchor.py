"""The media anchor for `media.mode = "rtpengine"`: rtpengine carries the media, we keep the plan.

rtpengine chooses its own ports and names them only in the answer to an NG `offer`/`answer`, a
network round trip; the B2BUA rewrites SDP synchronously. So the io layer sets up *slots* in
advance (io/rtpengine.py): an rtpengine call with two parties, tags `a` and `b`, each with its port
pair, opened with placeholder SDP and the `port-latching` flag, which keeps those ports for the
slot's life whatever SDP follows. A call takes a slot when its first SDP crosses, and every leg
sits on one of the slot's two *sides*: the caller and its replacements on one, the callee's
forks and replacements on the other (a leg takes the side opposite to the leg it talks to).

- SDP crossing the B2BUA is rewritten to name the side of the leg it goes to (rtpengine's
  address and the side's port), and what the SDP says about its sender goes to rtpengine as an
  offer from the sender's side (`Negotiate`): rtpengine then sends that side's media there.
- Re-bridging a survivor to a new leg is one `Negotiate` for the new leg's side: the survivor's
  ports stay, so its phone is not touched (verified against rtpengine 10.5: with `port-latching`
  a re-offer keeps both parties' local ports).
- Prompts and music are rtpengine's `play media` into a side (`PlayMedia`); `connect` stops them.
- The built-in voicemail is recorded by the built-in relay (rtpengine 10.5 records only through
  its separate recording daemon): the survivor's opposite side is negotiated to a relay side
  (a port from `media.rtp_ports`), so rtpengine forwards the survivor's media to the relay,
  which plays the greeting back through rtpengine and records the rest — the relay's own
  `OpenSide`/`SetPeer`/`Record`/`CloseSide` commands, queued here with rtpengine's.

Pure: the slots arrive from the io layer (`add_slots`), commands leave through `next_command`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from callkeeper.calls.media_anchor import (
    CloseSide,
    MediaCommand,
    OpenSide,
    PortPool,
    SetPeer,
    playable_payload_type,
    voicemail_record,
)
from callkeeper.calls.model import Call, Leg
from callkeeper.calls.sdp_offers import parse_or_none
from callkeeper.sdp import anchor_media
from callkeeper.sdp.model import SessionDescription

SIDE_TAGS = ("a", "b")  # the parties of a slot, as rtpengine knows them (from-tag/to-tag)


@dataclass(frozen=True, slots=True)
class Slot:
    """An rtpengine call set up in advance: where each side's phone will send its RTP."""

    id: str  # rtpengine's call-id
    address: str  # rtpengine's media address
    ports: tuple[int, int]  # RTP port of side a, of side b (RTCP on the port above)
    created: float  # io-layer clock, for retiring slots that sat unused too long


# --- commands for the io layer (io/rtpengine.py) ------------------------------------------------
@dataclass(frozen=True, slots=True)
class Negotiate:
    """Tell rtpengine what the phone on side `tag` said in `sdp` (an offer from `tag`)."""

    slot: str
    tag: str
    sdp: bytes


@dataclass(frozen=True, slots=True)
class PlayMedia:
    """Play `prompts` into side `tag`'s phone, then `loop` until stopped (None: nothing)."""

    slot: str
    tag: str
    prompts: tuple[str, ...]
    loop: str | None


@dataclass(frozen=True, slots=True)
class StopMedia:
    slot: str
    tag: str


@dataclass(frozen=True, slots=True)
class DeleteSlot:
    slot: str


RtpengineCommand = Negotiate | PlayMedia | StopMedia | DeleteSlot


@dataclass
class _CallMedia:
    slot: Slot
    sides: dict[str, int] = field(default_factory=dict)  # leg id → 0 (side a) or 1 (side b)
    told: dict[int, bytes] = field(default_factory=dict)  # side → the SDP rtpengine last got
    playing: set[int] = field(default_factory=set)
    mailbox: tuple[str, int] | None = None  # the relay side recording a voicemail, its port
    speakers: dict[int, str] = field(default_factory=dict)  # side → leg whose SDP it last got


@dataclass(frozen=True, slots=True)
class Recorder:
    """The built-in relay, for voicemail: the address it binds and its ports."""

    address: str
    ports: PortPool


class RtpengineAnchor:
    def __init__(self, recorder: Recorder | None = None) -> None:
        self._recorder = recorder
        self._free: deque[Slot] = deque()
        self._calls: dict[str, _CallMedia] = {}
        self._leg_calls: dict[str, str] = {}  # leg id → call id
        self._slot_calls: dict[str, str] = {}  # slot id → call id
        self._commands: deque[RtpengineCommand | MediaCommand] = deque()
        self._unanchored: set[str] = set()  # calls that found no slot: they stay direct
        self.exhausted = 0  # calls whose media went direct: no slot was ready

    # --- slots from the io layer -------------------------------------------------------------
    def add_slots(self, slots: list[Slot]) -> None:
        self._free.extend(slots)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def take_stale_slots(self, created_before: float) -> list[Slot]:
        """Unused slots older than the cutoff (rtpengine times out calls without media): the
        io layer deletes them and sets up fresh ones."""
        stale = [slot for slot in self._free if slot.created < created_before]
        if stale:
            self._free = deque(slot for slot in self._free if slot.created >= created_before)
        return stale

    def leg_on(self, slot_id: str, tag: str) -> str | None:
        """The leg whose phone sends to a slot's side (for keys rtpengine reports by tag)."""
        call_id = self._slot_calls.get(slot_id)
        media = self._calls.get(call_id) if call_id is not None else None
        if media is None or tag not in SIDE_TAGS:
            return None
        leg_id = media.speakers.get(SIDE_TAGS.index(tag))
        return leg_id if leg_id in media.sides else None

    # --- the Anchor protocol ------------------------------------------------------------------
    def next_command(self) -> RtpengineCommand | MediaCommand | None:
        return self._commands.popleft() if self._commands else None

    def __len__(self) -> int:
        return len(self._leg_calls)

    def rewrite(self, call: Call, from_leg: Leg, to_leg: Leg, body: bytes) -> bytes:
        session = parse_or_none(body)
        if session is None:
            return body
        media = self._media(call)
        if media is None:
            return body
        from_side = self._side(media, call, from_leg, partner=to_leg)
        self._negotiate(media, from_side, body)
        media.speakers[from_side] = from_leg.id
        to_side = self._side(media, call, to_leg, partner=from_leg)
        port = media.slot.ports[to_side]
        ports = [port if stream.port != 0 else 0 for stream in session.media]
        try:
            anchored = anchor_media(
                session, media.slot.address, ports, [p + 1 if p else None for p in ports]
            )
        except ValueError:
            return body
        return anchored.to_bytes()

    def learn(self, call: Call, leg: Leg, session: SessionDescription | bytes) -> None:
        media = self._calls.get(call.id)
        if media is None or leg.id not in media.sides:
            return
        body = session if isinstance(session, bytes) else session.to_bytes()
        if parse_or_none(body) is not None:
            side = media.sides[leg.id]
            self._negotiate(media, side, body)
            media.speakers[side] = leg.id

    def has_side(self, leg: Leg) -> bool:
        return leg.id in self._leg_calls

    def side_port(self, leg: Leg) -> int | None:
        return None  # rtpengine keeps its own calls; a restarted process has no slot for it

    def restore_side(self, call: Call, leg: Leg, port: int) -> bool:
        return False

    def connect(self, leg_a: Leg, leg_b: Leg) -> None:
        # rtpengine forwards between the two sides all along; what is left is to stop prompts.
        self._stop_prompts(leg_a)
        self._stop_prompts(leg_b)

    def play(self, leg: Leg, prompts: tuple[str, ...], loop: str | None) -> bool:
        media, side = self._where(leg)
        if media is None:
            return False
        media.playing.add(side)
        self._commands.append(PlayMedia(media.slot.id, SIDE_TAGS[side], prompts, loop))
        return True

    def record(
        self, call: Call, leg: Leg, user: str, caller: str | None, limits: tuple[float, float]
    ) -> bool:
        media, side = self._where(leg)
        payload_type = playable_payload_type(leg.remote_sdp)
        recorder = self._recorder
        if media is None or payload_type is None or recorder is None or media.mailbox:
            return False
        port = recorder.ports.allocate()
        if port is None:
            return False
        slot, other = media.slot, 1 - side
        mailbox = f"{leg.id}.voicemail"
        media.mailbox = (mailbox, port)
        self._stop_prompts(leg)  # the hold music stops; the greeting comes from the relay
        self._commands.append(OpenSide(mailbox, port))
        self._commands.append(SetPeer(mailbox, (slot.address, slot.ports[other]), False))
        self._negotiate(media, other, _relay_sdp(recorder.address, port, payload_type))
        self._commands.append(voicemail_record(mailbox, call, user, caller, payload_type, limits))
        return True

    def release_leg(self, leg: Leg) -> None:
        call_id = self._leg_calls.pop(leg.id, None)
        media = self._calls.get(call_id) if call_id is not None else None
        if media is not None:
            media.sides.pop(leg.id, None)

    def release_call(self, call_id: str) -> None:
        self._unanchored.discard(call_id)
        media = self._calls.pop(call_id, None)
        if media is None:
            return
        self._slot_calls.pop(media.slot.id, None)
        for leg_id in media.sides:
            self._leg_calls.pop(leg_id, None)
        if media.mailbox is not None and self._recorder is not None:
            side, port = media.mailbox
            self._commands.append(CloseSide(side))  # the relay finishes the message
            self._recorder.ports.release(port)
        self._commands.append(DeleteSlot(media.slot.id))

    # --- helpers -------------------------------------------------------------------------------
    def _media(self, call: Call) -> _CallMedia | None:
        """The call's slot, taken from the pool at its first SDP. A call that found the pool
        empty stays unanchored for good: half of its SDP naming rtpengine would be worse."""
        media = self._calls.get(call.id)
        if media is None and call.id not in self._unanchored:
            if self._free:
                media = self._calls[call.id] = _CallMedia(self._free.popleft())
                self._slot_calls[media.slot.id] = call.id
            else:
                self._unanchored.add(call.id)
                self.exhausted += 1
        return media

    def _side(self, media: _CallMedia, call: Call, leg: Leg, partner: Leg) -> int:
        side = media.sides.get(leg.id)
        if side is None:
            partner_side = media.sides.get(partner.id)
            # Opposite the leg it talks to; the very first legs: the caller on side a.
            side = 1 - partner_side if partner_side is not None else int(not leg.is_caller)
            media.sides[leg.id] = side
            self._leg_calls[leg.id] = call.id
        return side

    def _negotiate(self, media: _CallMedia, side: int, body: bytes) -> None:
        # A fork of the same offer, or an answer repeated in the 200 after the 183: once is enough.
        if media.told.get(side) != body:
            media.told[side] = body
            self._commands.append(Negotiate(media.slot.id, SIDE_TAGS[side], body))

    def _stop_prompts(self, leg: Leg) -> None:
        media, side = self._where(leg)
        if media is not None and side in media.playing:
            media.playing.discard(side)
            self._commands.append(StopMedia(media.slot.id, SIDE_TAGS[side]))

    def _where(self, leg: Leg) -> tuple[_CallMedia | None, int]:
        call_id = self._leg_calls.get(leg.id)
        media = self._calls.get(call_id) if call_id is not None else None
        if media is None:
            return None, 0
        return media, media.sides[leg.id]


def _relay_sdp(address: str, port: int, payload_type: int) -> bytes:
    """What rtpengine is told about the relay side standing in for a phone: one audio stream."""
    kind = "IP6" if ":" in address else "IP4"
    return (
        f"v=0\r\no=callkeeper 1 1 IN {kind} {address}\r\ns=voicemail\r\n"
        f"c=IN {kind} {address}\r\nt=0 0\r\nm=audio {port} RTP/AVP {payload_type}\r\n"
        "a=sendrecv\r\n"
    ).encode()
