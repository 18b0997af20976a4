"""name-addr / addr-spec values of From, To, Contact, Route, Refer-To (RFC 3261 §20.10, §25.1).

Display names and parameter values are kept as written (a quoted display name keeps its quotes
and backslash escapes), so an untouched address serializes as received.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from typing import Any

from callkeeper.sip.errors import ParseError
from callkeeper.sip.uri import (
    HOST_PATTERN,
    SIP_URI_PATTERN,
    URI,
    find_param,
    has_param,
    parse_uri,
    sip_uri_from_groups,
    split_plain_params,
)

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
PARAMS_PATTERN = rf"(?:{_PARAM})*+{_LWS}"
PARAMS_RE = re.compile(PARAMS_PATTERN)
_PARAM_RE = re.compile(_PARAM)
_TOKEN_RE = re.compile(TOKEN)
_DISPLAY = rf"(?:({QUOTED_STRING})|({TOKEN}(?:[ \t]++{TOKEN})*+))?"

# [display-name] LAQUOT addr-spec RAQUOT: an address without its parameters.
_NAME_ADDR_RE = re.compile(rf"{_DISPLAY}{_LWS}<([^<>]*+)>")
# The common cases in one regex pass: a name-addr holding a SIP URI, or a SIP addr-spec (which
# may not contain ';', '?' or ',': a ';' after it starts the header's parameters).
_SIP_NAME_ADDR_RE = re.compile(rf"{_DISPLAY}{_LWS}<({SIP_URI_PATTERN})>")
_SIP_ADDR_SPEC_RE = re.compile(
    r"([Ss][Ii][Pp][Ss]?):(?:((?:[A-Za-z0-9\-_.!~*'()&=+$/]|%[0-9A-Fa-f]{2})++)"
    r"(?::((?:[A-Za-z0-9\-_.!~*'()&=+$]|%[0-9A-Fa-f]{2})*+))?@)?"
    rf"({HOST_PATTERN})(?::([0-9]++))?"
)


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def parse_params(text: str) -> tuple[tuple[str, str | None], ...]:
    """Parse `;name=value;flag` header parameters (values may be quoted strings)."""
    if not text:
        return ()
    if PARAMS_RE.fullmatch(text) is None:
        raise ParseError(f"bad parameters {text[:64]!r}")
    return split_params(text)


def split_params(text: str) -> tuple[tuple[str, str | None], ...]:
    """The pairs of a parameter list that already matched `PARAMS_PATTERN`."""
    if '"' in text:  # a quoted value may hold ';' or '=': let the grammar cut it up
        return tuple((m[1], m[2]) for m in _PARAM_RE.finditer(text))
    if " " in text or "\t" in text:
        return tuple(
            (name.strip(" \t"), value.strip(" \t") if sep else None)
            for name, sep, value in (item.partition("=") for item in text.split(";")[1:])
        )
    return split_plain_params(text)


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
        return find_param(self.params, name, default)

    def has_param(self, name: str) -> bool:
        return has_param(self.params, name)

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def with_param(self, name: str, value: str | None = None) -> Address:
        lname = name.lower()
        params = (*(p for p in self.params if p[0].lower() != lname), (name, value))
        # new_address, not dataclasses.replace (which inspects the fields on every call): a
        # tag is set on the From or To of every dialog.
        return new_address(self.uri, self.display_name, params, None)

    def with_tag(self, tag: str) -> Address:
        return self.with_param("tag", tag)

    def replace(self, **changes: object) -> Address:
        return dataclass_replace(self, _text=None, **changes)  # type: ignore[arg-type]

    def __str__(self) -> str:
        if self._text is not None:
            return self._text
        name = f"{self.display_name} " if self.display_name else ""
        text = f"{name}<{self.uri}>{format_params(self.params)}"
        # Immutable: format once (a dialog's From and To go into every request it sends).
        _set_text(self, text)
        return text


# Parsed values by their exact text. Address and URI are immutable, so one parsed value can
# serve every message that carries the same text: the To, Contact and Route values of a busy
# server repeat all the time (retransmissions, in-dialog requests, re-registrations), and so
# does the display name and URI of a From whose tag is new. A look-up costs a fraction of a
# parse. Bounded (cleared when full) and limited to short texts, so hostile traffic can only
# make them miss, not grow. Set MEMO_SIZE to 0 to parse everything from scratch.
_MEMO: dict[str, Address] = {}
_URI_PART_MEMO: dict[str, tuple[URI, str | None]] = {}
MEMO_SIZE = 4096
_MEMO_TEXT_MAX = 256


def remember(memo: dict[str, Any], text: str, value: Any) -> None:
    """Store a parsed value in one of the memo tables (see MEMO_SIZE)."""
    if len(text) <= _MEMO_TEXT_MAX and MEMO_SIZE:
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        memo[text] = value


def parse_address(text: str) -> Address:
    """Parse a name-addr or addr-spec with header parameters; raises ParseError.

    Any URI scheme is accepted (a registrar, not the parser, refuses `To: isbn:...`), but an
    addr-spec — a URI without <> — may not contain ',', '?' or ';' (RFC 3261 §20.10): a ';'
    after it starts the header's parameters.
    """
    address = _MEMO.get(text)
    if address is None:
        value = text.strip(" \t")
        # Where the parameters start: after the '>' that closes a name-addr's URI, else at the
        # first ';'. A quoted display name may hold any of '<', '>', ';', so look past it; a
        # quoted parameter value may hold '<', so a name-addr is one whose '<' comes first.
        start = _quoted_end(value) + 1 if value[:1] == '"' else 0
        lt = value.find("<", start)
        semi = value.find(";", start)
        if lt >= 0 and (semi < 0 or lt < semi):
            end = value.find(">", lt) + 1
            if end <= 0:
                raise ParseError(f"bad name-addr {value[:64]!r}")
        else:
            end = semi if semi >= 0 else len(value)
        uri_part = value[:end]
        known = _URI_PART_MEMO.get(uri_part)
        if known is None:
            known = _parse_uri_part(uri_part)
            remember(_URI_PART_MEMO, uri_part, known)
        params = parse_params(value[end:]) if end < len(value) else ()
        address = new_address(known[0], known[1], params, value)
        remember(_MEMO, text, address)
    return address


def _quoted_end(text: str) -> int:
    """The index of the DQUOTE closing the quoted string at the start of `text` (or -1)."""
    match = _QUOTED_RE.match(text)
    return match.end() - 1 if match is not None else -1


_QUOTED_RE = re.compile(QUOTED_STRING)


def _parse_uri_part(text: str) -> tuple[URI, str | None]:
    """(URI, display name) of an address without its parameters."""
    if text[-1:] == ">":
        match = _SIP_NAME_ADDR_RE.fullmatch(text)
        if match is not None:
            groups = match.groups()
            return sip_uri_from_groups(groups[3:], groups[2]), groups[0] or groups[1]
        match = _NAME_ADDR_RE.fullmatch(text)
        if match is None:
            raise ParseError(f"bad name-addr {text[:64]!r}")
        return parse_uri(match[3], any_scheme=True), match[1] or match[2]
    uri_text = text.rstrip(" \t")
    match = _SIP_ADDR_SPEC_RE.fullmatch(uri_text)
    if match is not None:
        return sip_uri_from_groups((*match.groups(), None, None), uri_text), None
    if not uri_text:
        raise ParseError("empty address")
    if "," in uri_text or "?" in uri_text or " " in uri_text or "\t" in uri_text:
        raise ParseError(f"bad addr-spec {uri_text[:64]!r}")
    return parse_uri(uri_text, any_scheme=True), None


_ADDRESS_SETTERS = tuple(
    Address.__dict__[name].__set__ for name in ("uri", "display_name", "params", "_text")
)
_set_text = _ADDRESS_SETTERS[3]


def new_address(
    uri: URI,
    display_name: str | None,
    params: tuple[tuple[str, str | None], ...],
    text: str | None,
    _new: Any = object.__new__,
    _setters: Any = _ADDRESS_SETTERS,
) -> Address:
    """`Address(...)` with every field given, without the frozen dataclass's per-field
    object.__setattr__ (the parser makes an Address for From, To and every Contact)."""
    address = _new(Address)
    set_uri, set_display_name, set_params, set_text = _setters
    set_uri(address, uri)
    set_display_name(address, display_name)
    set_params(address, params)
    set_text(address, text)
    result: Address = address
    return result
