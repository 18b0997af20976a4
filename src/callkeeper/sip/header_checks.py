"""Check the header values the SIP core relies on against the RFC 3261 grammar.

One job: given the checked headers of a parsed header section (`Index`: the first value of
each, all values of those that repeat), say what is wrong with them (`Problem`), and leave
what parsed in the message's cache for `.top_via`, `.from_addr` etc. Content-Length is read
here too, for the framers in parser.py. Separate from head_parser.py, which cuts the section
into lines and names: that is about the shape of the text, this is about what the values mean.
The calls keep the parser's structure (one `validate` per message, no per-header layer).
"""

from __future__ import annotations

import re
from typing import Any

from callkeeper.sip.address import PARAMS_PATTERN, TOKEN, parse_address
from callkeeper.sip.errors import ParseError
from callkeeper.sip.headers import split_list
from callkeeper.sip.message import Message, Request, parse_cseq
from callkeeper.sip.via import parse_via

Problem = tuple[str, int]  # (reason, status)

_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]++"
_CALL_ID_RE = re.compile(rf"{_WORD}(?:@{_WORD})?")
# rfc1123-date, which SIP restricts to GMT (RFC 3261 §20.17; RFC 4475 §3.1.2.12).
_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
# media-type *(SEMI m-parameter): the parameters as any header's.
_CONTENT_TYPE_RE = re.compile(rf"{TOKEN}[ \t]*+/[ \t]*+{TOKEN}{PARAMS_PATTERN}")

# Headers looked at while the header section is read, so validation need not search for them.
CHECKED = frozenset(
    {
        "via", "from", "to", "call-id", "cseq", "content-length", "max-forwards", "expires",
        "contact", "route", "record-route", "date", "content-type",
    }
)  # fmt: skip
_CHECKED_FIRST = frozenset(
    {"via", "from", "to", "call-id", "cseq", "content-length", "max-forwards", "contact"}
)

# The checked headers of a message: the first value of each, and all values of those that
# repeat (a plain tuple: it is made for every message).
Index = tuple[dict[str, str], dict[str, list[str]]]


def _all_values(index: Index, key: str) -> list[str] | None:
    """Every value (line) of header `key`, or None when absent."""
    values = index[1].get(key)
    if values is not None:
        return values
    value = index[0].get(key)
    return None if value is None else [value]


NO_REPEATS: dict[str, list[str]] = {}


def repeated_values(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The values of each key that occurs more than once in `pairs`, in order."""
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return {key: values for key, values in grouped.items() if len(values) > 1}


def content_length(index: Index) -> tuple[int | None, Problem | None]:
    """The Content-Length, and the reason a stream could not be framed by it."""
    value = index[0].get("content-length")
    if value is None:
        return None, None
    values = index[1].get("content-length")
    if values is not None and any(other != value for other in values):
        return None, ("conflicting Content-Length headers", 400)  # RFC 4475 §3.3.9
    length = _number(value, 9_999_999_999, 10)
    if length is None:
        return None, (f"bad Content-Length {value[:16]!r}", 400)  # RFC 4475 §3.1.2.3
    return length, None


def validate(message: Message, request: Request | None, index: Index) -> Problem | None:
    """Check the headers every message needs (§8.1.1) and the ones the core reads.

    Parsed values go into the message's cache, stamped with the headers' revision, so the
    views (`.top_via`, `.from_addr` ...) do not parse them again.
    """
    revision = message.headers.revision
    cache = message._cache
    first, repeated = index
    try:
        value = first.get("via")
        if value is None:
            raise ParseError("missing Via header")
        lines = repeated.get("via")
        if lines is None and "," not in value:
            lines = [value]
            vias = [parse_via(value)]
        else:
            lines = lines or [value]
            vias = [parse_via(via) for line in lines for via in split_list(line)]
            if not vias:
                raise ParseError("empty Via header")
        cache["via"] = (revision, tuple(lines), vias)
        cache["top-via"] = (revision, value, vias[0])
        if repeated:
            for key in ("from", "to", "call-id", "cseq", "max-forwards"):
                if key in repeated:
                    raise ParseError(f"repeated {key} header")
        value = first.get("from")
        if value is None:
            raise ParseError("missing From header")
        cache["from"] = (revision, value, parse_address(value))
        value = first.get("to")
        if value is None:
            raise ParseError("missing To header")
        cache["to"] = (revision, value, parse_address(value))
        value = first.get("call-id")
        if value is None or _CALL_ID_RE.fullmatch(value) is None:
            raise ParseError(f"missing or bad Call-ID {(value or '')[:40]!r}")
        cache["call-id"] = (revision, value, value)
        value = first.get("cseq")
        if value is None:
            raise ParseError("missing CSeq header")
        cseq = parse_cseq(value)
        cache["cseq"] = (revision, value, cseq)
        if request is not None:
            if cseq.method != request.method:
                raise ParseError("CSeq method does not match the request method")
            value = first.get("max-forwards")
            if value is not None and _number(value, 255, 3) is None:
                raise ParseError("bad Max-Forwards header")
        value = first.get("contact")
        if value is not None:
            lines = repeated.get("contact")
            if lines is None and "," not in value:
                lines = [value]
                contacts = [value]
            else:
                lines = lines or [value]
                contacts = [contact for line in lines for contact in split_list(line)]
            parsed = [parse_address(c) for c in contacts] if contacts != ["*"] else []
            cache["contact"] = (revision, tuple(lines), parsed)
        if not first.keys() <= _CHECKED_FIRST:  # skip the look-ups when none of the rest is there
            _validate_more(index, cache, revision)
    except ParseError as error:
        return (error.reason, error.status)
    return None


def _validate_more(index: Index, cache: dict[str, tuple[int, Any, Any]], revision: int) -> None:
    first, repeated = index
    value = first.get("expires")
    if value is not None and ("expires" in repeated or not value.isdigit() or not value.isascii()):
        # Out-of-range values may be read as the default (RFC 4475 §3.1.2.4): not checked.
        raise ParseError("bad Expires header")
    for key in ("route", "record-route"):
        lines = _all_values(index, key)
        if lines is not None:
            routes = [route for line in lines for route in split_list(line)]
            if any(route[:1] != "<" for route in routes):
                raise ParseError(f"{key} value without <> (name-addr required)")
            cache[key] = (revision, tuple(lines), [parse_address(route) for route in routes])
    value = first.get("date")
    if value is not None and ("date" in repeated or _DATE_RE.fullmatch(value) is None):
        raise ParseError("bad Date header (RFC 1123 date in GMT required)")
    value = first.get("content-type")
    if value is not None and (
        "content-type" in repeated or _CONTENT_TYPE_RE.fullmatch(value) is None
    ):
        raise ParseError("bad Content-Type header")


def _number(text: str, maximum: int, digits: int) -> int | None:
    """1*DIGIT (leading zeros allowed, RFC 4475 §3.1.1.1) up to `maximum` (`digits` digits
    long), else None. The length is checked before int(): a long digit string is an error,
    not a long conversion (Python refuses more than 4300 digits anyway)."""
    if not text.isascii() or not text.isdigit():
        return None
    if len(text) > digits:
        text = text.lstrip("0") or "0"
        if len(text) > digits:
            return None
    value = int(text)
    return value if value <= maximum else None
