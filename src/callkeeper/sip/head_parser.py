"""Read a SIP message's start line and header section (RFC 3261 §7.1, §7.2, §7.3).

One job: bytes of a header section in, a `Head` out — the `Message` with its start line and
`Headers`, and the first `Problem` found. The section is cut up on a fast path (a few C-level
string operations, names already seen skip the token check, Request-URIs memoized by their
text) and, for anything unusual — folding, odd line ends, control characters, a name not seen
before — on the slow path, which is the reference: both give the same result. Separate from
parser.py, which finds where a message's head and body are in a datagram or a stream, and
from header_checks.py, which judges the values of the headers the core reads.
"""

from __future__ import annotations

import re

from callkeeper.sip import address
from callkeeper.sip.address import TOKEN
from callkeeper.sip.errors import MessageTooLarge, ParseError
from callkeeper.sip.header_checks import (
    CHECKED,
    NO_REPEATS,
    Index,
    Problem,
    content_length,
    repeated_values,
    validate,
)
from callkeeper.sip.headers import Headers, canonical
from callkeeper.sip.message import SIP_VERSION, Message, Request, Response, new_request
from callkeeper.sip.uri import URI, parse_uri

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_LINES = 512

_TOKEN_RE = re.compile(TOKEN)
_VERSION_RE = re.compile(r"[Ss][Ii][Pp]/[0-9]++\.[0-9]++")
# Status-Line: SIP-Version SP 3DIGIT SP Reason-Phrase. Codes above 699 are refused
# (RFC 4475 §3.1.2.19); a missing SP before an empty reason is tolerated.
_STATUS_LINE_RE = re.compile(r"([Ss][Ii][Pp]/[0-9]++\.[0-9]++) ([1-6][0-9][0-9])(?: (.*+))?")
# Control characters other than HTAB, CR, LF: allowed only as a quoted-pair (RFC 3261 §25.1).
_CTL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NOT_CTL = bytes(b for b in range(256) if b in (9, 10, 13) or 32 <= b != 127)
# raw header name (as it appeared before the colon) -> (lookup key, name without trailing LWS);
# only names that passed the token check get in, and the table is bounded.
_NAMES: dict[str, tuple[str, str]] = {}
_NAMES_MAX = 4096
_METHODS: set[str] = set()  # methods already found to be tokens (bounded like _NAMES)
# Request-URIs by their text, like the address memo (see address.MEMO_SIZE): URIs are immutable.
_URI_MEMO: dict[str, URI] = {}

# (message, problem, first Via line — which decides whether a request can be answered —,
#  Content-Length when present and valid, why that Content-Length cannot frame a stream,
#  the start line if the message may be sent on as received)
Head = tuple[Message, Problem | None, str | None, int | None, Problem | None, str | None]


def parse_head_section(head: bytes) -> Head:
    """The message, its first problem, and what the framers need to know (see `Head`)."""
    if len(head) > MAX_HEADER_BYTES:
        raise MessageTooLarge("header section too large")
    breaks = head.count(b"\n")
    if breaks >= MAX_HEADER_LINES:
        raise MessageTooLarge(f"more than {MAX_HEADER_LINES} header lines")
    text = head.decode("utf-8", "surrogateescape")
    problem: Problem | None = None
    crlfs = head.count(b"\r\n")
    separator = "\r\n" if crlfs else "\n"
    if crlfs != (breaks if crlfs else 0) or head.count(b"\r") != crlfs:
        problem = ("bare CR or LF in the header section", 400)

    lines = text.split(separator)
    if problem is None and head.translate(None, _NOT_CTL):  # empty unless control characters
        problem = _control_characters(lines)
    start = lines[0]
    del lines[0]
    request_line: tuple[str, URI, str] | None = None
    fatal: ParseError | None = None
    response: Response | None = None
    try:
        if start[:1] in ("S", "s") and start[:4].upper() == "SIP/":
            response = _status_line(start)
        else:
            request_line, start_problem = _request_line(start)
            if start_problem is not None:
                problem = _worse(problem, start_problem)
    except ParseError as error:
        # Not a message one could answer; the headers are still read, for a stream's framing.
        fatal = error

    items = _read_headers(lines) if problem is None else None
    if items is None:
        # Folded lines, a line that is no header, a name not seen before: line by line.
        items = []
        slow_problem = _read_headers_slowly(lines, items)
        problem = problem or slow_problem
    # The checked headers: each one's first value, and all values of those that repeat.
    pairs = [(key, value) for key, _, value in items if key in CHECKED]
    first = dict(reversed(pairs))
    index: Index = (first, repeated_values(pairs) if len(first) != len(pairs) else NO_REPEATS)
    headers = Headers._from_parsed(items)

    request: Request | None = None
    message: Message
    if request_line is not None:
        message = request = new_request(*request_line, headers)
    elif response is not None:
        message = response
        response.headers = headers
    else:
        message = Message(headers)

    length, framing = content_length(index)
    if fatal is not None:
        problem = (fatal.reason, fatal.status)
    elif problem is None or problem[1] < 500:
        # A 505 says it all; otherwise look for the 400s (which outrank a 416).
        problem = _worse(problem, framing or validate(message, request, index))
    # Clean CRLF text with an exact Content-Length can go back out as received (to_bytes()).
    clean = (
        problem is None and crlfs and length is not None and first["content-length"] == str(length)
    )
    return message, problem, first.get("via"), length, framing, start if clean else None


