"""Hold and resume offers the recovery engine sends to the surviving party, without a media relay.

When one side of a call fails and callkeeper does not anchor media (`[media] mode = "off"`),
it holds the survivor with a re-INVITE built from the last SDP it sent that party, every
active stream turned `sendonly` — or `inactive` where we were not receiving anyway (RFC 3264
§8.4, RFC 6337 §5) — and the `o=` version raised, nothing else changed, so the phone sees
a plain hold.

When the call is re-attached or moved, the survivor gets an un-hold offer carrying the new
party's streams (addresses, ports, codecs), but still under the survivor's own `o=` identity
with a higher version: a phone rejects or mishandles an `o=` line that changes mid-dialog
(RFC 3264 §8), and the m= lines must keep the count and order the dialog already has (§8.1).
"""

from __future__ import annotations

from dataclasses import replace

from callkeeper.sdp.direction import Direction
from callkeeper.sdp.model import MediaDescription, SessionDescription
from callkeeper.sdp.offer_answer import next_version

_UNSPECIFIED_HOSTS = frozenset({"0.0.0.0", "::"})  # RFC 2543 hold; RFC 3264 §8.4 still reads it


def held_direction(direction: Direction) -> Direction:
    """The direction that puts a stream on hold: keep sending, stop receiving (§8.4)."""
    return Direction.from_flags(sends=direction.sends, receives=False)


def make_hold_offer(last_sent: SessionDescription) -> SessionDescription:
    """The re-offer that holds a party, from the last description we sent it."""
    offer = next_version(last_sent)
    for media in offer.media:
        if media.port != 0:
            media.set_direction(held_direction(offer.direction_of(media)))
    return offer


def is_held(session: SessionDescription) -> bool:
    """Whether every open stream is held (RFC 3264 §8.4 "held SDP"), old `c=0.0.0.0` included."""
    open_streams = [media for media in session.media if media.port != 0]
    return bool(open_streams) and all(
        not session.direction_of(media).receives or session.address_of(media) in _UNSPECIFIED_HOSTS
        for media in open_streams
    )


def rebase_origin(
    new_sdp: SessionDescription, previous_sdp_sent: SessionDescription
) -> SessionDescription:
    """`new_sdp` under the `o=` line of `previous_sdp_sent`, version + 1 (RFC 3264 §8)."""
    rebased = new_sdp.copy()
    previous = previous_sdp_sent.origin
    rebased.origin = replace(previous, session_version=previous.session_version + 1)
    return rebased


def make_unhold_offer(
    new_sdp: SessionDescription, previous_sdp_sent: SessionDescription
) -> SessionDescription:
    """The re-offer that connects the survivor to the party that sent `new_sdp`.

    Each m= line we sent before keeps its place: it gets the new party's stream of the same
    media type (the one at the same position first) or, when the new party has none, stays
    in the offer disabled (port 0), because an m= line may not be removed (RFC 3264 §8.2).
    New-party streams with no place are left out: the survivor never had them.
    """
    offer = rebase_origin(new_sdp, previous_sdp_sent)
    offer.media = _align(offer.media, previous_sdp_sent.media)
    return offer


def _align(
    new_media: list[MediaDescription], previous_media: list[MediaDescription]
) -> list[MediaDescription]:
    unused = list(range(len(new_media)))
    aligned: list[MediaDescription] = []
    for position, previous in enumerate(previous_media):
        candidates = [i for i in unused if new_media[i].kind == previous.kind]
        if not candidates:
            formats = list(previous.formats)
            aligned.append(MediaDescription(previous.kind, 0, previous.proto, formats))
            continue
        chosen = position if position in candidates else candidates[0]
        unused.remove(chosen)
        aligned.append(new_media[chosen])
    return aligned
