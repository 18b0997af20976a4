"""What every request outside a known dialog gets, in order (RFC 3261 §8.2).

One job: the decision per request. The element-wide policy first (420 for an unsupported
Require, 405/501 for methods we do not serve, 483 when Max-Forwards ran out, 482 for a call that
looped back to us), then authentication (digest, or a trusted source), then the registrar for
REGISTER, the B2BUA for INVITE (the feature code to the handover, a number whose trunk has no
address yet 503) and the MWI subscriptions for SUBSCRIBE (a user's own `message-summary` only).
Requests inside a dialog go to the B2BUA or to their subscription, or 481. OPTIONS keep-alive
probes are answered statelessly (`options_response`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING
from urllib.parse import unquote

from callkeeper.calls import handover, mwi_subscriptions, routing
from callkeeper.directory import NotFound, NumberTarget
from callkeeper.sip import capabilities
from callkeeper.sip.message import Request, Response, has_to_tag
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import URI

if TYPE_CHECKING:
    from callkeeper.calls.manager import CallManager

# Out-of-dialog requests of these methods only make sense inside a dialog we do not have.
_DIALOG_ONLY = frozenset({"BYE", "INFO", "UPDATE", "PRACK", "NOTIFY", "REFER"})


def dispatch(
    core: CallManager, request: Request, transaction_id: int, flow: Flow, now: float
) -> None:
    """Answer or hand on a request that arrived in a new server transaction."""
    endpoint = core.endpoint
    if has_to_tag(request):
        if core.b2bua.knows_dialog(request):
            core.b2bua.receive_in_dialog(request, transaction_id, now)
        elif core.message_waiting.subscriptions.knows(request):
            core.message_waiting.subscriptions.refresh(request, transaction_id, flow, now)
        else:
            reply(core, request, transaction_id, 481, now, tag=False)
        return
    response = element_policy(core, request)
    if response is not None:
        endpoint.send_response(response, now, transaction_id)
        return
    method = request.method
    if method in _DIALOG_ONLY:
        reply(core, request, transaction_id, 481, now)
        return
    if method == "SUBSCRIBE":
        _subscribe(core, request, transaction_id, flow, now)
        return
    if method not in ("REGISTER", "INVITE"):
        reply(core, request, transaction_id, 405, now)  # MESSAGE: not served yet
        return
    decision = core.auth.check(request, flow, now, core.random_bytes(16))
    if decision.response is not None:
        endpoint.send_response(decision.response, now, transaction_id)
        return
    if method == "REGISTER":
        assert decision.user is not None
        answer = core.registrar.handle_register(
            request, flow, decision.user, now, to_tag=endpoint.new_tag()
        )
        endpoint.send_response(answer, now, transaction_id)
        return
    _invite(core, request, transaction_id, flow, decision.user, now)


def _invite(
    core: CallManager,
    request: Request,
    transaction_id: int,
    flow: Flow,
    caller: str | None,
    now: float,
) -> None:
    binding = core.registrar.binding_by_flow(flow)
    caller_endpoint = binding.endpoint_id if binding is not None else None
    if caller is not None and request.uri.user == core.config.recovery.feature_code:
        status = handover.pick_up(
            core.recovery, request, transaction_id, flow, caller, caller_endpoint, now
        )
        if status is not None:
            reply(core, request, transaction_id, status, now)
        return
    target = core.directory.resolve(request.uri)
    if isinstance(target, NotFound):
        reply(core, request, transaction_id, target.status, now)
        return
    call_target = routing.call_target(core, target, now)
    if call_target is None:
        assert isinstance(target, NumberTarget)  # only a trunk's host name can lack an address
        _unresolved(core, request, transaction_id, target.trunk.uri, now)
        return
    core.b2bua.start_call(
        request, transaction_id, flow, caller, call_target, now, caller_endpoint=caller_endpoint
    )


def _subscribe(
    core: CallManager, request: Request, transaction_id: int, flow: Flow, now: float
) -> None:
    """A new SUBSCRIBE: only `message-summary` (else 489, unchallenged), authenticated like an
    INVITE, and only to the subscriber's own mailbox, the Request-URI's user (else 403); a
    trusted source may watch any of our users' (404 for a name we do not have)."""
    endpoint = core.endpoint
    response = mwi_subscriptions.check_request(request, endpoint.new_tag())
    if response is not None:
        endpoint.send_response(response, now, transaction_id)
        return
    decision = core.auth.check(request, flow, now, core.random_bytes(16))
    if decision.response is not None:
        endpoint.send_response(decision.response, now, transaction_id)
        return
    account = unquote(request.uri.user) if request.uri.user else None
    if decision.outcome == "authenticated" and account != decision.user:
        reply(core, request, transaction_id, 403, now)
        return
    if account is None or account not in core.directory:
        reply(core, request, transaction_id, 404, now)
        return
    core.message_waiting.subscriptions.subscribe(request, transaction_id, flow, account, now)


def _unresolved(
    core: CallManager, request: Request, transaction_id: int, uri: URI, now: float
) -> None:
    """503 for a call whose next hop's host name has no address yet (DNS is down or the
    name does not exist): our failure, so the caller may try again after a DNS retry."""
    config = core.config
    response = request.create_response(503, to_tag=core.endpoint.new_tag())
    response.headers.add("Retry-After", str(math.ceil(config.dns.min_ttl)))
    response.headers.add("Warning", f'399 {config.sip.user_agent} "no address for {uri.host} yet"')
    core.endpoint.send_response(response, now, transaction_id)


def element_policy(core: CallManager, request: Request) -> Response | None:
    """RFC 3261 §8.2 checks every out-of-dialog request passes before anything else."""
    tag = core.endpoint.new_tag()
    response = capabilities.extension_response(request, tag) or capabilities.method_response(
        request, tag
    )
    if response is not None:
        return response
    if request.method == "INVITE":
        if request.headers.get("max-forwards", "70") == "0":
            return request.create_response(483, to_tag=tag)
        if core.b2bua.is_own_call_id(request.call_id):
            return request.create_response(482, to_tag=tag)
    return None


def options_response(core: CallManager, request: Request) -> Response:
    tag = core.endpoint.new_tag()
    return capabilities.extension_response(request, tag) or capabilities.options_response(
        request, tag, core.endpoint.user_agent
    )


def reply(
    core: CallManager,
    request: Request,
    transaction_id: int,
    status: int,
    now: float,
    *,
    tag: bool = True,
) -> None:
    to_tag = core.endpoint.new_tag() if tag else None
    core.endpoint.send_response(request.create_response(status, to_tag=to_tag), now, transaction_id)
