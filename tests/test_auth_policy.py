"""The authentication policy: challenges, answers, stale nonces, replays, lock-out, trust.

Phones are played by `answer_challenge` (the client half of our digest module, checked against
the RFC 7616 vectors in test_digest.py); requests are parsed from text as they arrive.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from callkeeper.config import Config
from callkeeper.directory import AuthDecision, AuthPolicy, AuthSettings, Directory, Registrar
from callkeeper.directory.lockout import FailureLimiter
from callkeeper.sip.digest import answer_challenge, compute_ha1
from callkeeper.sip.digest_server import DigestAuthenticator
from callkeeper.sip.headers import Headers
from callkeeper.sip.message import Request, Response
from callkeeper.sip.parser import parse_message
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import parse_uri

REALM = "example.com"
SECRET = b"0123456789abcdef0123456789abcdef"
PHONE = Flow("udp", ("192.0.2.20", 5060), ("192.0.2.1", 5060))
OTHER_PHONE = Flow("udp", ("192.0.2.21", 5060), ("192.0.2.1", 5060))
TRUSTED = Flow("udp", ("10.0.0.5", 5060), ("192.0.2.1", 5060))
CONFIG: dict[str, Any] = {
    "sip": {"domain": REALM, "listen": "udp:192.0.2.1:5060", "trusted_sources": ["10.0.0.0/8"]},
    "users": [
        {"name": "alice", "password": "alice-pw"},
        {"name": "bob", "password": "bob-pw"},
        {"name": "olduser", "ha1": compute_ha1("olduser", REALM, "old-pw")},
    ],
}
_counter = itertools.count(1)


def rnd() -> bytes:
    return next(_counter).to_bytes(16, "big")


def make_policy(**options: Any) -> AuthPolicy:
    directory = Directory.from_config(Config(**CONFIG))
    return AuthPolicy(directory, DigestAuthenticator(SECRET, REALM, nonce_ttl=30.0), **options)


def request_text(
    method: str, *, user: str = "alice", to: str | None = None, extra: str = ""
) -> Request:
    uri = f"sip:{REALM}" if method == "REGISTER" else f"sip:{to or 'bob'}@{REALM}"
    to_uri = f"sip:{user}@{REALM}" if method == "REGISTER" else uri
    n = next(_counter)
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-{n};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{REALM}>;tag=f{n}\r\n"
        f"To: <{to_uri}>\r\n"
        f"Call-ID: call-{n}\r\n"
        f"CSeq: {n} {method}\r\n"
        f"Contact: <sip:{user}@192.0.2.20:5060>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def answered(
    challenge: Response,
    method: str,
    *,
    user: str = "alice",
    username: str | None = None,
    password: str = "alice-pw",
    to: str | None = None,
    nc: int = 1,
) -> Request:
    """The phone's retry: the same request with credentials for the first challenge offered."""
    header = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
    offered = challenge.headers.get_lines(header)
    assert offered, f"no {header} in the challenge"
    probe = request_text(method, user=user, to=to)
    value = answer_challenge(
        offered[0], method, str(probe.uri), username or user, password, "cnonce-1", nc=nc
    )
    name = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
    return request_text(method, user=user, to=to, extra=f"{name}: {value}\r\n")


def expect_challenge(decision: AuthDecision, status: int) -> Response:
    assert not decision.ok and decision.outcome in ("challenge", "stale")
    assert decision.response is not None and decision.response.status == status
    assert decision.response.to_addr.tag  # §8.2.6.2: a final response carries a To tag
    return decision.response


# --- the happy paths ------------------------------------------------------------------------------


def test_register_is_challenged_with_401_then_accepted() -> None:
    policy = make_policy()
    decision = policy.check(request_text("REGISTER"), PHONE, 0.0, rnd())
    challenge = expect_challenge(decision, 401)
    offered = challenge.headers.get_lines("WWW-Authenticate")
    assert [("SHA-256" in v, "MD5" in v) for v in offered] == [(True, False), (False, True)]
    assert all(f'realm="{REALM}"' in v and "qop=" in v for v in offered)
    assert "Proxy-Authenticate" not in challenge.headers
    ok = policy.check(answered(challenge, "REGISTER"), PHONE, 1.0, rnd())
    assert ok == AuthDecision("authenticated", "alice")
    assert ok.ok and ok.response is None


