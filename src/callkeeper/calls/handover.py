"""Asked-for recovery: somebody moves a call instead of waiting for a failure to be detected.

- the user dials the feature code (`*86`) from any of their devices: their call — held or
  still active on another device — moves to that device at once (`pick_up`);
- `POST /api/v1/calls/{id}/recover` with a user or URI (`recover`);
- the endpoint itself asks: a REFER inside the call (blind transfer, progress reported by
  NOTIFY with a sipfrag body, RFC 3515) (`in_dialog`), or de-registering mid-call
  (`RecoveryEngine.endpoint_left`).

An asked-for move of a working call leaves the old leg connected until the new one answers,
so a target that does not answer changes nothing. The same `Recovery` record and answer
handling as for failures are used; only the start differs. Also here: what the engine answers
to in-dialog requests while a call is being recovered (nobody to relay them to).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callkeeper.calls import recovery_bridge, recovery_fallback
from callkeeper.calls.b2bua import Contact
from callkeeper.calls.dialing import answering_dialog
from callkeeper.calls.model import Call, CallState, Leg, LegState
from callkeeper.calls.recovery_states import Trigger
from callkeeper.media.dtmf import DtmfError, parse_info_body
from callkeeper.sip.address import parse_address
from callkeeper.sip.dialog import DialogError, DialogState
from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Request
from callkeeper.sip.transport import Flow

if TYPE_CHECKING:
    from callkeeper.calls.recovery import RecoveryEngine
    from callkeeper.calls.recovery_records import Recovery

_SIPFRAG = "message/sipfrag;version=2.0"


# --- requests inside a call being recovered ---------------------------------------------------
def in_dialog(
    engine: RecoveryEngine, call: Call, leg: Leg, request: Request, transaction_id: int, now: float
) -> bool:
    """The B2BUA asks before relaying an in-dialog request (BYE included); True when taken."""
    method = request.method
    recovery = engine.recoveries.get(call.id)
    if recovery is None:
        if method == "REFER" and call.state is CallState.ACTIVE:
            _refer(engine, call, leg, request, transaction_id, now)
            return True
        if method == "INFO" and call.state is CallState.ACTIVE:
            _keys(engine, call, leg, request, now)  # and relayed on, as every INFO is
        return False
    if method == "BYE":
        if leg is recovery.failed and recovery.referred:
            # The transferor leaves after its REFER (RFC 5589): the transfer goes on.
            _reply(engine, request, transaction_id, 200, now)
            if leg.dialog is not None:
                leg.dialog.terminate()
            return True
        return False  # a live party hung up: the B2BUA ends the call
    if recovery.keep_old_until_answer:
        return False  # an asked-for move of a working call: it keeps working meanwhile
    # Nobody to relay to while the other side is being recovered. A re-INVITE or UPDATE is
    # "try again later"; anything else is taken here.
    status = {"INVITE": 491, "UPDATE": 491, "MESSAGE": 480, "REFER": 480}.get(method, 200)
    _reply(engine, request, transaction_id, status, now)
    return True


def _reply(
    engine: RecoveryEngine, request: Request, transaction_id: int, status: int, now: float
) -> None:
    engine.endpoint.send_response(request.create_response(status), now, transaction_id)


# --- the feature code dialled during a call: "move me to my other devices" ---------------------
def _keys(engine: RecoveryEngine, call: Call, leg: Leg, request: Request, now: float) -> None:
    try:
        key = parse_info_body(request.headers.get("content-type") or "", request.body).digit
    except DtmfError:
        return
    key_pressed(engine, call, leg, key, now)


def key_pressed(engine: RecoveryEngine, call: Call, leg: Leg, key: str, now: float) -> None:
    """A key from a leg (SIP INFO, or RFC 4733 seen by the relay). When its user dials the
    feature code mid-call, their side of the call rings their other devices (the call stays
    up meanwhile)."""
    if leg.user is None or call.state is not CallState.ACTIVE or call.id in engine.recoveries:
        return
    typed = engine.keys_typed(leg, key, now)
    if not typed.endswith(engine.feature_code):
        return
    leg.keys = ""
    contacts = [
        contact
        for contact in engine.routes.step_contacts(leg.user, "devices", ())
        if contact.endpoint != leg.endpoint
    ]
    if contacts:
        engine.ask(call, leg, contacts, "target", now)


# --- REFER: the endpoint hands its side of the call to someone else ----------------------------
def _refer(
    engine: RecoveryEngine, call: Call, leg: Leg, request: Request, transaction_id: int, now: float
) -> None:
    refer_to = request.headers.get("refer-to")
    contacts: list[Contact] = []
    if refer_to is not None:
        try:
            contacts = engine.routes.target_contacts(str(parse_address(refer_to).uri))
        except ParseError:
            _reply(engine, request, transaction_id, 400, now)
            return
    if refer_to is None:
        _reply(engine, request, transaction_id, 400, now)
        return
    if not contacts:
        _reply(engine, request, transaction_id, 404, now)
        return
    _reply(engine, request, transaction_id, 202, now)
    _notify_refer(engine, leg, "SIP/2.0 100 Trying", "active;expires=60", now)
    recovery = engine.ask(call, leg, contacts, "refer", now)
    if recovery is not None:
        recovery.referred = True


def _notify_refer(engine: RecoveryEngine, leg: Leg, frag: str, state: str, now: float) -> None:
    if leg.dialog is None or leg.dialog.state is not DialogState.CONFIRMED:
        return
    notify = leg.dialog.create_request(
        "NOTIFY",
        engine.local.via(leg.flow),
        body=(frag + "\r\n").encode(),
        content_type=_SIPFRAG,
        headers=[("Event", "refer"), ("Subscription-State", state)],
    )
    engine.endpoint.send_request(notify, leg.flow, now)


def report_answered(engine: RecoveryEngine, recovery: Recovery, now: float) -> None:
    """The REFER's target answered: tell the transferor before its leg is released."""
    if recovery.referred:
        _notify_refer(
            engine, recovery.failed, "SIP/2.0 200 OK", "terminated;reason=noresource", now
        )


