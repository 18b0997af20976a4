"""Parse SIP messages from datagrams and from a stream (RFC 3261 §7, §18.3; RFC 5626 §3.5.1).

`parse_message` takes one datagram. `StreamParser` frames messages out of a TCP/TLS byte stream by
Content-Length, across partial reads and pipelined messages, and reports CRLF keep-alive pings
and pongs.

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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from callkeeper.sip.address import PARAMS_RE, TOKEN, parse_address
from callkeeper.sip.errors import MessageTooLarge, ParseError
from callkeeper.sip.headers import Headers, canonical, split_list
from callkeeper.sip.message import SIP_VERSION, Message, Request, Response, parse_cseq
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
# rfc1123-date, which SIP restricts to GMT (RFC 3261 §20.17; RFC 4475 §3.1.2.12).
_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
_MEDIA_TYPE_RE = re.compile(rf"{TOKEN}[ \t]*+/[ \t]*+{TOKEN}")

# Headers looked at while the header section is read, so validation need not search for them.
_CHECKED = frozenset(
    {
        "via", "from", "to", "call-id", "cseq", "content-length", "max-forwards", "expires",
        "contact", "route", "record-route", "date", "content-type",
    }
)  # fmt: skip
# raw header name (as it appeared before the colon) -> (lookup key, name without trailing LWS);
# only names that passed the token check get in, and the table is bounded.
_NAMES: dict[str, tuple[str, str]] = {}
_NAMES_MAX = 4096

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
    start = len(data) - len(data.lstrip(b"\r\n"))
    end = data.find(b"\r\n\r\n", start)
    lf_end = data.find(b"\n\n", start, end if end >= 0 else len(data))
    if lf_end >= 0:
        head_end, body_start = lf_end, lf_end + 2
    elif end >= 0:
        head_end, body_start = end, end + 4
    else:
        raise ParseError("no end of header section")
    head = _parse_head(data[start:head_end])
    problem = head.problem
    length = head.length
    if length is None:
        body = data[body_start:]
    else:
        available = len(data) - body_start
        if length > available and problem is None:
            problem = (f"Content-Length {length} exceeds the {available}-byte body", 400)
        body = data[body_start : body_start + length]
    if len(body) > MAX_BODY_BYTES:
        raise MessageTooLarge(f"body of {len(body)} bytes is too large")
    message = head.message
    message.body = body
    if problem is not None:
        raise _error(message, problem, head.via)
    return message


def parse_head(head: bytes) -> Message:
    """Parse a start line and header section (without the blank line); validates the message."""
    parsed = _parse_head(head)
    if parsed.problem is not None:
        raise _error(parsed.message, parsed.problem, parsed.via)
    return parsed.message


# --- the header section -----------------------------------------------------------------------


class _Head(NamedTuple):
    message: Message
    problem: Problem | None
    via: str | None  # the first Via line, which decides whether a request can be answered
    length: int | None  # Content-Length, when present and valid
    framing: Problem | None  # why the Content-Length cannot frame a stream


def _parse_head(head: bytes) -> _Head:
    if len(head) > MAX_HEADER_BYTES:
        raise MessageTooLarge("header section too large")
    if head.count(b"\n") >= MAX_HEADER_LINES:
        raise MessageTooLarge(f"more than {MAX_HEADER_LINES} header lines")
    text = head.decode("utf-8", "surrogateescape")
    crlf = "\r\n" in text
    lines = text.split("\r\n") if crlf else text.split("\n")
    problem: Problem | None = None
    breaks = len(lines) - 1
    if text.count("\n") != breaks or text.count("\r") != (breaks if crlf else 0):
        problem = ("bare CR or LF in the header section", 400)
    elif _CTL_RE.search(text) is not None:
        problem = _control_characters(lines)
    if "\n " in text or "\n\t" in text:
        lines, fold_problem = _unfold(lines)
        problem = problem or fold_problem

    start = lines[0]
    request: Request | None = None
    fatal: ParseError | None = None
    message: Message
    try:
        if start[:4].upper() == "SIP/":
            message = _status_line(start)
        else:
            request, start_problem = _request_line(start)
            message = request
            problem = _worse(problem, start_problem)
    except ParseError as error:
        # Not a message one could answer; the headers are still read, for a stream's framing.
        fatal = error
        message = Message()

    items: list[tuple[str, str, str]] = []
    index: dict[str, list[str]] = {}
    names = _NAMES
    for line in lines[1:]:
        colon = line.find(":")
        if colon <= 0:
            problem = _worse(problem, (f"bad header line {line[:40]!r}", 400))
            continue
        raw_name = line[:colon]
        known = names.get(raw_name)
        if known is None:
            name = raw_name.rstrip(" \t")
            if _TOKEN_RE.fullmatch(name) is None:
                problem = _worse(problem, (f"bad header name {name[:40]!r}", 400))
                continue
            known = (canonical(name), name)
            if len(names) < _NAMES_MAX:
                names[raw_name] = known
        key = known[0]
        value = line[colon + 1 :].strip(" \t")
        items.append((key, known[1], value))
        if key in _CHECKED:
            found = index.get(key)
            if found is None:
                index[key] = [value]
            else:
                found.append(value)
    message.headers = Headers._from_parsed(items)

    length, framing = _content_length(index.get("content-length"))
    if fatal is not None:
        problem = (fatal.reason, fatal.status)
    elif problem is None or problem[1] < 500:
        # A 505 says it all; otherwise look for the 400s (which outrank a 416).
        problem = _worse(problem, framing or _validate(message, request, index))
    vias = index.get("via")
    return _Head(message, problem, vias[0] if vias else None, length, framing)


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


def _unfold(lines: list[str]) -> tuple[list[str], Problem | None]:
    """Join continuation lines (starting with SP/HT) to their header with one SP (§7.3.1)."""
    unfolded: list[list[str]] = [[lines[0]]]
    problem: Problem | None = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if len(unfolded) == 1:
                problem = problem or ("continuation line before the first header", 400)
                continue
            part = line.strip(" \t")
            if part:
                unfolded[-1].append(part)
        else:
            unfolded.append([line])
    return [parts[0] if len(parts) == 1 else " ".join(parts) for parts in unfolded], problem


def _status_line(line: str) -> Response:
    match = _STATUS_LINE_RE.fullmatch(line)
    if match is None:
        raise ParseError(f"bad status line {line[:64]!r}")
    version, code, reason = match.groups()
    if version.upper() != SIP_VERSION:
        raise ParseError(f"unsupported version {version[:16]!r}", status=505)
    return Response(int(code), reason or "", version=version)


def _request_line(line: str) -> tuple[Request, Problem | None]:
    """Method SP Request-URI SP SIP-Version. Raises ParseError if it is not a request at all."""
    first = line.find(" ")
    last = line.rfind(" ")
    if first <= 0 or last == first:
        raise ParseError(f"bad request line {line[:64]!r}")
    method = line[:first]
    if _TOKEN_RE.fullmatch(method) is None:
        raise ParseError(f"bad method {method[:32]!r}")
    uri_text = line[first + 1 : last]
    version = line[last + 1 :]
    problem: Problem | None = None
    if version != SIP_VERSION:
        if _VERSION_RE.fullmatch(version) is None:
            problem = (f"bad SIP version {version[:16]!r}", 400)
        elif version.upper() != SIP_VERSION:
            problem = (f"SIP version {version[:16]} not supported", 505)
    try:
        uri = parse_uri(uri_text)
    except ParseError as error:
        # Extra SP (RFC 4475 §3.1.2.8-10) and <> around the URI (§3.1.2.7) end up here.
        scheme = uri_text.partition(":")[0].lower() if ":" in uri_text else ""
        uri = URI(scheme, _text=uri_text, opaque=uri_text)
        problem = _worse(problem, (error.reason, error.status))
    else:
        if uri.headers:
            problem = _worse(problem, ("headers in the Request-URI", 400))  # §19.1.1 table 1
    return Request(method, uri, version=version), problem


def _content_length(values: list[str] | None) -> tuple[int | None, Problem | None]:
    """The Content-Length, and the reason a stream could not be framed by it."""
    if values is None:
        return None, None
    value = values[0]
    if len(values) > 1 and any(other != value for other in values):
        return None, ("conflicting Content-Length headers", 400)  # RFC 4475 §3.3.9
    length = _number(value, 9_999_999_999)
    if length is None:
        return None, (f"bad Content-Length {value[:16]!r}", 400)  # RFC 4475 §3.1.2.3
    return length, None


def _validate(message: Message, request: Request | None, index: dict[str, list[str]]) -> Problem | None:
    """Check the headers every message needs (§8.1.1) and the ones the core reads.

    Parsed values go into the message's cache, keyed as `Message` looks them up.
    """
    cache = message._cache
    try:
        vias = index.get("via")
        if vias is None:
            raise ParseError("missing Via header")
        parsed_vias = [parse_via(value) for line in vias for value in split_list(line)]
        if not parsed_vias:
            raise ParseError("empty Via header")
        cache["via"] = (tuple(vias), parsed_vias)
        cache["top-via"] = (vias[0], parsed_vias[0])
        for key in ("from", "to"):
            values = index.get(key)
            if values is None or len(values) > 1:
                raise ParseError(f"{'missing' if values is None else 'repeated'} {key} header")
            cache[key] = (values[0], parse_address(values[0]))
        values = index.get("call-id")
        if values is None or len(values) > 1:
            raise ParseError("missing or repeated Call-ID header")
        if _CALL_ID_RE.fullmatch(values[0]) is None:
            raise ParseError(f"bad Call-ID {values[0][:40]!r}")
        values = index.get("cseq")
        if values is None or len(values) > 1:
            raise ParseError("missing or repeated CSeq header")
        cseq = parse_cseq(values[0])
        cache["cseq"] = (values[0], cseq)
        if request is not None:
            if cseq.method != request.method:
                raise ParseError("CSeq method does not match the request method")
            values = index.get("max-forwards")
            if values is not None:
                if len(values) > 1 or _number(values[0], 255) is None:
                    raise ParseError("bad Max-Forwards header")
        values = index.get("expires")
        if values is not None and (
            len(values) > 1 or not values[0].isdigit() or not values[0].isascii()
        ):
            # Out-of-range values may be read as the default (RFC 4475 §3.1.2.4): not checked.
            raise ParseError("bad Expires header")
        values = index.get("contact")
        if values is not None:
            contacts = [value for line in values for value in split_list(line)]
            if contacts != ["*"]:
                cache["contact"] = (tuple(values), [parse_address(c) for c in contacts])
        for key in ("route", "record-route"):
            values = index.get(key)
            if values is not None:
                routes = [value for line in values for value in split_list(line)]
                if any(value[:1] != "<" for value in routes):
                    raise ParseError(f"{key} value without <> (name-addr required)")
                cache[key] = (tuple(values), [parse_address(value) for value in routes])
        values = index.get("date")
        if values is not None and (len(values) > 1 or _DATE_RE.fullmatch(values[0]) is None):
            raise ParseError("bad Date header (RFC 1123 date in GMT required)")
        values = index.get("content-type")
        if values is not None:
            media_type, _, params = values[0].partition(";")
            if (
                len(values) > 1
                or _MEDIA_TYPE_RE.fullmatch(media_type.rstrip(" \t")) is None
                or (params and PARAMS_RE.fullmatch(";" + params) is None)
            ):
                raise ParseError("bad Content-Type header")
    except ParseError as error:
        return (error.reason, error.status)
    return None


def _number(text: str, maximum: int) -> int | None:
    """1*DIGIT (leading zeros allowed, RFC 4475 §3.1.1.1) up to `maximum`, else None.

    The digit count is checked before int(): a long digit string is an error, not a long
    conversion (and Python refuses to convert more than 4300 digits at all).
    """
    if not text.isdigit() or not text.isascii():
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(maximum)):
        return None
    value = int(digits)
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
        self._need_body: tuple[_Head, int] | None = None
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
            head, length = self._need_body
            if len(buffer) < length:
                return None
            self._need_body = None
            return self._complete(head, length)
        half_ping, self._half_ping = self._half_ping, False
        while buffer[:1] in (b"\r", b"\n"):
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
        except MessageTooLarge as error:
            return self._break(error)
        except ParseError as error:  # not a message at all: nothing to frame it by
            return self._break(FramingError(error.reason, error.status))
        if head.framing is not None:
            return self._break(FramingError(*head.framing))
        # RFC 3261 §18.3 requires Content-Length on a stream; without one, there is no body.
        length = head.length or 0
        if length > MAX_BODY_BYTES:
            return self._break(MessageTooLarge(f"body of {length} bytes is too large"))
        if len(buffer) < length:
            self._need_body = (head, length)
            return None
        return self._complete(head, length)

    def _complete(self, head: _Head, length: int) -> Message | ParseError:
        buffer = self._buffer
        message = head.message
        message.body = bytes(buffer[:length])
        del buffer[:length]
        if head.problem is not None:
            return _error(message, head.problem, head.via)
        return message

    def _break(self, error: ParseError) -> ParseError:
        self._broken = True
        self._buffer.clear()
        return error