def test_invite_is_challenged_with_407_then_accepted() -> None:
    policy = make_policy()
    challenge = expect_challenge(policy.check(request_text("INVITE"), PHONE, 0.0, rnd()), 407)
    assert len(challenge.headers.get_lines("Proxy-Authenticate")) == 2
    ok = policy.check(answered(challenge, "INVITE"), PHONE, 1.0, rnd())
    assert ok.ok and ok.user == "alice" and ok.outcome == "authenticated"


def test_md5_answers_are_accepted_too() -> None:
    policy = make_policy()
    challenge = expect_challenge(policy.check(request_text("REGISTER"), PHONE, 0.0, rnd()), 401)
    lines = [v for v in challenge.headers.get_lines("WWW-Authenticate") if "MD5" in v]
    md5_only = Response(401, "Unauthorized", Headers([("WWW-Authenticate", v) for v in lines]))
    assert policy.check(answered(md5_only, "REGISTER"), PHONE, 1.0, rnd()).ok


def test_a_user_with_a_stored_md5_ha1_is_offered_md5_only() -> None:
    policy = make_policy()
    decision = policy.check(request_text("REGISTER", user="olduser"), PHONE, 0.0, rnd())
    challenge = expect_challenge(decision, 401)
    (offered,) = challenge.headers.get_lines("WWW-Authenticate")
    assert "algorithm=MD5" in offered
    retry = answered(challenge, "REGISTER", user="olduser", password="old-pw")
    assert policy.check(retry, PHONE, 1.0, rnd()) == AuthDecision("authenticated", "olduser")


# --- what is refused ----------------------------------------------------------------------------


def test_register_for_a_user_we_do_not_have_gets_404() -> None:
    policy = make_policy()
    decision = policy.check(request_text("REGISTER", user="mallory"), PHONE, 0.0, rnd())
    assert decision.outcome == "not_found"
    assert decision.response is not None and decision.response.status == 404
    assert decision.response.to_addr.tag


def test_register_for_another_domain_gets_404() -> None:
    policy = make_policy()
    request = request_text("REGISTER")
    request.headers.set("To", "<sip:alice@elsewhere.example>")
    assert policy.check(request, PHONE, 0.0, rnd()).outcome == "not_found"
    request.headers.set("To", "<tel:+4930123>")
    assert policy.check(request, PHONE, 0.0, rnd()).outcome == "not_found"


def test_register_with_an_unreadable_to_gets_400() -> None:
    request = request_text("REGISTER")
    request.headers.set("To", "<<not an address")
    decision = make_policy().check(request, PHONE, 0.0, rnd())
    assert decision.outcome == "bad_request"
    assert decision.response is not None and decision.response.status == 400


def test_bobs_credentials_cannot_register_alice() -> None:
    policy = make_policy()
    challenge = expect_challenge(policy.check(request_text("REGISTER"), PHONE, 0.0, rnd()), 401)
    retry = answered(challenge, "REGISTER", user="alice", username="bob", password="bob-pw")
    decision = policy.check(retry, PHONE, 1.0, rnd())
    assert decision.outcome == "forbidden" and decision.reason == "credentials of another user"
    assert decision.response is not None and decision.response.status == 403


def test_wrong_password_three_times_gets_403_and_keeps_getting_it() -> None:
    policy = make_policy(max_failures=3, block_time=300.0)
    challenge = expect_challenge(policy.check(request_text("REGISTER"), PHONE, 0.0, rnd()), 401)
    statuses = []
    for attempt in range(3):
        retry = answered(challenge, "REGISTER", password="guess")
        decision = policy.check(retry, PHONE, 1.0 + attempt, rnd())
        assert decision.response is not None
        statuses.append(decision.response.status)
        if decision.response.status == 401:
            challenge = decision.response
    assert statuses == [401, 401, 403]
    # Blocked: even the right password is refused until the block ends ...
    right = answered(challenge, "REGISTER")
    assert policy.check(right, PHONE, 100.0, rnd()).outcome == "forbidden"
    # ... but the same user from another address is not locked out by the guesser ...
    assert policy.check(answered(challenge, "REGISTER"), OTHER_PHONE, 25.0, rnd()).ok
    # ... and after block_time the pair may try again.
    fresh = expect_challenge(policy.check(request_text("REGISTER"), PHONE, 303.0, rnd()), 401)
    assert policy.check(answered(fresh, "REGISTER"), PHONE, 304.0, rnd()).ok


