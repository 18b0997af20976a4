"""Digest authentication: RFC 7616/2617 vectors, header grammar, nonces, replay, round trips."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callkeeper.sip.digest import (
    DigestChallenge,
    DigestError,
    StoredSecret,
    answer_challenge,
    build_challenge,
    canonical_algorithm,
    choose_challenge,
    compute_ha1,
    compute_response,
    parse_auth_params,
    parse_challenge,
    parse_credentials,
    quote_string,
    split_algorithm,
)
from callkeeper.sip.digest_server import AuthResult, AuthStatus, DigestAuthenticator
from callkeeper.sip.message import Request
from callkeeper.sip.parser import parse_message

# --- RFC 7616 §3.9.1 -------------------------------------------------------------------------

RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_REALM = "http-auth@example.org"
RFC7616_MD5 = "8ca523f5e9506fed4657c9700eebdbec"
RFC7616_SHA256 = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def _rfc7616_challenge(algorithm: str) -> str:
    # As printed in the RFC, folded lines joined.
    return (
        f'Digest realm="{RFC7616_REALM}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )


def _rfc7616_authorization(algorithm: str, response: str) -> str:
    return (
        f'Digest username="Mufasa", realm="{RFC7616_REALM}", uri="/dir/index.html", '
        f'algorithm={algorithm}, nonce="{RFC7616_NONCE}", nc=00000001, '
        f'cnonce="{RFC7616_CNONCE}", qop=auth, response="{response}", opaque="{RFC7616_OPAQUE}"'
    )


@pytest.mark.parametrize(
    ("algorithm", "expected"), [("MD5", RFC7616_MD5), ("SHA-256", RFC7616_SHA256)]
)
def test_rfc7616_example_response(algorithm: str, expected: str) -> None:
    ha1 = compute_ha1("Mufasa", RFC7616_REALM, "Circle of Life", algorithm)
    response = compute_response(
        ha1=ha1,
        method="GET",
        uri="/dir/index.html",
        nonce=RFC7616_NONCE,
        algorithm=algorithm,
        qop="auth",
        nc="00000001",
        cnonce=RFC7616_CNONCE,
    )
    assert response == expected


@pytest.mark.parametrize(
    ("algorithm", "expected"), [("MD5", RFC7616_MD5), ("SHA-256", RFC7616_SHA256)]
)
def test_rfc7616_example_client_answer(algorithm: str, expected: str) -> None:
    header = answer_challenge(
        _rfc7616_challenge(algorithm),
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle of Life",
        RFC7616_CNONCE,
        1,
    )
    credentials = parse_credentials(header)
    assert credentials.response == expected
    assert credentials.qop == "auth"  # chosen from "auth, auth-int"
    assert credentials.nc == "00000001"
    assert credentials.opaque == RFC7616_OPAQUE
    assert credentials.algorithm == algorithm


@pytest.mark.parametrize(
    ("algorithm", "expected"), [("MD5", RFC7616_MD5), ("SHA-256", RFC7616_SHA256)]
)
def test_rfc7616_example_authorization_parses(algorithm: str, expected: str) -> None:
    credentials = parse_credentials(_rfc7616_authorization(algorithm, expected))
    assert credentials.username == "Mufasa"
    assert credentials.realm == RFC7616_REALM
    assert credentials.uri == "/dir/index.html"
    assert credentials.nonce == RFC7616_NONCE
    assert credentials.cnonce == RFC7616_CNONCE
    assert credentials.response == expected


def test_rfc7616_challenges_parse() -> None:
    challenge = parse_challenge(_rfc7616_challenge("SHA-256"))
    assert challenge == DigestChallenge(
        realm=RFC7616_REALM,
        nonce=RFC7616_NONCE,
        algorithm="SHA-256",
        qop=("auth", "auth-int"),
        opaque=RFC7616_OPAQUE,
        stale=False,
    )


# --- RFC 2617 §3.5 ------------------------------------------------------------------------------

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_rfc2617_example() -> None:
    header = answer_challenge(
        RFC2617_CHALLENGE, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", "0a4f113b", 1
    )
    credentials = parse_credentials(header)
    assert credentials.response == "6629fae49393a05397450978507c4ef1"
    assert credentials.algorithm == "MD5"  # the default when the challenge names none


def test_rfc2069_style_answer_without_qop() -> None:
    challenge = 'Digest realm="r", nonce="n"'
    header = answer_challenge(challenge, "REGISTER", "sip:r", "u", "p", "cn", 1)
    credentials = parse_credentials(header)
    assert credentials.qop is None and credentials.nc is None and credentials.cnonce is None
    ha1 = compute_ha1("u", "r", "p")
    assert credentials.response == compute_response(
        ha1=ha1, method="REGISTER", uri="sip:r", nonce="n"
    )


def test_answer_refuses_auth_int_only() -> None:
    with pytest.raises(DigestError, match="auth-int"):
        answer_challenge(
            'Digest realm="r", nonce="n", qop="auth-int"', "INVITE", "sip:x", "u", "p", "c"
        )


def test_answer_uses_username_star_for_non_ascii() -> None:
    header = answer_challenge(
        'Digest realm="r", nonce="n", qop="auth"', "INVITE", "sip:x", "Jäsøn", "p", "c"
    )
    assert "username*=UTF-8''J%C3%A4s%C3%B8n" in header
    assert parse_credentials(header).username == "Jäsøn"


def test_answer_escapes_quotes_in_username() -> None:
    header = answer_challenge('Digest realm="r", nonce="n"', "INVITE", "sip:x", 'a"b\\c', "p", "c")
    assert 'username="a\\"b\\\\c"' in header
    assert parse_credentials(header).username == 'a"b\\c'


# --- algorithms --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical", "split"),
    [
        ("md5", "MD5", ("MD5", False)),
        ("MD5-sess", "MD5-sess", ("MD5", True)),
        ("sha-256", "SHA-256", ("SHA-256", False)),
        (" SHA-256-SESS ", "SHA-256-sess", ("SHA-256", True)),
    ],
)
def test_algorithm_names(name: str, canonical: str, split: tuple[str, bool]) -> None:
    assert canonical_algorithm(name) == canonical
    assert split_algorithm(name) == split


@pytest.mark.parametrize("name", ["SHA-512-256", "SHA1", "", "-sess", "MD5-sesss"])
def test_unsupported_algorithms(name: str) -> None:
    with pytest.raises(DigestError):
        canonical_algorithm(name)


def test_session_variant_hashes_nonce_and_cnonce_into_ha1() -> None:
    ha1 = compute_ha1("u", "r", "p", "MD5")
    plain = compute_response(
        ha1=ha1, method="M", uri="sip:x", nonce="n", algorithm="MD5", qop="auth", nc="1", cnonce="c"
    )
    session = compute_response(
        ha1=ha1,
        method="M",
        uri="sip:x",
        nonce="n",
        algorithm="MD5-sess",
        qop="auth",
        nc="1",
        cnonce="c",
    )
    assert plain != session
    session_ha1 = compute_ha1("ignored", "", "", "MD5")  # any value: only the shape matters
    assert len(session_ha1) == 32
    assert len(compute_ha1("u", "r", "p", "SHA-256-sess")) == 64


# --- header grammar ----------------------------------------------------------------------------


def test_parse_auth_params_basics() -> None:
    scheme, params = parse_auth_params(
        'DIGEST  UserName = "bob" ,REALM="a, b=c" , , nc=00000001,qop=auth,'
        ' uri="sip:x;a=\\"q\\"",empty=""'
    )
    assert scheme == "DIGEST"
    assert params == {
        "username": "bob",
        "realm": "a, b=c",
        "nc": "00000001",
        "qop": "auth",
        "uri": 'sip:x;a="q"',
        "empty": "",
    }


def test_parse_auth_params_scheme_only() -> None:
    assert parse_auth_params("Digest") == ("Digest", {})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "scheme"),
        ('"Digest" realm="x"', "scheme"),
        ("Digest,realm=x", "scheme"),
        ('Digest realm="x", realm="y"', "repeated"),
        ('Digest realm="x", REALM="y"', "repeated"),  # names are case-insensitive
        ('Digest realm="x" nonce="y"', "expected ','"),
        ('Digest realm="x', "unterminated"),
        ("Digest realm", "name=value"),
        ("Digest realm x", "name=value"),
        ('Digest ="x"', "name=value"),
        ("Digest realm=", "bad value"),
        ("Digest realm=,nonce=x", "bad value"),
        ('Digest realm=ab"c', "bad value"),
        ("Digest realm=a b", "expected ','"),
    ],
)
def test_parse_auth_params_errors(value: str, message: str) -> None:
    with pytest.raises(DigestError, match=message):
        parse_auth_params(value)


def test_quote_string_rejects_control_characters() -> None:
    assert quote_string('a"b') == '"a\\"b"'
    for bad in ("a\r\nWWW-Authenticate: x", "a\x00"):
        with pytest.raises(DigestError):
            quote_string(bad)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('Basic realm="x"', "not a Digest challenge"),
        ('Digest nonce="n"', "realm or nonce"),
        ('Digest realm="r"', "realm or nonce"),
        ('Digest realm="r", nonce="n", algorithm=SHA-512-256', "unsupported"),
    ],
)
def test_parse_challenge_errors(value: str, message: str) -> None:
    with pytest.raises(DigestError, match=message):
        parse_challenge(value)


def test_parse_challenge_stale_and_defaults() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", stale=TRUE')
    assert challenge.stale
    assert challenge.algorithm == "MD5"
    assert challenge.qop == ()
    assert challenge.opaque is None


def test_build_challenge_round_trip() -> None:
    value = build_challenge(
        realm='we "quote"', nonce="abc", algorithm="sha-256", opaque="op", stale=True
    )
    assert value.startswith("Digest ")
    assert parse_challenge(value) == DigestChallenge(
        realm='we "quote"', nonce="abc", algorithm="SHA-256", qop=("auth",), opaque="op", stale=True
    )
    assert "qop" not in build_challenge(realm="r", nonce="n", algorithm="MD5", qop=())


GOOD = 'Digest username="u", realm="r", nonce="n", uri="sip:x", response="0"'


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('Basic username="u"', "not Digest"),
        ('Digest realm="r", nonce="n", uri="sip:x", response="0"', "missing username"),
        (GOOD.replace('realm="r", ', ""), "missing realm"),
        (GOOD.replace('nonce="n", ', ""), "missing nonce"),
        (GOOD.replace('uri="sip:x", ', ""), "missing uri"),
        (GOOD.replace(', response="0"', ""), "missing response"),
        (GOOD + ", username*=UTF-8''u", "both username"),
        (GOOD + ", qop=auth", "qop without nc"),
        (GOOD + ", qop=auth, nc=00000001", "qop without nc"),
        (GOOD.replace('username="u"', "username*=ISO-8859-1''u"), "UTF-8"),
        (GOOD.replace('username="u"', "username*=u"), "UTF-8"),
        (GOOD.replace('username="u"', "username*=UTF-8''%FF"), "not valid UTF-8"),
        (GOOD + ", algorithm=SHA-512", "unsupported"),
    ],
)
def test_parse_credentials_errors(value: str, message: str) -> None:
    with pytest.raises(DigestError, match=message):
        parse_credentials(value)


def test_parse_credentials_username_star_and_userhash() -> None:
    credentials = parse_credentials(
        GOOD.replace('username="u"', "username*=utf-8'en'J%C3%A4s%C3%B8n") + ", userhash=true"
    )
    assert credentials.username == "Jäsøn"
    assert credentials.userhash
    assert not parse_credentials(GOOD).userhash


def test_parse_credentials_tolerates_quoted_tokens() -> None:
    # Some phones quote qop, algorithm and nc; accept it.
    credentials = parse_credentials(
        GOOD + ', qop="AUTH", nc="00000002", cnonce="c", algorithm="sha-256"'
    )
    assert credentials.qop == "auth"
    assert credentials.nc == "00000002"
    assert credentials.algorithm == "SHA-256"


def test_choose_challenge_picks_the_first_answerable() -> None:
    values = [
        "Basic realm=x",
        'Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth-int"',
        'Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth"',
        'Digest realm="r", nonce="n", algorithm=MD5, qop="auth"',
    ]
    assert choose_challenge(values) == values[3]
    assert choose_challenge(['Digest realm="r", nonce="n"']) == 'Digest realm="r", nonce="n"'
    assert choose_challenge(values[:3]) is None


# --- the server --------------------------------------------------------------------------------

SECRET = b"0123456789abcdef-server-secret"
REALM = "example.com"
USERS = {"alice": "wonderland", "bob": "builder"}
TTL = 300.0
T0 = 1_700_000_000.0


def lookup(username: str, realm: str, algorithm: str) -> str | None:
    password = USERS.get(username)
    return None if password is None else compute_ha1(username, realm, password, algorithm)


def _rand(n: int = 0) -> bytes:
    return bytes([n % 256]) * 16


def _auth(**kw: object) -> DigestAuthenticator:
    return DigestAuthenticator(SECRET, REALM, TTL, **kw)  # type: ignore[arg-type]


def _answer(
    challenge: str,
    nc: int = 1,
    *,
    user: str = "alice",
    password: str | None = None,
    method: str = "REGISTER",
    uri: str = "sip:example.com",
) -> str:
    pw = USERS.get(user, "x") if password is None else password
    return answer_challenge(challenge, method, uri, user, pw, "cnonce-1", nc)


def test_challenge_offers_sha256_first_with_one_nonce() -> None:
    auth = _auth()
    values = auth.challenge(T0, _rand())
    assert len(values) == 2
    first, second = (parse_challenge(v) for v in values)
    assert (first.algorithm, second.algorithm) == ("SHA-256", "MD5")
    assert first.nonce == second.nonce
    assert first.realm == REALM
    assert first.qop == ("auth",)
    assert not first.stale and first.opaque is None
    assert auth.nonce_issued(first.nonce) == T0


def test_challenge_options() -> None:
    auth = _auth(opaque="xyz", algorithms=["md5"])
    (value,) = auth.challenge(T0, _rand(), stale=True)
    challenge = parse_challenge(value)
    assert (challenge.algorithm, challenge.opaque, challenge.stale) == ("MD5", "xyz", True)
    narrowed = _auth().challenge(T0, _rand(), algorithms=["md5"])
    assert [parse_challenge(v).algorithm for v in narrowed] == ["MD5"]
    assert _auth().challenge(T0, _rand(), algorithms=[]) == []
    with pytest.raises(ValueError, match="accepts"):
        _auth(algorithms=["MD5"]).challenge(T0, _rand(), algorithms=["SHA-256"])


def test_nonces_differ_with_random_bytes_and_time() -> None:
    auth = _auth()
    nonces = {
        auth.make_nonce(T0, _rand(1)),
        auth.make_nonce(T0, _rand(2)),
        auth.make_nonce(T0 + 1, _rand(1)),
    }
    assert len(nonces) == 3
    for nonce in nonces:
        assert all(ch.isalnum() or ch in "-_" for ch in nonce)


@pytest.mark.parametrize("algorithm_index", [0, 1])
def test_verify_ok(algorithm_index: int) -> None:
    auth = _auth()
    challenge = auth.challenge(T0, _rand())[algorithm_index]
    result = auth.verify(_answer(challenge), "REGISTER", lookup, T0 + 1)
    assert result == AuthResult(AuthStatus.OK, "alice", "", ("SHA-256", "MD5")[algorithm_index])
    assert result.ok
    assert auth.tracked_nonces == 1


def test_increasing_nonce_count_is_accepted_and_replay_rejected() -> None:
    auth = _auth()
    challenge = auth.challenge(T0, _rand())[0]
    assert auth.verify(_answer(challenge, 1), "REGISTER", lookup, T0).ok
    assert auth.verify(_answer(challenge, 2), "REGISTER", lookup, T0).ok
    replay = auth.verify(_answer(challenge, 2), "REGISTER", lookup, T0)
    assert replay.status is AuthStatus.STALE
    assert replay.reason == "nonce count not increasing"
    older = auth.verify(_answer(challenge, 1), "REGISTER", lookup, T0)
    assert older.status is AuthStatus.STALE
    assert auth.verify(_answer(challenge, 5), "REGISTER", lookup, T0).ok  # gaps are fine


def test_expired_nonce_is_stale_only_when_the_digest_is_right() -> None:
    auth = _auth()
    challenge = auth.challenge(T0, _rand())[0]
    late = T0 + TTL + 1
    stale = auth.verify(_answer(challenge), "REGISTER", lookup, late)
    assert stale.status is AuthStatus.STALE
    assert stale.reason == "nonce expired"
    assert stale.username == "alice"
    wrong = auth.verify(_answer(challenge, password="nope"), "REGISTER", lookup, late)
    assert wrong.status is AuthStatus.BAD
    # still valid at exactly the ttl; a nonce from "the future" (another node's clock) too
    assert auth.verify(_answer(challenge), "REGISTER", lookup, T0 + TTL).ok
    assert auth.verify(_answer(challenge, 2), "REGISTER", lookup, T0 - TTL).ok
    future = auth.verify(_answer(challenge, 3), "REGISTER", lookup, T0 - TTL - 1)
    assert future.status is AuthStatus.STALE


def _tamper(nonce: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4)))
    raw[0] ^= 0x01  # move the timestamp
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_tampered_nonce_is_bad() -> None:
    auth = _auth()
    challenge = auth.challenge(T0, _rand())[0]
    nonce = parse_challenge(challenge).nonce
    forged = challenge.replace(nonce, _tamper(nonce))
    result = auth.verify(_answer(forged), "REGISTER", lookup, T0)
    assert result.status is AuthStatus.BAD
    assert result.reason == "nonce was not issued here"


@pytest.mark.parametrize(
    "nonce",
    [
        "not/base64+",
        "A",  # impossible base64 length
        "AAAA",  # too short
        "é",
        base64.urlsafe_b64encode(b"\x00" * 40).decode().rstrip("="),  # right size, wrong MAC
    ],
)
def test_foreign_nonces_are_not_ours(nonce: str) -> None:
    assert _auth().nonce_issued(nonce) is None


def test_nonce_from_another_secret_or_realm_is_bad() -> None:
    challenge = _auth().challenge(T0, _rand())[0]
    other_secret = DigestAuthenticator(b"another-secret-of-16+", REALM, TTL)
    assert other_secret.verify(_answer(challenge), "REGISTER", lookup, T0).reason == (
        "nonce was not issued here"
    )
    nonce = parse_challenge(challenge).nonce
    other_realm = DigestAuthenticator(SECRET, "other.example", TTL)
    assert other_realm.nonce_issued(nonce) is None


def _bad_reason(auth: DigestAuthenticator, header: str, **kw: object) -> str:
    result = auth.verify(header, "REGISTER", lookup, T0, **kw)  # type: ignore[arg-type]
    assert result.status is AuthStatus.BAD
    return result.reason


def test_verify_bad_cases() -> None:
    auth = _auth(opaque="op")
    challenge = auth.challenge(T0, _rand())[1]  # MD5
    good = _answer(challenge)
    assert auth.verify(good, "REGISTER", lookup, T0).ok

    assert "missing" in _bad_reason(auth, "Digest realm=x")
    assert _bad_reason(auth, good + ", userhash=true") == "userhash is not supported"
    assert _bad_reason(auth, good.replace(f'realm="{REALM}"', 'realm="evil"')) == (
        "credentials for another realm"
    )
    assert _bad_reason(auth, _answer(challenge, password="wrong")) == "wrong response"
    assert _bad_reason(auth, _answer(challenge, user="mallory")) == (
        "unknown user or no secret for this algorithm"
    )
    assert _bad_reason(auth, good.replace('opaque="op"', 'opaque="other"')) == (
        "opaque does not match"
    )
    assert _bad_reason(auth, good.replace(', opaque="op"', "")) == "opaque does not match"
    assert _bad_reason(auth, good.replace("qop=auth", "qop=auth-int")) == (
        "qop=auth-int is not supported"
    )
    for nc in ("00000000", "0000000g", "123456789", ""):
        assert _bad_reason(auth, good.replace("nc=00000001", f'nc="{nc}"')) == "bad nonce count"
    md5_only = _auth(algorithms=["MD5"], opaque="op")
    sha = _answer(auth.challenge(T0, _rand())[0])
    assert _bad_reason(md5_only, sha) == "algorithm SHA-256 was not offered"
    # a response that is not hex, or not even ASCII, is just wrong
    assert _bad_reason(auth, good.replace('response="', 'response="é')) == "wrong response"


def test_response_hex_case_is_ignored() -> None:
    auth = _auth()
    header = _answer(auth.challenge(T0, _rand())[0])
    response = parse_credentials(header).response
    assert auth.verify(header.replace(response, response.upper()), "REGISTER", lookup, T0).ok


def test_uri_check() -> None:
    auth = _auth()
    challenge = auth.challenge(T0, _rand())[0]
    header = _answer(challenge, uri="sip:example.com;transport=tcp")
    assert auth.verify(
        header, "REGISTER", lookup, T0, request_uri="sip:EXAMPLE.com;transport=tcp"
    ).ok
    header = _answer(challenge, 2, uri="sip:example.com")
    result = auth.verify(header, "REGISTER", lookup, T0, request_uri="sip:other.com")
    assert result.reason == "digest uri does not match the Request-URI"
    header = _answer(challenge, 3, uri="/not/a/sip/uri")
    result = auth.verify(header, "REGISTER", lookup, T0, request_uri="sip:example.com")
    assert result.reason == "digest uri does not match the Request-URI"


def test_method_is_part_of_the_digest() -> None:
    auth = _auth()
    header = _answer(auth.challenge(T0, _rand())[0], method="REGISTER")
    assert auth.verify(header, "INVITE", lookup, T0).reason == "wrong response"


@pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-256-sess"])
def test_session_algorithms_round_trip(algorithm: str) -> None:
    auth = _auth(algorithms=[algorithm])
    seen: list[str] = []

    def recording_lookup(username: str, realm: str, base: str) -> str | None:
        seen.append(base)
        return lookup(username, realm, base)

    (challenge,) = auth.challenge(T0, _rand())
    assert auth.verify(_answer(challenge), "REGISTER", recording_lookup, T0).ok
    assert seen == [algorithm.removesuffix("-sess")]  # lookup gets the base algorithm


def test_no_qop_is_refused_by_default_and_single_use_when_allowed() -> None:
    strict = _auth()
    challenge = strict.challenge(T0, _rand())[1]
    legacy = challenge.replace(', qop="auth"', "")
    assert _bad_reason(strict, _answer(legacy)) == "qop=auth is required"

    lenient = _auth(allow_no_qop=True)
    assert lenient.verify(_answer(legacy), "REGISTER", lookup, T0).ok
    again = lenient.verify(_answer(legacy), "REGISTER", lookup, T0)
    assert again.status is AuthStatus.STALE  # the nonce is used up: a replay gets nothing
    with_qop = lenient.verify(_answer(challenge, 99), "REGISTER", lookup, T0)
    assert with_qop.status is AuthStatus.STALE


def test_username_star_round_trip() -> None:
    auth = _auth()
    users = {"Jäsøn": "pässword"}

    def lookup_utf8(username: str, realm: str, algorithm: str) -> str | None:
        password = users.get(username)
        return None if password is None else compute_ha1(username, realm, password, algorithm)

    challenge = auth.challenge(T0, _rand())[0]
    header = answer_challenge(challenge, "REGISTER", "sip:x", "Jäsøn", "pässword", "c", 1)
    result = auth.verify(header, "REGISTER", lookup_utf8, T0)
    assert result.ok and result.username == "Jäsøn"


# --- the nonce-count table ---------------------------------------------------------------------


def test_table_is_bounded_and_evicts_expired_nonces_silently() -> None:
    auth = _auth(max_tracked_nonces=2)
    first = auth.challenge(T0, _rand(1))[0]
    assert auth.verify(_answer(first), "REGISTER", lookup, T0).ok
    second = auth.challenge(T0 + TTL, _rand(2))[0]
    assert auth.verify(_answer(second), "REGISTER", lookup, T0 + TTL).ok
    later = T0 + TTL + 10  # `first` has expired, `second` has not
    third = auth.challenge(later, _rand(3))[0]
    assert auth.verify(_answer(third), "REGISTER", lookup, later).ok
    assert auth.tracked_nonces == 2
    # evicting an expired nonce raised no watermark: a fresh nonce issued earlier still works
    fourth_issued = T0 + TTL + 5
    fourth = auth.challenge(fourth_issued, _rand(4))[0]
    assert auth.verify(_answer(fourth), "REGISTER", lookup, later).ok


def test_evicting_a_live_count_makes_older_untracked_nonces_stale() -> None:
    auth = _auth(max_tracked_nonces=2)
    a = auth.challenge(T0, _rand(1))[0]
    b = auth.challenge(T0 + 1, _rand(2))[0]
    c = auth.challenge(T0 + 2, _rand(3))[0]
    unused = auth.challenge(T0 - 0.5, _rand(4))[0]
    assert auth.verify(_answer(a, 1), "REGISTER", lookup, T0 + 3).ok
    assert auth.verify(_answer(b, 1), "REGISTER", lookup, T0 + 3).ok
    assert auth.verify(_answer(c, 1), "REGISTER", lookup, T0 + 3).ok  # evicts `a` (live)
    assert auth.tracked_nonces == 2
    # `a`'s count is forgotten; replaying it must not succeed
    replay = auth.verify(_answer(a, 1), "REGISTER", lookup, T0 + 3)
    assert replay.status is AuthStatus.STALE
    # nor may any other nonce issued before `a` that we are not tracking
    assert auth.verify(_answer(unused), "REGISTER", lookup, T0 + 3).status is AuthStatus.STALE
    # tracked ones carry on, and newer nonces are unaffected
    assert auth.verify(_answer(b, 2), "REGISTER", lookup, T0 + 3).ok
    d = auth.challenge(T0 + 3, _rand(5))[0]
    assert auth.verify(_answer(d), "REGISTER", lookup, T0 + 3).ok


def test_bad_answers_do_not_enter_the_table() -> None:
    auth = _auth()
    challenge = auth.challenge(T0, _rand())[0]
    assert not auth.verify(_answer(challenge, 7, password="x"), "REGISTER", lookup, T0).ok
    assert auth.tracked_nonces == 0
    assert auth.verify(_answer(challenge, 1), "REGISTER", lookup, T0).ok


# --- constructor and inputs --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": b"short"},
        {"nonce_ttl": 0.0},
        {"max_tracked_nonces": 0},
        {"algorithms": []},
        {"algorithms": ["SHA-1"]},
        {"realm": "bad\r\nrealm"},
    ],
)
def test_constructor_rejects(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"secret": SECRET, "realm": REALM, "nonce_ttl": TTL}
    args.update(kwargs)
    with pytest.raises((ValueError, DigestError)):
        DigestAuthenticator(**args)  # type: ignore[arg-type]


def test_make_nonce_needs_enough_randomness() -> None:
    with pytest.raises(ValueError, match="random bytes"):
        _auth().make_nonce(T0, b"1234567")


# --- StoredSecret ------------------------------------------------------------------------------


def test_stored_secret_from_password_answers_everything() -> None:
    secret = StoredSecret(password="wonderland")
    assert secret.ha1_for("alice", REALM, "SHA-256") == compute_ha1(
        "alice", REALM, "wonderland", "SHA-256"
    )
    assert secret.algorithms(("SHA-256", "MD5")) == ("SHA-256", "MD5")


def test_stored_ha1_is_md5_unless_configured() -> None:
    md5 = compute_ha1("alice", REALM, "wonderland", "MD5")
    secret = StoredSecret(ha1=md5.upper())
    assert secret.ha1_for("alice", REALM, "MD5") == md5
    assert secret.ha1_for("alice", REALM, "MD5-sess") == md5
    assert secret.ha1_for("alice", REALM, "SHA-256") is None
    assert secret.algorithms(("SHA-256", "MD5", "MD5-sess")) == ("MD5", "MD5-sess")
    sha = StoredSecret(ha1="ab" * 32, ha1_algorithm="SHA-256")
    assert sha.ha1_for("alice", REALM, "SHA-256") == "ab" * 32
    assert sha.algorithms(("SHA-256", "MD5")) == ("SHA-256",)
    nothing = StoredSecret()
    assert nothing.ha1_for("alice", REALM, "MD5") is None
    assert nothing.algorithms(("MD5",)) == ()


def test_stored_md5_ha1_verifies_when_the_challenge_is_narrowed() -> None:
    auth = _auth()
    secret = StoredSecret(ha1=compute_ha1("alice", REALM, "wonderland"))
    values = auth.challenge(T0, _rand(), algorithms=secret.algorithms(auth.algorithms))
    header = _answer(choose_challenge(values) or "")
    result = auth.verify(header, "REGISTER", lambda u, r, a: secret.ha1_for(u, r, a), T0)
    assert result.ok and result.algorithm == "MD5"


# --- verify_request ----------------------------------------------------------------------------


def _request(*auth_lines: tuple[str, str]) -> Request:
    head = (
        "REGISTER sip:example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1\r\n"
        "From: <sip:alice@example.com>;tag=a\r\n"
        "To: <sip:alice@example.com>\r\n"
        "Call-ID: c1\r\n"
        "CSeq: 2 REGISTER\r\n"
    )
    head += "".join(f"{name}: {value}\r\n" for name, value in auth_lines)
    message = parse_message((head + "Content-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def test_verify_request_picks_our_realm() -> None:
    auth = _auth()
    challenge = auth.challenge(T0, _rand())[0]
    other = answer_challenge(
        'Digest realm="other", nonce="n", qop="auth"', "REGISTER", "sip:example.com", "a", "b", "c"
    )
    request = _request(("Authorization", other), ("Authorization", _answer(challenge)))
    assert auth.verify_request(request, lookup, T0).ok


def test_verify_request_missing_unreadable_and_proxy() -> None:
    auth = _auth()
    assert auth.verify_request(_request(), lookup, T0).status is AuthStatus.MISSING
    other = 'Digest username="a", realm="other", nonce="n", uri="sip:x", response="0"'
    assert auth.verify_request(_request(("Authorization", other)), lookup, T0).status is (
        AuthStatus.MISSING
    )
    broken = auth.verify_request(_request(("Authorization", 'Digest realm="x')), lookup, T0)
    assert broken.status is AuthStatus.BAD and "unterminated" in broken.reason
    challenge = auth.challenge(T0, _rand())[0]
    proxied = _request(("Proxy-Authorization", _answer(challenge)))
    assert auth.verify_request(proxied, lookup, T0).status is AuthStatus.MISSING
    assert auth.verify_request(proxied, lookup, T0, proxy=True).ok


def test_verify_request_checks_the_request_uri_unless_told_not_to() -> None:
    auth = _auth()
    challenge = auth.challenge(T0, _rand())[0]
    request = _request(("Authorization", _answer(challenge, uri="sip:elsewhere.com")))
    assert auth.verify_request(request, lookup, T0).reason == (
        "digest uri does not match the Request-URI"
    )
    assert auth.verify_request(request, lookup, T0, check_uri=False).ok


# --- properties --------------------------------------------------------------------------------

_text = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\x7f"),
    min_size=1,
    max_size=12,
)


@settings(max_examples=200)
@given(
    username=_text,
    password=st.text(max_size=16),
    method=st.sampled_from(["REGISTER", "INVITE", "BYE", "SUBSCRIBE"]),
    uri=st.sampled_from(
        ["sip:example.com", "sip:bob@example.com;transport=tcp", "sips:x@[::1]:5061"]
    ),
    algorithm_index=st.integers(0, 1),
    cnonce=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20),
    nc=st.integers(1, 0xFFFFFFFF),
    random=st.binary(min_size=8, max_size=32),
    age=st.floats(0, TTL),
)
def test_client_answer_and_server_verify_round_trip(
    username: str,
    password: str,
    method: str,
    uri: str,
    algorithm_index: int,
    cnonce: str,
    nc: int,
    random: bytes,
    age: float,
) -> None:
    auth = _auth()

    def lookup_one(user: str, realm: str, algorithm: str) -> str | None:
        return compute_ha1(user, realm, password, algorithm) if user == username else None

    challenge = auth.challenge(T0, random)[algorithm_index]
    header = answer_challenge(challenge, method, uri, username, password, cnonce, nc)
    result = auth.verify(header, method, lookup_one, T0 + age, request_uri=uri)
    assert result.ok, result.reason
    assert result.username == username
    assert auth.verify(header, method, lookup_one, T0 + age).status is AuthStatus.STALE  # replay
    wrong = answer_challenge(challenge, method, uri, username, password + "x", cnonce, nc + 1)
    assert auth.verify(wrong, method, lookup_one, T0 + age).status is AuthStatus.BAD


@given(st.text(max_size=80))
def test_verify_never_raises_on_garbage(header: str) -> None:
    result = _auth().verify(header, "REGISTER", lookup, T0)
    assert result.status is AuthStatus.BAD


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["username", "realm", "nonce", "uri", "qop", "x-custom"]),
            st.text(
                st.characters(exclude_categories=("Cs", "Co"), exclude_characters="\r\n\x00"),
                max_size=10,
            ),
        ),
        max_size=6,
        unique_by=lambda item: item[0],
    )
)
def test_parse_auth_params_round_trips_quoted_values(items: list[tuple[str, str]]) -> None:
    header = "Digest " + ", ".join(f"{name}={quote_string(value)}" for name, value in items)
    assert parse_auth_params(header) == ("Digest", dict(items))


def _lookup_type_check() -> Callable[[str, str, str], str | None]:
    return lookup  # the LookupHA1 shape, checked by mypy
