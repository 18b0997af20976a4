"""name-addr / addr-spec values of From, To, Contact, Route, Refer-To (RFC 3261 §20.10, §25.1)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace

from callkeeper.sip.errors import ParseError
from callkeeper.sip.uri import URI, parse_uri

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_DISPLAY_TOKENS_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*")


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def parse_params(text: str) -> tuple[tuple[str, str | None], ...]:
    """Parse `;name=value;flag` header parameters (values may be quoted strings)."""
    params: list[tuple[str, str | None]] = []
    i = 0
    n = len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            break
        if text[i] != ";":
            raise ParseError(f"expected ';' in parameters {text[:64]!r}")
        i += 1
        start = i
        while i < n and text[i] not in "=;":
            i += 1
        name = text[start:i].strip()
        if not is_token(name):
            raise ParseError(f"bad parameter name {name[:32]!r}")
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] == '"':
                end = _quoted_end(text, i)
                params.append((name, text[i : end + 1]))
                i = end + 1
            else:
                start = i
                while i < n and text[i] != ";":
                    i += 1
                value = text[start:i].strip()
                if not value or not _valid_param_value(value):
                    raise ParseError(f"bad value of parameter {name[:32]!r}")
                params.append((name, value))
        else:
            params.append((name, None))
    return tuple(params)


def _valid_param_value(value: str) -> bool:
    # token / host (IPv6 references contain ':' and '[]'); Via `received` holds a bare
    # IPv6address (RFC 3261 §25.1 via-received, RFC 5118 §4.5), so accept that too.
    return _TOKEN_RE.fullmatch(value) is not None or re.fullmatch(r"\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*", value) is not None


def _quoted_end(text: str, start: int) -> int:
    """Index of the closing quote of the quoted string opening at `start`."""
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i
        i += 1
    raise ParseError("unterminated quoted string")


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
    """Parse a name-addr or addr-spec with header parameters; raises ParseError."""
    value = text.strip()
    if not value:
        raise ParseError("empty address")
    display: str | None = None
    if value[0] == '"':
        end = _quoted_end(value, 0)
        display = value[: end + 1]
        rest = value[end + 1 :].lstrip(" \t")
        if not rest.startswith("<"):
            raise ParseError("quoted display name without <URI>")
        value = rest
    lt = value.find("<")
    if lt >= 0:
        if display is None and lt > 0:
            candidate = value[:lt].strip()
            if candidate:
                if not _DISPLAY_TOKENS_RE.fullmatch(candidate):
                    raise ParseError(f"bad display name {candidate[:32]!r}")
                display = candidate
        gt = value.find(">", lt)
        if gt < 0:
            raise ParseError("missing '>' in address")
        uri = parse_uri(value[lt + 1 : gt])
        params = parse_params(value[gt + 1 :])
    else:
        # addr-spec: parameters after the URI belong to the header, not to the URI.
        semi = value.find(";")
        uri_text = value if semi < 0 else value[:semi]
        if any(ch in uri_text for ch in " \t,?"):
            raise ParseError(f"bad addr-spec {uri_text[:64]!r}")
        uri = parse_uri(uri_text)
        params = parse_params(value[semi:]) if semi >= 0 else ()
    return Address(uri, display, params, text.strip())
