"""The Via header (RFC 3261 §20.42, received/rport per RFC 3581)."""

from __future__ import annotations

from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace

from callkeeper.sip.address import format_params, is_token, parse_params
from callkeeper.sip.errors import ParseError
from callkeeper.sip.uri import split_hostport

MAGIC_COOKIE = "z9hG4bK"


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


def parse_via(text: str) -> Via:
    """Parse one via-parm; raises ParseError."""
    value = text.strip()
    slash1 = value.find("/")
    slash2 = value.find("/", slash1 + 1)
    if slash1 < 0 or slash2 < 0:
        raise ParseError(f"bad Via {value[:64]!r}")
    name = value[:slash1].strip()
    version = value[slash1 + 1 : slash2].strip()
    rest = value[slash2 + 1 :].lstrip()
    space = 0
    while space < len(rest) and rest[space] not in " \t":
        space += 1
    transport = rest[:space]
    rest = rest[space:].lstrip()
    if not is_token(name) or not is_token(version) or not is_token(transport):
        raise ParseError(f"bad Via protocol in {value[:64]!r}")
    semi = rest.find(";")
    hostport = (rest if semi < 0 else rest[:semi]).strip()
    hostport = hostport.replace(" ", "").replace("\t", "")  # LWS allowed around ':'
    host, port = split_hostport(hostport)
    params = parse_params(rest[semi:]) if semi >= 0 else ()
    for key, param_value in params:
        lkey = key.lower()
        if lkey == "branch" and not param_value:
            raise ParseError("Via branch without value")
        if lkey == "rport" and param_value is not None and not param_value.isdigit():
            raise ParseError("bad Via rport")
        if lkey == "ttl" and (param_value is None or not param_value.isdigit()):
            raise ParseError("bad Via ttl")
    return Via(transport.upper(), host, port, params, f"{name}/{version}", value)
