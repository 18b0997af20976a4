"""SIP requests and responses (RFC 3261 §7).

Messages keep headers as text and parse the ones the core needs (Via, From, To, CSeq, Call-ID,
Contact, Route) on first use, remembering the result for as long as the header line is
unchanged. The parser validates those headers anyway and leaves what it parsed in the cache, so
`.from_addr`, `.top_via` and friends cost nothing afterwards, and serialization stays faithful to
what was received.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from callkeeper.sip.address import TOKEN, Address, parse_address
from callkeeper.sip.errors import ParseError
from callkeeper.sip.headers import Headers, split_list
from callkeeper.sip.uri import URI
from callkeeper.sip.via import Via, parse_via

SIP_VERSION = "SIP/2.0"
MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: the sequence number must be less than 2**31

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    410: "Gone", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    439: "First Hop Lacks Outbound Support", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}  # fmt: skip

_T = TypeVar("_T")
# Copied from a request into its response (RFC 3261 §8.2.6.2); Record-Route only for 18x/2xx
# responses that may establish a dialog (§12.1.1).
_COPIED_INTO_RESPONSES = frozenset({"via", "from", "call-id", "cseq", "record-route"})
# The parsed views of those headers (Message._cache keys) a response can take over.
_VIEWS_COPIED_INTO_RESPONSES = ("top-via", "from", "call-id", "cseq")


@dataclass(frozen=True, slots=True)
class CSeq:
    """The CSeq header: sequence number and method (RFC 3261 §20.16)."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


# 1*DIGIT LWS Method. Leading zeros are fine (RFC 4475 §3.1.1.1); ten significant digits at
# most, so the number converts cheaply and a long digit string is simply no match.
_CSEQ_RE = re.compile(rf"[ \t]*+0*([0-9]{{1,10}})[ \t]++({TOKEN})[ \t]*+")


def parse_cseq(text: str) -> CSeq:
    """`1*DIGIT LWS Method`; raises ParseError. The number must be below 2**31 (§8.1.1.5)."""
    match = _CSEQ_RE.fullmatch(text)
    if match is None:
        raise ParseError(f"bad CSeq {text[:64]!r}")
    number = int(match[1])
    if number > MAX_CSEQ:
        raise ParseError("CSeq number out of range")
    return new_cseq(number, match[2])


_CSEQ_SETTERS = (CSeq.__dict__["number"].__set__, CSeq.__dict__["method"].__set__)


def new_cseq(
    number: int, method: str, _new: Any = object.__new__, _setters: Any = _CSEQ_SETTERS
) -> CSeq:
    """`CSeq(number, method)` without the frozen dataclass's object.__setattr__ per field."""
    cseq = _new(CSeq)
    set_number, set_method = _setters
    set_number(cseq, number)
    set_method(cseq, method)
    result: CSeq = cseq
    return result


