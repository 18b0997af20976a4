"""The directory: who the users are, what their credentials and fallbacks are, and what a dialled
Request-URI means.

Built from the configuration in one go (`Directory.from_config`) and never changed afterwards: a
SIGHUP reload builds a new one and swaps it in. Registrations are not part of it (they live in
the `Registrar`), so a reload neither drops a phone nor needs one to register again.

Resolution (`resolve`) answers "who did the caller dial?" for an INVITE's Request-URI:
- a configured user — `sip:alice@<domain>`, `sip:alice@<one of our addresses>`, or a bare `alice`;
- otherwise a number (digits, optional `+`, visual separators allowed) routed to the trunk with
  the longest matching prefix — also as `tel:+49...`;
- otherwise not found (404). A host that is not ours is not found either: callkeeper is a B2BUA
  for its own users, not an open proxy. User names win over numbers, so extension-style users
  (`1001`) are reached before any trunk. Feature codes (`*86`) are not numbers: the call manager
  looks for them before it resolves.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING
from urllib.parse import unquote

from callkeeper.directory.bindings import endpoint_id
from callkeeper.directory.trunks import Trunk, TrunkTable, normalize_number
from callkeeper.sip.digest import StoredSecret
from callkeeper.sip.errors import ParseError
from callkeeper.sip.locate import host_name_problem
from callkeeper.sip.uri import URI, parse_uri

if TYPE_CHECKING:
    from callkeeper.config import Config

_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class DirectoryError(ValueError):
    """A configuration value the directory cannot use; the message names the key."""


@dataclass(frozen=True, slots=True)
class StaticContact:
    """A device of `user` that never registers: called at `uri`, watched with OPTIONS."""

    user: str
    uri: URI

    @property
    def key(self) -> str:
        return f"static:{self.uri}"

    @property
    def endpoint_id(self) -> str:
        return endpoint_id(self.user, self.key)


@dataclass(frozen=True, slots=True)
class User:
    name: str
    secret: StoredSecret
    mobile: URI | None = None  # a sip: or tel: URI whose user part is a number (via a trunk)
    voicemail: bool = False
    static_contacts: tuple[StaticContact, ...] = ()


# --- what a Request-URI resolves to ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserTarget:
    """A local user: fork to their registered and static contacts."""

    user: User


@dataclass(frozen=True, slots=True)
class NumberTarget:
    """A number that leaves through `trunk`."""

    number: str
    trunk: Trunk


@dataclass(frozen=True, slots=True)
class NotFound:
    """Nobody to call: answer `status` (404, or 416 for a URI scheme we cannot route)."""

    reason: str
    status: int = 404


Target = UserTarget | NumberTarget | NotFound


class Directory:
    """Users, trunks, trusted networks and our own names (see the module docstring)."""

    __slots__ = ("_any_ip_is_local", "_local_hosts", "_trusted", "_users", "domain", "trunks")

    def __init__(
        self,
        users: Iterable[User] = (),
        trunks: Iterable[Trunk] = (),
        *,
        domain: str = "127.0.0.1",
        trusted_sources: Iterable[str] = (),
        local_hosts: Iterable[str] = (),
    ) -> None:
        """`local_hosts` are the other names and addresses that mean "us" (listen addresses);
        a wildcard among them (0.0.0.0, ::) makes every IP literal count as ours."""
        self._users: dict[str, User] = {user.name: user for user in users}
        self.trunks = TrunkTable(trunks)
        self.domain = domain
        self._trusted: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(source, strict=False) for source in trusted_sources
        )
        hosts = [domain, *local_hosts]
        self._any_ip_is_local = any(host in _WILDCARD_HOSTS for host in hosts)
        self._local_hosts = frozenset(
            _normalize_host(host) for host in hosts if host not in _WILDCARD_HOSTS
        )

    @classmethod
    def from_config(cls, config: Config, *, local_hosts: Iterable[str] = ()) -> Directory:
        """Build the directory of `config`; raises DirectoryError naming a bad key."""
        users = [
            _user_from_config(index, user.name, user.password, user.ha1, user.mobile,
                              user.voicemail, user.static_contacts)
            for index, user in enumerate(config.users)
        ]  # fmt: skip
        trunks = [
            Trunk(trunk.name, _parse(trunk.uri, f"trunks.{index}.uri"), _match(index, trunk.match))
            for index, trunk in enumerate(config.trunks)
        ]
        listen_hosts = [address.host for address in config.sip.listen]
        return cls(
            users,
            trunks,
            domain=config.sip.domain,
            trusted_sources=config.sip.trusted_sources,
            local_hosts=[*listen_hosts, *local_hosts],
        )

    # --- users ----------------------------------------------------------------------------------
    @property
    def users(self) -> Mapping[str, User]:
        return MappingProxyType(self._users)

    def user(self, name: str) -> User | None:
        return self._users.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._users

    def lookup_ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """The `LookupHA1` of `DigestAuthenticator`: None for an unknown user."""
        user = self._users.get(username)
        return user.secret.ha1_for(username, realm, algorithm) if user is not None else None

    def algorithms_for(self, username: str | None, offered: Iterable[str]) -> tuple[str, ...]:
        """The challenge algorithms to offer to `username`: those its secret can answer (a user
        with only an MD5 `ha1` must not be offered SHA-256), all of `offered` otherwise."""
        offered = tuple(offered)
        user = self._users.get(username) if username is not None else None
        if user is None:
            return offered
        return user.secret.algorithms(offered) or offered

    def mobile(self, name: str) -> URI | None:
        user = self._users.get(name)
        return user.mobile if user is not None else None

    def voicemail(self, name: str) -> bool:
        user = self._users.get(name)
        return user.voicemail if user is not None else False

    def static_contacts(self, name: str) -> tuple[StaticContact, ...]:
        user = self._users.get(name)
        return user.static_contacts if user is not None else ()

    def all_static_contacts(self) -> list[StaticContact]:
        """Every static contact of every user: the liveness monitor probes them with OPTIONS."""
        return [contact for user in self._users.values() for contact in user.static_contacts]

    # --- trunks and trust -----------------------------------------------------------------------
    def trunk_for(self, number: str) -> Trunk | None:
        """The trunk for a number (visual separators allowed), or None."""
        normalized = normalize_number(number)
        return self.trunks.trunk_for(normalized) if normalized is not None else None

    def is_trusted(self, ip: str) -> bool:
        """True when `ip` lies in one of `sip.trusted_sources` (no digest auth for it)."""
        if not self._trusted:
            return False
        try:
            address = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._trusted)

    def is_local_host(self, host: str) -> bool:
        """True when `host` names us: the domain, a listen address (any IP with a wildcard)."""
        normalized = _normalize_host(host)
        if normalized in self._local_hosts:
            return True
        return self._any_ip_is_local and _is_ip(normalized)

    # --- resolution -----------------------------------------------------------------------------
    def resolve(
        self, target: URI | str, *, is_local: Callable[[str], bool] | None = None
    ) -> Target:
        """What a dialled Request-URI (or a bare user name / number) means.

        `is_local` replaces `is_local_host` when the caller knows our addresses better (the io
        layer learns the real address behind a wildcard listen).
        """
        if isinstance(target, str):
            if ":" not in target:
                return self._resolve_name(target)
            try:
                target = parse_uri(target)
            except ParseError as error:
                return NotFound(f"bad URI: {error.reason}", error.status)
        if target.scheme == "tel":
            return self._resolve_number(_strip_params(target.user or ""))
        if not target.is_sip:
            return NotFound(f"cannot route {target.scheme}: URIs", 416)
        if target.user is None:
            return NotFound("no user part in the Request-URI")
        if not (is_local or self.is_local_host)(target.host):
            return NotFound(f"{target.host} is not our domain")
        return self._resolve_name(_strip_params(unquote(target.user)))

    def mobile_target(self, name: str) -> Target:
        """Where the user's `mobile` fallback goes: its number through a trunk."""
        mobile = self.mobile(name)
        if mobile is None:
            return NotFound(f"{name} has no mobile")
        target = self._resolve_number(_strip_params(unquote(mobile.user or "")))
        if isinstance(target, NumberTarget) and mobile.is_sip:
            # `sip:+4917...@provider`: the trunk that serves that host, whatever the prefixes say.
            host = _normalize_host(mobile.host)
            for trunk in self.trunks.trunks:
                if trunk.uri.is_sip and _normalize_host(trunk.uri.host) == host:
                    return NumberTarget(target.number, trunk)
        return target

    def _resolve_name(self, name: str) -> Target:
        user = self._users.get(name)
        if user is not None:
            return UserTarget(user)
        return self._resolve_number(name)

    def _resolve_number(self, text: str) -> Target:
        number = normalize_number(text)
        if number is None:
            return NotFound(f"no user {text[:64]!r}")
        trunk = self.trunks.trunk_for(number)
        if trunk is None:
            return NotFound(f"no trunk for {number}")
        return NumberTarget(number, trunk)


