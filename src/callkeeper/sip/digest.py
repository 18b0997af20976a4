"""HTTP Digest authentication for SIP (RFC 7616, compatible with RFC 2617 and RFC 3261 §22).

The registrar challenges REGISTER and INVITE with 401/407 and checks the answers; the trunk
client answers its provider's challenges. Both sides live here because they share the hashing
and the header grammar. Written in-house: the Python digest helpers belong to HTTP clients
(requests, httpx) and have no server side, no SHA-256 for SIP and no nonce-count tracking.

Server design:
- Nonces are stateless and self-validating: base64url(issued-ms ‖ random ‖ HMAC-SHA256(secret,
  realm ‖ issued-ms ‖ random)[:16]). Any node holding the secret can check one; the random bytes
  and the clock come in as arguments (this package is pure).
- A nonce older than `nonce_ttl` (or that far in the future: another node's clock, a restart)
  whose digest is otherwise right answers `stale`, so the client retries with the new nonce
  without asking its user (RFC 7616 §3.3).
- Replays: with qop=auth the nonce count `nc` must grow per nonce. The last count per nonce is
  kept in a bounded table; expired nonces are evicted first, and when live ones must go, every
  nonce issued no later than the evicted one is answered `stale` from then on — a forgotten
  count can never let a replay through. A response without qop (RFC 2069 clients, only when
  `allow_no_qop` is set) uses its nonce up.
- `challenge` offers one challenge per algorithm, SHA-256 first (as RFC 8760 recommends), all
  with the same nonce, so the client answers the first one it supports.

HA1 = H(username:realm:password) depends on the algorithm *and* the realm. A stored `ha1` in the
configuration is an MD5 HA1 (what SIP provisioning tools produce) unless configured otherwise;
`StoredSecret` encodes that rule, and `StoredSecret.algorithms` tells which challenges a user
with only a stored HA1 can answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from urllib.parse import quote, unquote

from callkeeper.sip.errors import ParseError, SipError
from callkeeper.sip.message import Request
from callkeeper.sip.uri import parse_uri

_HASHES = {"MD5": "md5", "SHA-256": "sha256"}
DEFAULT_ALGORITHMS = ("SHA-256", "MD5")
MIN_RANDOM_BYTES = 8
_MAC_LENGTH = 16
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]+")
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_HEX8_RE = re.compile(r"[0-9A-Fa-f]{1,8}")
_USED_UP = 1 << 32  # the count recorded for a nonce answered without qop: nothing is greater

LookupHA1 = Callable[[str, str, str], str | None]
"""lookup_ha1(username, realm, algorithm) → hex HA1 for that base algorithm ("MD5"/"SHA-256")."""


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


# --- server side -------------------------------------------------------------------------------


class AuthStatus(Enum):
    OK = "ok"
    STALE = "stale"  # right credentials, old nonce (or replayed count): challenge with stale=true
    BAD = "bad"  # wrong, malformed or unknown: challenge again (and count the failure)
    MISSING = "missing"  # no credentials for our realm: the first challenge


@dataclass(frozen=True, slots=True)
class AuthResult:
    status: AuthStatus
    username: str | None = None
    reason: str = ""
    algorithm: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is AuthStatus.OK


class DigestAuthenticator:
    """Issues Digest challenges and verifies the answers for one realm (see module docstring)."""

    __slots__ = (
        "_counts",
        "_forgotten_before",
        "_secret",
        "algorithms",
        "allow_no_qop",
        "max_tracked_nonces",
        "nonce_ttl",
        "opaque",
        "realm",
    )

    def __init__(
        self,
        secret: bytes,
        realm: str,
        nonce_ttl: float = 300.0,
        *,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        opaque: str | None = None,
        allow_no_qop: bool = False,
        max_tracked_nonces: int = 10_000,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must have at least 16 bytes")
        if nonce_ttl <= 0 or max_tracked_nonces < 1:
            raise ValueError("nonce_ttl and max_tracked_nonces must be positive")
        self.algorithms = tuple(canonical_algorithm(name) for name in algorithms)
        if not self.algorithms:
            raise ValueError("offer at least one algorithm")
        quote_string(realm)  # reject control characters now, not on the first challenge
        self._secret = secret
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self.opaque = opaque
        self.allow_no_qop = allow_no_qop
        self.max_tracked_nonces = max_tracked_nonces
        self._counts: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._forgotten_before = float("-inf")

    # --- nonces ---
    def _mac(self, payload: bytes) -> bytes:
        message = self.realm.encode("utf-8") + b"\x00" + payload
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_MAC_LENGTH]

    def make_nonce(self, now: float, random_bytes: bytes) -> str:
        if len(random_bytes) < MIN_RANDOM_BYTES:
            raise ValueError(f"a nonce needs at least {MIN_RANDOM_BYTES} random bytes")
        payload = struct.pack(">q", round(now * 1000)) + random_bytes
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode("ascii")

    def nonce_issued(self, nonce: str) -> float | None:
        """When we issued `nonce` (seconds, the clock of `now`); None when it is not ours."""
        if not _NONCE_RE.fullmatch(nonce):
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < 8 + MIN_RANDOM_BYTES + _MAC_LENGTH:
            return None
        payload, mac = raw[:-_MAC_LENGTH], raw[-_MAC_LENGTH:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        issued_ms: int = struct.unpack(">q", payload[:8])[0]
        return issued_ms / 1000

    def _expired(self, issued: float, now: float) -> bool:
        return abs(now - issued) > self.nonce_ttl

    # --- challenges ---
    def challenge(
        self,
        now: float,
        random_bytes: bytes,
        stale: bool = False,
        *,
        algorithms: Iterable[str] | None = None,
    ) -> list[str]:
        """Challenge header values (one per algorithm, same nonce), to add one line each.

        `algorithms` narrows the offer to a subset of `self.algorithms`, e.g. to
        `StoredSecret.algorithms(auth.algorithms)` for a user whose configuration holds only an
        MD5 HA1.
        """
        nonce = self.make_nonce(now, random_bytes)
        offer = self.algorithms
        if algorithms is not None:
            offer = tuple(canonical_algorithm(name) for name in algorithms)
            if not set(offer) <= set(self.algorithms):
                raise ValueError("offer only algorithms this authenticator accepts")
        return [
            build_challenge(
                realm=self.realm, nonce=nonce, algorithm=name, opaque=self.opaque, stale=stale
            )
            for name in offer
        ]

    # --- verification ---
    def verify(
        self,
        header_value: str,
        method: str,
        lookup_ha1: LookupHA1,
        now: float,
        *,
        request_uri: str | None = None,
    ) -> AuthResult:
        """Check one Authorization / Proxy-Authorization value for a request of `method`.

        `lookup_ha1(username, realm, base_algorithm)` returns the user's HA1 for "MD5" or
        "SHA-256" (also used for the -sess variants), or None for an unknown user. When
        `request_uri` is given, the digest `uri` must name the same URI (RFC 3261 §22.4).
        """
        try:
            credentials = parse_credentials(header_value)
        except DigestError as error:
            return AuthResult(AuthStatus.BAD, None, str(error))
        username = credentials.username
        algorithm = credentials.algorithm

        def bad(reason: str) -> AuthResult:
            return AuthResult(AuthStatus.BAD, username, reason, algorithm)

        count = 0
        if credentials.userhash:
            return bad("userhash is not supported")
        if credentials.realm != self.realm:
            return bad("credentials for another realm")
        if algorithm not in self.algorithms:
            return bad(f"algorithm {algorithm} was not offered")
        if credentials.qop is None:
            if not self.allow_no_qop:
                return bad("qop=auth is required")
        elif credentials.qop != "auth":
            return bad(f"qop={credentials.qop} is not supported")
        else:
            count = _nonce_count(credentials.nc)
            if count == 0:
                return bad("bad nonce count")
        if self.opaque is not None and credentials.opaque != self.opaque:
            return bad("opaque does not match")
        if request_uri is not None and not _same_uri(credentials.uri, request_uri):
            return bad("digest uri does not match the Request-URI")
        issued = self.nonce_issued(credentials.nonce)
        if issued is None:
            return bad("nonce was not issued here")
        ha1 = lookup_ha1(username, self.realm, split_algorithm(algorithm)[0])
        if ha1 is None:
            return bad("unknown user or no secret for this algorithm")
        expected = compute_response(
            ha1=ha1.lower(),
            method=method,
            uri=credentials.uri,
            nonce=credentials.nonce,
            algorithm=algorithm,
            qop=credentials.qop,
            nc=credentials.nc,
            cnonce=credentials.cnonce,
        )
        given = credentials.response.lower().encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(expected.encode("ascii"), given):
            return bad("wrong response")
        if self._expired(issued, now):
            return AuthResult(AuthStatus.STALE, username, "nonce expired", algorithm)
        if not self._accept_count(credentials.nonce, issued, count or _USED_UP, now):
            return AuthResult(AuthStatus.STALE, username, "nonce count not increasing", algorithm)
        return AuthResult(AuthStatus.OK, username, "", algorithm)

    def verify_request(
        self,
        request: Request,
        lookup_ha1: LookupHA1,
        now: float,
        *,
        proxy: bool = False,
        check_uri: bool = True,
    ) -> AuthResult:
        """Verify the request's (Proxy-)Authorization line for our realm; MISSING when none."""
        name = "proxy-authorization" if proxy else "authorization"
        unreadable: AuthResult | None = None
        for value in request.headers.get_lines(name):
            try:
                scheme, params = parse_auth_params(value)
            except DigestError as error:
                unreadable = AuthResult(AuthStatus.BAD, None, str(error))
                continue
            if scheme.lower() == "digest" and params.get("realm") == self.realm:
                return self.verify(
                    value,
                    request.method,
                    lookup_ha1,
                    now,
                    request_uri=str(request.uri) if check_uri else None,
                )
        return unreadable or AuthResult(AuthStatus.MISSING, None, "no credentials for our realm")

    # --- nonce-count table ---
    def _accept_count(self, nonce: str, issued: float, count: int, now: float) -> bool:
        entry = self._counts.get(nonce)
        if entry is None:
            if issued <= self._forgotten_before:
                return False  # its count was evicted: we cannot tell a replay, so refuse it
            self._make_room(now)
        elif count <= entry[0]:
            return False
        self._counts[nonce] = (count, issued)
        return True

    def _make_room(self, now: float) -> None:
        # Entries are added when a nonce is first used, which is soon after it was issued, so the
        # table is close to issue order: expired entries gather at the front.
        counts = self._counts
        while len(counts) >= self.max_tracked_nonces:
            _, (_, issued) = counts.popitem(last=False)
            if not self._expired(issued, now):
                self._forgotten_before = max(self._forgotten_before, issued)

    @property
    def tracked_nonces(self) -> int:
        return len(self._counts)


def _nonce_count(text: str | None) -> int:
    """The value of an `nc` (1 to 8 hex digits); 0 when malformed."""
    if text is None or not _HEX8_RE.fullmatch(text):
        return 0
    return int(text, 16)


def _same_uri(digest_uri: str, request_uri: str) -> bool:
    if digest_uri == request_uri:
        return True
    try:
        return parse_uri(digest_uri) == parse_uri(request_uri)
    except ParseError:
        return False