def test_an_unknown_username_looks_exactly_like_a_wrong_password() -> None:
    policy = make_policy(max_failures=2)
    challenge = expect_challenge(policy.check(request_text("INVITE"), PHONE, 0.0, rnd()), 407)
    unknown = answered(challenge, "INVITE", username="mallory", password="x")
    wrong = answered(challenge, "INVITE", password="x")
    first_unknown = policy.check(unknown, PHONE, 1.0, rnd())
    first_wrong = policy.check(wrong, PHONE, 1.0, rnd())
    assert first_unknown.outcome == first_wrong.outcome == "challenge"
    assert first_unknown.response is not None and first_wrong.response is not None
    assert len(first_unknown.response.headers.get_lines("Proxy-Authenticate")) == len(
        first_wrong.response.headers.get_lines("Proxy-Authenticate")
    )
    assert policy.check(unknown, PHONE, 2.0, rnd()).outcome == "forbidden"
    assert policy.check(wrong, PHONE, 2.0, rnd()).outcome == "forbidden"


def test_failures_far_apart_do_not_add_up() -> None:
    policy = make_policy(max_failures=2, failure_window=60.0)
    challenge = expect_challenge(policy.check(request_text("INVITE"), PHONE, 0.0, rnd()), 407)
    wrong = answered(challenge, "INVITE", password="x")
    assert policy.check(wrong, PHONE, 1.0, rnd()).outcome == "challenge"
    assert policy.check(wrong, PHONE, 62.0, rnd()).outcome == "challenge"  # 61 s later
    assert policy.check(wrong, PHONE, 63.0, rnd()).outcome == "forbidden"


def test_a_success_resets_the_failure_count() -> None:
    policy = make_policy(max_failures=2)
    challenge = expect_challenge(policy.check(request_text("INVITE"), PHONE, 0.0, rnd()), 407)
    wrong = answered(challenge, "INVITE", password="x")
    assert policy.check(wrong, PHONE, 1.0, rnd()).outcome == "challenge"
    assert policy.check(answered(challenge, "INVITE"), PHONE, 2.0, rnd()).ok
    assert policy.check(wrong, PHONE, 3.0, rnd()).outcome == "challenge"  # count restarted


def test_garbage_credentials_count_as_failures() -> None:
    policy = make_policy(max_failures=2)
    bad = request_text("REGISTER", extra="Authorization: Digest username=\r\n")
    first = policy.check(bad, PHONE, 0.0, rnd())
    assert first.outcome == "challenge"
    assert policy.check(bad, PHONE, 1.0, rnd()).outcome == "forbidden"


# --- nonces: stale and replayed ------------------------------------------------------------------


def test_an_expired_nonce_gets_a_stale_challenge_without_counting_a_failure() -> None:
    policy = make_policy(max_failures=1)  # one failure would block at once
    challenge = expect_challenge(policy.check(request_text("REGISTER"), PHONE, 0.0, rnd()), 401)
    late = answered(challenge, "REGISTER")
    decision = policy.check(late, PHONE, 31.0, rnd())  # nonce_ttl is 30 s
    renewed = expect_challenge(decision, 401)
    assert decision.outcome == "stale"
    assert all("stale=true" in v for v in renewed.headers.get_lines("WWW-Authenticate"))
    assert policy.check(answered(renewed, "REGISTER"), PHONE, 32.0, rnd()).ok


def test_a_replayed_answer_is_not_accepted_twice() -> None:
    policy = make_policy()
    challenge = expect_challenge(policy.check(request_text("INVITE"), PHONE, 0.0, rnd()), 407)
    retry = answered(challenge, "INVITE")
    assert policy.check(retry, PHONE, 1.0, rnd()).ok
    replay = policy.check(retry, PHONE, 2.0, rnd())  # the same nonce count again
    assert replay.outcome == "stale" and not replay.ok
    # the phone's next request with the next count goes through
    assert policy.check(answered(challenge, "INVITE", nc=2), PHONE, 3.0, rnd()).ok