# --- helpers -------------------------------------------------------------------------------------


def _normalize_host(host: str) -> str:
    text = host.strip().lower()
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return text.rstrip(".")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _strip_params(user: str) -> str:
    """A user part without RFC 3966-style parameters (`+4930123;phone-context=...`)."""
    return user.split(";", 1)[0]


def _parse(text: str, key: str) -> URI:
    try:
        uri = parse_uri(text.strip())
    except ParseError as error:
        raise DirectoryError(f"{key}: {error.reason}") from None
    # A host name is resolved later (io/resolver.py) and may not resolve yet; one DNS cannot
    # look up at all is a configuration error now.
    problem = host_name_problem(uri.host) if uri.is_sip else None
    if problem is not None:
        raise DirectoryError(f"{key}: {problem}")
    return uri  # parse_uri only accepts sip:, sips: and tel: URIs here


def _match(index: int, match: str) -> str:
    if match and normalize_number(match) != match:
        raise DirectoryError(f"trunks.{index}.match: must be digits with an optional leading +")
    return match


def _user_from_config(
    index: int,
    name: str,
    password: str | None,
    ha1: str | None,
    mobile: str | None,
    voicemail: bool,
    static_contacts: Iterable[str],
) -> User:
    key = f"users.{index}"
    mobile_uri: URI | None = None
    if mobile:
        mobile_uri = _mobile_uri(mobile, f"{key}.mobile")
    contacts = tuple(
        StaticContact(name, _static_uri(text, f"{key}.static_contacts.{position}"))
        for position, text in enumerate(static_contacts)
    )
    return User(name, StoredSecret(password, ha1), mobile_uri, voicemail, contacts)


def _mobile_uri(text: str, key: str) -> URI:
    """A mobile number or URI as configured: `+4917...`, `tel:+4917...`, `sip:+4917...@trunk`."""
    text = text.strip()
    if ":" not in text:
        number = normalize_number(text)
        if number is None:
            raise DirectoryError(f"{key}: {text!r} is neither a number nor a URI")
        return URI("tel", user=number)
    uri = _parse(text, key)
    if normalize_number(_strip_params(unquote(uri.user or ""))) is None:
        raise DirectoryError(f"{key}: the user part of {text!r} must be a number")
    return uri


def _static_uri(text: str, key: str) -> URI:
    uri = _parse(text, key)
    if not uri.is_sip:
        raise DirectoryError(f"{key}: a static contact must be a sip: or sips: URI")
    return uri
