"""The registrar (RFC 3261 §10.3, RFC 5626 §6) driven with REGISTERs as phones send them.

Every request goes through the real parser; time is a plain float (`now`), so expiry, refresh
and restart scenarios run in microseconds.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callkeeper.config import Config
from callkeeper.directory.bindings import (
    Binding,
    behind_nat,
    decode_binding,
    encode_binding,
    endpoint_id,
    uri_key,
)
from callkeeper.directory.commands import DeleteBinding, SaveBinding
from callkeeper.directory.events import BindingAdded, BindingRefreshed, BindingRemoved
from callkeeper.directory.register_request import (
    MAX_DELTA_SECONDS,
    RegisterPlan,
    delta_seconds,
    read_register,
)
from callkeeper.directory.registrar import Registrar
from callkeeper.directory.settings import AuthSettings, RegistrarSettings
from callkeeper.sip.message import Request, Response
from callkeeper.sip.parser import parse_message
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import parse_uri

PHONE = ("192.168.1.10", 5060)
NAT_PUBLIC = ("203.0.113.5", 40312)
UDP = Flow("udp", PHONE, ("127.0.0.1", 5060))
NATTED = Flow("udp", NAT_PUBLIC, ("127.0.0.1", 5060))
INSTANCE = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
_branches = itertools.count(1)


def register(
    *contacts: str,
    call_id: str = "reg-1@192.168.1.10",
    cseq: int = 1,
    expires: int | str | None = None,
    user: str = "alice",
    transport: str = "UDP",
    via_host: str = "192.168.1.10:5060",
    extra: str = "",
) -> Request:
    """A REGISTER shaped like baresip's (or SIPp's `-sn` registration scenarios)."""
    lines = [
        "REGISTER sip:127.0.0.1 SIP/2.0",
        f"Via: SIP/2.0/{transport} {via_host};branch=z9hG4bK-{next(_branches)};rport",
        "Max-Forwards: 70",
        f"To: <sip:{user}@127.0.0.1>",
        f"From: <sip:{user}@127.0.0.1>;tag=f{cseq}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "User-Agent: baresip v3.10.1 (x86_64/linux)",
        "Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER",
    ]
    lines += [f"Contact: {contact}" for contact in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    text = "\r\n".join(lines) + "\r\n" + extra + "Content-Length: 0\r\n\r\n"
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def contact(port: int = 5060, host: str = "192.168.1.10", params: str = "") -> str:
    return f"<sip:alice@{host}:{port}>{params}"


def outbound_contact(port: int = 5060, reg_id: int = 1, instance: str = INSTANCE) -> str:
    return f"<sip:alice@192.168.1.10:{port};ob>;+sip.instance={instance};reg-id={reg_id}"


def drain(registrar: Registrar) -> tuple[list[object], list[object]]:
    events: list[object] = []
    commands: list[object] = []
    while (event := registrar.next_event()) is not None:
        events.append(event)
    while (command := registrar.next_command()) is not None:
        commands.append(command)
    return events, commands


def contacts_in(response: Response) -> list[str]:
    return response.headers.get_list("contact")


def short_registrar(**changes: int) -> Registrar:
    values = {"min_expires": 10, "default_expires": 60, "max_expires": 120} | changes
    return Registrar(RegistrarSettings(**values))


# --- registering ------------------------------------------------------------------------------


def test_first_register_creates_a_binding_and_answers_with_it() -> None:
    registrar = Registrar()
    response = registrar.handle_register(register(contact()), UDP, "alice", 100.0, to_tag="t1")
    assert response.status == 200
    assert response.to_addr.tag == "t1"
    assert contacts_in(response) == ["<sip:alice@192.168.1.10:5060>;expires=3600"]
    assert "require" not in response.headers  # no outbound asked for
    events, commands = drain(registrar)
    assert len(events) == 1 and isinstance(events[0], BindingAdded)
    binding = events[0].binding
    assert events[0].at == 100.0 and events[0].replaced is None
    assert commands == [SaveBinding(binding)]
    assert binding.user == "alice"
    assert binding.uri == "sip:alice@192.168.1.10:5060"
    assert binding.expires_at == 3700.0
    assert binding.registered_at == binding.updated_at == 100.0
    assert binding.call_id == "reg-1@192.168.1.10" and binding.cseq == 1
    assert binding.user_agent.startswith("baresip")
    assert binding.flow == UDP
    assert not binding.nat and not binding.outbound
    assert registrar.get_timer() == 3700.0
    assert len(registrar) == 1
    assert registrar.contacts_of("alice", 100.0) == [binding]


@pytest.mark.parametrize(
    ("contact_param", "header", "expected"),
    [
        (None, None, 3600),  # the default
        (None, "600", 600),  # the Expires header
        (";expires=300", "600", 300),  # the Contact parameter wins
        (";expires=300", None, 300),
        (None, "99999", 7200),  # capped at max_expires
        (";expires=4294967296000", None, 7200),  # beyond 2**32-1: still just capped
        (";expires=soon", "600", 600),  # malformed parameter: as if absent
        (";expires=60", None, 60),  # exactly min_expires is fine
    ],
)
def test_expiry_comes_from_contact_then_header_then_default(
    contact_param: str | None, header: str | None, expected: int
) -> None:
    registrar = Registrar()
    request = register(contact(params=contact_param or ""), expires=header)
    response = registrar.handle_register(request, UDP, "alice", 0.0)
    assert response.status == 200
    assert contacts_in(response) == [f"<sip:alice@192.168.1.10:5060>;expires={expected}"]
    (binding,) = registrar.contacts_of("alice", 0.0)
    assert binding.expires_at == expected


@pytest.mark.parametrize(("contact_param", "header"), [(";expires=59", None), ("", "1")])
def test_too_short_an_interval_gets_423_with_min_expires(
    contact_param: str, header: str | None
) -> None:
    registrar = Registrar()
    response = registrar.handle_register(
        register(contact(params=contact_param), expires=header), UDP, "alice", 0.0
    )
    assert (response.status, response.reason) == (423, "Interval Too Brief")
    assert response.headers.get("Min-Expires") == "60"
    assert len(registrar) == 0
    assert drain(registrar) == ([], [])


def test_423_refuses_the_whole_request() -> None:
    registrar = Registrar()
    request = register(contact(5060), contact(5070, params=";expires=5"))
    assert registrar.handle_register(request, UDP, "alice", 0.0).status == 423
    assert registrar.contacts_of("alice", 0.0) == []


def test_refresh_keeps_the_binding_and_moves_its_expiry() -> None:
    registrar = Registrar()
    registrar.handle_register(register(contact(), expires=600), UDP, "alice", 0.0)
    first, _ = drain(registrar)
    response = registrar.handle_register(
        register(contact(), expires=600, cseq=2), UDP, "alice", 500.0
    )
    assert contacts_in(response) == ["<sip:alice@192.168.1.10:5060>;expires=600"]
    events, commands = drain(registrar)
    assert len(events) == 1 and isinstance(events[0], BindingRefreshed)
    refreshed = events[0]
    assert refreshed.previous == first[0].binding  # type: ignore[attr-defined]
    assert refreshed.binding.registered_at == 0.0
    assert refreshed.binding.updated_at == 500.0
    assert refreshed.binding.expires_at == 1100.0
    assert refreshed.binding.cseq == 2
    assert commands == [SaveBinding(refreshed.binding)]
    assert registrar.get_timer() == 1100.0
    registrar.handle_timer(600.0)  # the old deadline passes: nothing happens
    assert drain(registrar) == ([], [])
    assert len(registrar) == 1


@pytest.mark.parametrize("cseq", [1, 0])
def test_same_call_id_without_a_higher_cseq_fails_with_500(cseq: int) -> None:
    registrar = Registrar()
    registrar.handle_register(register(contact(), cseq=1, expires=600), UDP, "alice", 0.0)
    drain(registrar)
    response = registrar.handle_register(
        register(contact(), cseq=cseq, expires=0), UDP, "alice", 1.0
    )
    assert response.status == 500
    assert drain(registrar) == ([], [])
    (binding,) = registrar.contacts_of("alice", 1.0)
    assert binding.expires_at == 600.0


def test_a_new_call_id_for_the_same_contact_replaces_the_binding() -> None:
    registrar = Registrar()
    registrar.handle_register(register(contact(), cseq=7), UDP, "alice", 0.0)
    (added,), _ = drain(registrar)
    response = registrar.handle_register(
        register(contact(), call_id="after-reboot", cseq=1), UDP, "alice", 50.0
    )
    assert response.status == 200
    events, commands = drain(registrar)
    assert [type(e) for e in events] == [BindingRemoved, BindingAdded]
    removed, new = events
    assert isinstance(removed, BindingRemoved) and isinstance(new, BindingAdded)
    assert removed.reason == "replaced"
    assert removed.binding == added.binding  # type: ignore[attr-defined]
    assert new.replaced == added.binding  # type: ignore[attr-defined]
    assert new.binding.registered_at == 50.0 and new.binding.call_id == "after-reboot"
    assert commands == [SaveBinding(new.binding)]
    assert len(registrar) == 1


def test_several_contacts_per_user_ordered_by_q_then_recency() -> None:
    registrar = Registrar()
    registrar.handle_register(register(contact(5060)), UDP, "alice", 0.0)
    desk = Flow("udp", ("192.168.1.11", 5060), UDP.local)
    registrar.handle_register(
        register(contact(5060, host="192.168.1.11"), call_id="desk"), desk, "alice", 10.0
    )
    soft = Flow("udp", ("192.168.1.12", 5060), UDP.local)
    response = registrar.handle_register(
        register(contact(5060, host="192.168.1.12", params=";q=0.5"), call_id="soft"),
        soft,
        "alice",
        20.0,
    )
    assert contacts_in(response) == [
        "<sip:alice@192.168.1.11:5060>;expires=3590",
        "<sip:alice@192.168.1.10:5060>;expires=3580",
        "<sip:alice@192.168.1.12:5060>;q=0.5;expires=3600",
    ]
    hosts = [parse_uri(b.uri).host for b in registrar.contacts_of("alice", 20.0)]
    assert hosts == ["192.168.1.11", "192.168.1.10", "192.168.1.12"]
    assert registrar.contacts_of("bob", 20.0) == []


def test_one_request_may_carry_several_contacts() -> None:
    registrar = Registrar()
    request = register(f"{contact(5060)}, {contact(5070)};expires=120", expires=300)
    response = registrar.handle_register(request, UDP, "alice", 0.0)
    assert sorted(contacts_in(response)) == [
        "<sip:alice@192.168.1.10:5060>;expires=300",
        "<sip:alice@192.168.1.10:5070>;expires=120",
    ]
    events, _ = drain(registrar)
    assert [type(e) for e in events] == [BindingAdded, BindingAdded]


def test_the_same_contact_twice_in_one_request_counts_once() -> None:
    registrar = Registrar()
    request = register(contact(params=";expires=100"), contact(params=";expires=200"))
    response = registrar.handle_register(request, UDP, "alice", 0.0)
    assert contacts_in(response) == ["<sip:alice@192.168.1.10:5060>;expires=200"]


def test_unregistering_one_contact_keeps_the_others() -> None:
    registrar = Registrar()
    request = register(contact(5060), contact(5070))
    registrar.handle_register(request, UDP, "alice", 0.0)
    (_, second), _ = drain(registrar)
    response = registrar.handle_register(
        register(contact(5070, params=";expires=0"), cseq=2), UDP, "alice", 5.0
    )
    assert contacts_in(response) == ["<sip:alice@192.168.1.10:5060>;expires=3595"]
    events, commands = drain(registrar)
    assert events == [BindingRemoved(second.binding, "unregistered", 5.0)]  # type: ignore[attr-defined]
    assert commands == [DeleteBinding("alice", second.binding.key)]  # type: ignore[attr-defined]


def test_unregistering_an_unknown_contact_changes_nothing() -> None:
    registrar = Registrar()
    response = registrar.handle_register(register(contact(), expires=0), UDP, "alice", 0.0)
    assert response.status == 200 and contacts_in(response) == []
    assert drain(registrar) == ([], [])


def test_wildcard_with_expires_zero_removes_every_binding() -> None:
    registrar = Registrar()
    registrar.handle_register(register(contact(5060), contact(5070)), UDP, "alice", 0.0)
    registrar.handle_register(register(contact(5080), call_id="other"), UDP, "alice", 0.0)
    registrar.handle_register(register(contact(5090), user="bob"), UDP, "bob", 0.0)
    drain(registrar)
    response = registrar.handle_register(register("*", expires=0, cseq=2), UDP, "alice", 9.0)
    assert response.status == 200 and contacts_in(response) == []
    events, commands = drain(registrar)
    assert len(events) == 3
    assert all(isinstance(e, BindingRemoved) and e.reason == "unregistered" for e in events)
    assert all(isinstance(c, DeleteBinding) and c.user == "alice" for c in commands)
    assert registrar.contacts_of("alice", 9.0) == []
    assert len(registrar.contacts_of("bob", 9.0)) == 1
    assert registrar.users() == ["bob"]


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [
        (("*",), None),  # no Expires
        (("*",), 60),  # Expires not 0
        (("*", contact()), 0),  # not alone (the parser refuses this, so it is built by hand)
    ],
)
def test_wildcard_needs_expires_zero_and_no_other_contact(
    contacts: tuple[str, ...], expires: int | None
) -> None:
    registrar = Registrar()
    registrar.handle_register(register(contact()), UDP, "alice", 0.0)
    request = register(contacts[0], expires=expires, cseq=2)
    for value in contacts[1:]:
        request.headers.add("Contact", value)
    response = registrar.handle_register(request, UDP, "alice", 1.0)
    assert response.status == 400
    assert len(registrar) == 1


def test_wildcard_obeys_cseq_ordering_too() -> None:
    registrar = Registrar()
    registrar.handle_register(register(contact(), cseq=5), UDP, "alice", 0.0)
    response = registrar.handle_register(register("*", expires=0, cseq=5), UDP, "alice", 1.0)
    assert response.status == 500
    assert len(registrar) == 1


def test_a_register_without_contact_is_a_query() -> None:
    registrar = Registrar()
    registrar.handle_register(register(contact()), UDP, "alice", 0.0)
    drain(registrar)
    response = registrar.handle_register(register(cseq=2), UDP, "alice", 100.0)
    assert contacts_in(response) == ["<sip:alice@192.168.1.10:5060>;expires=3500"]
    assert drain(registrar) == ([], [])


@pytest.mark.parametrize(
    ("contact_value", "reason_part"),
    [
        ("<mailto:alice@example.com>", "sip: or sips:"),
        (contact(params=";q=2"), "q value"),
        (contact(params=";q=0.12345"), "q value"),
        (contact(params=";q=high"), "q value"),
        (outbound_contact(reg_id=0), "reg-id"),
        (outbound_contact().replace("reg-id=1", "reg-id=one"), "reg-id"),
        (outbound_contact().replace("reg-id=1", "reg-id"), "reg-id"),
        (outbound_contact().replace("reg-id=1", "reg-id=99999999999"), "reg-id"),
    ],
)
def test_bad_contacts_get_400(contact_value: str, reason_part: str) -> None:
    registrar = Registrar()
    request = register(contact_value, extra="Supported: outbound\r\n")
    response = registrar.handle_register(request, UDP, "alice", 0.0)
    assert response.status == 400
    assert reason_part in response.reason
    assert "\r" not in response.reason and "\n" not in response.reason
    assert len(registrar) == 0


def test_an_unreadable_path_gets_400() -> None:
    extra = "Supported: outbound\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKp\r\nPath: <sip:\r\n"
    response = Registrar().handle_register(
        register(outbound_contact(), extra=extra), UDP, "alice", 0.0
    )
    assert response.status == 400 and response.reason.startswith("Bad Request: ")


def test_only_register_is_accepted() -> None:
    invite = parse_message(
        b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.10;branch=z9hG4bKx\r\n"
        b"To: <sip:bob@127.0.0.1>\r\nFrom: <sip:alice@127.0.0.1>;tag=1\r\nCall-ID: c\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(invite, Request)
    with pytest.raises(ValueError, match="INVITE"):
        Registrar().handle_register(invite, UDP, "alice", 0.0)


# --- expiry -----------------------------------------------------------------------------------


def test_bindings_expire_on_the_timer() -> None:
    registrar = short_registrar()
    registrar.handle_register(register(contact(5060), expires=30), UDP, "alice", 0.0)
    registrar.handle_register(register(contact(5070), expires=90, call_id="b"), UDP, "alice", 0.0)
    drain(registrar)
    assert registrar.get_timer() == 30.0
    registrar.handle_timer(29.999)
    assert drain(registrar) == ([], [])
    registrar.handle_timer(30.0)
    events, commands = drain(registrar)
    assert len(events) == 1 and isinstance(events[0], BindingRemoved)
    assert events[0].reason == "expired" and events[0].at == 30.0
    assert commands == [DeleteBinding("alice", events[0].binding.key)]
    assert registrar.get_timer() == 90.0
    registrar.handle_timer(1000.0)
    assert len(drain(registrar)[0]) == 1
    assert registrar.get_timer() is None
    assert len(registrar) == 0 and registrar.users() == []


def test_a_binding_past_its_time_is_not_offered_before_the_timer_runs() -> None:
    registrar = short_registrar()
    registrar.handle_register(register(contact(), expires=30), UDP, "alice", 0.0)
    assert registrar.contacts_of("alice", 30.0) == []
    response = registrar.handle_register(register(cseq=2), UDP, "alice", 31.0)
    assert contacts_in(response) == []


# --- RFC 5626 outbound --------------------------------------------------------------------------

TCP = Flow("tcp", ("192.168.1.10", 49152), ("127.0.0.1", 5060), connection=7)


def test_outbound_register_gets_require_outbound_and_flow_timer() -> None:
    registrar = Registrar(RegistrarSettings(flow_timer=5))
    request = register(
        outbound_contact(), transport="TCP", extra="Supported: outbound, path, gruu\r\n"
    )
    response = registrar.handle_register(request, TCP, "alice", 0.0)
    assert response.status == 200
    assert response.headers.get("Require") == "outbound"
    assert response.headers.get("Flow-Timer") == "5"
    assert contacts_in(response) == [f"{outbound_contact()};expires=3600"]
    (binding,) = registrar.contacts_of("alice", 0.0)
    assert binding.outbound and binding.reg_id == 1 and binding.instance == INSTANCE
    assert binding.key == f"instance:{INSTANCE}#1"
    assert binding.flow == TCP and binding.connection == 7
    assert binding.next_hop() == TCP
    assert registrar.binding_by_flow(TCP) == binding


def test_require_outbound_also_counts_as_support() -> None:
    registrar = Registrar()
    request = register(outbound_contact(), extra="Require: outbound\r\n")
    response = registrar.handle_register(request, UDP, "alice", 0.0)
    assert response.headers.get("Require") == "outbound"


def test_without_the_option_tag_reg_id_is_ignored() -> None:
    registrar = Registrar()
    response = registrar.handle_register(register(outbound_contact()), UDP, "alice", 0.0)
    assert "require" not in response.headers and "flow-timer" not in response.headers
    (binding,) = registrar.contacts_of("alice", 0.0)
    assert binding.key == f"instance:{INSTANCE}"
    assert binding.reg_id is None and not binding.outbound


def test_reg_id_without_an_instance_is_ignored() -> None:
    registrar = Registrar()
    request = register(contact(params=";reg-id=1"), extra="Supported: outbound\r\n")
    response = registrar.handle_register(request, UDP, "alice", 0.0)
    assert "require" not in response.headers
    (binding,) = registrar.contacts_of("alice", 0.0)
    assert binding.key == uri_key(parse_uri("sip:alice@192.168.1.10:5060"))
    assert binding.instance is None and binding.reg_id is None


def test_same_instance_and_reg_id_after_a_reboot_replaces_the_binding() -> None:
    registrar = Registrar()
    supported = "Supported: outbound\r\n"
    registrar.handle_register(
        register(outbound_contact(40001), transport="TCP", extra=supported), TCP, "alice", 0.0
    )
    (added,), _ = drain(registrar)
    # Rebooted: new connection, new ephemeral port in the Contact, new Call-ID, CSeq from 1.
    new_flow = Flow("tcp", ("192.168.1.10", 49999), ("127.0.0.1", 5060), connection=8)
    response = registrar.handle_register(
        register(outbound_contact(40002), transport="TCP", extra=supported, call_id="boot-2"),
        new_flow,
        "alice",
        60.0,
    )
    assert contacts_in(response) == [f"{outbound_contact(40002)};expires=3600"]
    events, _ = drain(registrar)
    assert [type(e) for e in events] == [BindingRemoved, BindingAdded]
    assert events[0].reason == "replaced"  # type: ignore[attr-defined]
    assert events[1].replaced == added.binding  # type: ignore[attr-defined]
    assert registrar.binding_by_flow(TCP) is None
    assert registrar.binding_by_flow(new_flow) == events[1].binding  # type: ignore[attr-defined]
    assert len(registrar) == 1


def test_another_reg_id_of_the_same_instance_is_another_flow() -> None:
    registrar = Registrar()
    supported = "Supported: outbound\r\n"
    registrar.handle_register(
        register(outbound_contact(reg_id=1), extra=supported), UDP, "alice", 0
    )
    registrar.handle_register(
        register(outbound_contact(reg_id=2), extra=supported, call_id="second-flow"),
        NATTED,
        "alice",
        0.0,
    )
    assert sorted(b.reg_id or 0 for b in registrar.contacts_of("alice", 0.0)) == [1, 2]


def test_outbound_refresh_over_a_new_connection_moves_the_flow() -> None:
    registrar = Registrar()
    supported = "Supported: outbound\r\n"
    registrar.handle_register(register(outbound_contact(), extra=supported), TCP, "alice", 0.0)
    drain(registrar)
    reconnected = Flow("tcp", ("192.168.1.10", 50000), ("127.0.0.1", 5060), connection=9)
    registrar.handle_register(
        register(outbound_contact(), extra=supported, cseq=2), reconnected, "alice", 10.0
    )
    events, _ = drain(registrar)
    assert len(events) == 1 and isinstance(events[0], BindingRefreshed)
    assert events[0].previous.flow == TCP and events[0].binding.flow == reconnected
    assert registrar.bindings_by_flow(TCP) == []
    assert registrar.bindings_by_flow(reconnected) == [events[0].binding]


def test_an_outbound_flow_must_be_registered_alone() -> None:
    registrar = Registrar()
    request = register(outbound_contact(), contact(5070), extra="Supported: outbound\r\n")
    response = registrar.handle_register(request, UDP, "alice", 0.0)
    assert response.status == 400
    assert len(registrar) == 0


def test_unregistering_an_outbound_flow_with_others_is_allowed() -> None:
    registrar = Registrar()
    registrar.handle_register(
        register(outbound_contact(), extra="Supported: outbound\r\n"), UDP, "alice", 0.0
    )
    request = register(
        f"{outbound_contact()};expires=0", contact(5070), cseq=2, extra="Supported: outbound\r\n"
    )
    response = registrar.handle_register(request, UDP, "alice", 1.0)
    assert response.status == 200
    assert contacts_in(response) == ["<sip:alice@192.168.1.10:5070>;expires=3600"]


def test_outbound_through_a_proxy_without_outbound_support_gets_439() -> None:
    registrar = Registrar()
    proxy_via = "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-proxy\r\n"
    request = register(outbound_contact(), extra=f"Supported: outbound\r\n{proxy_via}")
    response = registrar.handle_register(request, UDP, "alice", 0.0)
    assert (response.status, response.reason) == (439, "First Hop Lacks Outbound Support")
    path = "Path: <sip:10.0.0.1;lr>\r\n"
    request = register(outbound_contact(), extra=f"Supported: outbound\r\n{proxy_via}{path}")
    assert registrar.handle_register(request, UDP, "alice", 0.0).status == 439
    assert len(registrar) == 0


def test_outbound_through_an_edge_proxy_with_ob_stores_and_echoes_path() -> None:
    registrar = Registrar()
    extra = (
        "Supported: outbound, path\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-proxy\r\n"
        "Path: <sip:10.0.0.1;lr;ob>\r\n"
    )
    response = registrar.handle_register(register(outbound_contact(), extra=extra), UDP, "alice", 0)
    assert response.status == 200
    assert response.headers.get_list("path") == ["<sip:10.0.0.1;lr;ob>"]
    assert response.headers.get("Require") == "outbound"
    (binding,) = registrar.contacts_of("alice", 0.0)
    assert binding.path == ("<sip:10.0.0.1;lr;ob>",)


def test_path_is_stored_but_not_echoed_without_supported_path() -> None:
    registrar = Registrar()
    request = register(contact(), extra="Path: <sip:10.0.0.1;lr>\r\n")
    response = registrar.handle_register(request, UDP, "alice", 0.0)
    assert "path" not in response.headers
    assert registrar.contacts_of("alice", 0.0)[0].path == ("<sip:10.0.0.1;lr>",)


def test_an_instance_binding_can_be_unregistered_by_its_uri() -> None:
    registrar = Registrar()
    registrar.handle_register(
        register(contact(params=f";+sip.instance={INSTANCE}")), UDP, "alice", 0
    )
    response = registrar.handle_register(
        register(contact(params=";expires=0"), cseq=2), UDP, "alice", 1.0
    )
    assert contacts_in(response) == []
    events, _ = drain(registrar)
    assert isinstance(events[-1], BindingRemoved) and events[-1].reason == "unregistered"


def test_a_contact_named_twice_by_instance_and_by_uri_is_removed_once() -> None:
    registrar = Registrar()
    registrar.handle_register(
        register(contact(params=f";+sip.instance={INSTANCE}")), UDP, "alice", 0
    )
    drain(registrar)
    request = register(
        contact(params=f";+sip.instance={INSTANCE};expires=0"),
        contact(params=";expires=0"),
        cseq=2,
    )
    assert registrar.handle_register(request, UDP, "alice", 1.0).status == 200
    events, commands = drain(registrar)
    assert len(events) == 1 and len(commands) == 1


# --- NAT and where requests go --------------------------------------------------------------


def test_a_contact_behind_nat_is_reached_at_the_source_address() -> None:
    registrar = Registrar()
    registrar.handle_register(register(contact()), NATTED, "alice", 0.0)
    (binding,) = registrar.contacts_of("alice", 0.0)
    assert binding.nat
    assert binding.uri == "sip:alice@192.168.1.10:5060"  # the Request-URI stays the Contact
    assert binding.next_hop() == NATTED  # but the packet goes to the NAT's public side


@pytest.mark.parametrize(
    ("contact_uri", "flow", "nat"),
    [
        ("sip:a@192.168.1.10:5060", UDP, False),
        ("sip:a@192.168.1.10", UDP, False),  # default port 5060
        ("sip:a@192.168.1.10:5062", UDP, True),  # port rewritten by a NAT
        ("sip:a@192.168.1.10:5062;transport=tcp", TCP, False),  # tcp: ephemeral source port
        ("sip:a@192.168.1.10:5060", NATTED, True),
        ("sip:a@[2001:db8::1]:5060", Flow("udp", ("2001:db8::1", 5060)), False),
        ("sip:a@abcdef.invalid;transport=ws", Flow("ws", ("10.1.1.1", 443)), False),
        ("sip:a@phone.example.com", UDP, True),  # a name over UDP: answer the source
        ("sip:a@192.168.1.10", Flow("udp", ("not-an-ip", 5060)), True),
        ("sip:a@[2001:db8::1]:5060", Flow("udp", ("2001:db8:0::1", 5060)), False),  # same IP
        ("sip:a@[2001:db8::1]:5062", Flow("udp", ("2001:db8:0::1", 5060)), True),
        ("sip:a@[2001:db8::1]", Flow("tcp", ("2001:db8::2", 5060)), True),
        ("sip:a@[2001:db8::1]", Flow("udp", ("garbage", 5060)), True),
    ],
)
def test_behind_nat(contact_uri: str, flow: Flow, nat: bool) -> None:
    assert behind_nat(parse_uri(contact_uri), flow) is nat


def test_a_stream_binding_without_its_connection_is_reached_at_the_contact() -> None:
    registrar = Registrar()
    request = register("<sip:alice@192.168.1.10:5062;transport=tcp>", transport="TCP")
    registrar.handle_register(request, TCP, "alice", 0.0)
    (binding,) = registrar.contacts_of("alice", 0.0)
    assert binding.next_hop() == TCP
    (closed,) = registrar.connection_closed(TCP)
    assert closed.connection is None
    assert closed.next_hop() == Flow("tcp", ("192.168.1.10", 5062), TCP.local, None)
    assert registrar.binding_by_flow(TCP) is None
    assert registrar.binding_by_flow(closed.flow) == closed
    assert registrar.connection_closed(UDP) == []


def test_next_hop_of_a_tls_contact_without_a_port_or_connection() -> None:
    binding = _binding(transport="tls", uri="sips:alice@[2001:db8::5]", connection=None)
    assert binding.next_hop() == Flow("tls", ("2001:db8::5", 5061), ("127.0.0.1", 5060))


def test_lookup_by_flow_finds_every_line_of_a_phone() -> None:
    registrar = Registrar()
    registrar.handle_register(register(contact()), UDP, "alice", 0.0)
    registrar.handle_register(register("<sip:bob@192.168.1.10:5060>", user="bob"), UDP, "bob", 1.0)
    assert [b.user for b in registrar.bindings_by_flow(UDP)] == ["alice", "bob"]
    binding = registrar.binding_by_flow(UDP)
    assert binding is not None and binding.user == "bob"
    assert registrar.binding_by_flow(NATTED) is None
    assert sorted(b.user for b in registrar.all_bindings()) == ["alice", "bob"]
    assert registrar.binding("bob", binding.key) == binding
    assert registrar.binding("alice", binding.key) is None  # keys are per user


# --- limits -----------------------------------------------------------------------------------


def test_beyond_max_contacts_the_least_recently_refreshed_binding_is_evicted() -> None:
    registrar = Registrar(RegistrarSettings(max_contacts=2))
    registrar.handle_register(register(contact(5060), call_id="a"), UDP, "alice", 0.0)
    registrar.handle_register(register(contact(5070), call_id="b"), UDP, "alice", 1.0)
    registrar.handle_register(register(contact(5060), call_id="a", cseq=2), UDP, "alice", 2.0)
    drain(registrar)
    response = registrar.handle_register(register(contact(5080), call_id="c"), UDP, "alice", 3.0)
    ports = sorted(parse_uri(b.uri).port or 0 for b in registrar.contacts_of("alice", 3.0))
    assert ports == [5060, 5080]
    assert len(contacts_in(response)) == 2
    events, commands = drain(registrar)
    assert isinstance(events[-1], BindingRemoved) and events[-1].reason == "evicted"
    assert parse_uri(events[-1].binding.uri).port == 5070
    assert isinstance(commands[-1], DeleteBinding)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="min_expires"):
        RegistrarSettings(min_expires=0)
    with pytest.raises(ValueError, match="min_expires"):
        RegistrarSettings(min_expires=100, default_expires=50)
    with pytest.raises(ValueError, match="3600"):
        RegistrarSettings(min_expires=4000, default_expires=5000, max_expires=8000)
    with pytest.raises(ValueError, match="max_contacts"):
        RegistrarSettings(max_contacts=0)
    with pytest.raises(ValueError, match="max_failures"):
        AuthSettings(max_failures=0)
    with pytest.raises(ValueError, match="positive"):
        AuthSettings(block_time=0)


def test_settings_from_config() -> None:
    values: dict[str, Any] = {"keepalive": {"flow_timer": 5}}
    config = Config(**values)
    assert RegistrarSettings.from_config(config) == RegistrarSettings(flow_timer=5)
    assert AuthSettings.from_config(config) == AuthSettings()

    class Section:
        def __init__(self, **values: object) -> None:
            self.__dict__.update(values)

    class WithSections:
        keepalive = Section(flow_timer=7)
        registrar = Section(min_expires=1, default_expires=2, max_expires=3, unknown=1)
        auth: ClassVar[dict[str, int]] = {"max_failures": 5}

    settings_ = RegistrarSettings.from_config(WithSections())
    assert (settings_.min_expires, settings_.max_expires, settings_.flow_timer) == (1, 3, 7)
    assert AuthSettings.from_config(WithSections()).max_failures == 5

    class PydanticLike:
        keepalive = Section(flow_timer=9)

        class registrar:  # mimics a pydantic section
            @staticmethod
            def model_dump() -> dict[str, int]:
                return {"max_contacts": 4}

    assert RegistrarSettings.from_config(PydanticLike()).max_contacts == 4


# --- persistence and restart --------------------------------------------------------------------


def _binding(**changes: object) -> Binding:
    values: dict[str, object] = {
        "user": "alice",
        "key": "uri:sip:alice@192.168.1.10:5060",
        "contact": "<sip:alice@192.168.1.10:5060>",
        "uri": "sip:alice@192.168.1.10:5060",
        "expires_at": 3600.0,
        "registered_at": 0.0,
        "updated_at": 0.0,
        "call_id": "c",
        "cseq": 1,
        "transport": "udp",
        "remote_host": "192.168.1.10",
        "remote_port": 5060,
        "local_host": "127.0.0.1",
        "local_port": 5060,
    }
    values.update(changes)
    return Binding(**values)  # type: ignore[arg-type]


def test_bindings_round_trip_through_bytes() -> None:
    registrar = Registrar()
    registrar.handle_register(
        register(outbound_contact(), extra="Supported: outbound\r\nPath: <sip:p;lr;ob>\r\n"),
        TCP,
        "alice",
        12.5,
    )
    _, (save,) = drain(registrar)
    assert isinstance(save, SaveBinding)
    data = encode_binding(save.binding)
    assert isinstance(data, bytes) and len(data) < 600
    assert decode_binding(data) == save.binding
    with pytest.raises(msgspec.DecodeError):
        decode_binding(b"\x81\xa4user\x01")  # wrong type, missing fields
    with pytest.raises(msgspec.DecodeError):
        decode_binding(data[:-3])  # truncated


def test_restart_restores_reachability_without_re_registration() -> None:
    before = Registrar()
    supported = "Supported: outbound\r\n"
    before.handle_register(register(outbound_contact(), extra=supported), TCP, "alice", 0.0)
    before.handle_register(register(contact(), call_id="u"), NATTED, "alice", 0.0)
    before.handle_register(register(contact(6000), expires=60, call_id="x"), UDP, "alice", 0.0)
    stored: dict[tuple[str, str], bytes] = {}
    while (command := before.next_command()) is not None:  # what the store adapter would do
        if isinstance(command, SaveBinding):
            key = (command.binding.user, command.binding.key)
            stored[key] = encode_binding(command.binding)
    # kill -9 at t=100, restart: the 60 s binding has expired in the meantime.
    after = Registrar()
    count = after.restore((decode_binding(data) for data in stored.values()), 100.0)
    assert count == 2 and len(after) == 2
    events, commands = drain(after)
    assert all(isinstance(e, BindingAdded) and e.restored for e in events)
    assert len(events) == 2
    assert [type(c) for c in commands] == [DeleteBinding]
    by_transport = {b.transport: b for b in after.contacts_of("alice", 100.0)}
    assert by_transport["tcp"].connection is None  # the old connection is gone
    assert by_transport["tcp"].outbound
    assert by_transport["udp"].next_hop() == NATTED  # still reachable behind its NAT
    assert after.get_timer() == 3600.0
    after.handle_timer(3600.0)
    assert len(after) == 0


def test_restore_keeps_the_newest_copy_of_a_binding() -> None:
    registrar = Registrar()
    old = _binding(updated_at=1.0, cseq=1)
    new = _binding(updated_at=2.0, cseq=2)
    assert registrar.restore([old, new, old], 10.0) == 1
    (binding,) = registrar.contacts_of("alice", 10.0)
    assert binding.cseq == 2
    events, commands = drain(registrar)
    assert events == [BindingAdded(binding, 10.0, restored=True)] and commands == []


def test_a_binding_registered_since_the_restart_beats_its_stored_copy() -> None:
    registrar = Registrar()
    registrar.handle_register(register(contact(), cseq=9), UDP, "alice", 5.0)
    drain(registrar)
    stored = _binding(updated_at=1.0, cseq=1, key=registrar.contacts_of("alice", 5.0)[0].key)
    assert registrar.restore([stored], 6.0) == 0
    assert registrar.contacts_of("alice", 6.0)[0].cseq == 9
    assert drain(registrar) == ([], [])


def test_endpoint_ids_are_stable_and_url_safe() -> None:
    binding = _binding()
    assert binding.endpoint_id == endpoint_id("alice", binding.key)
    assert len(binding.endpoint_id) == 16 and binding.endpoint_id.isalnum()
    assert endpoint_id("alice", "k") != endpoint_id("bob", "k")
    assert binding.remaining(3599.5) == 1 and binding.remaining(4000.0) == 0


# --- request reading details ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (None, None),
        ("", None),
        ("-1", None),
        ("3600", 3600),
        (" 10 ", 10),
        ("٣", None),  # an Arabic-Indic digit: isdigit() but not ASCII
        ("4294967295", MAX_DELTA_SECONDS),
        ("4294967296", MAX_DELTA_SECONDS),
        ("9" * 5000, MAX_DELTA_SECONDS),
    ],
)
def test_delta_seconds(text: str | None, value: int | None) -> None:
    assert delta_seconds(text) == value


def test_read_register_summarizes_the_request() -> None:
    plan = read_register(
        register(contact(params=";q=0.7"), cseq=4, expires=120), RegistrarSettings()
    )
    assert isinstance(plan, RegisterPlan)
    assert (plan.call_id, plan.cseq, plan.wildcard, plan.outbound) == (
        "reg-1@192.168.1.10",
        4,
        False,
        False,
    )
    (update,) = plan.updates
    assert (update.expires, update.q, update.outbound) == (120, 0.7, False)
    assert update.contact == "<sip:alice@192.168.1.10:5060>;q=0.7"


# --- invariants under arbitrary sequences --------------------------------------------------------

_operations = st.lists(
    st.tuples(
        st.sampled_from(["register", "unregister", "wildcard", "tick", "reboot"]),
        st.integers(min_value=0, max_value=3),  # which contact
        st.integers(min_value=0, max_value=200),  # expires
        st.floats(min_value=0.0, max_value=150.0),  # time step
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(_operations)
def test_table_indexes_and_timers_stay_consistent(
    operations: list[tuple[str, int, int, float]],
) -> None:
    registrar = Registrar(
        RegistrarSettings(min_expires=1, default_expires=50, max_expires=100, max_contacts=3)
    )
    now = 0.0
    cseq = 0
    call_id = "boot-0"
    live: set[str] = set()
    for op, which, expires, step in operations:
        now += step
        cseq += 1
        port = 5060 + which
        if op == "tick":
            registrar.handle_timer(now)
        elif op == "reboot":
            call_id = f"boot-{cseq}"
            continue
        elif op == "wildcard":
            request = register("*", expires=0, cseq=cseq, call_id=call_id)
            assert registrar.handle_register(request, UDP, "alice", now).status == 200
        else:
            value = 0 if op == "unregister" else expires
            request = register(contact(port), expires=value, cseq=cseq, call_id=call_id)
            status = registrar.handle_register(request, UDP, "alice", now).status
            assert status in (200, 423)
        while (event := registrar.next_event()) is not None:
            if isinstance(event, BindingAdded):
                assert event.binding.key not in live
                live.add(event.binding.key)
            elif isinstance(event, BindingRemoved):
                live.remove(event.binding.key)
            else:
                assert event.binding.key in live
        bindings = list(registrar.all_bindings())
        assert {b.key for b in bindings} == live
        assert len(registrar) == len(bindings) <= 3
        deadline = registrar.get_timer()
        if bindings:
            assert deadline == min(b.expires_at for b in bindings)
        else:
            assert deadline is None
        assert {b.key for b in registrar.bindings_by_flow(UDP)} == live
