"""Read a SIPp message trace (`-trace_msg -message_file FILE`) while SIPp runs or after it ends.

SIPp appends one entry per datagram:

    ----------------------------------------------- 2026-11-25 22:56:11.265670
    UDP message received [255] bytes :
    <blank line>
    SIP/2.0 100 Trying ...

Read it whole each time (traces here are small); an entry still being written is left out
until the next read finds it complete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_ENTRY = re.compile(r"^-{20,} (\S+ \S+)\n(\w+) message (sent|received)[^\n]*\n\n", re.M)


@dataclass(frozen=True)
class TracedMessage:
    direction: str  # "sent" or "received" (as seen by that SIPp)
    stamp: str  # SIPp's wall clock, "YYYY-MM-DD HH:MM:SS.ffffff"
    start_line: str
    headers: dict[str, str]  # lower-case name → first value
    body: str

    @property
    def method(self) -> str | None:
        return None if self.start_line.startswith("SIP/2.0") else self.start_line.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        if not self.start_line.startswith("SIP/2.0"):
            return None
        return int(self.start_line.split(" ", 2)[1])

    @property
    def uri(self) -> str:
        return self.start_line.split(" ")[1]

    @property
    def call_id(self) -> str:
        return self.headers.get("call-id", "")

    @property
    def cseq_method(self) -> str:
        return self.headers.get("cseq", " ").split(" ")[-1]

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def read_trace(path: Path) -> list[TracedMessage]:
    if not path.exists():
        return []
    text = path.read_text(errors="replace").replace("\r\n", "\n")
    starts = list(_ENTRY.finditer(text))
    messages = []
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(text)
        if index + 1 == len(starts) and not text.endswith("\n\n"):
            break  # the last entry may be half written
        raw = text[match.end() : end]
        head, _, body = raw.partition("\n\n")
        lines = head.split("\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                headers.setdefault(name.strip().lower(), value.strip())
        messages.append(
            TracedMessage(match.group(3), match.group(1), lines[0].strip(), headers, body.strip())
        )
    return messages


def requests(path: Path, method: str, direction: str = "received") -> list[TracedMessage]:
    return [m for m in read_trace(path) if m.direction == direction and m.method == method]


def responses(path: Path, cseq_method: str, direction: str = "received") -> list[TracedMessage]:
    return [
        m
        for m in read_trace(path)
        if m.direction == direction and m.status is not None and m.cseq_method == cseq_method
    ]
