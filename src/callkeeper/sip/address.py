"""name-addr / addr-spec values of From, To, Contact, Route, Refer-To (RFC 3261 §20.10, §25.1).

Display names and parameter values are kept as written (a quoted display name keeps its quotes
and backslash escapes), so an untouched address serializes as received.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace

from callkeeper.sip.errors import ParseError
from callkeeper.sip.uri import URI, parse_uri

# RFC 3261 §25.1. `token` characters; a quoted-string is qdtext (anything but DQUOTE and
# backslash: control characters were already refused for the whole header section) or a
# quoted-pair.
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]++"
QUOTED_STRING = r'"(?:[^"\\\r\n]++|\\[^\r\n])*+"'
_LWS = r"[ \t]*+"
# gen-value = token / host / quoted-string. `host` adds IPv6 references; `received` in a Via
# holds a bare IPv6address (RFC 3261 via-received, RFC 5118 §4.5), so that is allowed too. The
# IPv6 forms come before `token`: the parameter list is matched possessively, so the first
# alternative that fits must be the longest one.
_GEN_VALUE = rf"(?:{QUOTED_STRING}|\[[0-9A-Fa-f:.]++\]|[0-9A-Fa-f.]*+:[0-9A-Fa-f:.]*+|{TOKEN})"
_PARAM = rf"{_LWS};{_LWS}({TOKEN})(?:{_LWS}={_LWS}({_GEN_VALUE}))?"
PARAMS_RE = re.compile(rf"(?:{_PARAM})*+{_LWS}")
_PARAM_RE = re.compile(_PARAM)
_TOKEN_RE = re.compile(TOKEN)

# [display-name] LAQUOT addr-spec RAQUOT, then whatever follows (the parameters).
_NAME_ADDR_RE = re.compile(
    rf"(?:(?P<quoted>{QUOTED_STRING})|(?P<tokens>{TOKEN}(?:[ \t]++{TOKEN})*+))?"
    rf"{_LWS}<(?P<uri>[^<>]*+)>(?P<params>.*+)",
    re.DOTALL,
)


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def parse_params(text: str) -> tuple[tuple[str, str | None], ...]:
    """Parse `;name=value;flag` header parameters (values may be quoted strings)."""
    if not text:
        return ()
    if PARAMS_RE.fullmatch(text) is None:
        raise ParseError(f"bad parameters {text[:64]!r}")
    return tuple((m[1], m[2]) for m in _PARAM_RE.finditer(text))


def format_params(params: tuple[tuple[str, str | None], ...]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


@dataclass(frozen=True, slots=True)
class Address:
    """A display name, a URI and header parameters (`tag`, `expires`, `+sip.instance` ...)."""

    uri: URI
    display_name: str | None = None
    params: tuple[tuple[str, str | None], ...] = ()
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
    def tag(self) -> str | None:
        return self.param("tag")

    def with_param(self, name: str, value: str | None = None) -> Address:
        lname = name.lower()
        params = tuple(p for p in self.params if p[0].lower() != lname) + ((name, value),)
        return dataclass_replace(self, params=params, _text=None)

    def with_tag(self, tag: str) -> Address:
        return self.with_param("tag", tag)

    def replace(self, **changes: object) -> Address:
        return dataclass_replace(self, _text=None, **changes)  # type: ignore[arg-type]

    def __str__(self) -> str:
        if self._text is not None:
            return self._text
        name = f"{self.display_name} " if self.display_name else ""
        return f"{name}<{self.uri}>{format_params(self.params)}"


def parse_address(text: str) -> Address:
    """Parse a name-addr or addr-spec with header parameters; raises ParseError.

    Any URI scheme is accepted (a registrar, not the parser, refuses `To: isbn:...`), but an
    addr-spec — a URI without <> — may not contain ',', '?' or ';' (RFC 3261 §20.10): a ';'
    after it starts the header's parameters.
    """
    value = text.strip(" \t")
    if not value:
        raise ParseError("empty address")
    if "<" in value:
        match = _NAME_ADDR_RE.fullmatch(value)
        if match is None:
            raise ParseError(f"bad name-addr {value[:64]!r}")
        display = match["quoted"] or match["tokens"]
        uri = parse_uri(match["uri"], any_scheme=True)
        params = parse_params(match["params"])
        return Address(uri, display, params, value)
    semi = value.find(";")
    uri_text = (value if semi < 0 else value[:semi]).rstrip(" \t")
    if "," in uri_text or "?" in uri_text or " " in uri_text or "\t" in uri_text:
        raise ParseError(f"bad addr-spec {uri_text[:64]!r}")
    uri = parse_uri(uri_text, any_scheme=True)
    params = parse_params(value[semi:]) if semi >= 0 else ()
    return Address(uri, None, params, value)