# --- trusted sources and exemptions ---------------------------------------------------------------


def test_trusted_sources_need_no_credentials() -> None:
    policy = make_policy()
    register = policy.check(request_text("REGISTER"), TRUSTED, 0.0, rnd())
    assert register == AuthDecision("trusted", "alice")
    invite = policy.check(request_text("INVITE", user="bob", to="alice"), TRUSTED, 0.0, rnd())
    assert invite == AuthDecision("trusted", "bob")
    # A gateway's caller is no user of ours: fine, the call goes on for nobody in particular.
    sipp = policy.check(request_text("INVITE", user="sipp", to="alice"), TRUSTED, 0.0, rnd())
    assert sipp == AuthDecision("trusted", None)
    number = request_text("INVITE", to="alice")
    number.headers.set("From", "<tel:+4930123>;tag=1")
    assert policy.check(number, TRUSTED, 0.0, rnd()) == AuthDecision("trusted", None)
    broken = request_text("INVITE", to="alice")
    broken.headers.set("From", "<<broken")
    assert policy.check(broken, TRUSTED, 0.0, rnd()) == AuthDecision("trusted", None)


def test_a_trusted_source_still_cannot_register_an_unknown_user() -> None:
    decision = make_policy().check(request_text("REGISTER", user="mallory"), TRUSTED, 0, rnd())
    assert decision.outcome == "not_found"


@pytest.mark.parametrize("method", ["ACK", "CANCEL"])
def test_ack_and_cancel_are_never_challenged(method: str) -> None:
    decision = make_policy().check(request_text(method), PHONE, 0.0, rnd())
    assert decision == AuthDecision("exempt") and decision.ok


# --- settings, reload, limits ------------------------------------------------------------------


def test_policy_from_settings_and_directory_swap() -> None:
    directory = Directory.from_config(Config(**CONFIG))
    policy = AuthPolicy.from_settings(
        directory, DigestAuthenticator(SECRET, REALM), AuthSettings(max_failures=1)
    )
    assert policy.limiter.max_failures == 1
    # SIGHUP: alice is gone from the new directory.
    users = [user for user in CONFIG["users"] if user["name"] != "alice"]
    policy.directory = Directory.from_config(Config(**(CONFIG | {"users": users})))
    assert policy.check(request_text("REGISTER"), PHONE, 0.0, rnd()).outcome == "not_found"


def test_the_failure_table_is_bounded() -> None:
    limiter = FailureLimiter(max_failures=3, failure_window=60, block_time=60, max_entries=100)
    for n in range(1000):
        limiter.failure((f"user{n}", "192.0.2.66"), 0.0)
    assert len(limiter) == 100
    assert not limiter.blocked(("nobody", "192.0.2.66"), 0.0)
    with pytest.raises(ValueError, match="at least 1"):
        FailureLimiter(max_failures=0)


def test_a_block_ends_and_is_forgotten() -> None:
    limiter = FailureLimiter(max_failures=1, block_time=10.0)
    key = ("alice", "192.0.2.66")
    assert limiter.failure(key, 0.0)
    assert limiter.blocked(key, 9.9)
    assert not limiter.blocked(key, 10.0)
    assert len(limiter) == 0
    limiter.success(key)  # nothing to clear: fine
    assert limiter.failure(("bob", "x"), 0.0)  # max_failures=1 blocks at once


# --- the whole registration, as a phone sees it ---------------------------------------------------


def test_a_phone_registers_through_the_policy_and_the_registrar() -> None:
    policy = make_policy()
    registrar = Registrar()

    def serve(request: Request, now: float) -> Response:
        decision = policy.check(request, PHONE, now, rnd())
        if decision.response is not None:
            return decision.response
        assert decision.user is not None
        return registrar.handle_register(request, PHONE, decision.user, now, to_tag="reg")

    first = serve(request_text("REGISTER"), 0.0)
    assert first.status == 401
    second = serve(answered(first, "REGISTER"), 0.1)
    assert second.status == 200
    assert second.headers.get_list("contact") == ["<sip:alice@192.0.2.20:5060>;expires=3600"]
    (binding,) = registrar.contacts_of("alice", 1.0)
    assert binding.next_hop() == PHONE
    assert parse_uri(binding.uri).user == "alice"
