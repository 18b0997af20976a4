"""SIP trunks and the number-prefix table that picks one for a dialled number.

A trunk carries calls to numbers (the public network, a mobile phone in a fallback chain). Each
`[[trunks]]` entry names a prefix in `match`; the longest prefix that a number starts with wins,
ties go to the trunk configured first, and an empty `match` is the default route. The table keeps
one dict per prefix length, so a look-up costs at most one dict probe per distinct prefix length
(a handful), however many trunks are configured.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from callkeeper.sip.uri import URI

# A dialable number: digits, optionally with a leading "+" (E.164 global form).
_NUMBER_RE = re.compile(r"\+?[0-9]+")
# RFC 3966 §5.1.1 visual separators, which people and phones put in numbers freely.
_VISUAL_SEPARATORS = str.maketrans("", "", "-.() ")


def normalize_number(text: str) -> str | None:
    """The number in `text` without visual separators, or None when it is not a number.

    `"+49 (30) 1234-56"` → `"+4930123456"`; `"alice"`, `""`, `"+"` and `"12+3"` → None.
    """
    number = text.translate(_VISUAL_SEPARATORS)
    return number if _NUMBER_RE.fullmatch(number) else None


@dataclass(frozen=True, slots=True)
class Trunk:
    """A configured trunk: where calls to numbers starting with `match` are sent."""

    name: str
    uri: URI
    match: str = ""


class TrunkTable:
    """Longest-prefix match of numbers onto trunks (see the module docstring)."""

    __slots__ = ("_by_length", "_lengths", "trunks")

    def __init__(self, trunks: Iterable[Trunk]) -> None:
        self.trunks: tuple[Trunk, ...] = tuple(trunks)
        self._by_length: dict[int, dict[str, Trunk]] = {}
        for trunk in self.trunks:
            # setdefault: on a tie the trunk configured first keeps the prefix.
            self._by_length.setdefault(len(trunk.match), {}).setdefault(trunk.match, trunk)
        self._lengths = sorted(self._by_length, reverse=True)

    def __len__(self) -> int:
        return len(self.trunks)

    def trunk_for(self, number: str) -> Trunk | None:
        """The trunk for `number` (already normalized), or None when no prefix matches."""
        for length in self._lengths:
            if length <= len(number):
                trunk = self._by_length[length].get(number[:length])
                if trunk is not None:
                    return trunk
        return None

    def by_name(self, name: str) -> Trunk | None:
        for trunk in self.trunks:
            if trunk.name == name:
                return trunk
        return None
