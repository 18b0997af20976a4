"""Counters the SIP core keeps as plain integers; the API turns them into Prometheus metrics
at scrape time, so the hot path never touches a metrics library."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class SipStats:
    # (direction "in"/"out", kind "request"/"response", method) -> count
    messages: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # (direction, status class "1xx".."6xx") -> count
    responses: Counter[tuple[str, str]] = field(default_factory=Counter)
    # why input was dropped without an answer (unparseable, no Via, stray response ...)
    dropped: Counter[str] = field(default_factory=Counter)
    # requests answered with an error because they were malformed: status -> count
    rejected: Counter[int] = field(default_factory=Counter)
    # keep-alives received: "crlf", "stun", "udp-crlf"
    keepalives: Counter[str] = field(default_factory=Counter)

    def count_in(self, kind: str, method: str) -> None:
        self.messages["in", kind, method] += 1

    def count_out(self, kind: str, method: str) -> None:
        self.messages["out", kind, method] += 1
