"""The server side of HTTP Digest for SIP: challenges and the checking of their answers.

The registrar challenges REGISTER and INVITE with 401/407 through `DigestAuthenticator`; the
hashing and the header grammar it shares with the client side are in digest.py.

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

from callkeeper.sip.digest import (
    DigestError,
    build_challenge,
    canonical_algorithm,
    compute_response,
    parse_auth_params,
    parse_credentials,
    quote_string,
    split_algorithm,
)
from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Request
from callkeeper.sip.uri import parse_uri

DEFAULT_ALGORITHMS = ("SHA-256", "MD5")
MIN_RANDOM_BYTES = 8
_MAC_LENGTH = 16
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]+")
_HEX8_RE = re.compile(r"[0-9A-Fa-f]{1,8}")
_USED_UP = 1 << 32  # the count recorded for a nonce answered without qop: nothing is greater

LookupHA1 = Callable[[str, str, str], str | None]
"""lookup_ha1(username, realm, algorithm) → hex HA1 for that base algorithm ("MD5"/"SHA-256")."""


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
