"""SIP requests and responses (RFC 3261 §7).

Messages keep headers as text and parse the ones the core needs (Via, From, To, CSeq, Call-ID)
on first use, remembering the result for as long as the header line is unchanged. That keeps
parsing cheap for a proxy-like path and serialization faithful to what was received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from callkeeper.sip.address import Address, parse_address
from callkeeper.sip.errors import ParseError
from callkeeper.sip.headers import Headers
from callkeeper.sip.uri import URI
from callkeeper.sip.via import Via, parse_via

SIP_VERSION = "SIP/2.0"
MAX_CSEQ = 2**31 - 1

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief", 439: "First Hop Lacks Outbound Support",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(text: str) -> CSeq:
    number_text, _, method = text.strip().partition(" ")
    method = method.strip()
    if not number_text.isdigit() or not number_text.isascii() or not method:
        raise ParseError(f"bad CSeq {text[:64]!r}")
    number = int(number_text)
    if number > MAX_CSEQ:
        raise ParseError("CSeq number out of range")
    return CSeq(number, method)


class Message:
    """What requests and responses share: headers, body and parsed views of key headers."""

    __slots__ = ("_cache", "body", "headers", "version")

    def __init__(self, headers: Headers | None = None, body: bytes = b"", version: str = SIP_VERSION):
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.version = version
        self._cache: dict[str, tuple[str, Any]] = {}

    # --- parsed views (cached while the header text is unchanged) -----------------------
    def _parsed(self, name: str, parse: Any) -> Any:
        raw = self.headers.get(name)
        if raw is None:
            raise ParseError(f"missing {name} header")
        cached = self._cache.get(name)
        if cached is not None and cached[0] is raw:
            return cached[1]
        value = parse(raw)
        self._cache[name] = (raw, value)
        return value

    @property
    def call_id(self) -> str:
        value = self.headers.get("call-id")
        if value is None:
            raise ParseError("missing Call-ID header")
        return value.strip()

    @property
    def cseq(self) -> CSeq:
        result: CSeq = self._parsed("cseq", parse_cseq)
        return result

    @property
    def from_addr(self) -> Address:
        result: Address = self._parsed("from", parse_address)
        return result

    @property
    def to_addr(self) -> Address:
        result: Address = self._parsed("to", parse_address)
        return result

    @property
    def vias(self) -> list[Via]:
        return [parse_via(value) for value in self.headers.get_list("via")]

    @property
    def top_via(self) -> Via:
        raw = self.headers.get("via")
        if raw is None:
            raise ParseError("missing Via header")
        cached = self._cache.get("via")
        if cached is not None and cached[0] is raw:
            result: Via = cached[1]
            return result
        comma = raw.find(",")
        via = parse_via(raw if comma < 0 else raw[:comma])
        self._cache["via"] = (raw, via)
        return via

    def set_top_via(self, via: Via) -> None:
        """Replace the first via-parm (keeping any others that share its header line)."""
        self.headers.pop_first("via")
        self.headers.prepend("Via", str(via))

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        return value.split(";", 1)[0].strip().lower() if value else None

    # --- wire form -----------------------------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialize, setting Content-Length to the body's length."""
        out = [self.start_line(), "\r\n"]
        length = str(len(self.body))
        if self.headers.get("content-length") != length:
            self.headers.set("Content-Length", length)
        self.headers.encode_into(out)
        out.append("\r\n")
        head = "".join(out).encode("utf-8", "surrogateescape")
        return head + self.body if self.body else head

    def __bytes__(self) -> bytes:
        return self.to_bytes()


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

    def create_response(self, status: int, reason: str | None = None, to_tag: str | None = None) -> Response:
        """A response per RFC 3261 §8.2.6: Via, From, To, Call-ID and CSeq copied."""
        headers = Headers()
        for name, value in self.headers:
            key = name.lower()
            if key in ("via", "v", "from", "f", "call-id", "i", "cseq", "record-route"):
                if key == "record-route" and not 180 <= status < 300:
                    continue
                headers.add(name, value)
            elif key in ("to", "t"):
                if to_tag is not None and status != 100 and self.to_addr.tag is None:
                    headers.add(name, f"{value};tag={to_tag}")
                else:
                    headers.add(name, value)
        response = Response(status, reason or REASON_PHRASES.get(status, "Unknown"), headers)
        if status == 100 and "timestamp" in self.headers:
            response.headers.add("Timestamp", self.headers.get("timestamp") or "")
        return response


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
