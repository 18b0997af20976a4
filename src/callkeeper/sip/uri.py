"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966), and other schemes kept opaque.

A parsed URI remembers the text it came from, so an untouched URI serializes byte for byte as
received; `replace()` returns a new URI that serializes from its fields.

A SIP URI is checked against the RFC 3261 grammar by one compiled expression: one pass in C is
several times cheaper than splitting it up in Python, and the expression's possessive quantifiers
and atomic groups keep it linear on hostile input (no backtracking blow-up). URIs of other
schemes (`http:`, `isbn:`, `urn:` ...) are legal in From/To/Contact (RFC 3261 §25.1
`absoluteURI`); they are parsed as `scheme` plus an opaque rest.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from typing import Any
from urllib.parse import unquote

from callkeeper.sip.errors import ParseError

# --- grammar (RFC 3261 §25.1) ----------------------------------------------------------------
_ESC = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_USER = rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESC})++"
_PASSWORD = rf"(?:[{_UNRESERVED}&=+$,]|{_ESC})*+"
# hostname = *( domainlabel "." ) toplabel [ "." ]; labels are alphanumeric runs joined by dashes.
# Labels are atomic, so a long label costs one pass however the match fails.
_LABEL = r"(?>[A-Za-z0-9]++(?:-++[A-Za-z0-9]++)*+)"
_TOPLABEL = r"(?>[A-Za-z][A-Za-z0-9]*+(?:-++[A-Za-z0-9]++)*+)"
_HOSTNAME = rf"(?:{_LABEL}\.)*{_TOPLABEL}\.?"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_IPV6_REFERENCE = r"\[[0-9A-Fa-f:.]++\]"
HOST_PATTERN = rf"(?:{_HOSTNAME}|{_IPV4}|{_IPV6_REFERENCE})"
_PARAMCHAR = rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESC})"
_PARAMS = rf"(?:;{_PARAMCHAR}++(?:={_PARAMCHAR}++)?)*+"
_HNVCHAR = rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESC})"
_HEADERS = rf"{_HNVCHAR}++={_HNVCHAR}*+(?:&{_HNVCHAR}++={_HNVCHAR}*+)*+"

# A whole SIP URI; the groups are what `sip_uri_from_groups` takes (other patterns embed this
# one, e.g. inside <> in a name-addr, so a header value is checked in one regex pass).
SIP_URI_PATTERN = (
    rf"([Ss][Ii][Pp][Ss]?):(?:({_USER})(?::({_PASSWORD}))?@)?"
    rf"({HOST_PATTERN})(?::([0-9]++))?({_PARAMS})(?:\?({_HEADERS}))?"
)
SIP_URI_GROUPS = 7
_SIP_URI_RE = re.compile(SIP_URI_PATTERN)
_HOST_RE = re.compile(HOST_PATTERN)
_PARAM_RE = re.compile(rf"{_PARAMCHAR}++")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*+")
# RFC 3966 (simplified): a global or local number, then ;parameters.
_TEL_RE = re.compile(r"\+?[0-9A-Fa-f*#().\-]++(?:;[^;?\s]++)*+")
# absoluteURI's rest (RFC 3261 §25.1, `uric`, plus "[]" for IPv6 literals per RFC 3986).
_OPAQUE_RE = re.compile(rf"(?:[{_UNRESERVED};/?:@&=+$,\[\]]|{_ESC})++")


def valid_host(host: str) -> bool:
    """True for a hostname, an IPv4 address or a bracketed IPv6 reference."""
    if _HOST_RE.fullmatch(host) is None:
        return False
    return host[0] != "[" or _valid_ipv6(host[1:-1])


def _valid_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def parse_port(text: str, source: str) -> int:
    """A port number (1*DIGIT, so checked by the caller's regex) up to 65535; else ParseError."""
    # Bounded before int(): Python refuses to convert digit strings of more than 4300 digits.
    port = int(text) if len(text) <= 5 else 65536
    if port > 65535:
        raise ParseError(f"port out of range in {source[:64]!r}")
    return port


