"""The one exception type of the SDP package.

A peer's unusable session description is not a crash: the B2BUA turns `SdpError` into
488 Not Acceptable Here (RFC 3261 §21.4.26) with `reason` in a Warning header, or — for an
answer, which cannot be refused — ends the leg it arrived on. So every problem the parser or
the offer/answer checks find is raised as this type and nothing else.
"""

from __future__ import annotations

NOT_ACCEPTABLE_HERE = 488


class SdpError(Exception):
    """A session description is malformed, or breaks an offer/answer rule.

    `reason` is a short, single-line text fit for a Warning header; `status` is the SIP
    response to send when the description came in a request.
    """

    status = NOT_ACCEPTABLE_HERE

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
