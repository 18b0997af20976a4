"""Media direction (RFC 8866 §6.7, RFC 3264 §5.1): who sends and who receives on a stream.

The four attribute names are two booleans — does this side send, does it receive — so the
offer/answer and hold rules are written as operations on those bits instead of as tables of
strings: an answer may only send what the offer receives, and hold stops our receiving.
"""

from __future__ import annotations

from enum import StrEnum


class Direction(StrEnum):
    """A stream's direction from the point of view of the description that carries it."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self is Direction.SENDRECV or self is Direction.SENDONLY

    @property
    def receives(self) -> bool:
        return self is Direction.SENDRECV or self is Direction.RECVONLY

    @classmethod
    def from_flags(cls, sends: bool, receives: bool) -> Direction:
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE

    def reversed(self) -> Direction:
        """The same stream described from the other end (sendonly ↔ recvonly)."""
        return Direction.from_flags(self.receives, self.sends)


DEFAULT_DIRECTION = Direction.SENDRECV  # no attribute at media or session level (RFC 8866 §6.7)
DIRECTION_NAMES = frozenset(d.value for d in Direction)
