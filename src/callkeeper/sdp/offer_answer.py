"""The RFC 3264 offer/answer rules a B2BUA must hold its peers (and itself) to.

callkeeper relays SDP between legs and writes its own re-offers when it holds, resumes and
moves calls, so it needs three rules in code: which directions may answer which (§6.1), what
makes an answer fit its offer (§6: same m= lines in the same order, a port-0 stream stays
port 0, a format in common), and that each new offer in a dialog carries the previous `o=`
line with the version raised by one (§8).
"""

from __future__ import annotations

from dataclasses import replace

from callkeeper.sdp.direction import Direction
from callkeeper.sdp.errors import SdpError
from callkeeper.sdp.model import MediaDescription, SessionDescription


def answer_direction(offered: Direction, wanted: Direction = Direction.SENDRECV) -> Direction:
    """The direction to answer an offered stream with, when we would like `wanted` (§6.1).

    We may only send what the offerer receives and receive what it sends: sendonly is
    answered recvonly, recvonly sendonly, inactive inactive, sendrecv with whatever we want.
    """
    return Direction.from_flags(
        sends=offered.receives and wanted.sends, receives=offered.sends and wanted.receives
    )


def direction_allowed(offered: Direction, answered: Direction) -> bool:
    """Whether `answered` is a legal answer to `offered` (RFC 3264 §6.1)."""
    return (offered.receives or not answered.sends) and (offered.sends or not answered.receives)


def check_answer(offer: SessionDescription, answer: SessionDescription) -> None:
    """Raise `SdpError` when `answer` does not answer `offer` (RFC 3264 §6, §6.1)."""
    if len(answer.media) != len(offer.media):
        raise SdpError(f"answer has {len(answer.media)} m= lines, the offer {len(offer.media)}")
    for index, (offered, answered) in enumerate(zip(offer.media, answer.media, strict=True), 1):
        if answered.kind != offered.kind:
            raise SdpError(f"m= line {index} answers {offered.kind} with {answered.kind}")
        if offered.port == 0:
            if answered.port != 0:
                raise SdpError(f"m= line {index} was offered with port 0 and answered open")
            continue
        if answered.port == 0:
            continue  # rejected: any answer may refuse a stream
        offered_direction = offer.direction_of(offered)
        answered_direction = answer.direction_of(answered)
        if not direction_allowed(offered_direction, answered_direction):
            raise SdpError(f"m= line {index} answers {offered_direction} with {answered_direction}")
        if answered_direction is not Direction.INACTIVE and not _share_format(offered, answered):
            raise SdpError(f"m= line {index} has no format in common with the offer")


def _share_format(offered: MediaDescription, answered: MediaDescription) -> bool:
    if set(offered.formats) & set(answered.formats):
        return True
    if not offered.is_rtp:
        return False
    # Dynamic payload types may be renumbered in an answer: compare the codecs themselves.
    codecs = {(c.encoding.lower(), c.clock_rate) for c in offered.codecs()}
    return any((c.encoding.lower(), c.clock_rate) in codecs for c in answered.codecs())


def next_version(session: SessionDescription) -> SessionDescription:
    """A copy of `session` to send as the next offer: same `o=` line, version + 1 (§8)."""
    bumped = session.copy()
    bumped.origin = replace(session.origin, session_version=session.origin.session_version + 1)
    return bumped
