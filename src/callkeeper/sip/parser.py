"""Parse SIP messages from datagrams and from a stream (RFC 3261 §7, §18.3; RFC 5626 §3.5.1).

`parse_message` takes one datagram. `StreamParser` frames messages out of a TCP/TLS byte stream by
Content-Length, across partial reads and pipelined messages, and reports CRLF keep-alive pings
and pongs. `parse_ws_message` takes one WebSocket message (RFC 7118): one SIP message or a CRLF
keep-alive, as a stream item.

Every problem becomes a `ParseError`, never another exception. When the request can still be
answered — its top Via says where a response goes — the error is a `PartialRequestError` that
carries the request as far as it was read, and the status to answer with: 505 for another SIP
version, 400 for a syntax error, 416 for a well-formed Request-URI of an unsupported scheme
(RFC 3261 §8.2.2.1, §21.4; RFC 4475 §3.1.2 and §3.3). Responses and requests without a usable
Via are plain `ParseError`s: there is no one to answer, so they are dropped.

The parser checks the headers the core relies on — Via, From, To, Call-ID, CSeq, Max-Forwards,
Content-Length, Contact, Route, Record-Route, Expires, Date, Content-Type — against the RFC 3261
grammar, and leaves what it parsed in the message's cache for `.top_via`, `.from_addr` etc.
Other headers are kept as text. Limits (`MAX_HEADER_BYTES`, `MAX_HEADER_LINES`, `MAX_BODY_BYTES`)
are checked before any work that grows with the input, so a huge message costs a length check.

Speed matters here (every datagram comes through), so the common case takes a fast path: the
header section is cut up with a few C-level string operations, names already seen skip the
token check, parsed addresses, sent-by values and Request-URIs are memoized by their text (they
are immutable; see address.MEMO_SIZE), and a message that is sent on unchanged goes out as the
octets it came in as. Anything unusual — folding, odd line ends, control characters, a name not
seen before — takes the slow path, which is the reference: both give the same result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from callkeeper.sip import address
from callkeeper.sip.address import PARAMS_PATTERN, TOKEN, parse_address
from callkeeper.sip.errors import MessageTooLarge, ParseError
from callkeeper.sip.headers import Headers, canonical, split_list
from callkeeper.sip.message import (
    SIP_VERSION,
    Message,
    Request,
    Response,
    new_request,
    parse_cseq,
)
from callkeeper.sip.uri import URI, parse_uri
from callkeeper.sip.via import parse_via, via_sent_by

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 256 * 1024
MAX_HEADER_LINES = 512

_TOKEN_RE = re.compile(TOKEN)
_VERSION_RE = re.compile(r"[Ss][Ii][Pp]/[0-9]++\.[0-9]++")
# Status-Line: SIP-Version SP 3DIGIT SP Reason-Phrase. Codes above 699 are refused
# (RFC 4475 §3.1.2.19); a missing SP before an empty reason is tolerated.
_STATUS_LINE_RE = re.compile(r"([Ss][Ii][Pp]/[0-9]++\.[0-9]++) ([1-6][0-9][0-9])(?: (.*+))?")
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]++"
_CALL_ID_RE = re.compile(rf"{_WORD}(?:@{_WORD})?")
# Control characters other than HTAB, CR, LF: allowed only as a quoted-pair (RFC 3261 §25.1).
_CTL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NOT_CTL = bytes(b for b in range(256) if b in (9, 10, 13) or 32 <= b != 127)
# rfc1123-date, which SIP restricts to GMT (RFC 3261 §20.17; RFC 4475 §3.1.2.12).
_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
# media-type *(SEMI m-parameter): the parameters as any header's.
_CONTENT_TYPE_RE = re.compile(rf"{TOKEN}[ \t]*+/[ \t]*+{TOKEN}{PARAMS_PATTERN}")

# Headers looked at while the header section is read, so validation need not search for them.
_CHECKED = frozenset(
    {
        "via", "from", "to", "call-id", "cseq", "content-length", "max-forwards", "expires",
        "contact", "route", "record-route", "date", "content-type",
    }
)  # fmt: skip
_CHECKED_FIRST = frozenset(
    {"via", "from", "to", "call-id", "cseq", "content-length", "max-forwards", "contact"}
)
# raw header name (as it appeared before the colon) -> (lookup key, name without trailing LWS);
# only names that passed the token check get in, and the table is bounded.
_NAMES: dict[str, tuple[str, str]] = {}
_NAMES_MAX = 4096
_METHODS: set[str] = set()  # methods already found to be tokens (bounded like _NAMES)
# Request-URIs by their text, like the address memo (see address.MEMO_SIZE): URIs are immutable.
_URI_MEMO: dict[str, URI] = {}

Problem = tuple[str, int]  # (reason, status)


class PartialRequestError(ParseError):
    """A request whose start line and headers were read but that is invalid: answer it.

    `request` holds what could be read (headers as received; a Request-URI that did not parse
    is kept as an opaque URI carrying the text) and `status` the response code to send.
    """

    def __init__(self, reason: str, status: int, request: Request) -> None:
        super().__init__(reason, status)
        self.request = request


class FramingError(ParseError):
    """The stream can no longer be cut into messages (bad Content-Length, oversized section).

    `StreamParser` returns it once and then stops: the connection has to be closed (§18.3).
    """


# --- datagrams ------------------------------------------------------------------------------


def parse_message(data: bytes) -> Message:
    """Parse one complete message (a datagram). Raises ParseError.

    Leading CRLFs are skipped (RFC 3261 §7.5). A body longer than Content-Length is cut to it
    (the rest of the datagram is noise, RFC 4475 §3.1.1.8); a shorter one is an error (§18.3).
    Without Content-Length the body is the rest of the datagram (§18.3, RFC 2543 senders).
    """
    if len(data) > MAX_HEADER_BYTES + MAX_BODY_BYTES:
        raise MessageTooLarge(f"message of {len(data)} bytes is too large")
    start = len(data) - len(data.lstrip(b"\r\n")) if data[:1] in b"\r\n" else 0
    end = data.find(b"\r\n\r\n", start)
    lf_end = data.find(b"\n\n", start, end if end >= 0 else len(data))
    if lf_end >= 0:
        head_end, body_start = lf_end, lf_end + 2
    elif end >= 0:
        head_end, body_start = end, end + 4
    else:
        raise ParseError("no end of header section")
    message, problem, via, length, _, clean = _parse_head(data[start:head_end])
    if length is None:
        body = data[body_start:]
    else:
        available = len(data) - body_start
        if length > available and problem is None:
            problem = (f"Content-Length {length} exceeds the {available}-byte body", 400)
        body = data[body_start : body_start + length]
    if len(body) > MAX_BODY_BYTES:
        raise MessageTooLarge(f"body of {len(body)} bytes is too large")
    message.body = body
    if problem is not None:
        raise _error(message, problem, via)
    if clean is not None and length == len(body):
        end = body_start + length
        wire = data if start == 0 and end == len(data) else data[start:end]
        message._received = (message.headers.revision, clean, body, wire)
    return message


def parse_head(head: bytes) -> Message:
    """Parse a start line and header section (without the blank line); validates the message."""
    message, problem, via, _, _, _ = _parse_head(head)
    if problem is not None:
        raise _error(message, problem, via)
    return message


# --- the header section -----------------------------------------------------------------------

# (message, problem, first Via line — which decides whether a request can be answered —,
#  Content-Length when present and valid, why that Content-Length cannot frame a stream,
#  the start line if the message may be sent on as received)
_Head = tuple[Message, Problem | None, str | None, int | None, Problem | None, str | None]


def _parse_head(head: bytes) -> _Head:
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
    pairs = [(key, value) for key, _, value in items if key in _CHECKED]
    first = dict(reversed(pairs))
    index: Index = (first, _repeated(pairs) if len(first) != len(pairs) else _NO_REPEATS)
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

    length, framing = _content_length(index)
    if fatal is not None:
        problem = (fatal.reason, fatal.status)
    elif problem is None or problem[1] < 500:
        # A 505 says it all; otherwise look for the 400s (which outrank a 416).
        problem = _worse(problem, framing or _validate(message, request, index))
    # Clean CRLF text with an exact Content-Length can go back out as received (to_bytes()).
    clean = (
        problem is None and crlfs and length is not None and first["content-length"] == str(length)
    )
    return message, problem, first.get("via"), length, framing, start if clean else None


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


_NO_REPEATS: dict[str, list[str]] = {}


def _repeated(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return {key: values for key, values in grouped.items() if len(values) > 1}


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


def _content_length(index: Index) -> tuple[int | None, Problem | None]:
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


def _validate(message: Message, request: Request | None, index: Index) -> Problem | None:
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


def _error(message: Message, problem: Problem, via: str | None) -> ParseError:
    """A PartialRequestError when a response can be routed back (top Via), else a ParseError."""
    reason, status = problem
    if isinstance(message, Request) and via is not None and via_sent_by(via) is not None:
        return PartialRequestError(reason, status, message)
    return ParseError(reason, status)


# --- stream framing -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """A CRLFCRLF ping on a stream (RFC 5626 §3.5.1): answer with a CRLF pong."""


@dataclass(frozen=True, slots=True)
class KeepAlivePong:
    """A lone CRLF on a stream: the pong to our ping (or a peer's single-CRLF keep-alive)."""


StreamItem = Message | KeepAlivePing | KeepAlivePong | ParseError


def parse_ws_message(data: bytes) -> StreamItem:
    """One WebSocket message as a stream item: the WebSocket frames it, so there is no stream
    framing left to do (RFC 7118 §5: each message carries exactly one SIP message).

    A message on its own is parsed like a datagram (a Content-Length that disagrees with the
    body gets the UDP treatment, §18.3); CRLFCRLF and CRLF are the RFC 5626 keep-alive ping
    and pong, answered as on TCP because the connection is a reliable flow.
    """
    if data == b"\r\n\r\n":
        return KeepAlivePing()
    if data == b"\r\n":
        return KeepAlivePong()
    try:
        return parse_message(data)
    except ParseError as error:
        return error


class StreamParser:
    """Frames messages out of a byte stream. Feed bytes, then drain `next_item()`.

    Items: a `Message`; a `KeepAlivePing` / `KeepAlivePong`; a `PartialRequestError` or plain
    `ParseError` for an invalid message whose framing was intact (answer it or drop it, the
    stream goes on); a `FramingError` or `MessageTooLarge` when the stream cannot be framed any
    more — then `broken` is True, `next_item()` returns None for ever, and the connection should
    be closed.

    A CRLF that arrives on its own is reported as a pong at once — some phones keep a TCP flow
    alive with single CRLFs — and if the next bytes are the CRLF that completes a ping split
    across two reads, that is reported as the ping, so it still gets its answer.
    """

    __slots__ = ("_broken", "_buffer", "_half_ping", "_need_body", "_scan")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._need_body: tuple[_Head, bytes, int] | None = None
        self._broken = False
        self._scan = 0  # where to resume looking for the end of the header section
        self._half_ping = False  # the last item was a lone CRLF at the end of the buffer

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def broken(self) -> bool:
        """True once a `FramingError` was returned: close the connection."""
        return self._broken

    @property
    def pending(self) -> bool:
        """True while a message has started but is not complete (for idle/slow-peer timeouts)."""
        return self._need_body is not None or bool(self._buffer.strip(b"\r\n"))

    def feed(self, data: bytes) -> None:
        if not self._broken:
            self._buffer += data

    def next_item(self) -> StreamItem | None:
        if self._broken:
            return None
        buffer = self._buffer
        if self._need_body is not None:
            head, head_bytes, length = self._need_body
            if len(buffer) < length:
                return None
            self._need_body = None
            return self._complete(head, head_bytes, length)
        if not buffer:
            return None
        half_ping, self._half_ping = self._half_ping, False
        while buffer and buffer[0] in (13, 10):  # CR, LF
            # A keep-alive, or CRLFs before a message (which RFC 3261 §7.5 says to skip).
            if buffer.startswith(b"\r\n\r\n"):
                del buffer[:4]
                return KeepAlivePing()
            if buffer == b"\r" or buffer == b"\r\n\r":
                self._half_ping = half_ping
                return None  # the rest of a CRLF (or of a ping) is still on its way
            if buffer.startswith(b"\r\n"):
                del buffer[:2]
                if half_ping:
                    return KeepAlivePing()
                self._half_ping = not buffer
                return KeepAlivePong()
            del buffer[:1]  # a stray CR or LF between messages
            half_ping = False
        if not buffer:
            return None
        return self._next_message(buffer)

    def _next_message(self, buffer: bytearray) -> StreamItem | None:
        end = buffer.find(b"\r\n\r\n", self._scan)
        lf_end = buffer.find(b"\n\n", self._scan, end if end >= 0 else len(buffer))
        if lf_end >= 0:
            head_end, body_start = lf_end, lf_end + 2
        elif end >= 0:
            head_end, body_start = end, end + 4
        else:
            if len(buffer) > MAX_HEADER_BYTES:
                return self._break(MessageTooLarge("header section too large"))
            self._scan = max(0, len(buffer) - 3)  # the terminator may straddle two reads
            return None
        self._scan = 0
        head_bytes = bytes(buffer[:head_end])
        del buffer[:body_start]
        try:
            head = _parse_head(head_bytes)
        except MessageTooLarge as error:  # (a bad start line is reported with the head)
            return self._break(error)
        if head[4] is not None:
            return self._break(FramingError(*head[4]))
        # RFC 3261 §18.3 requires Content-Length on a stream; without one, there is no body.
        length = head[3] or 0
        if length > MAX_BODY_BYTES:
            return self._break(MessageTooLarge(f"body of {length} bytes is too large"))
        if len(buffer) < length:
            self._need_body = (head, head_bytes, length)
            return None
        return self._complete(head, head_bytes, length)

    def _complete(self, head: _Head, head_bytes: bytes, length: int) -> Message | ParseError:
        buffer = self._buffer
        message, problem, via, _, _, clean = head
        body = message.body = bytes(buffer[:length])
        del buffer[:length]
        if problem is not None:
            return _error(message, problem, via)
        if clean is not None:
            wire = b"".join((head_bytes, b"\r\n\r\n", body))
            message._received = (message.headers.revision, clean, body, wire)
        return message

    def _break(self, error: ParseError) -> ParseError:
        self._broken = True
        self._buffer.clear()
        return error
