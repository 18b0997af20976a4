"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966).

A parsed URI remembers the text it came from, so an untouched URI serializes byte for byte as
received; `replace()` returns a new URI that serializes from its fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from urllib.parse import unquote

from callkeeper.sip.errors import ParseError

# RFC 3261 §25.1: unreserved / escaped / user-unreserved for the user part, and the
# characters allowed in a password, a parameter and a header.
_ESC = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_USER_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESC})+")
_PASSWORD_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESC})*")
_PARAM_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESC})+")
_HEADER_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESC})*")
_HOSTNAME_RE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?")
_IPV4_RE = re.compile(r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_TEL_RE = re.compile(r"\+?[0-9A-Fa-f*#().\-]+(?:;[^;?]+)*")


def valid_host(host: str) -> bool:
    """True for a hostname, an IPv4 address or a bracketed IPv6 reference."""
    if not host:
        return False
    if host[0] == "[":
        return _IPV6_RE.fullmatch(host) is not None and host.count("::") <= 1
    if host[-1].isdigit() and _IPV4_RE.fullmatch(host):
        return True
    return _HOSTNAME_RE.fullmatch(host) is not None


def split_hostport(text: str) -> tuple[str, int | None]:
    """Split `host[:port]` (host may be a bracketed IPv6 reference); raises ParseError."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(f"unterminated IPv6 reference in {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
    else:
        host, sep, port_text = text.partition(":")
        rest = ":" + port_text if sep else ""
    port: int | None = None
    if rest:
        if rest[0] != ":" or not rest[1:].isdigit() or not rest[1:].isascii():
            raise ParseError(f"bad port in {text!r}")
        port = int(rest[1:])
        if port > 65535:
            raise ParseError(f"port out of range in {text!r}")
    if not valid_host(host):
        raise ParseError(f"bad host {host!r}")
    return host, port


@dataclass(frozen=True, slots=True, eq=False)
class URI:
    """A sip:, sips: or tel: URI. Parameter names are kept as written; look-ups ignore case."""

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    _text: str | None = field(default=None, repr=False, compare=False)

    # --- reading -------------------------------------------------------------------------
    def param(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for key, value in self.params:
            if key.lower() == lname:
                return value
        return default

    def has_param(self, name: str) -> bool:
        lname = name.lower()
        return any(key.lower() == lname for key, _ in self.params)

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
        user = unquote(self.user) if self.user else None
        host = self.host.lower()
        return f"{self.scheme}:{user}@{host}" if user is not None else f"{self.scheme}:{host}"

    # --- writing -------------------------------------------------------------------------
    def replace(self, **changes: object) -> URI:
        return dataclass_replace(self, _text=None, **changes)  # type: ignore[arg-type]

    def with_param(self, name: str, value: str | None = None) -> URI:
        lname = name.lower()
        params = tuple(p for p in self.params if p[0].lower() != lname) + ((name, value),)
        return self.replace(params=params)

    def without_param(self, name: str) -> URI:
        lname = name.lower()
        return self.replace(params=tuple(p for p in self.params if p[0].lower() != lname))

    def __str__(self) -> str:
        if self._text is not None:
            return self._text
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
        if self.scheme != other.scheme or self.host.lower() != other.host.lower():
            return False
        if unquote(self.user or "") != unquote(other.user or ""):
            return False
        if self.password != other.password or self.port != other.port:
            return False
        mine = {k.lower(): v for k, v in self.params}
        theirs = {k.lower(): v for k, v in other.params}
        for key in ("user", "ttl", "method", "maddr", "transport"):
            if (key in mine or key in theirs) and _lower(mine.get(key)) != _lower(
                theirs.get(key)
            ):
                return False
        for key in mine.keys() & theirs.keys():
            if _lower(mine[key]) != _lower(theirs[key]):
                return False
        return sorted(self.headers) == sorted(other.headers)

    def __hash__(self) -> int:
        return hash((self.scheme, self.host.lower(), unquote(self.user or ""), self.port))


def _lower(value: str | None) -> str | None:
    return value.lower() if value is not None else None


def parse_uri(text: str) -> URI:
    """Parse a sip:/sips:/tel: URI; raises ParseError (status 416 for other schemes)."""
    colon = text.find(":")
    if colon <= 0:
        raise ParseError(f"not a URI: {text[:64]!r}")
    scheme = text[:colon].lower()
    rest = text[colon + 1 :]
    if scheme == "tel":
        if not _TEL_RE.fullmatch(rest):
            raise ParseError(f"bad tel URI {text[:64]!r}")
        number, _, param_text = rest.partition(";")
        return URI("tel", user=number, params=_parse_params(param_text), _text=text)
    if scheme not in ("sip", "sips"):
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+\-.]*", text[:colon]):
            raise ParseError(f"bad URI scheme in {text[:64]!r}")
        raise ParseError(f"unsupported URI scheme {scheme!r}", status=416)
    header_text = ""
    question = rest.find("?")
    if question >= 0:
        rest, header_text = rest[:question], rest[question + 1 :]
    user = password = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, sep, pw = userinfo.partition(":")
        if sep:
            password = pw
            if not _PASSWORD_RE.fullmatch(pw):
                raise ParseError(f"bad password in {text[:64]!r}")
        if not _USER_RE.fullmatch(user):
            raise ParseError(f"bad user part in {text[:64]!r}")
    hostport, _, param_text = rest.partition(";")
    host, port = split_hostport(hostport)
    params = _parse_params(param_text)
    headers: tuple[tuple[str, str], ...] = ()
    if header_text:
        pairs = []
        for pair in header_text.split("&"):
            name, _, value = pair.partition("=")
            if not name or not _HEADER_RE.fullmatch(name) or not _HEADER_RE.fullmatch(value):
                raise ParseError(f"bad URI header in {text[:64]!r}")
            pairs.append((name, value))
        headers = tuple(pairs)
    return URI(scheme, user, password, host, port, params, headers, text)


def _parse_params(text: str) -> tuple[tuple[str, str | None], ...]:
    if not text:
        return ()
    params: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if not name or not _PARAM_RE.fullmatch(name):
            raise ParseError(f"bad URI parameter {item[:64]!r}")
        if sep:
            if not _PARAM_RE.fullmatch(value):
                raise ParseError(f"bad URI parameter value {item[:64]!r}")
            params.append((name, value))
        else:
            params.append((name, None))
    return tuple(params)
