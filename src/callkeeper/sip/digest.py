"""HTTP Digest authentication for SIP (RFC 7616, compatible with RFC 2617 and RFC 3261 §22).

The hashing, the header grammar (challenges and credentials) and the client side, which answers
a provider's or a registrar's challenges. The server side, which issues challenges and checks
the answers, is digest_server.py. Written in-house: the Python digest helpers belong to HTTP clients
(requests, httpx) and have no server side, no SHA-256 for SIP and no nonce-count tracking.

HA1 = H(username:realm:password) depends on the algorithm *and* the realm. A stored `ha1` in the
configuration is an MD5 HA1 (what SIP provisioning tools produce) unless configured otherwise;
`StoredSecret` encodes that rule, and `StoredSecret.algorithms` tells which challenges a user
with only a stored HA1 can answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from callkeeper.sip.errors import SipError

_HASHES = {"MD5": "md5", "SHA-256": "sha256"}
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


class DigestError(SipError):
    """A Digest header that is malformed or asks for something we do not support."""


# --- algorithms and hashing --------------------------------------------------------------------


def split_algorithm(name: str) -> tuple[str, bool]:
    """("MD5" | "SHA-256", is-session) for an algorithm name, in any letter case."""
    upper = name.strip().upper()
    session = upper.endswith("-SESS")
    base = upper[:-5] if session else upper
    if base not in _HASHES:
        raise DigestError(f"unsupported digest algorithm {name[:32]!r}")
    return base, session


def canonical_algorithm(name: str) -> str:
    """The spelling used on the wire: MD5, MD5-sess, SHA-256, SHA-256-sess."""
    base, session = split_algorithm(name)
    return f"{base}-sess" if session else base


def _hash(base: str, text: str) -> str:
    return hashlib.new(_HASHES[base], text.encode("utf-8"), usedforsecurity=False).hexdigest()


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username:realm:password) with the algorithm's hash (the `-sess` part is applied later)."""
    base, _ = split_algorithm(algorithm)
    return _hash(base, f"{username}:{realm}:{password}")


