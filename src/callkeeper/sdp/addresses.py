"""Connection addresses in SDP (RFC 8866 §5.7, §9): checking `IN IP4|IP6 <address>` triples.

A `c=` line whose address does not match its address type (an IPv6 literal under `IP4`, a
dotted quad under `IP6`) would send media nowhere, so the parser refuses it. Hosts may also be
domain names (RFC 8866 allows an FQDN), and multicast addresses carry `/ttl[/count]` (IPv4) or
`/count` (IPv6) suffixes. Network types other than `IN` are kept opaque: they are legal SDP
and callkeeper never routes media to them.

IPv4 is checked by one compiled expression; IPv6, rare in SIP bodies, by `ipaddress`.
"""

from __future__ import annotations

import ipaddress
import re

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
# What looks like a dotted quad but is none (300.1.1.1, 1.2.3): not a domain name either.
_NUMERIC_RE = re.compile(r"[0-9.]+")
_FQDN_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?")
_IPV4_SUFFIX_RE = re.compile(r"(?:/[0-9]{1,3}(?:/[0-9]{1,5})?)?")
_IPV6_SUFFIX_RE = re.compile(r"(?:/[0-9]{1,5})?")
TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"  # RFC 8866 §9 token
_TOKEN_RE = re.compile(TOKEN)


def _valid_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def address_problem(nettype: str, addrtype: str, address: str) -> str | None:
    """Why `nettype addrtype address` is not a usable connection address, or None if it is."""
    if nettype != "IN":
        if _TOKEN_RE.fullmatch(nettype) and _TOKEN_RE.fullmatch(addrtype):
            return None
        return "bad network or address type"
    host, slash, suffix = address.partition("/")
    suffix = slash + suffix
    if addrtype == "IP4":
        if _IPV4_RE.fullmatch(host):
            return None if _IPV4_SUFFIX_RE.fullmatch(suffix) else "bad multicast suffix"
        if ":" in host:
            return "IPv6 address with address type IP4"
    elif addrtype == "IP6":
        if ":" in host:
            if not _valid_ipv6(host):
                return "bad IPv6 address"
            return None if _IPV6_SUFFIX_RE.fullmatch(suffix) else "bad multicast suffix"
        if _IPV4_RE.fullmatch(host):
            return "IPv4 address with address type IP6"
    else:
        return "unknown address type for IN"
    if suffix or _NUMERIC_RE.fullmatch(host) or not _FQDN_RE.fullmatch(host):
        return "bad address"
    return None


def address_type(host: str) -> str:
    """`IP6` for an IPv6 literal, else `IP4` (dotted quads and domain names)."""
    return "IP6" if ":" in host else "IP4"