def split_hostport(text: str) -> tuple[str, int | None]:
    """Split `host[:port]` (host may be a bracketed IPv6 reference); raises ParseError."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(f"unterminated IPv6 reference in {text[:64]!r}")
        host, rest = text[: end + 1], text[end + 1 :]
    else:
        host, sep, port_text = text.partition(":")
        rest = ":" + port_text if sep else ""
    port: int | None = None
    if rest:
        digits = rest[1:]
        if rest[0] != ":" or not digits.isdigit() or not digits.isascii():
            raise ParseError(f"bad port in {text[:64]!r}")
        port = parse_port(digits, text)
    if not valid_host(host):
        raise ParseError(f"bad host {host[:64]!r}")
    return host, port


Params = tuple[tuple[str, str | None], ...]


def find_param(params: Params, name: str, default: str | None = None) -> str | None:
    """The value of parameter `name` (names compare case-insensitively, RFC 3261 §7.3.1)."""
    lname = name.lower()
    for key, value in params:
        if key.lower() == lname:
            return value
    return default


def has_param(params: Params, name: str) -> bool:
    lname = name.lower()
    return any(key.lower() == lname for key, _ in params)


@dataclass(frozen=True, slots=True, eq=False)
class URI:
    """A sip:, sips: or tel: URI, or another scheme's URI kept as `opaque` text.

    Parameter names are kept as written; look-ups ignore case. For sip/sips, `user` and the
    parameters keep their %-escapes as received (RFC 3261 §19.1.4 compares them unescaped).
    """

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    _text: str | None = field(default=None, repr=False, compare=False)
    opaque: str | None = None  # everything after "scheme:" for schemes other than sip/sips/tel

    # --- reading -------------------------------------------------------------------------
    def param(self, name: str, default: str | None = None) -> str | None:
        return find_param(self.params, name, default)

    def has_param(self, name: str) -> bool:
        return has_param(self.params, name)

    @property
    def is_sip(self) -> bool:
        """True for sip: and sips: URIs (the ones a SIP element can route on)."""
        return self.scheme in ("sip", "sips")

    @property
    def transport(self) -> str:
        """The transport the URI asks for, lower case (`udp` unless said; `tls` for sips)."""
        value = self.param("transport")
        if value:
            return value.lower()
        return "tls" if self.scheme == "sips" else "udp"

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def aor(self) -> str:
        """Address of record: `scheme:user@host` with no port or parameters, user unescaped."""
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            return f"tel:{self.user or ''}"
        user = unquote(self.user) if self.user else None
        host = self.host.lower()
        return f"{self.scheme}:{user}@{host}" if user is not None else f"{self.scheme}:{host}"

    # --- writing -------------------------------------------------------------------------
    def replace(self, **changes: object) -> URI:
        return dataclass_replace(self, _text=None, **changes)  # type: ignore[arg-type]

    def with_param(self, name: str, value: str | None = None) -> URI:
        lname = name.lower()
        params = (*(p for p in self.params if p[0].lower() != lname), (name, value))
        return self.replace(params=params)

    def without_param(self, name: str) -> URI:
        lname = name.lower()
        return self.replace(params=tuple(p for p in self.params if p[0].lower() != lname))

    def __str__(self) -> str:
        if self._text is not None:
            return self._text
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            out = [f"tel:{self.user or ''}"]
        else:
            out = [self.scheme, ":"]
            if self.user is not None:
                out.append(self.user)
                if self.password is not None:
                    out.append(":" + self.password)
                out.append("@")
            out.append(self.hostport)
        for key, value in self.params:
            out.append(f";{key}" if value is None else f";{key}={value}")
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers))
        return "".join(out)

    def __eq__(self, other: object) -> bool:
        """URI comparison per RFC 3261 §19.1.4 (simplified: no default-port equivalence)."""
        if not isinstance(other, URI):
            return NotImplemented
        if self.scheme != other.scheme or self.opaque != other.opaque:
            return False
        if self.host.lower() != other.host.lower():
            return False
        if unquote(self.user or "") != unquote(other.user or ""):
            return False
        if self.password != other.password or self.port != other.port:
            return False
        mine = {k.lower(): v for k, v in self.params}
        theirs = {k.lower(): v for k, v in other.params}
        for key in ("user", "ttl", "method", "maddr", "transport"):
            if (key in mine or key in theirs) and _lower(mine.get(key)) != _lower(theirs.get(key)):
                return False
        for key in mine.keys() & theirs.keys():
            if _lower(mine[key]) != _lower(theirs[key]):
                return False
        return sorted(self.headers) == sorted(other.headers)

    def __hash__(self) -> int:
        return hash(
            (self.scheme, self.host.lower(), unquote(self.user or ""), self.port, self.opaque)
        )


def _lower(value: str | None) -> str | None:
    return value.lower() if value is not None else None


def parse_uri(text: str, *, any_scheme: bool = False) -> URI:
    """Parse a URI; raises ParseError.

    sip/sips/tel URIs are parsed into their parts. A well-formed URI of any other scheme raises
    ParseError with status 416 (Unsupported URI Scheme) — what a Request-URI deserves — unless
    `any_scheme` is set, as for From/To/Contact values, where it comes back opaque.
    """
    colon = text.find(":")
    if colon <= 0:
        raise ParseError(f"not a URI: {text[:64]!r}")
    scheme_text = text[:colon]
    scheme = scheme_text.lower()
    rest = text[colon + 1 :]
    if scheme == "sip" or scheme == "sips":
        match = _SIP_URI_RE.fullmatch(text)
        if match is None:
            raise ParseError(f"bad SIP URI {text[:64]!r}")
        return sip_uri_from_groups(match.groups(), text)
    if scheme == "tel":
        if _TEL_RE.fullmatch(rest) is None:
            raise ParseError(f"bad tel URI {text[:64]!r}")
        number, _, param_text = rest.partition(";")
        return URI("tel", user=number, params=_parse_params(param_text), _text=text)
    if _SCHEME_RE.fullmatch(scheme_text) is None or _OPAQUE_RE.fullmatch(rest) is None:
        raise ParseError(f"bad URI {text[:64]!r}")
    if not any_scheme:
        raise ParseError(f"unsupported URI scheme {scheme[:32]!r}", status=416)
    return URI(scheme, _text=text, opaque=rest)


def sip_uri_from_groups(groups: tuple[str | Any, ...], text: str) -> URI:
    """A URI from the groups of `SIP_URI_PATTERN` (already matched, so only ranges are left
    to check: the port number and an IPv6 reference's syntax)."""
    scheme, user, password, host, port_text, param_text, header_text = groups
    if host[0] == "[" and not _valid_ipv6(host[1:-1]):
        raise ParseError(f"bad IPv6 reference in {text[:64]!r}")
    port = parse_port(port_text, text) if port_text is not None else None
    params = split_plain_params(param_text) if param_text else ()
    headers: tuple[tuple[str, str], ...] = ()
    if header_text:
        headers = tuple(_split_header(pair) for pair in header_text.split("&"))
    if scheme != "sip" and scheme != "sips":
        scheme = scheme.lower()
    return new_uri(scheme, user, password, host, port, params, headers, text, None)


_URI_SETTERS = tuple(
    URI.__dict__[name].__set__
    for name in (
        "scheme",
        "user",
        "password",
        "host",
        "port",
        "params",
        "headers",
        "_text",
        "opaque",
    )
)


def new_uri(
    scheme: str,
    user: str | None,
    password: str | None,
    host: str,
    port: int | None,
    params: tuple[tuple[str, str | None], ...],
    headers: tuple[tuple[str, str], ...],
    text: str | None,
    opaque: str | None,
    _new: Any = object.__new__,
    _setters: Any = _URI_SETTERS,
) -> URI:
    """`URI(...)` with every field given, at half the cost: the parser makes several URIs per
    message, and a frozen dataclass's __init__ goes through object.__setattr__ per field."""
    uri = _new(URI)
    (set_scheme, set_user, set_password, set_host, set_port) = _setters[:5]
    (set_params, set_headers, set_text, set_opaque) = _setters[5:]
    set_scheme(uri, scheme)
    set_user(uri, user)
    set_password(uri, password)
    set_host(uri, host)
    set_port(uri, port)
    set_params(uri, params)
    set_headers(uri, headers)
    set_text(uri, text)
    set_opaque(uri, opaque)
    result: URI = uri
    return result


def split_plain_params(text: str) -> tuple[tuple[str, str | None], ...]:
    """`;a=b;c` -> (("a", "b"), ("c", None)), for text already checked to hold no LWS or quotes.

    One parameter (`;tag=...`, `;transport=tcp`, `;lr`) is the common case and skips the loop.
    """
    if text.find(";", 1) < 0:
        name, sep, value = text[1:].partition("=")
        return ((name, value if sep else None),)
    pairs: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, sep, value = item.partition("=")
        pairs.append((name, value if sep else None))
    return tuple(pairs)


def _split_header(pair: str) -> tuple[str, str]:
    name, _, value = pair.partition("=")
    return name, value


def _parse_params(text: str) -> tuple[tuple[str, str | None], ...]:
    if not text:
        return ()
    params: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if _PARAM_RE.fullmatch(name) is None:
            raise ParseError(f"bad URI parameter {item[:64]!r}")
        if sep:
            if _PARAM_RE.fullmatch(value) is None:
                raise ParseError(f"bad URI parameter value {item[:64]!r}")
            params.append((name, value))
        else:
            params.append((name, None))
    return tuple(params)
