"""The directory: users and credentials, trunks and number routing, trust, Request-URI resolution,
and reloading it without losing a registration."""

from __future__ import annotations

from typing import Any

import pytest

from callkeeper.config import Config
from callkeeper.directory import (
    Directory,
    DirectoryError,
    NotFound,
    NumberTarget,
    Registrar,
    UserTarget,
    normalize_number,
)
from callkeeper.directory.trunks import Trunk, TrunkTable
from callkeeper.directory.users import StaticContact, User
from callkeeper.sip.digest import StoredSecret, compute_ha1
from callkeeper.sip.message import Request
from callkeeper.sip.parser import parse_message
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import URI, parse_uri

ALICE_HA1 = compute_ha1("alice", "example.com", "secret")

CONFIG: dict[str, Any] = {
    "sip": {
        "domain": "example.com",
        "listen": ["udp:192.0.2.10:5060", "tcp:192.0.2.10:5060"],
        "trusted_sources": ["10.0.0.0/8", "2001:db8:1::/48", "198.51.100.7"],
    },
    "users": [
        {
            "name": "alice",
            "password": "alice-pw",
            "mobile": "+49 170 1234567",
            "voicemail": True,
            "static_contacts": ["sip:alice-desk@192.0.2.50:5060", "sips:alice-dect@dect.example"],
        },
        {"name": "bob", "ha1": ALICE_HA1.upper(), "mobile": "sip:+4915112345@sbc.mobile.example"},
        {"name": "1001", "password": "ext"},
        {"name": "carol"},
    ],
    "trunks": [
        {"name": "default", "uri": "sip:gw.example.net", "match": ""},
        {"name": "germany", "uri": "sip:de.example.net", "match": "+49"},
        {"name": "berlin", "uri": "sip:ber.example.net", "match": "+4930"},
        {"name": "berlin-too", "uri": "sip:ber2.example.net", "match": "+4930"},
        {"name": "national", "uri": "sip:nat.example.net;transport=tcp", "match": "0"},
        {"name": "mobile", "uri": "sip:sbc.mobile.example", "match": "+4917"},
    ],
}


@pytest.fixture
def directory() -> Directory:
    return Directory.from_config(Config(**CONFIG))


# --- users and credentials ----------------------------------------------------------------------


def test_users_come_from_the_config(directory: Directory) -> None:
    assert sorted(directory.users) == ["1001", "alice", "bob", "carol"]
    assert "alice" in directory and "mallory" not in directory
    alice = directory.user("alice")
    assert alice is not None and alice.secret == StoredSecret(password="alice-pw")
    assert directory.user("mallory") is None
    assert directory.voicemail("alice") and not directory.voicemail("bob")
    assert not directory.voicemail("mallory")


def test_lookup_ha1_for_passwords_and_stored_ha1(directory: Directory) -> None:
    assert directory.lookup_ha1("alice", "example.com", "MD5") == compute_ha1(
        "alice", "example.com", "alice-pw"
    )
    assert directory.lookup_ha1("alice", "example.com", "SHA-256") == compute_ha1(
        "alice", "example.com", "alice-pw", "SHA-256"
    )
    assert directory.lookup_ha1("bob", "example.com", "MD5") == ALICE_HA1  # lower-cased
    assert directory.lookup_ha1("bob", "example.com", "SHA-256") is None
    assert directory.lookup_ha1("carol", "example.com", "MD5") is None  # no secret at all
    assert directory.lookup_ha1("mallory", "example.com", "MD5") is None


def test_challenge_algorithms_fit_the_users_secret(directory: Directory) -> None:
    offered = ("SHA-256", "MD5")
    assert directory.algorithms_for("alice", offered) == offered
    assert directory.algorithms_for("bob", offered) == ("MD5",)
    assert directory.algorithms_for("carol", offered) == offered  # nothing fits: offer all
    assert directory.algorithms_for("mallory", offered) == offered  # do not tell
    assert directory.algorithms_for(None, offered) == offered


def test_static_contacts_are_parsed_and_identified(directory: Directory) -> None:
    desk, dect = directory.static_contacts("alice")
    assert desk == StaticContact("alice", parse_uri("sip:alice-desk@192.0.2.50:5060"))
    assert dect.uri.scheme == "sips" and dect.key == "static:sips:alice-dect@dect.example"
    assert desk.endpoint_id != dect.endpoint_id and len(desk.endpoint_id) == 16
    assert directory.static_contacts("bob") == () == directory.static_contacts("mallory")
    assert directory.all_static_contacts() == [desk, dect]


def test_mobile_numbers_are_kept_as_uris(directory: Directory) -> None:
    mobile = directory.mobile("alice")
    assert mobile is not None and (mobile.scheme, mobile.user) == ("tel", "+491701234567")
    bob_mobile = directory.mobile("bob")
    assert bob_mobile is not None and bob_mobile.host == "sbc.mobile.example"
    assert directory.mobile("1001") is None and directory.mobile("mallory") is None


