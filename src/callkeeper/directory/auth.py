"""Who may do what: the authentication policy for REGISTER and out-of-dialog requests.

The call manager asks `AuthPolicy.check` before the registrar or the B2BUA sees a request and
gets an `AuthDecision`: either the user the request acts for, or the response to send instead.
The rules, in order:

1. ACK and CANCEL are never challenged (RFC 3261 §22.1: they cannot resubmit credentials).
2. REGISTER: the To URI is the address of record. If it is not one of our users at our domain,
   the answer is 404 (§10.3 step 5), before any challenge. This does reveal which user names
   exist to whoever asks — the RFC requires the 404, and the names are extensions people
   dial anyway. Everywhere else an unknown user is indistinguishable from a wrong password.
3. A request from `sip.trusted_sources` needs no credentials: REGISTER acts for its To user,
   other requests for their From user when that is one of ours (else for nobody in particular).
4. Digest (RFC 7616) otherwise, over `Authorization` for REGISTER (401, WWW-Authenticate) and
   `Proxy-Authorization` for the rest (407, Proxy-Authenticate; we act as the caller's proxy):
   - no credentials for our realm → a challenge, offering only the algorithms the user's secret
     can answer (a stored MD5 HA1 cannot answer SHA-256);
   - a stale nonce, or a replayed nonce count → a new challenge with stale=true, not a failure;
   - wrong credentials (an unknown username included) → a new challenge, and a failure counted
     for (username, source IP); the `max_failures`-th consecutive one → 403, and 403 for that
     pair until `block_time` has passed (`FailureLimiter`);
   - right credentials: for REGISTER the user must be the To user, else 403 (alice may not
     register bob's phones).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from callkeeper.directory.lockout import FailureLimiter
from callkeeper.directory.settings import AuthSettings
from callkeeper.directory.users import Directory
from callkeeper.sip.digest_server import AuthStatus, DigestAuthenticator
from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Request, Response
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import URI

Outcome = Literal[
    "authenticated",  # digest credentials checked out
    "trusted",  # a trusted source: no credentials needed
    "exempt",  # ACK / CANCEL: never challenged
    "challenge",  # 401/407: no (or wrong) credentials yet
    "stale",  # 401/407 with stale=true
    "forbidden",  # 403: blocked, or credentials of another user
    "not_found",  # 404: REGISTER for an address of record we do not serve
    "bad_request",  # 400: no readable To
]
_UNCHALLENGEABLE = frozenset({"ACK", "CANCEL"})


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """Either `response` is None and the request goes on, acting for `user` (None: a trusted
    source or an ACK/CANCEL that names none of our users), or `response` must be sent instead."""

    outcome: Outcome
    user: str | None = None
    response: Response | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.response is None


class AuthPolicy:
    """See the module docstring. Swap `directory` on reload; the failure counts stay."""

    __slots__ = ("authenticator", "directory", "limiter")

    def __init__(
        self,
        directory: Directory,
        authenticator: DigestAuthenticator,
        max_failures: int = 3,
        failure_window: float = 60.0,
        *,
        block_time: float = 300.0,
        max_tracked_pairs: int = 10_000,
    ) -> None:
        self.directory = directory
        self.authenticator = authenticator
        self.limiter = FailureLimiter(max_failures, failure_window, block_time, max_tracked_pairs)

    @classmethod
    def from_settings(
        cls, directory: Directory, authenticator: DigestAuthenticator, settings: AuthSettings
    ) -> AuthPolicy:
        return cls(
            directory,
            authenticator,
            settings.max_failures,
            settings.failure_window,
            block_time=settings.block_time,
            max_tracked_pairs=settings.max_tracked_pairs,
        )

    def check(self, request: Request, flow: Flow, now: float, random_bytes: bytes) -> AuthDecision:
        """Decide about an out-of-dialog request that arrived over `flow`.

        `random_bytes` (at least 8) make the nonce of a challenge and the To tag of a response.
        """
        if request.method in _UNCHALLENGEABLE:
            return AuthDecision("exempt")
        register = request.method == "REGISTER"
        aor_user: str | None = None
        if register:
            try:
                to_uri = request.to_addr.uri
            except ParseError as error:
                return self._reject(request, 400, "bad_request", error.reason, random_bytes)
            aor_user = self._local_user(to_uri)
            if aor_user is None:
                return self._reject(request, 404, "not_found", "no such user", random_bytes)
        ip = flow.remote[0]
        if self.directory.is_trusted(ip):
            return AuthDecision("trusted", aor_user if register else self._from_user(request))
        result = self.authenticator.verify_request(
            request, self.directory.lookup_ha1, now, proxy=not register
        )
        key = (result.username or "", ip)
        if result.status is not AuthStatus.MISSING and self.limiter.blocked(key, now):
            return self._reject(request, 403, "forbidden", "too many failures", random_bytes)
        if result.status is AuthStatus.MISSING:
            hint = aor_user if register else self._from_user(request)
            return self._challenge(request, hint, now, random_bytes, stale=False)
        if result.status is AuthStatus.STALE:
            return self._challenge(request, result.username, now, random_bytes, stale=True)
        if result.status is AuthStatus.BAD:
            if self.limiter.failure(key, now):
                return self._reject(request, 403, "forbidden", result.reason, random_bytes)
            return self._challenge(request, result.username, now, random_bytes, stale=False)
        self.limiter.success(key)
        if register and result.username != aor_user:
            reason = "credentials of another user"
            return self._reject(request, 403, "forbidden", reason, random_bytes)
        return AuthDecision("authenticated", result.username)

    # --- helpers --------------------------------------------------------------------------------
    def _local_user(self, uri: URI) -> str | None:
        """The user an address of record names, if it is one of ours at our domain."""
        if not uri.is_sip or uri.user is None or not self.directory.is_local_host(uri.host):
            return None
        name = unquote(uri.user)
        return name if name in self.directory else None

    def _from_user(self, request: Request) -> str | None:
        try:
            uri = request.from_addr.uri
        except ParseError:
            return None
        if not uri.is_sip or uri.user is None:
            return None
        name = unquote(uri.user)
        return name if name in self.directory else None

    def _challenge(
        self,
        request: Request,
        username: str | None,
        now: float,
        random_bytes: bytes,
        *,
        stale: bool,
    ) -> AuthDecision:
        register = request.method == "REGISTER"
        authenticator = self.authenticator
        algorithms = self.directory.algorithms_for(username, authenticator.algorithms)
        challenges = authenticator.challenge(now, random_bytes, stale, algorithms=algorithms)
        status = 401 if register else 407
        response = request.create_response(status, to_tag=_to_tag(random_bytes))
        header = "WWW-Authenticate" if register else "Proxy-Authenticate"
        for value in challenges:
            response.headers.add(header, value)
        outcome: Outcome = "stale" if stale else "challenge"
        return AuthDecision(outcome, None, response, "stale nonce" if stale else "")

    def _reject(
        self, request: Request, status: int, outcome: Outcome, reason: str, random_bytes: bytes
    ) -> AuthDecision:
        response = request.create_response(status, to_tag=_to_tag(random_bytes))
        return AuthDecision(outcome, None, response, reason)


def _to_tag(random_bytes: bytes) -> str:
    # Derived, not the raw bytes: the nonce already shows those, and tags should look unrelated.
    return hashlib.blake2s(b"to-tag\x00" + random_bytes, digest_size=6).hexdigest()
