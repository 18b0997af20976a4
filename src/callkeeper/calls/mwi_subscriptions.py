"""MWI subscriptions: the notifier side of RFC 6665 for the `message-summary` package (RFC 3842).

One job: the subscriptions phones hold to their own voicemail counts. A SUBSCRIBE that passed
authentication (request_dispatch.py) becomes a dialog: 200 with the granted Expires, then at once
a NOTIFY with the counts (`Subscription-State: active;expires=N`). A refresh inside the dialog
gets the same; `Expires: 0`, or no refresh before the subscription runs out, gets a last NOTIFY
`terminated;reason=timeout` and the subscription is gone. When the counts change (mwi.py calls
`changed`) every subscription of the user gets a NOTIFY in its dialog, and mwi.py sends no
unsolicited NOTIFY to a phone that `covers` finds subscribed.

Subscriptions live in memory only: after a restart a phone's refresh meets 481 and it subscribes
again (RFC 6665: a refresh answered 481 ends the subscription). They are bounded per user and in all (503 beyond).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from callkeeper.calls.dialing import answering_dialog
from callkeeper.calls.locals import LocalAddresses
from callkeeper.directory.register_request import delta_seconds
from callkeeper.sip.capabilities import ALLOW_EVENTS
from callkeeper.sip.dialog import Dialog, DialogError, DialogId
from callkeeper.sip.endpoint import SipEndpoint
from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Request, Response
from callkeeper.sip.timers import TimerHeap
from callkeeper.sip.transaction_messages import IdSource
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import URI

EVENT = "message-summary"  # the one package of capabilities.EVENT_PACKAGES
CONTENT_TYPE = "application/simple-message-summary"
# Expires bounds (seconds). A phone refreshes well before the end, so the maximum bounds how long
# a phone that vanished keeps its subscription; the minimum keeps refreshes from flooding us.
MIN_EXPIRES = 60
MAX_EXPIRES = 3600
DEFAULT_EXPIRES = 3600  # RFC 3842 §4 leaves the default to the notifier
# A user has a handful of phones; a phone that reboots subscribes again, and its old dialog
# goes at its first NOTIFY (481) or at its expiry.
MAX_PER_USER = 16
MAX_TOTAL = 10_000
RETRY_AFTER = MIN_EXPIRES
# Answers to a NOTIFY that end the subscription (RFC 5057: they destroy the usage; RFC 6665
# repeats the list for NOTIFY and adds the transaction timeout).
_ENDING_STATUSES = frozenset({404, 405, 408, 410, 416, 480, 481, 482, 483, 484, 485, 489, 501, 604})

Summary = Callable[[str], bytes]  # a user → the message-summary body of their counts


@dataclass(slots=True, eq=False)
class Subscription:
    user: str
    dialog: Dialog
    flow: Flow  # the latest SUBSCRIBE's: NOTIFYs go back the way it came (NAT, TCP)
    event: str  # the Event the phone sent (an `id` with it), echoed in every NOTIFY
    expires_at: float


def event_type(request: Request) -> str:
    """The package an Event header names, lower case; "" when there is none (RFC 6665
    then means the retired PINT package, which we do not serve either)."""
    value = request.headers.get("event") or ""
    return value.split(";", 1)[0].strip().lower()


def check_request(request: Request, to_tag: str | None) -> Response | None:
    """What a SUBSCRIBE gets before anyone is challenged: 489 for a package other than
    message-summary, 400 for an Expires that is no number. None when it may go on."""
    if event_type(request) != EVENT:
        response = request.create_response(489, to_tag=to_tag)
        response.headers.add("Allow-Events", ALLOW_EVENTS)
        return response
    expires = request.headers.get("expires")
    if expires is not None and delta_seconds(expires) is None:
        return request.create_response(400, "Bad Request: malformed Expires", to_tag=to_tag)
    return None


class MwiSubscriptions:
    """See the module docstring. `summary` gives a user's body at the moment of each NOTIFY."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        local: LocalAddresses,
        ids: IdSource,
        summary: Summary,
        user_agent: str,
    ) -> None:
        self._endpoint = endpoint
        self._local = local
        self._ids = ids
        self._summary = summary
        self.user_agent = user_agent
        self._by_dialog: dict[DialogId, Subscription] = {}
        self._by_user: dict[str, list[Subscription]] = {}
        self._expiry: TimerHeap[DialogId] = TimerHeap()
        self._notifies: dict[int, Subscription] = {}  # NOTIFY client transaction → subscription

    def __len__(self) -> int:
        return len(self._by_dialog)

    # --- SUBSCRIBE ------------------------------------------------------------------------------
    def subscribe(
        self, request: Request, transaction_id: int, flow: Flow, user: str, now: float
    ) -> None:
        """A new SUBSCRIBE (it passed `check_request` and authentication) to `user`'s counts."""
        expires = self._granted(request, transaction_id, now)
        if expires is None:
            return
        if len(self._by_dialog) >= MAX_TOTAL or len(self._by_user.get(user, ())) >= MAX_PER_USER:
            response = request.create_response(503, to_tag=self._endpoint.new_tag())
            response.headers.add("Retry-After", str(RETRY_AFTER))
            self._endpoint.send_response(response, now, transaction_id)
            return
        try:
            dialog = answering_dialog(self._local, self._ids, request, flow)
        except DialogError as error:
            response = request.create_response(error.status, to_tag=self._endpoint.new_tag())
            self._endpoint.send_response(response, now, transaction_id)
            return
        event = request.headers.get("event") or EVENT
        subscription = Subscription(user, dialog, flow, event.strip(), now + expires)
        self._answer(subscription, request, transaction_id, expires, now)
        if expires == 0:  # a fetch (RFC 6665 polling): the state once, no subscription kept
            self._notify(subscription, "terminated;reason=timeout", now)
            return
        self._by_dialog[dialog.id] = subscription
        self._by_user.setdefault(user, []).append(subscription)
        self._expiry.schedule(subscription.expires_at, dialog.id)
        self._notify(subscription, f"active;expires={expires}", now)

    def knows(self, request: Request) -> bool:
        try:
            return DialogId.of_request(request) in self._by_dialog
        except ParseError:
            return False

    def refresh(self, request: Request, transaction_id: int, flow: Flow, now: float) -> None:
        """A request inside a subscription's dialog: a SUBSCRIBE refreshes or (Expires: 0)
        ends it; anything else is not for a subscription dialog (405). NOTIFYs follow the
        refresh's flow from now on (a new TCP connection, a NAT binding that moved)."""
        subscription = self._by_dialog[DialogId.of_request(request)]
        if request.method != "SUBSCRIBE":
            response = request.create_response(405)  # its To has our tag already
            response.headers.add("Allow", "SUBSCRIBE")
            self._endpoint.send_response(response, now, transaction_id)
            return
        status = subscription.dialog.receive_request(request)  # 500 for an old CSeq
        rejection = request.create_response(status) if status else check_request(request, None)
        if rejection is not None:
            self._endpoint.send_response(rejection, now, transaction_id)
            return
        expires = self._granted(request, transaction_id, now)
        if expires is None:
            return
        self._answer(subscription, request, transaction_id, expires, now)
        if expires == 0:
            self._end(subscription, now)
            return
        subscription.flow = flow
        subscription.expires_at = now + expires
        self._expiry.schedule(subscription.expires_at, subscription.dialog.id)
        self._notify(subscription, f"active;expires={expires}", now)

    def _granted(self, request: Request, transaction_id: int, now: float) -> int | None:
        """The Expires to grant (default when absent, lowered to the maximum), or None after
        answering 423 for a non-zero one below the minimum."""
        asked = delta_seconds(request.headers.get("expires"))
        expires = DEFAULT_EXPIRES if asked is None else min(asked, MAX_EXPIRES)
        if 0 < expires < MIN_EXPIRES:
            response = request.create_response(423, to_tag=self._endpoint.new_tag())
            response.headers.add("Min-Expires", str(MIN_EXPIRES))
            self._endpoint.send_response(response, now, transaction_id)
            return None
        return expires

    def _answer(
        self,
        subscription: Subscription,
        request: Request,
        transaction_id: int,
        expires: int,
        now: float,
    ) -> None:
        dialog = subscription.dialog
        response = request.create_response(200, to_tag=dialog.id.local_tag)
        headers = response.headers
        headers.add("Expires", str(expires))
        headers.add("Contact", str(self._local.contact(subscription.flow)))
        headers.add("Allow-Events", ALLOW_EVENTS)
        dialog.send_response(response)
        self._endpoint.send_response(response, now, transaction_id)

    # --- the counts changed ---------------------------------------------------------------------
    def changed(self, user: str, now: float) -> None:
        """`user`'s counts changed: a NOTIFY in each of their subscriptions."""
        for subscription in self._by_user.get(user, ()):
            remaining = max(0, round(subscription.expires_at - now))
            self._notify(subscription, f"active;expires={remaining}", now)

    def covers(self, user: str, uri: URI, flow: Flow) -> bool:
        """Whether a subscription of `user` reaches the phone at `uri` over `flow` (the same
        Contact, or the same address it sends from), so it needs no unsolicited NOTIFY."""
        for subscription in self._by_user.get(user, ()):
            sub_flow = subscription.flow
            same_source = sub_flow.transport == flow.transport and sub_flow.remote == flow.remote
            if same_source or subscription.dialog.remote_target == uri:
                return True
        return False

    # --- timers and the answers to our NOTIFYs -------------------------------------------------
    def get_timer(self) -> float | None:
        return self._expiry.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Subscriptions nobody refreshed in time: a last NOTIFY, and they are gone."""
        for dialog_id in self._expiry.pop_due(now):
            subscription = self._by_dialog.get(dialog_id)
            if subscription is not None:
                self._end(subscription, now)

    def receive_response(self, transaction_id: int, response: Response) -> bool:
        """An answer to a NOTIFY of ours (False when the transaction is not ours)."""
        subscription = self._notifies.get(transaction_id)
        if subscription is None:
            return False
        if response.status >= 200:
            del self._notifies[transaction_id]
            if response.status in _ENDING_STATUSES:
                self._remove(subscription)
        return True

    def notify_failed(self, transaction_id: int) -> None:
        """A NOTIFY got no answer (Timer F) or could not be sent: the subscriber is gone."""
        subscription = self._notifies.pop(transaction_id, None)
        if subscription is not None:
            self._remove(subscription)

    def transaction_terminated(self, transaction_id: int) -> None:
        self._notifies.pop(transaction_id, None)

    # --- helpers --------------------------------------------------------------------------------
    def _end(self, subscription: Subscription, now: float) -> None:
        """The subscription ran out (or was ended by an unsubscribe): RFC 6665 asks for
        a last NOTIFY saying so."""
        self._remove(subscription)
        self._notify(subscription, "terminated;reason=timeout", now)

    def _remove(self, subscription: Subscription) -> None:
        dialog_id = subscription.dialog.id
        if self._by_dialog.get(dialog_id) is not subscription:
            return  # already gone (e.g. a 481 to a NOTIFY sent before the expiry)
        del self._by_dialog[dialog_id]
        self._expiry.cancel(dialog_id)
        of_user = self._by_user[subscription.user]
        of_user.remove(subscription)
        if not of_user:
            del self._by_user[subscription.user]

    def _notify(self, subscription: Subscription, state: str, now: float) -> None:
        notify = subscription.dialog.create_request(
            "NOTIFY",
            self._local.via(subscription.flow),
            body=self._summary(subscription.user),
            content_type=CONTENT_TYPE,
            headers=(
                ("Event", subscription.event),
                ("Subscription-State", state),
                ("User-Agent", self.user_agent),
            ),
        )
        transaction_id = self._endpoint.send_request(notify, subscription.flow, now)
        self._notifies[transaction_id] = subscription
