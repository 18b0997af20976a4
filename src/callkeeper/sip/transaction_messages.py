"""Requests that belong to a transaction rather than to the TU: the ACK for a non-2xx final
(RFC 3261 §17.1.1.3), CANCEL (§9.1), and Via branch values (§8.1.1.7).

They live here, apart from the state machines, because each is a pure function of messages
already sent or received, and the dialog layer needs `build_cancel` and `make_branch` too.
Branches are built from an injected id source: the pure core may not use `random`, and the io
driver seeds the source (e.g. with `secrets.token_hex`) so branches stay unique across restarts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from callkeeper.sip.headers import Headers, canonical
from callkeeper.sip.message import Request, Response
from callkeeper.sip.via import MAGIC_COOKIE

IdSource = Callable[[], str]


def counter_ids(prefix: str = "") -> IdSource:
    """A deterministic id source: `prefix` followed by a hex counter (1, 2, ... a, b ...).

    Give it a per-process random prefix in production; tests use it as is.
    """
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):x}"


def make_branch(token: str) -> str:
    """An RFC 3261 branch: the magic cookie, then a token unique to this transaction."""
    return MAGIC_COOKIE + token


def _copy_routing_headers(request: Request, headers: Headers, to_value: str) -> None:
    """Via (top only), Route, From, To, Call-ID: shared by the ACK and the CANCEL."""
    headers.add("Via", str(request.top_via))
    headers.add("Max-Forwards", "70")
    for name, value in request.headers:
        if canonical(name) == "route":
            headers.add(name, value)
    headers.add("From", request.headers.get("from") or "")
    headers.add("To", to_value)
    headers.add("Call-ID", request.call_id)


def build_non2xx_ack(request: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 300-699 final (§17.1.1.3).

    Same Request-URI, Call-ID, From, CSeq number and Route set as the INVITE, its top Via only
    (so it matches the server transaction), and the To of the response (with the UAS's tag).
    """
    headers = Headers()
    _copy_routing_headers(request, headers, response.headers.get("to") or "")
    headers.add("CSeq", f"{request.cseq.number} ACK")
    return Request("ACK", request.uri, headers)


def build_cancel(request: Request) -> Request:
    """A CANCEL for a pending `request` (§9.1): same branch, so it reaches the same server."""
    headers = Headers()
    _copy_routing_headers(request, headers, request.headers.get("to") or "")
    headers.add("CSeq", f"{request.cseq.number} CANCEL")
    return Request("CANCEL", request.uri, headers)