def not_taken(engine: RecoveryEngine, recovery: Recovery, now: float) -> None:
    """An asked-for target did not answer. A working call goes on untouched; a held one goes
    on down the fallback chain."""
    if recovery.referred:
        _notify_refer(
            engine, recovery.failed, "SIP/2.0 480 Temporarily Unavailable",
            "terminated;reason=noresource", now,
        )  # fmt: skip
    old = recovery.failed
    old_alive = old.dialog is not None and old.dialog.state is DialogState.CONFIRMED
    if recovery.keep_old_until_answer and old_alive:
        engine.give_up(recovery, Trigger.NOT_TAKEN, now)
        return
    recovery.keep_old_until_answer = False
    recovery_fallback.next_step(engine, recovery, now)


# --- the feature code: the user pulls their call to the device they dial from ------------------
def pick_up(
    engine: RecoveryEngine,
    request: Request,
    transaction_id: int,
    flow: Flow,
    user: str,
    endpoint_id: str | None,
    now: float,
) -> int | None:
    """Move `user`'s call to the device that dialled the feature code.

    Returns a status to reject the INVITE with, or None when the pick-up is under way: the
    survivor is re-INVITEd with this device's offer, and its answer answers this INVITE.
    """
    found = _call_of(engine, user, endpoint_id)
    if found is None:
        return 404
    call, old = found
    if not request.body:
        return 488  # the survivor needs an offer to be re-INVITEd with
    try:
        dialog = answering_dialog(engine.local, engine.ids, request, flow)
    except DialogError as error:
        return error.status
    leg = Leg(
        id=engine.ids(),
        is_caller=True,
        flow=flow,
        user=user,
        endpoint=endpoint_id,
        state=LegState.CONFIRMED,
        dialog=dialog,
        invite=request,
        invite_transaction=transaction_id,
        local_tag=dialog.id.local_tag,
        remote_sdp=request.body,
    )
    engine.endpoint.send_response(request.create_response(100), now, transaction_id)
    recovery = engine.recoveries.get(call.id)
    if recovery is None or recovery.failed is not old:
        recovery = engine.ask(call, old, [], "pickup", now)
        if recovery is None:
            return 409
    else:
        engine.interrupt(recovery, now)
        if engine.move(call, Trigger.ASKED) is None:
            return 409
    recovery.pickup = leg
    if engine.b2bua.media is not None:
        engine.b2bua.media.learn(call, leg, request.body)  # its relay side, aimed at its offer
    recovery_bridge.connect(engine, recovery, leg, "pickup", now)
    return None


