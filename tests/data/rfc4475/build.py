"""Write the RFC 4475 torture messages out as NAME.dat files, one message per file.

`messages.txt` holds the messages in the RFC's own notation (section 2 of the RFC:
`<allOneLine>`, `<repeat count=N>`, `<hex>`); this script decodes that notation into the octets a
peer would send. Run it after editing `messages.txt`:

    python tests/data/rfc4475/build.py

The torture test decodes `messages.txt` again and checks the .dat files against it, so the two
cannot drift apart silently.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "messages.txt"

_START = re.compile(r"--- (?P<name>[a-z0-9]+) (?P<section>[0-9.]+)$")
_REPEAT = re.compile(r"<repeat count=(\d+)>(.*?)</repeat>")
_HEX = re.compile(r"<hex>([0-9A-Fa-f]*)</hex>")


def _decode_line(line: str) -> bytes:
    """One logical line: repeats expanded first, then hex runs (the RFC's order of reading)."""
    line = _REPEAT.sub(lambda m: m.group(2) * int(m.group(1)), line)
    out = bytearray()
    position = 0
    for match in _HEX.finditer(line):
        out += line[position : match.start()].encode("ascii")
        out += bytes.fromhex(match.group(1))
        position = match.end()
    out += line[position:].encode("ascii")
    return bytes(out)


def _decode_message(lines: list[str]) -> bytes:
    logical: list[str] = []
    joined: list[str] | None = None
    for line in lines:
        if line == "<allOneLine>":
            if joined is not None:
                raise ValueError("nested <allOneLine>")
            joined = []
        elif line == "</allOneLine>":
            if joined is None:
                raise ValueError("</allOneLine> without <allOneLine>")
            logical.append("".join(joined))
            joined = None
        elif joined is not None:
            joined.append(line)
        else:
            logical.append(line)
    if joined is not None:
        raise ValueError("unterminated <allOneLine>")
    return b"".join(_decode_line(line) + b"\r\n" for line in logical)


def load(source: Path = SOURCE) -> dict[str, tuple[str, bytes]]:
    """name -> (RFC section, wire octets), in the order of the RFC."""
    messages: dict[str, tuple[str, bytes]] = {}
    current: tuple[str, str] | None = None
    body: list[str] = []
    for number, line in enumerate(source.read_text("ascii").split("\n"), 1):
        if line != line.rstrip(" \t"):
            raise ValueError(f"{source.name}:{number}: trailing white space (write <hex>20</hex>)")
        if current is None:
            match = _START.match(line)
            if match:
                current = (match["name"], match["section"])
                body = []
            continue
        if line == "--- end":
            name, section = current
            if name in messages:
                raise ValueError(f"{source.name}:{number}: {name} defined twice")
            messages[name] = (section, _decode_message(body))
            current = None
            continue
        body.append(line)
    if current is not None:
        raise ValueError(f"{source.name}: {current[0]} has no '--- end'")
    return messages


def main() -> int:
    messages = load()
    for name, (_, data) in messages.items():
        (HERE / f"{name}.dat").write_bytes(data)
    print(f"wrote {len(messages)} messages to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
