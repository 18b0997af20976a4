"""Phones as text, for driving the pure call manager through whole recoveries with a fake clock.

`Network` wraps a `CoreDriver`: it answers the liveness monitor's OPTIONS probes for the
phones that are up, collects everything else callkeeper sends, and builds the requests and
responses a phone would send back. Real phones (baresip, SIPp) are in the wire tests; this is
for the timing-heavy paths (grace periods, ring timeouts) that would take minutes there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callkeeper.config import Config
from callkeeper.sip.message import Message, Request, Response
from support.core_driver import CoreDriver

Address = tuple[str, int]


def sdp(port: int, direction: str = "sendrecv", origin: str = "phone 1 1") -> str:
    return (
        f"v=0\r\no={origin} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na={direction}\r\n"
    )


def reply(
    request: Request,
    status: int,
    contact: Address,
    *,
    to_tag: str = "ph",
    body: str = "",
    reason: str = "",
    extra: tuple[str, ...] = (),
) -> str:
    to = request.headers.get("to") or ""
    if ";tag=" not in to and status > 100:
        to = f"{to};tag={to_tag}"
    lines = [f"SIP/2.0 {status} {reason or _REASONS.get(status, 'Whatever')}"]
    lines += [f"Via: {via}" for via in request.headers.get_list("via")]
    lines += [
        f"From: {request.headers.get('from')}",
        f"To: {to}",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.headers.get('cseq')}",
        f"Contact: <sip:phone@{contact[0]}:{contact[1]}>",
        *extra,
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


def register(user: str, contact: Address, *, expires: int = 600, cseq: int = 1) -> str:
    """A REGISTER of `user` from `contact` (from a trusted source: no digest needed)."""
    return (
        "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {contact[0]}:{contact[1]};branch=z9hG4bK-r{user}{cseq}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=r{user}\r\n"
        f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: reg-{user}-{contact[1]}@127.0.0.1\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{user}@{contact[0]}:{contact[1]}>;expires={expires}\r\n"
        "Content-Length: 0\r\n\r\n"
    )


_REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    202: "Accepted",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    491: "Request Pending",
}


@dataclass
class Dialog:
    """The phone's view of one dialog with callkeeper (enough to send BYE, ACK, re-INVITE)."""

    call_id: str
    local: str  # our From (with tag)
    remote: str  # callkeeper's address (with tag)
    address: Address
    cseq: int = 1

    def request(self, method: str, body: str = "", extra: tuple[str, ...] = ()) -> str:
        self.cseq += 1
        cseq = self.cseq if method != "ACK" else self.cseq - 1
        lines = [
            f"{method} sip:callkeeper@127.0.0.1:5060 SIP/2.0",
            f"Via: SIP/2.0/UDP {self.address[0]}:{self.address[1]};branch=z9hG4bK-{method}{self.cseq}",
            "Max-Forwards: 70",
            f"From: {self.local}",
            f"To: {self.remote}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:phone@{self.address[0]}:{self.address[1]}>",
            *extra,
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body


@dataclass
class Network:
    config: Config
    up: set[Address] = field(default_factory=set)  # phones that answer OPTIONS probes
    inbox: dict[Address, list[Message]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.driver = CoreDriver(self.config)
        self.driver.core.start(self.driver.now)

    @property
    def core(self):  # type: ignore[no-untyped-def]
        return self.driver.core

    @property
    def now(self) -> float:
        return self.driver.now

    def send(self, text: str, source: Address) -> None:
        self.driver.receive(text.replace("\r\n", "\n"), source)
        self._collect()

    def run(self, seconds: float, step: float = 0.05) -> None:
        """Let time pass, answering probes of the phones that are up."""
        end = self.driver.now + seconds
        while self.driver.now < end - 1e-9:
            self.driver.advance(min(step, end - self.driver.now))
            self._collect()

    def _collect(self) -> None:
        self.driver._collect()  # what the core queued outside receive/advance (API calls)
        for sent in list(self.driver.sent):
            self.driver.sent.remove(sent)
            message, to = sent.message, sent.flow.remote
            if isinstance(message, Request) and message.method == "OPTIONS":
                if to in self.up:
                    self.driver.receive(reply(message, 200, to).replace("\r\n", "\n"), to)
                continue
            self.inbox.setdefault(to, []).append(message)

    def take(
        self, to: Address, method: str | None = None, status: int | None = None
    ) -> list[Message]:
        """Messages sent to `to` (of a method, or responses of a status), removed from the inbox."""
        box = self.inbox.get(to, [])
        taken = [
            m
            for m in box
            if (method is None and status is None)
            or (method is not None and isinstance(m, Request) and m.method == method)
            or (status is not None and isinstance(m, Response) and m.status == status)
        ]
        self.inbox[to] = [m for m in box if m not in taken]
        return taken

    def requests(self, to: Address, method: str) -> list[Request]:
        """Distinct requests (UDP retransmissions folded) of `method` sent to `to`."""
        seen: dict[tuple[str, str], Request] = {}
        for message in self.take(to, method=method):
            assert isinstance(message, Request)
            seen.setdefault((message.call_id, str(message.headers.get("cseq"))), message)
        return list(seen.values())

    def one(self, to: Address, method: str) -> Request:
        requests = self.requests(to, method)
        assert len(requests) == 1, f"{len(requests)} {method} to {to}: {self.inbox.get(to)}"
        return requests[0]