def _read_headers(lines: list[str]) -> list[tuple[str, str, str]] | None:
    """The fast path: every line `name: value` with a name seen before (so known to be a token).

    None sends the section to the slow path: a line without a colon (ValueError), or a name
    not in the table yet — new, not a token, or a continuation line's leading SP (KeyError).
    """
    names = _NAMES
    try:
        pairs = [line.split(":", 1) for line in lines]
        return [names[name] + (value.strip(" \t"),) for name, value in pairs]
    except (KeyError, ValueError):
        return None


def _read_headers_slowly(lines: list[str], items: list[tuple[str, str, str]]) -> Problem | None:
    """Line by line, joining folded lines (§7.3.1), skipping and reporting bad lines."""
    problem: Problem | None = None
    if lines and lines[0][:1] in (" ", "\t"):
        problem = ("continuation line before the first header", 400)
    names = _NAMES
    for line in _unfold(lines):
        colon = line.find(":")
        if colon <= 0:
            problem = problem or (f"bad header line {line[:40]!r}", 400)
            continue
        raw_name = line[:colon]
        known = names.get(raw_name)
        if known is None:
            name = raw_name.rstrip(" \t")
            if _TOKEN_RE.fullmatch(name) is None:
                problem = problem or (f"bad header name {name[:40]!r}", 400)
                continue
            known = (canonical(name), name)
            if len(names) < _NAMES_MAX:
                names[raw_name] = known
        items.append((*known, line[colon + 1 :].strip(" \t")))
    return problem


def _worse(current: Problem | None, new: Problem | None) -> Problem | None:
    """The problem to report: 505 before a syntax error (400) before 416; else the first."""
    if new is None:
        return current
    if current is None:
        return new
    rank = {505: 3, 416: 1}
    return new if rank.get(new[1], 2) > rank.get(current[1], 2) else current


def _control_characters(lines: list[str]) -> Problem | None:
    """Refuse control characters except where a quoted-pair escapes them (RFC 4475 §3.1.1.2)."""
    for number, line in enumerate(lines):
        for match in _CTL_RE.finditer(line):
            position = match.start()
            if number == 0 or position == 0 or line[position - 1] != "\\":
                return (f"control character in {line[:40]!r}", 400)
    return None


def _unfold(lines: list[str]) -> list[str]:
    """Join continuation lines (starting with SP/HT) to their header with one SP (§7.3.1).

    Parts are collected and joined once, so many continuation lines cost linear time.
    """
    unfolded: list[list[str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if unfolded:
                part = line.strip(" \t")
                if part:
                    unfolded[-1].append(part)
        else:
            unfolded.append([line])
    return [" ".join(parts) for parts in unfolded]


def _status_line(line: str) -> Response:
    match = _STATUS_LINE_RE.fullmatch(line)
    if match is None:
        raise ParseError(f"bad status line {line[:64]!r}")
    version, code, reason = match.groups()
    if version.upper() != SIP_VERSION:
        raise ParseError(f"unsupported version {version[:16]!r}", status=505)
    return Response(int(code), reason or "", version=version)


def _request_line(line: str) -> tuple[tuple[str, URI, str], Problem | None]:
    """Method SP Request-URI SP SIP-Version. Raises ParseError if it is not a request at all."""
    first = line.find(" ")
    last = line.rfind(" ")
    if first <= 0 or last == first:
        raise ParseError(f"bad request line {line[:64]!r}")
    method = line[:first]
    if method not in _METHODS:
        if _TOKEN_RE.fullmatch(method) is None:
            raise ParseError(f"bad method {method[:32]!r}")
        if len(_METHODS) < _NAMES_MAX:
            _METHODS.add(method)
    uri_text = line[first + 1 : last]
    version = line[last + 1 :]
    problem: Problem | None = None
    if version != SIP_VERSION:
        if _VERSION_RE.fullmatch(version) is None:
            problem = (f"bad SIP version {version[:16]!r}", 400)
        elif version.upper() != SIP_VERSION:
            problem = (f"SIP version {version[:16]} not supported", 505)
    uri = _URI_MEMO.get(uri_text)
    try:
        if uri is None:
            uri = parse_uri(uri_text)
            if len(uri_text) <= 256 and address.MEMO_SIZE:
                if len(_URI_MEMO) >= address.MEMO_SIZE:
                    _URI_MEMO.clear()
                _URI_MEMO[uri_text] = uri
    except ParseError as error:
        problem = _worse(problem, (error.reason, error.status))
        if error.status == 416:  # well-formed, of another scheme: keep it as such
            uri = parse_uri(uri_text, any_scheme=True)
        else:
            # Extra SP (RFC 4475 §3.1.2.8-10), <> around the URI (§3.1.2.7) ...: keep the text.
            scheme, _, rest = uri_text.partition(":")
            uri = URI(scheme.lower() if rest else "", _text=uri_text, opaque=rest or uri_text)
    else:
        if uri.headers:
            problem = _worse(problem, ("headers in the Request-URI", 400))  # §19.1.1 table 1
    return (method, uri, version), problem
