"""Line numbers for places in a TOML document.

`tomllib` returns plain data without positions, and pydantic reports a problem as a path into
that data (``("steps", 3, "next")``). To say *where* in the file the problem is, this module
scans the text for the table headers and keys such a path names. It understands what IVR scripts
use — ``[table]``, ``[[array]]`` items, ``[array.sub]`` sub-tables and ``key = ...`` lines, with
bare or quoted keys — and falls back to the nearest enclosing header, then to line 1, so every
path gets a line even when the scan cannot be exact (a key inside a multi-line string, say).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_HEADER = re.compile(r"\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?")
_KEY = re.compile(r"""\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*[=.]""")


@dataclass(frozen=True, slots=True)
class _Header:
    line: int  # 1-based
    name: str  # dotted name as written, quotes and spaces removed
    array: bool  # [[name]]


def _normalize(name: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in name.split("."))


class TomlLines:
    """Finds the line of a table, an array item or a key in TOML `text`."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self._headers: list[_Header] = []
        for number, line in enumerate(self._lines, start=1):
            match = _HEADER.fullmatch(line)
            if match is not None:
                self._headers.append(
                    _Header(number, _normalize(match.group(2)), match.group(1) == "[[")
                )

    def has_table(self, name: str) -> bool:
        """True when the text has a ``[name]`` header (the IVR script test of check-config)."""
        return any(h.name == name and not h.array for h in self._headers)

    def locate(self, path: Sequence[str | int]) -> int:
        """The best line for `path` (a pydantic error location): the key's own line when found,
        else the line of the table or array item that holds it, else 1."""
        if not path:
            return 1
        head = str(path[0])
        if len(path) > 1 and isinstance(path[1], int):
            header = self._array_item(head, path[1])
            keys = path[2:]
        else:
            header = self._table(head)
            keys = path[1:]
        if header is None:
            return self._key_line(0, head, "") or 1
        if keys:
            return self._key_line(header.line, str(keys[0]), head) or header.line
        return header.line

    def key_line(self, path: Sequence[str | int], key: str) -> int:
        """The line of `key` inside the table or array item at `path` (e.g. ``("steps", 2)``)."""
        return self.locate([*path, key])

    def _table(self, name: str) -> _Header | None:
        return next((h for h in self._headers if h.name == name and not h.array), None)

    def _array_item(self, name: str, index: int) -> _Header | None:
        items = [h for h in self._headers if h.name == name and h.array]
        return items[index] if 0 <= index < len(items) else None

    def _key_line(self, start: int, key: str, table: str) -> int | None:
        """The first line at or after line `start` (0: the top of the file) that sets `key`, in
        the region that ends at the next header not nested under `table`; a ``[table.key]``
        sub-table header counts as setting `key`."""
        in_sub_table = False  # keys under [table.sub] belong to the sub-table
        for number in range(start + 1, len(self._lines) + 1):
            line = self._lines[number - 1]
            header = _HEADER.fullmatch(line)
            if header is not None:
                name = _normalize(header.group(2))
                if table and name == f"{table}.{key}":
                    return number
                if not table or not name.startswith(f"{table}."):
                    return None
                in_sub_table = True
                continue
            match = None if in_sub_table else _KEY.match(line)
            if match is not None and key in match.groups():
                return number
        return None


def toml_error_line(message: str) -> int | None:
    """The line number in a `tomllib.TOMLDecodeError` message ("... (at line 3, column 7)")."""
    match = re.search(r"at line (\d+)", message)
    return int(match.group(1)) if match else None
