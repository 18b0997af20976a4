"""The Via header (RFC 3261 §20.42, received/rport per RFC 3581)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from callkeeper.sip.address import TOKEN, format_params, parse_params, remember
from callkeeper.sip.errors import ParseError
from callkeeper.sip.uri import (
    HOST_PATTERN,
    find_param,
    has_param,
    parse_port,
    split_hostport,
    valid_host,
)

MAGIC_COOKIE = "z9hG4bK"

# sent-protocol LWS sent-by: SLASH and COLON allow white space around them (SWS "/" SWS).
_SENT = (
    rf"[ \t]*+({TOKEN})[ \t]*+/[ \t]*+({TOKEN})[ \t]*+/[ \t]*+"
    rf"({TOKEN})[ \t]++({HOST_PATTERN})(?:[ \t]*+:[ \t]*+([0-9]++))?"
)
_SENT_RE = re.compile(_SENT)
_SENT_PART_RE = re.compile(rf"{_SENT}[ \t]*+")
# (transport, host, port, protocol) by the text before the parameters: a phone's sent-by is
# the same in every request it sends, only the branch changes (see address.MEMO_SIZE).
_SENT_MEMO: dict[str, tuple[str, str, int | None, str]] = {}


@dataclass(frozen=True, slots=True)
class Via:
    """One via-parm. `_text` keeps the received spelling, so an untouched Via goes back out
    byte for byte (a response must carry the Vias exactly as the request had them)."""

    transport: str  # upper case as on the wire: UDP, TCP, TLS, WS, WSS, SCTP
    host: str
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    protocol: str = "SIP/2.0"
    _text: str | None = field(default=None, repr=False, compare=False)

    def param(self, name: str, default: str | None = None) -> str | None:
        return find_param(self.params, name, default)

    def has_param(self, name: str) -> bool:
        return has_param(self.params, name)

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
        # new_via, not dataclasses.replace (which inspects the fields on every call): every
        # request we send and every one we stamp gets a new Via.
        return new_via(self.transport, self.host, self.port, tuple(params), self.protocol, None)

    def __str__(self) -> str:
        if self._text is not None:
            return self._text
        hostport = self.host if self.port is None else f"{self.host}:{self.port}"
        text = f"{self.protocol}/{self.transport} {hostport}{format_params(self.params)}"
        _set_text(self, text)  # immutable: format once
        return text


def via_sent_by(text: str) -> tuple[str, int | None] | None:
    """Where a response to this via-parm goes, if its sent-protocol and sent-by parse.

    Looser than `parse_via`: the parameters after the sent-by are not looked at, so a request
    whose Via parameters are garbage (RFC 4475 §3.1.2.1) can still be answered with a 400.
    """
    match = _SENT_RE.match(text)
    if match is None or text[match.end() : match.end() + 1] not in ("", ";", " ", "\t", ","):
        return None
    host, port = match[4], match[5]
    try:
        return split_hostport(host if port is None else f"{host}:{port}")
    except ParseError:
        return None


def parse_via(text: str) -> Via:
    """Parse one via-parm; raises ParseError."""
    semi = text.find(";")
    sent_part = text if semi < 0 else text[:semi]
    sent = _SENT_MEMO.get(sent_part)
    if sent is None:
        sent = _parse_sent(sent_part)
        remember(_SENT_MEMO, sent_part, sent)
    params = parse_params(text[semi:]) if semi >= 0 else ()
    for key, value in params:
        if len(key) < 7:  # only branch, rport and ttl have rules beyond the generic ones
            lkey = key.lower()
            if lkey == "branch":
                if not value:
                    raise ParseError("Via branch without value")
            elif lkey == "rport":
                if value is not None and not (value.isdigit() and value.isascii()):
                    raise ParseError("bad Via rport")
            elif lkey == "ttl" and (value is None or not value.isdigit() or len(value) > 3):
                raise ParseError("bad Via ttl")
    return new_via(*sent[:3], params, sent[3], text.strip(" \t"))


def _parse_sent(text: str) -> tuple[str, str, int | None, str]:
    """sent-protocol LWS sent-by -> (transport, host, port, protocol)."""
    match = _SENT_PART_RE.fullmatch(text)
    if match is None:
        raise ParseError(f"bad Via {text[:64]!r}")
    name, version, transport, host, port_text = match.groups()
    port = parse_port(port_text, text) if port_text is not None else None
    if host[0] == "[" and not valid_host(host):
        raise ParseError(f"bad IPv6 reference in Via {text[:64]!r}")
    protocol = "SIP/2.0" if name == "SIP" and version == "2.0" else f"{name}/{version}"
    return transport.upper(), host, port, protocol


_VIA_SETTERS = tuple(
    Via.__dict__[name].__set__
    for name in ("transport", "host", "port", "params", "protocol", "_text")
)
_set_text = _VIA_SETTERS[5]


def new_via(
    transport: str,
    host: str,
    port: int | None,
    params: tuple[tuple[str, str | None], ...],
    protocol: str,
    text: str | None,
    _new: Any = object.__new__,
    _setters: Any = _VIA_SETTERS,
) -> Via:
    """`Via(...)` with every field given, without the frozen dataclass's per-field
    object.__setattr__ (the parser makes one per via-parm)."""
    via = _new(Via)
    set_transport, set_host, set_port, set_params, set_protocol, set_text = _setters
    set_transport(via, transport)
    set_host(via, host)
    set_port(via, port)
    set_params(via, params)
    set_protocol(via, protocol)
    set_text(via, text)
    result: Via = via
    return result