# --- trunks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "trunk"),
    [
        ("+493012345", "berlin"),  # the longest prefix wins ...
        ("+4940123", "germany"),
        ("+4917012345", "mobile"),
        ("+12125551234", "default"),  # the empty match is the default route
        ("0301234", "national"),
        ("+4930", "berlin"),  # the prefix itself
        ("+49 (30) 123-45", "berlin"),  # visual separators are ignored
        ("alice", None),
        ("*86", None),
        ("", None),
    ],
)
def test_trunk_for_uses_the_longest_prefix(directory: Directory, number: str, trunk: str) -> None:
    found = directory.trunk_for(number)
    assert (found.name if found is not None else None) == trunk


def test_ties_go_to_the_trunk_configured_first(directory: Directory) -> None:
    found = directory.trunk_for("+4930999")
    assert found is not None and found.name == "berlin"
    assert directory.trunks.by_name("berlin-too") is not None
    assert directory.trunks.by_name("nope") is None
    assert len(directory.trunks) == 6


def test_without_a_default_route_unmatched_numbers_have_no_trunk() -> None:
    table = TrunkTable([Trunk("de", parse_uri("sip:de.example"), "+49")])
    assert table.trunk_for("+12125551234") is None
    assert table.trunk_for("+4") is None  # shorter than every prefix
    assert table.trunk_for("+49301") == Trunk("de", parse_uri("sip:de.example"), "+49")


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("+4930123", "+4930123"),
        ("030 1234-56", "030123456"),
        ("+1 (212) 555.1234", "+12125551234"),
        ("+", None),
        ("12+3", None),
        ("alice", None),
        ("*86", None),
        ("", None),
        ("١٢٣", None),  # Arabic-Indic digits are not dialable here
    ],
)
def test_normalize_number(text: str, number: str | None) -> None:
    assert normalize_number(text) == number


# --- trust ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "trusted"),
    [
        ("10.1.2.3", True),
        ("11.1.2.3", False),
        ("198.51.100.7", True),
        ("198.51.100.8", False),
        ("2001:db8:1::5", True),
        ("[2001:db8:1::5]", True),
        ("2001:db8:2::5", False),
        ("::ffff:10.9.9.9", True),  # an IPv4-mapped address is that IPv4 address
        ("phone.example", False),
        ("", False),
    ],
)
def test_is_trusted(directory: Directory, ip: str, trusted: bool) -> None:
    assert directory.is_trusted(ip) is trusted


def test_nothing_is_trusted_by_default() -> None:
    assert not Directory().is_trusted("127.0.0.1")


# --- resolving a Request-URI --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("sip:alice@example.com", "user:alice"),
        ("sip:alice@EXAMPLE.COM.", "user:alice"),  # host case and a trailing dot do not matter
        ("sip:alice@192.0.2.10", "user:alice"),  # our listen address
        ("sip:alice@192.0.2.10:5060;transport=tcp", "user:alice"),
        ("sips:alice@example.com", "user:alice"),
        ("alice", "user:alice"),  # a bare name, as dialled
        ("sip:%61lice@example.com", "user:alice"),  # escaped user part
        ("sip:1001@example.com", "user:1001"),  # a user name wins over a number
        ("1001", "user:1001"),
        ("sip:+493012345@example.com", "number:+493012345@berlin"),
        ("sip:+493012345;phone-context=x@example.com;user=phone", "number:+493012345@berlin"),
        ("tel:+49-40-123", "number:+4940123@germany"),
        ("tel:+49-40-123;phone-context=+49", "number:+4940123@germany"),
        ("0301234", "number:0301234@national"),
        ("sip:mallory@example.com", "404"),
        ("mallory", "404"),
        ("*86", "404"),  # feature codes are the call manager's business
        ("sip:alice@other.example", "404"),  # not an open proxy
        ("sip:alice@192.0.2.99", "404"),
        ("sip:example.com", "404"),  # no user part
        ("http://example.com/alice", "416"),
        ("sip:alice@", "400"),
    ],
)
def test_resolve(directory: Directory, target: str, expected: str) -> None:
    uri_or_text: URI | str = target
    if ":" in target and target.startswith(("sip:", "sips:", "tel:")) and target != "sip:alice@":
        uri_or_text = parse_uri(target)
    result = directory.resolve(uri_or_text)
    assert _describe(result) == expected


def _describe(result: object) -> str:
    if isinstance(result, UserTarget):
        return f"user:{result.user.name}"
    if isinstance(result, NumberTarget):
        return f"number:{result.number}@{result.trunk.name}"
    assert isinstance(result, NotFound) and result.reason
    return str(result.status)


def test_a_uri_of_another_scheme_cannot_be_routed(directory: Directory) -> None:
    result = directory.resolve(parse_uri("mailto:alice@example.com", any_scheme=True))
    assert isinstance(result, NotFound) and result.status == 416


