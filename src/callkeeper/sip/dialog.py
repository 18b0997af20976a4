"""SIP dialogs (RFC 3261 §12), for both the UAC and the UAS side of a call leg.

A dialog is what lets callkeeper talk to a phone *after* the INVITE: the re-INVITE that puts a
survivor on hold or re-attaches a returning endpoint, the BYE, the NOTIFY that asks a phone to
reboot. It holds the state §12 defines — the dialog id, the CSeq counters, the remote target
and the route set — applies the rules that change it (target refresh, out-of-order CSeq,
early → confirmed), and builds in-dialog requests from it. It does not send anything and owns
no transactions: the caller passes in what was received or sent and gets requests or status
codes back.

Randomness (local tags, Via branches) comes from an injected `IdGenerator`; the whole life
cycle is the `TRANSITIONS` table below, so a reader (and a test) can see every (state, event).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from enum import Enum

from callkeeper.sip.address import Address, parse_address
from callkeeper.sip.errors import ParseError, SipError
from callkeeper.sip.headers import Headers
from callkeeper.sip.message import MAX_CSEQ, CSeq, Message, Request, Response, new_cseq
from callkeeper.sip.uri import URI
from callkeeper.sip.via import MAGIC_COOKIE, Via

IdGenerator = Callable[[], str]
"""Returns a fresh random token (tags, branch suffixes); the io layer supplies it."""

MAX_FORWARDS = "70"

# Requests whose 2xx (sent or received) replaces the remote target (RFC 3261 §12.2,
# RFC 3311 UPDATE, RFC 6665 SUBSCRIBE/NOTIFY).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})
# Requests that carry our Contact: the target refreshes, and REFER (it creates a subscription).
_CONTACT_METHODS = TARGET_REFRESH_METHODS | {"REFER"}
# Requests exempt from the remote CSeq ordering rule: ACK reuses the INVITE's number and
# CANCEL belongs to the INVITE's transaction, not to the dialog.
_UNSEQUENCED = frozenset({"ACK", "CANCEL"})


class DialogError(SipError):
    """A dialog cannot be created or used as asked. `status` is the response fitting a peer's
    request that caused it (400 for a malformed dialog-creating request); 500 means misuse."""

    def __init__(self, reason: str, status: int = 500) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Role(Enum):
    UAC = "uac"  # we sent the dialog-creating request
    UAS = "uas"  # we received it


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogEvent(Enum):
    PROVISIONAL = "provisional"  # a 101-199 (with To tag) to the dialog-creating request
    SUCCESS = "success"  # a 2xx to the dialog-creating request
    FAILURE = "failure"  # a final non-2xx to the dialog-creating request
    TERMINATE = "terminate"  # BYE, a 481/408 to an in-dialog request, or a local teardown


_E, _C, _T = DialogState.EARLY, DialogState.CONFIRMED, DialogState.TERMINATED
TRANSITIONS: dict[tuple[DialogState, DialogEvent], DialogState] = {
    (_E, DialogEvent.PROVISIONAL): _E,
    (_E, DialogEvent.SUCCESS): _C,  # §13.2.2.4
    (_E, DialogEvent.FAILURE): _T,  # §12.3: a non-2xx final ends the early dialog
    (_E, DialogEvent.TERMINATE): _T,  # BYE (from the caller only, §15) or teardown
    (_C, DialogEvent.PROVISIONAL): _C,  # a late or reordered 1xx changes nothing
    (_C, DialogEvent.SUCCESS): _C,  # a retransmitted 2xx
    (_C, DialogEvent.FAILURE): _C,  # cannot happen on the confirming transaction; ignored
    (_C, DialogEvent.TERMINATE): _T,
    (_T, DialogEvent.PROVISIONAL): _T,
    (_T, DialogEvent.SUCCESS): _T,  # a 2xx racing our teardown: ACK and BYE it via a new dialog
    (_T, DialogEvent.FAILURE): _T,
    (_T, DialogEvent.TERMINATE): _T,
}


def next_state(state: DialogState, event: DialogEvent) -> DialogState:
    return TRANSITIONS[(state, event)]


@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID, local tag, remote tag (§12). A missing tag (RFC 2543 peers) is ""."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def of_request(cls, request: Request) -> DialogId:
        """The id of the dialog a *received* request belongs to (local = To, remote = From)."""
        return cls(request.call_id, request.to_addr.tag or "", request.from_addr.tag or "")

    @classmethod
    def of_response(cls, response: Response) -> DialogId:
        """The id of the dialog a *received* response belongs to (local = From, remote = To)."""
        return cls(response.call_id, response.from_addr.tag or "", response.to_addr.tag or "")


def _contact(message: Message) -> Address | None:
    """The first Contact, or None when absent or unparsable."""
    values = message.headers.get_list("contact")
    if not values:
        return None
    try:
        return parse_address(values[0])
    except ParseError:
        return None


def _contact_uri(message: Message) -> URI | None:
    """The URI of the first Contact, or None when absent or unusable as a target."""
    address = _contact(message)
    if address is None or address.uri.scheme == "tel":
        return None
    return address.uri


def _route_set(message: Message) -> tuple[Address, ...]:
    try:
        return tuple(parse_address(value) for value in message.headers.get_list("record-route"))
    except ParseError as error:
        raise DialogError(f"bad Record-Route: {error.reason}", 400) from error


def _as_request_uri(uri: URI) -> URI:
    """Strip what a Request-URI may not carry: headers and `method` (§19.1.1 table 1)."""
    if uri.headers or uri.has_param("method"):
        return uri.without_param("method").replace(headers=())
    return uri


class Dialog:
    """The state of one dialog and the rules of §12 that change it."""

    __slots__ = (
        "_creating_cseq",
        "_new_id",
        "id",
        "invite_seq",
        "local_address",
        "local_contact",
        "local_seq",
        "remote_address",
        "remote_seq",
        "remote_target",
        "role",
        "route_set",
        "secure",
        "state",
    )

    def __init__(
        self,
        *,
        role: Role,
        id: DialogId,
        state: DialogState,
        local_address: Address,
        remote_address: Address,
        remote_target: URI,
        route_set: tuple[Address, ...],
        local_seq: int | None,
        remote_seq: int | None,
        creating_cseq: CSeq,
        new_id: IdGenerator,
        secure: bool = False,
        local_contact: Address | None = None,
    ) -> None:
        self.role = role
        self.id = id
        self.state = state
        self.local_address = local_address  # From of our requests (URI + local tag)
        self.remote_address = remote_address  # To of our requests (URI + remote tag)
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.secure = secure
        self.local_contact = local_contact
        self.invite_seq: int | None = (
            creating_cseq.number if role is Role.UAC and creating_cseq.method == "INVITE" else None
        )  # the CSeq number of our latest INVITE: the one an ACK for a 2xx carries
        self._creating_cseq = creating_cseq
        self._new_id = new_id

    def __repr__(self) -> str:
        return f"<Dialog {self.role.value} {self.state.value} {self.id}>"

    @property
    def creating_cseq(self) -> CSeq:
        """The CSeq of the request that created the dialog (kept with a call's snapshot)."""
        return self._creating_cseq

    # --- creation ---------------------------------------------------------------------------
    @classmethod
    def create_uac(
        cls,
        request: Request,
        response: Response,
        new_id: IdGenerator,
        *,
        over_tls: bool = False,
    ) -> Dialog:
        """The dialog a 101-199 with a To tag, or a 2xx, to our `request` creates (§12.1.2).

        The route set is the response's Record-Route reversed; the remote target its Contact.
        A 2xx must carry a Contact; a 1xx without one targets the Request-URI until the 2xx.
        """
        status = response.status
        if not 101 <= status <= 299:
            raise DialogError(f"a {status} response does not create a dialog")
        if response.call_id != request.call_id or response.cseq != request.cseq:
            raise DialogError("the response does not answer this request")
        remote_tag = response.to_addr.tag
        if status < 200 and not remote_tag:
            raise DialogError("a provisional response without To tag creates no dialog")
        target = _contact_uri(response)
        if target is None:
            if status >= 200:
                raise DialogError("a 2xx that creates a dialog must carry a Contact")
            target = request.uri
        return cls(
            role=Role.UAC,
            id=DialogId(request.call_id, request.from_addr.tag or "", remote_tag or ""),
            state=DialogState.EARLY if status < 200 else DialogState.CONFIRMED,
            local_address=request.from_addr,
            remote_address=response.to_addr,
            remote_target=target,
            route_set=tuple(reversed(_route_set(response))),
            local_seq=request.cseq.number,
            remote_seq=None,
            creating_cseq=request.cseq,
            new_id=new_id,
            secure=over_tls and request.uri.scheme == "sips",
            local_contact=_contact(request),
        )

    @classmethod
    def create_uas(
        cls,
        request: Request,
        new_id: IdGenerator,
        *,
        local_contact: Address | None = None,
        over_tls: bool = False,
    ) -> Dialog:
        """The (early) dialog for a received dialog-creating request (§12.1.1).

        The local tag is drawn from `new_id`; put it in the To of every response
        (`request.create_response(status, to_tag=dialog.id.local_tag)`) and report the
        responses through `send_response`. Raises DialogError(400) for a request unfit to
        create a dialog.
        """
        if request.to_addr.tag:
            raise DialogError("the request already belongs to a dialog (To has a tag)", 481)
        target = _contact_uri(request)
        if target is None:
            raise DialogError("a dialog-creating request must carry a usable Contact", 400)
        local_tag = new_id()
        return cls(
            role=Role.UAS,
            id=DialogId(request.call_id, local_tag, request.from_addr.tag or ""),
            state=DialogState.EARLY,
            local_address=request.to_addr.with_tag(local_tag),
            remote_address=request.from_addr,
            remote_target=target,
            route_set=_route_set(request),
            local_seq=None,
            remote_seq=request.cseq.number,
            creating_cseq=request.cseq,
            new_id=new_id,
            secure=over_tls and request.uri.scheme == "sips",
            local_contact=local_contact,
        )

    # --- inputs -----------------------------------------------------------------------------
    def _fire(self, event: DialogEvent) -> None:
        self.state = next_state(self.state, event)

    def _is_creating(self, cseq: CSeq) -> bool:
        return cseq == self._creating_cseq

    @staticmethod
    def _creating_event(status: int) -> DialogEvent:
        if status < 200:
            return DialogEvent.PROVISIONAL
        return DialogEvent.SUCCESS if status < 300 else DialogEvent.FAILURE

    def receive_response(self, response: Response) -> bool:
        """Apply a received response to a request of ours; False when it is not this dialog's.

        - to the dialog-creating request (UAC): 1xx/2xx/failure drive the state; the 2xx that
          confirms an early dialog recomputes route set and remote target (§13.2.2.4);
        - a 2xx to a target refresh request replaces the remote target (§12.2.1.2);
        - a 481 or 408 ends the dialog (§12.2.1.2), as does a final response to our BYE
          (except 401/407, which the caller answers with credentials).
        """
        if DialogId.of_response(response) != self.id:
            return False
        cseq = response.cseq
        status = response.status
        if self.role is Role.UAC and self._is_creating(cseq):
            event = self._creating_event(status)
            if event is DialogEvent.SUCCESS and self.state is DialogState.EARLY:
                with suppress(DialogError):  # a garbled Record-Route: keep the early one
                    self.route_set = tuple(reversed(_route_set(response)))
                self.remote_target = _contact_uri(response) or self.remote_target
            self._fire(event)
            return True
        if response.is_success and cseq.method in TARGET_REFRESH_METHODS:
            self.remote_target = _contact_uri(response) or self.remote_target
        if status in (408, 481) or (
            cseq.method == "BYE" and status >= 200 and status not in (401, 407)
        ):
            self._fire(DialogEvent.TERMINATE)
        return True

    def send_response(self, response: Response) -> None:
        """Note a response we send (UAS): answers to the creating request drive the state."""
        if self.role is Role.UAS and self._is_creating(response.cseq):
            self._fire(self._creating_event(response.status))

    def receive_request(self, request: Request) -> int | None:
        """Check and apply a received in-dialog request; the status to reject it with, or None.

        481 when it is not (or no longer) this dialog's; 500 when its CSeq is not above the
        remote sequence number (§12.2.2; ACK and CANCEL are exempt). An accepted target refresh
        replaces the remote target from its Contact; a BYE ends the dialog.
        """
        if DialogId.of_request(request) != self.id or self.state is DialogState.TERMINATED:
            return 481
        method = request.method
        if method not in _UNSEQUENCED:
            number = request.cseq.number
            if self.remote_seq is not None and number <= self.remote_seq:
                return 500
            self.remote_seq = number
        if method in TARGET_REFRESH_METHODS:
            self.remote_target = _contact_uri(request) or self.remote_target
        if method == "BYE":
            self._fire(DialogEvent.TERMINATE)
        return None

    def terminate(self) -> None:
        self._fire(DialogEvent.TERMINATE)

    # --- outputs ----------------------------------------------------------------------------
    def _next_local_seq(self, method: str) -> int:
        if method == "ACK":
            if self.invite_seq is None:
                raise DialogError("no INVITE of ours to acknowledge")
            return self.invite_seq
        number = (self.local_seq or 0) + 1  # §12.2.1.1 lets an empty one start anywhere: 1
        if number > MAX_CSEQ:
            raise DialogError("local CSeq exhausted")
        self.local_seq = number
        if method == "INVITE":
            self.invite_seq = number
        return number

    def _target_and_routes(self) -> tuple[URI, list[str]]:
        """Request-URI and Route values per §12.2.1.1 (loose vs. strict first hop)."""
        target = _as_request_uri(self.remote_target)
        if not self.route_set:
            return target, []
        first = self.route_set[0]
        if first.uri.has_param("lr"):
            return target, [str(route) for route in self.route_set]
        # Strict router (RFC 2543): it gets the Request-URI, the remote target goes last.
        routes = [str(route) for route in self.route_set[1:]]
        routes.append(f"<{self.remote_target}>")
        return _as_request_uri(first.uri), routes

    def create_request(
        self,
        method: str,
        via: Via,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        contact: Address | None = None,
    ) -> Request:
        """Build an in-dialog request (§12.2.1.1).

        `via` gives our transport and sent-by; its branch is always a fresh one from the id
        generator (every in-dialog request, ACK for a 2xx included, is a new transaction).
        CSeq is the next local number, except for ACK, which repeats our latest INVITE's.
        Target refresh requests (and REFER) carry `contact`, or the dialog's local contact;
        a given `contact` becomes the dialog's local contact.
        """
        method = method.upper()
        if self.state is DialogState.TERMINATED:
            raise DialogError("the dialog is terminated")
        if method == "CANCEL":
            raise DialogError("CANCEL is built from the INVITE it cancels (§9.1), not in-dialog")
        if method == "BYE" and self.role is Role.UAS and self.state is DialogState.EARLY:
            raise DialogError("the callee must not send BYE in an early dialog (§15)")
        number = self._next_local_seq(method)
        request_uri, routes = self._target_and_routes()
        out = Headers()
        via = via.with_params(branch=f"{MAGIC_COOKIE}{self._new_id()}")
        via_text = str(via)
        cseq_text = f"{number} {method}"
        out.add("Via", via_text)
        out.add("Max-Forwards", MAX_FORWARDS)
        for route in routes:
            out.add("Route", route)
        out.add("From", str(self.local_address))
        out.add("To", str(self.remote_address))
        out.add("Call-ID", self.id.call_id)
        out.add("CSeq", cseq_text)
        if contact is not None:
            self.local_contact = contact
        if method in _CONTACT_METHODS and self.local_contact is not None:
            out.add("Contact", str(self.local_contact))
        for name, value in headers:
            out.add(name, value)
        if content_type is not None:
            out.add("Content-Type", content_type)
        request = Request(method, request_uri, out, body)
        request.remember_view("top-via", via_text, via)
        request.remember_view("cseq", cseq_text, new_cseq(number, method))
        return request

    def create_ack(
        self,
        via: Via,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """The ACK for a 2xx to our latest INVITE (§13.2.2.4), e.g. carrying a late answer.

        Pass the INVITE's Authorization lines in `headers` when it carried any.
        """
        return self.create_request(
            "ACK", via, body=body, content_type=content_type, headers=headers
        )
