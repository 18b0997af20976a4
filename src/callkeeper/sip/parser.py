"""Parse SIP messages from datagrams and from a stream (RFC 3261 §7, §18.3; RFC 5626 §3.5.1).

`parse_message` takes one datagram. `StreamParser` frames messages out of a TCP/TLS byte stream by
Content-Length, across partial reads and pipelined messages, and reports CRLF keep-alive pings
and pongs. `parse_ws_message` takes one WebSocket message (RFC 7118): one SIP message or a CRLF
keep-alive, as a stream item. This module's job is that framing — where a message's head ends,
how long its body is, what a stream does next — and the errors a caller sees; reading the head
is head_parser.py's, and judging the header values header_checks.py's.

Every problem becomes a `ParseError`, never another exception. When the request can still be
answered — its top Via says where a response goes — the error is a `PartialRequestError` that
carries the request as far as it was read, and the status to answer with: 505 for another SIP
version, 400 for a syntax error, 416 for a well-formed Request-URI of an unsupported scheme
(RFC 3261 §8.2.2.1, §21.4; RFC 4475 §3.1.2 and §3.3). Responses and requests without a usable
Via are plain `ParseError`s: there is no one to answer, so they are dropped.

The parser checks the headers the core relies on — Via, From, To, Call-ID, CSeq, Max-Forwards,
Content-Length, Contact, Route, Record-Route, Expires, Date, Content-Type — against the RFC 3261
grammar (header_checks.py), and leaves what it parsed in the message's cache for `.top_via`,
`.from_addr` etc. Other headers are kept as text. Limits (`MAX_HEADER_BYTES`, `MAX_HEADER_LINES`
in head_parser.py, `MAX_BODY_BYTES` here) are checked before any work that grows with the
input, so a huge message costs a length check. A message that is sent on unchanged goes out as
the octets it came in as.
"""

from __future__ import annotations

from dataclasses import dataclass

from callkeeper.sip.errors import MessageTooLarge, ParseError
from callkeeper.sip.head_parser import MAX_HEADER_BYTES, Head, parse_head_section
from callkeeper.sip.header_checks import Problem
from callkeeper.sip.message import Message, Request
from callkeeper.sip.via import via_sent_by

MAX_BODY_BYTES = 256 * 1024


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
    message, problem, via, length, _, clean = parse_head_section(data[start:head_end])
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
        self._need_body: tuple[Head, bytes, int] | None = None
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
            head = parse_head_section(head_bytes)
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

    def _complete(self, head: Head, head_bytes: bytes, length: int) -> Message | ParseError:
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
