"""Parse SIP messages from datagrams and from a stream (RFC 3261 §7, §18.3).

`parse_message` takes one datagram. `StreamParser` frames messages out of a TCP/TLS byte stream by
Content-Length, across partial reads and pipelined messages, and reports RFC 5626 CRLF keep-alive
pings. Every problem becomes a `ParseError`; when enough of a request was read to answer it, the
error carries that partial request so the caller can send the 4xx.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from callkeeper.sip.address import parse_address
from callkeeper.sip.errors import MessageTooLarge, ParseError
from callkeeper.sip.headers import Headers, canonical
from callkeeper.sip.message import SIP_VERSION, Message, Request, Response, parse_cseq
from callkeeper.sip.uri import parse_uri
from callkeeper.sip.via import parse_via

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 256 * 1024
MAX_HEADER_LINES = 512

_METHOD_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_CALL_ID_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+(?:@[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+)?")
_VERSION_RE = re.compile(r"SIP/\d+\.\d+", re.IGNORECASE)


class PartialRequestError(ParseError):
    """A request whose start line and headers were read but that is invalid: answer it."""

    def __init__(self, reason: str, status: int, request: Request) -> None:
        super().__init__(reason, status)
        self.request = request


def parse_message(data: bytes) -> Message:
    """Parse one complete message (a datagram). Raises ParseError.

    Leading CRLFs are skipped (RFC 3261 §7.5). A body longer than Content-Length is cut to it;
    a shorter one is an error (§18.3).
    """
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        lf_end = data.find(b"\n\n", start)
        if lf_end < 0:
            raise ParseError("no end of header section")
        head, body = data[start:lf_end], data[lf_end + 2 :]
    else:
        head, body = data[start:end], data[end + 4 :]
    message = parse_head(head)
    length_text = message.headers.get("content-length")
    if length_text is not None:
        length = _content_length(length_text, message)
        if length > len(body):
            _fail(message, f"Content-Length {length} exceeds the {len(body)}-byte body", 400)
        body = body[:length]
    message.body = bytes(body)
    return message


def parse_head(head: bytes) -> Message:
    """Parse a start line and header section (without the blank line); validates the message."""
    if len(head) > MAX_HEADER_BYTES:
        raise MessageTooLarge("header section too large")
    if b"\x00" in head:
        raise ParseError("NUL byte in header section")
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    if len(lines) > MAX_HEADER_LINES:
        raise MessageTooLarge(f"more than {MAX_HEADER_LINES} header lines")
    message = _parse_start_line(lines[0])
    items: list[tuple[str, str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not items:
                raise ParseError("continuation line before the first header")
            key, name, value = items[-1]
            items[-1] = (key, name, f"{value} {line.strip()}" if value else line.strip())
            continue
        colon = line.find(":")
        if colon <= 0:
            _fail_items(message, items, f"bad header line {line[:40]!r}")
        name = line[:colon].rstrip(" \t")
        if not _HEADER_NAME_RE.fullmatch(name):
            _fail_items(message, items, f"bad header name {name[:40]!r}")
        items.append((canonical(name), name, line[colon + 1 :].strip(" \t")))
    message.headers = Headers._from_parsed(items)
    _validate(message)
    return message


def _parse_start_line(line: str) -> Message:
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if len(parts) < 2 or not _VERSION_RE.fullmatch(parts[0]):
            raise ParseError(f"bad status line {line[:64]!r}")
        code = parts[1]
        if len(code) != 3 or not code.isdigit() or not code.isascii() or code[0] == "0":
            raise ParseError(f"bad status code {code[:8]!r}")
        if parts[0].upper() != SIP_VERSION:
            raise ParseError(f"unsupported version {parts[0][:16]!r}", status=505)
        return Response(int(code), parts[2] if len(parts) > 2 else "", version=parts[0])
    parts = line.split(" ")
    if len(parts) != 3:
        raise ParseError(f"bad request line {line[:64]!r}")
    method, uri_text, version = parts
    if not _METHOD_RE.fullmatch(method):
        raise ParseError(f"bad method {method[:32]!r}")
    if not _VERSION_RE.fullmatch(version):
        raise ParseError(f"bad SIP version {version[:16]!r}")
    uri = parse_uri(uri_text)  # 400, or 416 for an unknown scheme: decided after headers
    request = Request(method, uri, version=version)
    return request


def _validate(message: Message) -> None:
    """Check the headers every message must carry, parsed well enough to answer (§8.1.1)."""
    headers = message.headers
    try:
        vias = headers.get_list("via")
        if not vias:
            raise ParseError("missing Via header")
        for via in vias:
            parse_via(via)
    except ParseError:
        raise  # without a usable Via there is no one to answer: plain error, dropped
    try:
        for name in ("from", "to"):
            lines = headers.get_lines(name)
            if len(lines) != 1:
                raise ParseError(f"{'missing' if not lines else 'repeated'} {name.title()} header")
            parse_address(lines[0])
        call_ids = headers.get_lines("call-id")
        if len(call_ids) != 1 or not _CALL_ID_RE.fullmatch(call_ids[0]):
            raise ParseError("missing or bad Call-ID header")
        cseqs = headers.get_lines("cseq")
        if len(cseqs) != 1:
            raise ParseError("missing or repeated CSeq header")
        cseq = parse_cseq(cseqs[0])
        lengths = headers.get_lines("content-length")
        if len(lengths) > 1:
            raise ParseError("repeated Content-Length header")
        if lengths:
            _content_length(lengths[0], message)
        if isinstance(message, Request):
            if cseq.method != message.method:
                raise ParseError("CSeq method does not match the request method")
            if message.version.upper() != SIP_VERSION:
                raise ParseError(f"version {message.version[:16]} not supported", status=505)
            max_forwards = headers.get_lines("max-forwards")
            if len(max_forwards) > 1 or (
                max_forwards
                and not (max_forwards[0].isdigit() and max_forwards[0].isascii() and int(max_forwards[0]) <= 255)
            ):
                raise ParseError("bad Max-Forwards header")
            expires = headers.get("expires")
            if expires is not None and not (expires.isdigit() and expires.isascii()):
                raise ParseError("bad Expires header")
    except PartialRequestError:
        raise
    except ParseError as error:
        _fail(message, error.reason, error.status)


def _content_length(text: str, message: Message) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 10:
        _fail(message, f"bad Content-Length {text[:16]!r}", 400)
    return int(text)


def _fail(message: Message, reason: str, status: int) -> None:
    if isinstance(message, Request):
        raise PartialRequestError(reason, status, message)
    raise ParseError(reason, status)


def _fail_items(message: Message, items: list[tuple[str, str, str]], reason: str) -> None:
    message.headers = Headers._from_parsed(items)
    _fail(message, reason, 400)


# --- stream framing -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """A CRLFCRLF ping on a stream (RFC 5626 §3.5.1): answer with a CRLF pong."""


@dataclass(frozen=True, slots=True)
class KeepAlivePong:
    """A lone CRLF on a stream: the pong to our ping."""


StreamItem = Message | KeepAlivePing | KeepAlivePong | ParseError


class StreamParser:
    """Frames messages out of a byte stream. Feed bytes, then drain `next_item()`.

    A `ParseError` item means the stream can no longer be framed (bad header section or
    Content-Length): the caller answers if it can and closes the connection. An invalid message
    whose framing is intact comes out as a `PartialRequestError` and the stream goes on.
    """

    __slots__ = ("_broken", "_buffer", "_need_body")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._need_body: tuple[bytes, int] | None = None
        self._broken = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def pending(self) -> bool:
        """True while a message has started but is not complete (for idle/slow-peer timeouts)."""
        return bool(self._buffer.strip(b"\r\n")) or self._need_body is not None

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
            body = bytes(buffer[:length])
            del buffer[:length]
            self._need_body = None
            return self._complete(head, body)
        # Keep-alives: CRLFCRLF is a ping, a lone CRLF a pong (RFC 5626 §4.4.1).
        if buffer.startswith(b"\r\n"):
            if buffer.startswith(b"\r\n\r\n"):
                del buffer[:4]
                return KeepAlivePing()
            if len(buffer) == 2:
                del buffer[:2]
                return KeepAlivePong()
            if buffer[2:3] != b"\r":
                del buffer[:2]
                return KeepAlivePong()
            return None  # "\r\n\r" — wait for the rest
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEADER_BYTES:
                return self._break(MessageTooLarge("header section too large"))
            return None
        head = bytes(buffer[:end])
        del buffer[: end + 4]
        length = self._declared_length(head)
        if isinstance(length, ParseError):
            return self._break(length)
        if length > MAX_BODY_BYTES:
            return self._break(MessageTooLarge(f"body of {length} bytes is too large"))
        if len(buffer) < length:
            self._need_body = (head, length)
            return None
        body = bytes(buffer[:length])
        del buffer[:length]
        return self._complete(head, body)

    def _declared_length(self, head: bytes) -> int | ParseError:
        # Content-Length must be known before the message can be framed; find it cheaply.
        for match in re.finditer(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", head):
            value = match.group(1).strip()
            if not value.isdigit() or len(value) > 10:
                return ParseError("bad Content-Length on a stream")
            return int(value)
        return 0  # RFC 3261 §18.3 requires it on streams; a missing one is taken as 0

    def _complete(self, head: bytes, body: bytes) -> Message | ParseError:
        try:
            message = parse_head(head)
        except ParseError as error:
            return error
        message.body = body
        return message

    def _break(self, error: ParseError) -> ParseError:
        self._broken = True
        self._buffer.clear()
        return error