def compute_response(
    *,
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The `response` value (RFC 7616 §3.4.1; without qop, RFC 2069 as kept by RFC 2617 §3.2.2).

    `nc` is the 8-hex-digit text exactly as sent: it is hashed as text.
    """
    base, session = split_algorithm(algorithm)
    if session:
        ha1 = _hash(base, f"{ha1}:{nonce}:{cnonce or ''}")
    ha2 = _hash(base, f"{method}:{uri}")
    if qop is None:
        return _hash(base, f"{ha1}:{nonce}:{ha2}")
    return _hash(base, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


@dataclass(frozen=True, slots=True)
class StoredSecret:
    """A user's configured secret: a password, or a stored HA1 for one algorithm and realm."""

    password: str | None = None
    ha1: str | None = None
    ha1_algorithm: str = "MD5"

    def ha1_for(self, username: str, realm: str, algorithm: str) -> str | None:
        """The HA1 for `algorithm` (base or -sess name), or None when it cannot be derived."""
        if self.password is not None:
            return compute_ha1(username, realm, self.password, algorithm)
        base, _ = split_algorithm(algorithm)
        if self.ha1 is not None and base == split_algorithm(self.ha1_algorithm)[0]:
            return self.ha1.lower()
        return None

    def algorithms(self, offered: Iterable[str]) -> tuple[str, ...]:
        """Those of `offered` this secret can answer (all of them when it is a password)."""
        if self.password is not None:
            return tuple(offered)
        if self.ha1 is None:
            return ()
        mine = split_algorithm(self.ha1_algorithm)[0]
        return tuple(name for name in offered if split_algorithm(name)[0] == mine)


# --- header grammar ----------------------------------------------------------------------------


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split `Scheme name=value, name="quoted", ...` into the scheme and its parameters.

    Names are lower-cased; quoted values are unescaped. Commas inside quotes are kept, empty
    list elements are skipped (RFC 7230 §7), a repeated parameter is an error (RFC 7235 §2.1:
    each name once — accepting either copy would let a proxy and us disagree on its meaning).
    """
    text = value.strip()
    i = 0
    n = len(text)
    while i < n and text[i] in _TOKEN_CHARS:
        i += 1
    scheme = text[:i]
    if not scheme or (i < n and text[i] not in " \t"):
        raise DigestError("missing authentication scheme")
    params: dict[str, str] = {}
    while True:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] in _TOKEN_CHARS:
            i += 1
        name = text[start:i].lower()
        while i < n and text[i] in " \t":
            i += 1
        if not name or i >= n or text[i] != "=":
            raise DigestError(f"expected name=value at {text[start : start + 24]!r}")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            item, i = _read_quoted(text, i)
        else:
            start = i
            while i < n and text[i] not in " \t,":
                i += 1
            item = text[start:i]
            if not item or '"' in item:
                raise DigestError(f"bad value of {name!r}")
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] != ",":
            raise DigestError(f"expected ',' after {name!r}")
        if name in params:
            raise DigestError(f"parameter {name!r} repeated")
        params[name] = item
    return scheme, params


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """The unescaped content of the quoted string at `start`, and the index after it."""
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise DigestError("unterminated quoted string")


def quote_string(value: str) -> str:
    """A quoted-string for `value` (backslash-escaping `"` and `\\`)."""
    if any(ch in value for ch in "\r\n\x00"):
        raise DigestError("control character in a quoted value")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- challenges --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """A parsed WWW-Authenticate / Proxy-Authenticate Digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False


def build_challenge(
    *,
    realm: str,
    nonce: str,
    algorithm: str,
    qop: tuple[str, ...] = ("auth",),
    opaque: str | None = None,
    stale: bool = False,
) -> str:
    """A challenge header value: `Digest realm="...", nonce="...", ...`."""
    parts = [f"realm={quote_string(realm)}", f"nonce={quote_string(nonce)}"]
    if opaque is not None:
        parts.append(f"opaque={quote_string(opaque)}")
    if stale:
        parts.append("stale=true")
    parts.append(f"algorithm={canonical_algorithm(algorithm)}")
    if qop:
        parts.append(f'qop="{",".join(qop)}"')
    return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> DigestChallenge:
    """Parse a Digest challenge; raises DigestError (also for unsupported algorithms)."""
    scheme, params = parse_auth_params(value)
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest challenge: {scheme[:16]!r}")
    if "realm" not in params or "nonce" not in params:
        raise DigestError("challenge without realm or nonce")
    qop = tuple(item.strip().lower() for item in params.get("qop", "").split(",") if item.strip())
    return DigestChallenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=canonical_algorithm(params.get("algorithm", "MD5")),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


# --- credentials -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """A parsed Authorization / Proxy-Authorization Digest header."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    userhash: bool = False


def _decode_ext_value(value: str) -> str:
    """RFC 8187 ext-value `UTF-8''percent%20encoded` (the only charset RFC 7616 allows)."""
    charset, sep1, rest = value.partition("'")
    _language, sep2, encoded = rest.partition("'")
    if not (sep1 and sep2) or charset.upper() != "UTF-8":
        raise DigestError("username* must be UTF-8''<percent-encoded>")
    try:
        return unquote(encoded, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as error:
        raise DigestError("username* is not valid UTF-8") from error


def parse_credentials(value: str) -> DigestCredentials:
    """Parse Digest credentials; raises DigestError."""
    scheme, params = parse_auth_params(value)
    if scheme.lower() != "digest":
        raise DigestError(f"not Digest credentials: {scheme[:16]!r}")
    if "username" in params and "username*" in params:
        raise DigestError("both username and username*")
    if "username*" in params:
        username = _decode_ext_value(params["username*"])
    elif "username" in params:
        username = params["username"]
    else:
        raise DigestError("missing username")
    for name in ("realm", "nonce", "uri", "response"):
        if name not in params:
            raise DigestError(f"missing {name}")
    qop = params.get("qop")
    if qop is not None and ("nc" not in params or "cnonce" not in params):
        raise DigestError("qop without nc and cnonce")
    return DigestCredentials(
        username=username,
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=canonical_algorithm(params.get("algorithm", "MD5")),
        qop=qop.lower() if qop is not None else None,
        nc=params.get("nc"),
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
        userhash=params.get("userhash", "").lower() == "true",
    )


# --- client side -------------------------------------------------------------------------------


def choose_challenge(values: Iterable[str]) -> str | None:
    """The first challenge we can answer (servers list their preferred algorithm first)."""
    for value in values:
        try:
            challenge = parse_challenge(value)
        except DigestError:
            continue
        if not challenge.qop or "auth" in challenge.qop:
            return value
    return None


def answer_challenge(
    challenge_header: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int = 1,
) -> str:
    """The Authorization value answering a Digest challenge (qop=auth when offered).

    `cnonce` comes from the caller's randomness; `nc` counts the requests sent with this nonce.
    A non-ASCII username is sent as `username*` (RFC 7616 §3.4).
    """
    challenge = parse_challenge(challenge_header)
    if challenge.qop and "auth" not in challenge.qop:
        raise DigestError(f"server offers only qop={','.join(challenge.qop)}")
    qop = "auth" if challenge.qop else None
    nc_text = f"{nc:08x}"
    ha1 = compute_ha1(username, challenge.realm, password, challenge.algorithm)
    response = compute_response(
        ha1=ha1,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        algorithm=challenge.algorithm,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
    )
    if username.isascii():
        parts = [f"username={quote_string(username)}"]
    else:
        parts = [f"username*=UTF-8''{quote(username, safe='')}"]
    parts += [
        f"realm={quote_string(challenge.realm)}",
        f"nonce={quote_string(challenge.nonce)}",
        f"uri={quote_string(uri)}",
        f'response="{response}"',
        f"algorithm={challenge.algorithm}",
    ]
    if qop is not None:
        parts += [f"cnonce={quote_string(cnonce)}", f"qop={qop}", f"nc={nc_text}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={quote_string(challenge.opaque)}")
    return "Digest " + ", ".join(parts)
