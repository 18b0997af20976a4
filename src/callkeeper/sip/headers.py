"""An ordered, case-insensitive header multimap that keeps what it was given.

Headers are stored as received — name spelling, order, repeated lines — so a parsed message
serializes back to what came in unless something was changed on purpose. Lookups use the
canonical lower-case long name, so compact forms (`v`, `i`, `m` ...) and any capitalisation find
the same header.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

# RFC 3261 §7.3.3 and the IANA registry of compact forms.
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# Headers whose values may be comma-separated lists (RFC 3261 §7.3.1). Others — notably
# From/To/Call-ID/CSeq and the auth headers — may contain commas that are not separators.
LIST_HEADERS = frozenset(
    {
        "via",
        "route",
        "record-route",
        "contact",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow-events",
        "content-encoding",
        "in-reply-to",
        "path",
        "service-route",
        "alert-info",
        "call-info",
        "error-info",
        "warning",
    }
)

_CANONICAL_CACHE: dict[str, str] = {}
# Every state of every Headers object gets its own number, so a Message can tell in O(1)
# that the headers it parsed a view from have not changed since (see Message._cache).
_revisions = itertools.count()


def canonical(name: str) -> str:
    """The lookup key of a header name: lower case, compact form expanded."""
    key = _CANONICAL_CACHE.get(name)
    if key is None:
        lowered = name.lower()
        key = COMPACT_FORMS.get(lowered, lowered)
        if len(_CANONICAL_CACHE) < 4096:  # bounded: names come from the network
            _CANONICAL_CACHE[name] = key
    return key


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas in quotes and angle brackets."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            part = value[start:i].strip()
            if part:
                parts.append(part)
            start = i + 1
        i += 1
    part = value[start:].strip()
    if part:
        parts.append(part)
    return parts


class Headers:
    """Ordered multimap of (name, value); `name` keeps its original spelling.

    `revision` changes whenever the headers do (and differs between Headers objects), so
    parsed views of them can be cached against it.
    """

    __slots__ = ("_items", "revision")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = [
            (canonical(name), name, value) for name, value in items
        ]
        self.revision = next(_revisions)

    @classmethod
    def _from_parsed(cls, items: list[tuple[str, str, str]]) -> Headers:
        """Adopt (key, name, value) triples built by the parser, without copying."""
        headers = cls.__new__(cls)
        headers._items = items
        headers.revision = next(_revisions)
        return headers

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self._items:
            yield name, value

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical(name)
        return any(item[0] == key for item in self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        return Headers._from_parsed(list(self._items))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first header line called `name`."""
        key = canonical(name)
        for item in self._items:
            if item[0] == key:
                return item[2]
        return default

    def get_lines(self, name: str) -> list[str]:
        """Every header line called `name`, unsplit."""
        key = canonical(name)
        return [item[2] for item in self._items if item[0] == key]

    def get_list(self, name: str) -> list[str]:
        """All values of `name`: every line, each split at top-level commas."""
        key = canonical(name)
        values: list[str] = []
        for item in self._items:
            if item[0] == key:
                values.extend(split_list(item[2]))
        return values

    def count(self, name: str) -> int:
        key = canonical(name)
        return sum(1 for item in self._items if item[0] == key)

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        self._items.append((canonical(name), name, value))
        self.revision = next(_revisions)

    def prepend(self, name: str, value: str) -> None:
        """Insert a header line above the first line of the same name (or at the top)."""
        key = canonical(name)
        self.revision = next(_revisions)
        for index, item in enumerate(self._items):
            if item[0] == key:
                self._items.insert(index, (key, name, value))
                return
        self._items.insert(0, (key, name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every line called `name` by one line, where the first one stood."""
        key = canonical(name)
        self.revision = next(_revisions)
        for index, item in enumerate(self._items):
            if item[0] == key:
                self._items[index] = (key, item[1], value)
                self._items[index + 1 :] = [i for i in self._items[index + 1 :] if i[0] != key]
                return
        self._items.append((key, name, value))

    def remove(self, name: str) -> int:
        """Remove every line called `name`; returns how many were removed."""
        key = canonical(name)
        before = len(self._items)
        self._items = [item for item in self._items if item[0] != key]
        self.revision = next(_revisions)
        return before - len(self._items)

    def pop_first(self, name: str) -> str | None:
        """Remove the first value of `name` (splitting a comma list) and return it."""
        key = canonical(name)
        for index, item in enumerate(self._items):
            if item[0] != key:
                continue
            self.revision = next(_revisions)
            values = split_list(item[2])
            if len(values) <= 1:
                del self._items[index]
            else:
                self._items[index] = (key, item[1], ", ".join(values[1:]))
            return values[0] if values else None
        return None

    def encode_into(self, out: list[str]) -> None:
        for _, name, value in self._items:
            out.append(f"{name}: {value}\r\n")
