"""The Via header (RFC 3261 §20.42, received/rport per RFC 3581)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace

from callkeeper.sip.address import PARAMS_RE, TOKEN, format_params, parse_params
from callkeeper.sip.errors import ParseError
from callkeeper.sip.uri import HOST_PATTERN, split_hostport

MAGIC_COOKIE = "z9hG4bK"

# sent-protocol LWS sent-by: SLASH and COLON allow white space around them (SWS "/" SWS).
_SENT_RE = re.compile(
    rf"[ \t]*+(?P<name>{TOKEN})[ \t]*+/[ \t]*+(?P<version>{TOKEN})[ \t]*+/[ \t]*+"
    rf"(?P<transport>{TOKEN})[ \t]++(?P<host>{HOST_PATTERN})"
    rf"(?:[ \t]*+:[ \t]*+(?P<port>[0-9]++))?"
)


@dataclass(frozen=True, slots=True)
class Via:
    transport: str  # upper case as on the wire: UDP, TCP, TLS, WS, WSS, SCTP
    host: str
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    protocol: str = "SIP/2.0"
    _text: str | None = field(default=None, repr=False, compare=False)

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
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    @property
    def reliable(self) -> bool:
        return self.transport.upper() != "UDP"

    def with_params(self, **values: str | None) -> Via:
        """Set (or add) parameters, e.g. `received=..., rport="5060"`."""
        params = list(self.params)
        for name, value in values.items():
            for index, (key, _) in enumerate(params):
                if key.lower() == name:
                    params[index] = (key, value)
                    break
            else:
                params.append((name, value))
        return dataclass_replace(self, params=tuple(params), _text=None)

    def __str__(self) -> str:
        if self._text is not None:
            return self._text
        hostport = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"{self.protocol}/{self.transport} {hostport}{format_params(self.params)}"


def via_sent_by(text: str) -> tuple[str, int | None] | None:
    """Where a response to this via-parm goes, if its sent-protocol and sent-by parse.

    Looser than `parse_via`: the parameters after the sent-by are not looked at, so a request
    whose Via parameters are garbage (RFC 4475 §3.1.2.1) can still be answered with a 400.
    """
    match = _SENT_RE.match(text)
    if match is None or text[match.end() : match.end() + 1] not in ("", ";", " ", "\t", ","):
        return None
    try:
        return split_hostport(match["host"] + (f":{match['port']}" if match["port"] else ""))
    except ParseError:
        return None


def parse_via(text: str) -> Via:
    """Parse one via-parm; raises ParseError."""
    match = _SENT_RE.match(text)
    if match is None:
        raise ParseError(f"bad Via {text[:64]!r}")
    rest = text[match.end() :]
    if rest and PARAMS_RE.fullmatch(rest) is None:
        raise ParseError(f"bad Via parameters {text[:64]!r}")
    host = match["host"]
    port_text = match["port"]
    if host[0] == "[" or port_text is not None:
        host, port = split_hostport(host if port_text is None else f"{host}:{port_text}")
    else:
        port = None
    params = parse_params(rest) if rest else ()
    for key, value in params:
        lkey = key.lower()
        if lkey == "branch" and not value:
            raise ParseError("Via branch without value")
        if lkey == "rport" and value is not None and not value.isdigit():
            raise ParseError("bad Via rport")
        if lkey == "ttl" and (value is None or not value.isdigit() or len(value) > 3):
            raise ParseError("bad Via ttl")
    protocol = f"{match['name']}/{match['version']}"
    return Via(match["transport"].upper(), host, port, params, protocol, text.strip(" \t"))
