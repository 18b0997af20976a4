"""Symmetric RTP latching: which source a leg's relay port accepts media from.

A relay port is an open UDP port; anyone can send to it. The leg's SDP says where the phone's
media comes from, but a phone behind NAT sends from an address the SDP does not know, so the
relay learns ("latches") the real source from the first packet, and from then on accepts only
that source — otherwise any stray or hostile datagram would be played into the call. The rules
(the issue's "Bad media" acceptance):

- unlatched: accept the first RTP packet from the signalled address (from any address when the
  leg is behind NAT) and latch to its source address and SSRC;
- latched: accept packets from that address; a new SSRC from it is a phone restarting its stream
  and is adopted; anything from another address is dropped as `foreign-source`;
- RTCP is accepted from the latched address (or, before latching, from where RTP is expected),
  so a compound report passes to the other leg; on a port shared with RTP (RFC 5761) it never
  latches, on a separate RTCP port (`latch_rtcp=True`, a second latch) it latches the address;
- malformed datagrams are dropped with the parser's reason; every drop is counted by reason;
- only `relatch()` (a re-INVITE changed the leg's address) unlatches.

The whole protocol is `_TRANSITIONS`: (state, origin of the packet) → (next state, action).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum, StrEnum

from callkeeper.media.rtp import RtcpHeader, RtpError, RtpPacket, is_rtcp, parse, parse_rtcp_header

Address = tuple[str, int]


class DropReason(StrEnum):
    """Metric label values for dropped datagrams (the parser's reasons plus the source's)."""

    FOREIGN_SOURCE = "foreign-source"
    TRUNCATED = "truncated"
    WRONG_VERSION = "wrong-version"
    BAD_PADDING = "bad-padding"
    BAD_HEADER = "bad-header"


class LatchState(Enum):
    UNLATCHED = "unlatched"
    LATCHED = "latched"


class Origin(Enum):
    """Where an RTP packet comes from, relative to what the latch knows."""

    EXPECTED = "expected"  # unlatched: the signalled address, or anywhere when behind NAT
    UNEXPECTED = "unexpected"  # unlatched: somewhere else
    LATCHED_SOURCE = "latched-source"  # latched: the latched address and SSRC
    LATCHED_ADDRESS_NEW_SSRC = "latched-address-new-ssrc"  # latched: same address, new SSRC
    FOREIGN = "foreign"  # latched: another address


class Action(Enum):
    LATCH = "latch"
    ACCEPT = "accept"
    ADOPT_SSRC = "adopt-ssrc"
    DROP = "drop"


_TRANSITIONS: dict[tuple[LatchState, Origin], tuple[LatchState, Action]] = {
    (LatchState.UNLATCHED, Origin.EXPECTED): (LatchState.LATCHED, Action.LATCH),
    (LatchState.UNLATCHED, Origin.UNEXPECTED): (LatchState.UNLATCHED, Action.DROP),
    (LatchState.LATCHED, Origin.LATCHED_SOURCE): (LatchState.LATCHED, Action.ACCEPT),
    (LatchState.LATCHED, Origin.LATCHED_ADDRESS_NEW_SSRC): (LatchState.LATCHED, Action.ADOPT_SSRC),
    (LatchState.LATCHED, Origin.FOREIGN): (LatchState.LATCHED, Action.DROP),
}


@dataclass(frozen=True, slots=True)
class AcceptedRtp:
    """An RTP packet to relay. `latched`/`ssrc_changed` say this packet changed the latch."""

    packet: RtpPacket
    latched: bool = False
    ssrc_changed: bool = False


@dataclass(frozen=True, slots=True)
class AcceptedRtcp:
    """An RTCP compound packet to relay as it came."""

    header: RtcpHeader
    data: bytes
    latched: bool = False


@dataclass(frozen=True, slots=True)
class Dropped:
    reason: DropReason


Verdict = AcceptedRtp | AcceptedRtcp | Dropped


class RtpLatch:
    """The latch of one leg's relay port (see the module doc)."""

    def __init__(
        self, signalled: Address | None, *, behind_nat: bool = False, latch_rtcp: bool = False
    ) -> None:
        self.state = LatchState.UNLATCHED
        self.latch_rtcp = latch_rtcp
        self.signalled = signalled
        self.behind_nat = behind_nat
        self.latched_address: Address | None = None
        self.latched_ssrc: int | None = None
        self.drops: Counter[DropReason] = Counter()
        self.ssrc_changes = 0

    def relatch(self, signalled: Address | None, *, behind_nat: bool | None = None) -> None:
        """Forget the latched source: the leg's address changed (a re-INVITE, a new leg)."""
        self.state = LatchState.UNLATCHED
        self.signalled = signalled
        if behind_nat is not None:
            self.behind_nat = behind_nat
        self.latched_address = None
        self.latched_ssrc = None

    def receive(self, data: bytes, source: Address) -> Verdict:
        """Judge one datagram that arrived on the leg's port from `source`."""
        if is_rtcp(data):
            return self._receive_rtcp(data, source)
        try:
            packet = parse(data)
        except RtpError as error:
            return self._drop(DropReason(error.reason.value))
        next_state, action = _TRANSITIONS[(self.state, self._origin(packet, source))]
        self.state = next_state
        if action is Action.DROP:
            return self._drop(DropReason.FOREIGN_SOURCE)
        if action is Action.LATCH:
            self.latched_address = source
            self.latched_ssrc = packet.ssrc
            return AcceptedRtp(packet, latched=True)
        if action is Action.ADOPT_SSRC:
            self.latched_ssrc = packet.ssrc
            self.ssrc_changes += 1
            return AcceptedRtp(packet, ssrc_changed=True)
        return AcceptedRtp(packet)

    def _origin(self, packet: RtpPacket, source: Address) -> Origin:
        if self.state is LatchState.UNLATCHED:
            return Origin.EXPECTED if self._expected(source) else Origin.UNEXPECTED
        if source != self.latched_address:
            return Origin.FOREIGN
        if packet.ssrc != self.latched_ssrc:
            return Origin.LATCHED_ADDRESS_NEW_SSRC
        return Origin.LATCHED_SOURCE

    def _expected(self, source: Address) -> bool:
        return self.behind_nat or source == self.signalled

    def _receive_rtcp(self, data: bytes, source: Address) -> Verdict:
        try:
            header = parse_rtcp_header(data)
        except RtpError as error:
            return self._drop(DropReason(error.reason.value))
        if self.state is LatchState.LATCHED:
            allowed = source == self.latched_address
        else:
            allowed = self._expected(source)
        if not allowed:
            return self._drop(DropReason.FOREIGN_SOURCE)
        latched = self.latch_rtcp and self.state is LatchState.UNLATCHED
        if latched:
            self.state = LatchState.LATCHED
            self.latched_address = source
        return AcceptedRtcp(header, bytes(data), latched=latched)

    def _drop(self, reason: DropReason) -> Dropped:
        self.drops[reason] += 1
        return Dropped(reason)