def answer_pickup(engine: RecoveryEngine, recovery: Recovery, now: float) -> None:
    """The survivor took the picking-up device's offer: answer that device's INVITE."""
    leg = recovery.pickup
    if leg is None or leg.invite is None or leg.invite_transaction is None:
        return
    response = leg.invite.create_response(200, to_tag=leg.local_tag)
    response.headers.add("Contact", str(engine.local.contact(leg.flow)))
    survivor = recovery.survivor
    answer = survivor.remote_sdp
    if answer and engine.b2bua.media is not None:
        answer = engine.b2bua.sdp_to(recovery.call, survivor, leg, answer)
    if answer:
        response.headers.add("Content-Type", "application/sdp")
        response.body = answer
        leg.local_sdp = answer
    if leg.dialog is not None:
        leg.dialog.send_response(response)
    engine.b2bua.answer(recovery.call, leg, response, leg.invite_transaction, now)


def _call_of(engine: RecoveryEngine, user: str, exclude: str | None) -> tuple[Call, Leg] | None:
    """`user`'s established call (one being recovered first), and the leg that is theirs."""
    best: tuple[Call, Leg] | None = None
    for call in engine.b2bua.calls.values():
        if call.state in (CallState.SETUP, CallState.ENDED):
            continue
        for leg in (call.a, call.b):
            if leg is None or leg.user != user or (exclude is not None and leg.endpoint == exclude):
                continue
            recovery = engine.recoveries.get(call.id)
            if recovery is not None and recovery.failed is leg:
                return call, leg
            best = best or (call, leg)
    return best


# --- the API: move a call to a user or URI --------------------------------------------------------
def recover(engine: RecoveryEngine, call_id: str, target: str, now: float) -> tuple[int, str]:
    """(HTTP status, reason) for `POST /api/v1/calls/{id}/recover`."""
    call = engine.b2bua.calls.get(call_id)
    if call is None:
        return 404, "no such call"
    if call.state in (CallState.SETUP, CallState.ENDED) or call.b is None:
        return 409, f"the call is {call.state.value}"
    recovery = engine.recoveries.get(call.id)
    side = next((leg for leg in (call.a, call.b) if leg.user == target), None)
    if side is None:
        side = recovery.failed if recovery is not None else call.b
    contacts = [
        contact
        for contact in engine.routes.target_contacts(target)
        if contact.endpoint is None or contact.endpoint != side.endpoint
    ]
    if not contacts:
        return 422, f"{target} cannot be reached"
    if recovery is not None and recovery.failed is not side:
        return 409, "the other side of this call is being recovered"
    if recovery is None:
        if engine.ask(call, side, contacts, "target", now) is None:
            return 409, f"the call is {call.state.value}"
        return 202, "ringing"
    engine.interrupt(recovery, now)
    if engine.move(call, Trigger.ASKED) is None:
        return 409, f"the call is {call.state.value}"
    recovery_fallback.ring(engine, recovery, contacts, "target", now)
    return 202, "ringing"
