"""Where a call can go right now: a user's live devices, a number at its trunk, an IVR node, a
recovery step's contacts.

One job: turning a target (a user, a number, a URI, an endpoint id, a fallback step) into
contacts the B2BUA or the recovery engine can ring. Registered bindings come from the registrar,
static contacts and trunks from the directory, host names' addresses from the resolved-targets
table, and DOWN endpoints are left out by asking the liveness monitor. The call manager answers
the recovery engine's questions (`calls.recovery.Routes`) through these functions.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from callkeeper.calls.b2bua import CallTarget, Contact
from callkeeper.directory import NumberTarget, UserTarget
from callkeeper.liveness.states import State
from callkeeper.sip.errors import ParseError
from callkeeper.sip.uri import URI, parse_uri

if TYPE_CHECKING:
    from callkeeper.calls.manager import CallManager


def call_target(
    core: CallManager, target: UserTarget | NumberTarget, now: float
) -> CallTarget | None:
    """Whom a new call rings: every device of a user (one node, round-robin, for the IVR
    user), or a number at its trunk; None while the trunk's host name has no address."""
    if isinstance(target, UserTarget):
        name = target.user.name
        contacts = user_contacts(core, name, now)
        if name == core.config.ivr.user and contacts:
            contacts = [next_ivr_node(core, contacts)]
        to_uri = URI("sip", user=name, host=core.local.domain)
        return CallTarget(name, to_uri, tuple(contacts))
    contact = trunk_contact(core, target)
    if contact is None:
        return None
    return CallTarget(target.number, contact.uri, (contact,))


def current_contact(core: CallManager, endpoint_id: str) -> Contact | None:
    """Where the liveness watch last reached `endpoint_id`."""
    target = core.watch.target(endpoint_id)
    if target is None:
        return None
    uri, flow = target
    return Contact(uri, flow, endpoint=endpoint_id)


def step_contacts(
    core: CallManager, user: str, step: str, exclude: Collection[str]
) -> list[Contact]:
    """A fallback step's contacts: the user's other live devices, their mobile through its
    trunk, or their voicemail."""
    if step == "devices":
        return [
            contact
            for contact in user_contacts(core, user, core.now)
            if contact.endpoint not in exclude and not is_down(core, contact.endpoint)
        ]
    if step == "mobile":
        target = core.directory.mobile_target(user)
        contact = trunk_contact(core, target) if isinstance(target, NumberTarget) else None
        return [contact] if contact is not None else []
    if step == "voicemail":
        uri_text = core.config.recovery.voicemail_uri
        if uri_text is None or not core.directory.voicemail(user):
            return []
        uri = parse_uri(uri_text)
        if uri.user is None:
            uri = uri.replace(user=user)
        contact = located_contact(core, uri, endpoint="voicemail", user=user)
        return [contact] if contact is not None else []
    return []


def target_contacts(core: CallManager, target: str) -> list[Contact]:
    """A user's live devices, a number through its trunk, or a SIP URI as it is."""
    resolved = core.directory.resolve(target)
    if isinstance(resolved, UserTarget):
        return step_contacts(core, resolved.user.name, "devices", ())
    if isinstance(resolved, NumberTarget):
        contact = trunk_contact(core, resolved)
        return [contact] if contact is not None else []
    try:
        uri = parse_uri(target)
    except ParseError:
        return []
    if not uri.is_sip or uri.user is None or core.local.is_ours(uri.host, uri.port):
        return []
    contact = located_contact(core, uri)  # a name outside the configuration has no address
    return [contact] if contact is not None else []


def user_contacts(core: CallManager, user: str, now: float) -> list[Contact]:
    """Every device of `user`: live registrations, then static contacts with an address."""
    local = core.local
    contacts = [
        Contact(
            binding.request_uri,
            local.complete(binding.next_hop()),
            endpoint=binding.endpoint_id,
            user=user,
        )
        for binding in core.registrar.contacts_of(user, now)
    ]
    for static in core.directory.static_contacts(user):
        contact = located_contact(core, static.uri, endpoint=static.endpoint_id, user=user)
        if contact is not None:  # None: its host name has no address (yet), the others ring
            contacts.append(contact)
    return contacts


def trunk_contact(core: CallManager, target: NumberTarget) -> Contact | None:
    """The number at its trunk; None while the trunk's host name has no address."""
    uri = target.trunk.uri.replace(user=target.number)
    return located_contact(core, uri, endpoint=f"trunk:{target.trunk.name}")


def located_contact(
    core: CallManager, uri: URI, endpoint: str | None = None, user: str | None = None
) -> Contact | None:
    """`uri` at the first address of its host (RFC 3263), the others kept to fail over to;
    None while its host name has no address."""
    flows = core.resolved_targets.flows_for(uri, core.now)
    if not flows:
        return None
    return Contact(uri, flows[0], endpoint=endpoint, user=user, alternates=flows[1:])


def next_ivr_node(core: CallManager, contacts: list[Contact]) -> Contact:
    """IVR nodes share the calls round-robin (a call goes to one node, not all of them),
    skipping nodes the liveness monitor has DOWN."""
    live = [c for c in contacts if not is_down(core, c.endpoint)] or contacts
    core.ivr_turn += 1
    return live[core.ivr_turn % len(live)]


def is_down(core: CallManager, endpoint_id: str | None) -> bool:
    if endpoint_id is None:
        return False
    view = core.watch.monitor.view(endpoint_id)
    return view is not None and view.state is State.DOWN
