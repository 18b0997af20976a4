"""Host names in configured SIP URIs, resolved ahead of time (RFC 3263 §4, see sip/locate.py).

The pure core routes a call synchronously and never waits on I/O, so it cannot ask DNS when a
call arrives. Instead every name the configuration uses (`CallManager.dns_lookups`) is looked
up here at start-up, after a SIGHUP reload, and again when its answer's TTL runs out (clamped
to `[dns] min_ttl`..`max_ttl`); each answer goes into the core's table (`set_resolved`). A
failed look-up keeps the last good answer (a DNS outage must not cut off a trunk that still
works), is logged once per outage, counted (`callkeeper_dns_failures_total`), and tried again
after `min_ttl`. A name that never resolved has no address: calls to it fail cleanly in the core.

dnspython (`dns.asyncresolver`) does the asking: it is maintained, asynchronous on asyncio,
speaks SRV (and NAPTR, A, AAAA) with the TTLs we need, and can be pointed at a given server
and port (`[dns] servers`), which the standard library's getaddrinfo can do none of.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
import structlog

from callkeeper.config import DnsSection
from callkeeper.sip.locate import Lookup, SrvRecord, order_srv

log = structlog.get_logger(__name__)

Address = tuple[str, int]
# Hands an answer to the core (`CallManager.set_resolved`, through the driver).
Deliver = Callable[[Lookup, tuple[Address, ...]], None]


class LookupFailed(Exception):
    """A name could not be resolved now (no answer, no such name, no server answered)."""


class DnsResolver:
    """Keeps every configured name resolved (see the module docstring)."""

    def __init__(self, settings: DnsSection, deliver: Deliver) -> None:
        self._deliver = deliver
        self._settings = settings
        self._resolver = _make_resolver(settings)
        self._tasks: dict[Lookup, asyncio.Task[None]] = {}
        self._tried: dict[Lookup, asyncio.Event] = {}
        self._answers: dict[Lookup, tuple[Address, ...]] = {}
        self.failures = 0

    @property
    def unresolved(self) -> int:
        """Names in use that have no address (they never resolved)."""
        return sum(1 for lookup in self._tasks if lookup not in self._answers)

    async def start(self, lookups: Iterable[Lookup]) -> None:
        """Look every name up once, waiting at most about two look-up timeouts: a name DNS
        cannot answer for does not hold up start-up (it is tried again in the background)."""
        self.update(lookups)
        waits = [asyncio.ensure_future(self._tried[lookup].wait()) for lookup in self._tasks]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=2 * self._settings.timeout + 1)
            for wait in pending:
                wait.cancel()

    def reconfigure(self, settings: DnsSection, lookups: Iterable[Lookup]) -> None:
        """SIGHUP: new servers or TTL bounds, and the names the new configuration uses."""
        if settings != self._settings:
            self._settings = settings
            self._resolver = _make_resolver(settings)
        self.update(lookups)

    def update(self, lookups: Iterable[Lookup]) -> None:
        """Keep exactly `lookups` resolved: new names are looked up now, dropped ones forgotten."""
        wanted = set(lookups)
        for lookup in [lookup for lookup in self._tasks if lookup not in wanted]:
            self._tasks.pop(lookup).cancel()
            self._tried.pop(lookup, None)
            self._answers.pop(lookup, None)
        for lookup in wanted - self._tasks.keys():
            self._tried[lookup] = asyncio.Event()
            self._tasks[lookup] = asyncio.get_running_loop().create_task(self._keep(lookup))

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    async def _keep(self, lookup: Lookup) -> None:
        """Resolve `lookup` now and whenever its answer expires, for as long as it is used."""
        failing = False
        while True:
            try:
                addresses, ttl = await self.locate(lookup)
            except LookupFailed as error:
                self.failures += 1
                if not failing:
                    self._warn(lookup, str(error))
                failing = True
                delay = self._settings.min_ttl
            else:
                if failing:
                    log.info("dns look-up works again", name=str(lookup))
                failing = False
                self._answer(lookup, addresses)
                delay = min(max(ttl, self._settings.min_ttl), self._settings.max_ttl)
            self._tried[lookup].set()
            await asyncio.sleep(delay)

    def _warn(self, lookup: Lookup, error: str) -> None:
        kept = self._answers.get(lookup)
        if kept:
            log.warning("dns look-up failed, keeping the last answer", name=str(lookup),
                        error=error, address=_show(kept[0]))  # fmt: skip
        else:
            log.warning("dns look-up failed, calls to this name fail until it resolves",
                        name=str(lookup), error=error)  # fmt: skip

    def _answer(self, lookup: Lookup, addresses: tuple[Address, ...]) -> None:
        previous = self._answers.get(lookup)
        self._answers[lookup] = addresses
        if previous == addresses:
            return
        if previous is None or previous[:1] != addresses[:1]:
            log.info("dns name resolved", name=str(lookup), address=_show(addresses[0]),
                     others=len(addresses) - 1)  # fmt: skip
        self._deliver(lookup, addresses)

    # --- RFC 3263 §4.2 (NAPTR skipped: see sip/locate.py) --------------------------------------
    async def locate(self, lookup: Lookup) -> tuple[tuple[Address, ...], float]:
        """`lookup`'s addresses, best first, and how long the answer holds (its smallest TTL)."""
        srv_name = lookup.srv_name
        if srv_name is not None:
            answer = await self._query(srv_name, "SRV", missing_ok=True)
            if answer is not None:
                return await self._srv_targets(answer)
        ips, ttl = await self._addresses(lookup.host)
        return tuple((ip, lookup.default_port) for ip in ips), ttl

    async def _srv_targets(self, answer: dns.resolver.Answer) -> tuple[tuple[Address, ...], float]:
        records = order_srv(
            (
                SrvRecord(rr.priority, rr.weight, rr.port, rr.target.to_text(omit_final_dot=True))
                for rr in answer
            ),
            _pick,
        )
        ttl: float = answer.rrset.ttl if answer.rrset is not None else 0
        addresses: list[Address] = []
        for record in records:
            try:
                ips, address_ttl = await self._addresses(record.target)
            except LookupFailed:
                continue  # a target without an address: the others may have one
            addresses += [(ip, record.port) for ip in ips]
            ttl = min(ttl, address_ttl)
        if not addresses:
            raise LookupFailed(f"{answer.qname}: no SRV target has an address")
        return tuple(addresses), ttl

    async def _addresses(self, name: str) -> tuple[list[str], float]:
        """IPv4 first (our listen sockets usually are), IPv6 when the name has no A record."""
        for rdtype in ("A", "AAAA"):
            answer = await self._query(name, rdtype, missing_ok=rdtype == "A")
            if answer is not None and answer.rrset is not None:
                return [rr.address for rr in answer], answer.rrset.ttl
        raise LookupFailed(f"{name}: no address")

    async def _query(
        self, name: str, rdtype: str, *, missing_ok: bool
    ) -> dns.resolver.Answer | None:
        """One question; None for "no such record" when `missing_ok`, LookupFailed otherwise."""
        try:
            return await self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as error:
            if missing_ok:
                return None
            raise LookupFailed(f"{name} {rdtype}: {_reason(error)}") from None
        except (dns.exception.DNSException, OSError) as error:
            raise LookupFailed(f"{name} {rdtype}: {_reason(error)}") from None


def _make_resolver(settings: DnsSection) -> dns.asyncresolver.Resolver:
    """The configured servers, or the system's (/etc/resolv.conf); no cache (we keep answers
    for their TTL ourselves and want a fresh one when it runs out)."""
    if settings.servers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(host, port) for host, port in settings.server_addresses
        ]
    else:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            log.warning("no DNS servers: /etc/resolv.conf names none and [dns] servers is empty")
            resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.timeout = resolver.lifetime = settings.timeout
    return resolver


def _pick(total: int) -> int:
    return random.randint(0, total)  # RFC 2782 load sharing: no secret, any PRNG does


def _reason(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _show(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
