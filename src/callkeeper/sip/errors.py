"""The one small exception tree of the SIP core.

A peer's malformed message becomes a `ParseError` that carries the response code to send
(400, 413, 505 ...), so the caller answers and moves on; nothing from the network escapes as a
different exception type.
"""

from __future__ import annotations


class SipError(Exception):
    """Base of every error the SIP core raises on purpose."""


class ParseError(SipError):
    """A message (or part of one) could not be parsed.

    `status` is the response to send when the message was a request and a response is possible;
    `reason` is a short text fit for a reason phrase or a Warning header.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class MessageTooLarge(ParseError):
    """A message or header section exceeds the configured limits (answered with 513)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, status=513)