def test_a_wildcard_listen_address_makes_every_ip_ours() -> None:
    config = Config(**(CONFIG | {"sip": {"domain": "example.com", "listen": "udp:0.0.0.0:5060"}}))
    directory = Directory.from_config(config)
    assert isinstance(directory.resolve(parse_uri("sip:alice@203.0.113.9")), UserTarget)
    assert isinstance(directory.resolve(parse_uri("sip:alice@[2001:db8::9]")), UserTarget)
    assert isinstance(directory.resolve(parse_uri("sip:alice@other.example")), NotFound)


def test_extra_local_hosts_and_a_locality_callback() -> None:
    directory = Directory.from_config(Config(**CONFIG), local_hosts=["sip.example.com"])
    assert directory.is_local_host("SIP.example.com")
    assert not directory.is_local_host("203.0.113.9")
    uri = parse_uri("sip:alice@203.0.113.9")
    assert isinstance(
        directory.resolve(uri, is_local=lambda host: host == "203.0.113.9"), UserTarget
    )


def test_mobile_target_routes_the_mobile_number(directory: Directory) -> None:
    # alice's mobile is a bare number: the prefixes decide.
    assert _describe(directory.mobile_target("alice")) == "number:+491701234567@mobile"
    # bob's is a URI at the mobile SBC: that trunk, although +4915 only matches "germany".
    assert _describe(directory.mobile_target("bob")) == "number:+4915112345@mobile"
    assert _describe(directory.mobile_target("1001")) == "404"
    without_default = Directory(
        [User("dave", StoredSecret("x"), parse_uri("tel:+331234"))],
        [Trunk("de", parse_uri("sip:de.example"), "+49")],
    )
    assert _describe(without_default.mobile_target("dave")) == "404"
    with_sip_mobile = Directory(
        [User("erin", StoredSecret("x"), parse_uri("sip:+4930111@unknown.example"))],
        [Trunk("de", parse_uri("sip:de.example"), "+49"), Trunk("t", parse_uri("tel:+1"), "+1")],
    )
    assert _describe(with_sip_mobile.mobile_target("erin")) == "number:+4930111@de"


# --- configuration errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"users": [{"name": "a", "static_contacts": ["not a uri"]}]}, "users.0.static_contacts.0"),
        (
            {"users": [{"name": "a", "static_contacts": ["tel:+49123"]}]},
            "users.0.static_contacts.0",
        ),
        ({"users": [{"name": "a", "mobile": "mobile please"}]}, "users.0.mobile"),
        ({"users": [{"name": "a", "mobile": "sip:alice@example.com"}]}, "users.0.mobile"),
        ({"users": [{"name": "a", "mobile": "mailto:a@example.com"}]}, "users.0.mobile"),
        ({"trunks": [{"name": "t", "uri": "sip:"}]}, "trunks.0.uri"),
        ({"trunks": [{"name": "t", "uri": "sip:gw.example", "match": "49x"}]}, "trunks.0.match"),
    ],
)
def test_bad_values_name_their_key(change: dict[str, Any], key: str) -> None:
    with pytest.raises(DirectoryError, match=key.replace(".", r"\.")):
        Directory.from_config(Config(**(CONFIG | change)))


def test_the_demo_configuration_builds() -> None:
    from callkeeper.config import load_config

    directory = Directory.from_config(load_config(None))
    assert {"alice", "bob", "carol"} <= set(directory.users)
    assert isinstance(directory.resolve("sip:bob@127.0.0.1"), UserTarget)


# --- reload -------------------------------------------------------------------------------------


def _register(user: str) -> Request:
    message = parse_message(
        (
            "REGISTER sip:example.com SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 192.0.2.77:5060;branch=z9hG4bK-reload;rport\r\n"
            f"To: <sip:{user}@example.com>\r\nFrom: <sip:{user}@example.com>;tag=1\r\n"
            "Call-ID: reload-1\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@192.0.2.77:5060>\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


def test_reload_builds_a_new_directory_and_keeps_every_registration() -> None:
    registrar = Registrar()
    old = Directory.from_config(Config(**CONFIG))
    flow = Flow("udp", ("192.0.2.77", 5060))
    registrar.handle_register(_register("alice"), flow, "alice", 0.0)
    registrar.handle_register(_register("bob"), flow, "bob", 0.0)
    # SIGHUP: bob leaves, dave joins, alice's password changes.
    users = [dict(CONFIG["users"][0], password="new-pw"), {"name": "dave", "password": "d"}]
    new = Directory.from_config(Config(**(CONFIG | {"users": users})))
    assert new is not old
    assert new.lookup_ha1("alice", "r", "MD5") == compute_ha1("alice", "r", "new-pw")
    assert isinstance(new.resolve("dave"), UserTarget)
    assert isinstance(new.resolve("bob"), NotFound)
    # The registrar never saw the reload: nobody has to register again.
    assert len(registrar.contacts_of("alice", 1.0)) == 1
    assert len(registrar.contacts_of("bob", 1.0)) == 1
    assert len(registrar) == 2