class Message:
    """What requests and responses share: headers, body and parsed views of key headers."""

    # __weakref__: a finished transaction remembers the TU's 2xx only weakly (transaction.py).
    __slots__ = ("__weakref__", "_cache", "_received", "body", "headers", "version")

    def __init__(
        self, headers: Headers | None = None, body: bytes = b"", version: str = SIP_VERSION
    ) -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.version = version
        # view name -> (Headers.revision it was checked against, the raw value(s), the view).
        # A view is reused while the headers are unchanged, or hold the very same raw text.
        self._cache: dict[str, tuple[int, Any, Any]] = {}
        # Set by the parser: (Headers.revision, start line, body, the message as received).
        # While the first three are unchanged, to_bytes() sends the received octets.
        self._received: tuple[int, str, bytes, bytes] | None = None

    # --- parsed views (cached while the header text is unchanged) -----------------------
    def _single(self, key: str, parse: Callable[[str], _T], header: str | None = None) -> _T:
        headers = self.headers
        cached = self._cache.get(key)
        if cached is not None and cached[0] == headers.revision:
            result: _T = cached[2]
            return result
        raw = headers.get(header or key)
        if raw is None:
            raise ParseError(f"missing {key} header")
        if cached is not None and cached[1] is raw:
            self._cache[key] = (headers.revision, raw, cached[2])
            result = cached[2]
            return result
        value = parse(raw)
        self._cache[key] = (headers.revision, raw, value)
        return value

    def remember_view(self, key: str, raw: str, value: object) -> None:
        """Tell the message what `raw` — the very string it carries in the header behind view
        `key` ("top-via", "cseq" ...) — parses to, so that view need not parse it back (a
        message we build from a Via or CSeq we already hold)."""
        self._cache[key] = (-1, raw, value)

    def _listed(self, key: str, parse: Callable[[str], _T]) -> list[_T]:
        headers = self.headers
        cached = self._cache.get(key)
        if cached is not None and cached[0] == headers.revision:
            result: list[_T] = cached[2]
            return result
        lines = tuple(headers.get_lines(key))
        if cached is None or cached[1] != lines:
            values = [value for line in lines for value in split_list(line)]
            if key == "contact" and values == ["*"]:  # REGISTER's "remove all bindings"
                values = []
            cached = (0, lines, [parse(value) for value in values])
        self._cache[key] = (headers.revision, lines, cached[2])
        result = cached[2]
        return result

    @property
    def call_id(self) -> str:
        return self._single("call-id", str.strip)

    @property
    def cseq(self) -> CSeq:
        return self._single("cseq", parse_cseq)

    @property
    def from_addr(self) -> Address:
        return self._single("from", parse_address)

    @property
    def to_addr(self) -> Address:
        return self._single("to", parse_address)

    @property
    def vias(self) -> list[Via]:
        """Every via-parm, top first (a Via line may hold several, comma-separated)."""
        return list(self._listed("via", parse_via))

    @property
    def top_via(self) -> Via:
        return self._single("top-via", _parse_top_via, "via")

    def set_top_via(self, via: Via) -> None:
        """Replace the first via-parm (keeping any others that share its header line)."""
        text = str(via)
        self.headers.pop_first("via")
        self.headers.prepend("Via", text)
        # The new first line is `text` itself: `.top_via` need not parse it back.
        self._cache["top-via"] = (self.headers.revision, text, via)

    @property
    def contacts(self) -> list[Address]:
        """The Contact values; empty when absent and for the REGISTER wildcard `*`."""
        return list(self._listed("contact", parse_address))

    @property
    def routes(self) -> list[Address]:
        return list(self._listed("route", parse_address))

    @property
    def record_routes(self) -> list[Address]:
        return list(self._listed("record-route", parse_address))

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        return value.split(";", 1)[0].strip().lower() if value else None

    @property
    def has_sdp(self) -> bool:
        """A body, and it is SDP (the offer/answer a call's legs exchange)."""
        return bool(self.body) and self.content_type == "application/sdp"

    # --- wire form -----------------------------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialize, first setting Content-Length to the body's length (so it is never wrong).

        An unchanged parsed message goes out as the octets it came in as (a proxy forwards
        what it received, and it is cheaper than rebuilding the text).
        """
        received = self._received
        if (
            received is not None
            and received[0] == self.headers.revision
            and received[2] is self.body
            and received[1] == self.start_line()
        ):
            return received[3]
        length = str(len(self.body))
        if self.headers.get("content-length") != length:
            self.headers.set("Content-Length", length)
        out = [self.start_line(), "\r\n"]
        self.headers.encode_into(out)
        out.append("\r\n")
        head = "".join(out).encode("utf-8", "surrogateescape")
        return head + self.body if self.body else head

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def _parse_top_via(raw: str) -> Via:
    values = split_list(raw)
    if not values:
        raise ParseError("empty Via header")
    return parse_via(values[0])


class Request(Message):
    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: URI,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        super().__init__(headers, body, version)
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"

    @property
    def transaction_branch(self) -> str | None:
        return self.top_via.branch

    def create_response(
        self, status: int, reason: str | None = None, to_tag: str | None = None
    ) -> Response:
        """A response per RFC 3261 §8.2.6: Via, From, To, Call-ID and CSeq copied.

        `to_tag` is added to To unless it already has a tag (or the response is a 100). Works on
        a `PartialRequestError.request` too: whatever is there is copied as received; a To that
        does not parse is copied without a tag rather than failing.
        """
        items: list[tuple[str, str, str]] = []
        keep_record_route = 180 <= status < 300
        for item in self.headers._items:
            key = item[0]
            if key in _COPIED_INTO_RESPONSES:
                if key != "record-route" or keep_record_route:
                    items.append(item)
            elif key == "to":
                if to_tag is not None and status != 100 and self._to_tag_missing():
                    items.append((key, item[1], f"{item[2]};tag={to_tag}"))
                else:
                    items.append(item)
        response = Response(
            status, reason or REASON_PHRASES.get(status, "Unknown"), Headers._from_parsed(items)
        )
        # The copied lines are the very same strings: what was parsed from them still holds
        # (Message._single checks that the raw text is the same object before reusing a view).
        cache = self._cache
        for view in _VIEWS_COPIED_INTO_RESPONSES:
            entry = cache.get(view)
            if entry is not None:
                response._cache[view] = entry
        if status == 100 and "timestamp" in self.headers:
            response.headers.add("Timestamp", self.headers.get("timestamp") or "")
        return response

    def _to_tag_missing(self) -> bool:
        try:
            return self.to_addr.tag is None
        except ParseError:
            return False


def new_request(method: str, uri: URI, version: str, headers: Headers) -> Request:
    """A Request as the parser makes it: what `Request(...)` does, minus defaults and super()."""
    request = Request.__new__(Request)
    request.method = method
    request.uri = uri
    request.version = version
    request.headers = headers
    request.body = b""
    request._cache = {}
    request._received = None
    return request


class Response(Message):
    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str = "",
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        super().__init__(headers, body, version)
        self.status = status
        self.reason = reason

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300


def has_to_tag(request: Request) -> bool:
    """True when the request's To carries a tag (it belongs to a dialog, RFC 3261 §8.2.2.2).

    Most out-of-dialog requests have no "tag" text at all: the To header is parsed only when
    it might have one, and an unparseable one counts as no tag.
    """
    raw = request.headers.get("to") or ""
    if "tag" not in raw.lower():
        return False
    try:
        return request.to_addr.tag is not None
    except ParseError:
        return False
