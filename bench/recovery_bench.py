"""Mass failure: N concurrent calls, every callee phone silenced at once; half come back.

    python bench/recovery_bench.py [--calls 500] [--grace 10] [--rate 100]

The real `callkeeper serve` runs on loopback with N users, each with two simulated devices
(static contacts, answered by this process: OPTIONS probes, INVITE, re-INVITE, BYE ...). A
trusted caller places N calls (device 1 answers, device 2 only rings at set-up), then every
device 1 goes silent at the same moment. Within grace half of them return — half of those
with their dialogs (a network blip: resumed by re-INVITE), half rebooted (they answer 481, so
callkeeper rings them anew) — and the other half never do, so their calls move to device 2
once grace ends. Expected: N/2 `resumed`, N/2 `transferred`, 0 `lost`, and the caller never
gets a BYE. Printed: p50/p99 of detection (last sign of life → DOWN), resume (endpoint back →
bridged again) and transfer (grace over → bridged to device 2), from the server's own events
in its JSON log. Exit status 1 when the outcome counts are wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import resource
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from common import Server, free_port, start_server

SDP = "v=0\r\no=sim {id} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
HEADER_RE = re.compile(r"^([A-Za-z-]+)[ \t]*:[ \t]*(.*)$")


# --- a little SIP, enough for simulated phones ---------------------------------------------------
@dataclass
class Message:
    first: str
    headers: list[tuple[str, str]]
    body: str

    @classmethod
    def parse(cls, data: bytes) -> Message | None:
        text = data.decode(errors="replace")
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        if not lines or not lines[0]:
            return None
        headers = []
        for line in lines[1:]:
            match = HEADER_RE.match(line)
            if match:
                headers.append((match.group(1).lower(), match.group(2)))
        return cls(lines[0], headers, body)

    def get(self, name: str) -> str:
        return next((value for key, value in self.headers if key == name), "")

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    @property
    def is_request(self) -> bool:
        return not self.first.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        return self.first.split(" ", 1)[0] if self.is_request else self.get("cseq").split()[-1]

    @property
    def status(self) -> int:
        return int(self.first.split()[1]) if not self.is_request else 0

    @property
    def call_id(self) -> str:
        return self.get("call-id")


def response(request: Message, status: int, reason: str, to_tag: str, body: str = "") -> bytes:
    to = request.get("to")
    if ";tag=" not in to:
        to = f"{to};tag={to_tag}"
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {via}" for via in request.all("via")]
    lines += [f"From: {request.get('from')}", f"To: {to}", f"Call-ID: {request.call_id}"]
    lines += [f"CSeq: {request.get('cseq')}", "Contact: <sip:sim@127.0.0.1>"]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


class Phone(asyncio.DatagramProtocol):
    """A simulated device: answers probes and calls unless silent; a reboot forgets dialogs."""

    def __init__(self, name: str, answers: bool) -> None:
        self.name = name
        self.answers = answers  # False: rings (180) until CANCELled
        self.silent = False
        self.dialogs: set[str] = set()
        self.pending: dict[str, Message] = {}  # ringing INVITEs by Call-ID
        self.transport: asyncio.DatagramTransport | None = None
        self.invites = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.silent or self.transport is None:
            return
        message = Message.parse(data)
        if message is None or not message.is_request:
            return
        send = self.transport.sendto
        method, tag = message.method, self.name
        if method == "OPTIONS" or method == "NOTIFY":
            send(response(message, 200, "OK", tag), addr)
        elif method == "INVITE" and ";tag=" in message.get("to"):
            if message.call_id in self.dialogs:
                send(response(message, 200, "OK", tag, SDP.format(id=tag, port=self.port)), addr)
            else:
                send(response(message, 481, "Call Does Not Exist", tag), addr)
        elif method == "INVITE":
            self.invites += 1
            if self.answers:
                self.dialogs.add(message.call_id)
                send(response(message, 200, "OK", tag, SDP.format(id=tag, port=self.port)), addr)
            else:
                self.pending[message.call_id] = message
                send(response(message, 180, "Ringing", tag), addr)
        elif method == "CANCEL":
            send(response(message, 200, "OK", tag), addr)
            invite = self.pending.pop(message.call_id, None)
            if invite is not None:
                send(response(invite, 487, "Request Terminated", tag), addr)
        elif method == "BYE":
            self.dialogs.discard(message.call_id)
            send(response(message, 200, "OK", tag), addr)


class Caller(asyncio.DatagramProtocol):
    """One trusted socket placing every call; it answers re-INVITEs and counts BYEs."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.answered: set[str] = set()
        self.byes = 0
        self.reinvites = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def invite(self, index: int) -> None:
        assert self.transport is not None
        body = SDP.format(id=f"c{index}", port=30000 + index)
        text = (
            f"INVITE sip:u{index}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-{index}-{random.getrandbits(32)}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=c{index}\r\n"
            f"To: <sip:u{index}@127.0.0.1>\r\nCall-ID: call-{index}@bench\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:caller@127.0.0.1:{self.port}>\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        self.transport.sendto(text.encode(), self.server)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = Message.parse(data)
        if message is None or self.transport is None:
            return
        if not message.is_request:
            if message.method == "INVITE" and message.status == 200:
                self.answered.add(message.call_id)
                self.transport.sendto(self._ack(message), addr)
            return
        method = message.method
        if method == "INVITE":
            self.reinvites += 1
            port = 30000 + int(message.call_id.split("-")[1].split("@")[0])
            body = SDP.format(id="caller", port=port)
            self.transport.sendto(response(message, 200, "OK", "x", body), addr)
        elif method == "BYE":
            self.byes += 1
            self.transport.sendto(response(message, 200, "OK", "x"), addr)
        elif method != "ACK":
            self.transport.sendto(response(message, 200, "OK", "x"), addr)

    def _ack(self, ok: Message) -> bytes:
        contact = ok.get("contact").strip("<>").split(">")[0]
        return (
            f"ACK {contact} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-ack{random.getrandbits(40)}\r\n"
            f"Max-Forwards: 70\r\nFrom: {ok.get('from')}\r\nTo: {ok.get('to')}\r\n"
            f"Call-ID: {ok.call_id}\r\nCSeq: {ok.get('cseq').split()[0]} ACK\r\nContent-Length: 0\r\n\r\n"
        ).encode()


# --- the server -----------------------------------------------------------------------------------
def call_states(server: Server) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in json.loads(server.get("/api/v1/calls")):
        counts[call["state"]] = counts.get(call["state"], 0) + 1
    return counts


def start_recovery_server(workdir: Path, devices: list[tuple[int, int]], grace: float) -> Server:
    sip_port, api_port = free_port(), free_port()
    lines = [
        "[sip]",
        f'listen = ["udp:127.0.0.1:{sip_port}"]',
        'domain = "127.0.0.1"',
        'trusted_sources = ["127.0.0.0/8"]',
        "[keepalive]",
        "options_interval = 5",
        "in_call_interval = 1",
        "misses = 3",
        "[recovery]",
        f"grace = {grace}",
        "ring_timeout = 10",
        'fallback = ["devices"]',
        "[api]",
        f'listen = "127.0.0.1:{api_port}"',
        "[store]",
        'url = "memory:"',
        "[log]",
        'level = "info"',
        'format = "json"',
    ]
    for index, (first, second) in enumerate(devices):
        lines += [
            "[[users]]",
            f'name = "u{index}"',
            f'static_contacts = ["sip:u{index}@127.0.0.1:{first}", "sip:u{index}@127.0.0.1:{second}"]',
        ]
    return start_server(workdir, lines, sip_port, api_port)


# --- the run --------------------------------------------------------------------------------------
@dataclass
class Result:
    outcomes: dict[str, int] = field(default_factory=dict)
    caller_byes: int = 0
    detection: list[float] = field(default_factory=list)
    resume: list[float] = field(default_factory=list)
    transfer: list[float] = field(default_factory=list)
    held_within: float = 0.0
    recovered_within: float = 0.0


def percentile(values: Iterable[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def spread(values: list[float], unit: str = "s") -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {percentile(values, 0.5):.3f} {unit}  p99 {percentile(values, 0.99):.3f} {unit}"
        f"  max {max(values):.3f} {unit}  (n={len(values)})"
    )


async def wait_for(predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def run(calls: int, grace: float, rate: float, workdir: Path) -> Result:
    loop = asyncio.get_running_loop()
    firsts, seconds = [], []
    for index in range(calls):
        _, first = await loop.create_datagram_endpoint(
            lambda i=index: Phone(f"d1-{i}", answers=True), local_addr=("127.0.0.1", 0)
        )
        _, second = await loop.create_datagram_endpoint(
            lambda i=index: Phone(f"d2-{i}", answers=False), local_addr=("127.0.0.1", 0)
        )
        firsts.append(first)
        seconds.append(second)
    server = start_recovery_server(
        workdir, [(a.port, b.port) for a, b in zip(firsts, seconds, strict=True)], grace
    )
    result = Result()
    try:
        _, caller = await loop.create_datagram_endpoint(
            lambda: Caller(("127.0.0.1", server.sip_port)), local_addr=("127.0.0.1", 0)
        )
        for index in range(calls):
            caller.invite(index)
            await asyncio.sleep(1 / rate)
        await wait_for(lambda: len(caller.answered) == calls, 30, "every call answered")
        await wait_for(lambda: call_states(server).get("active") == calls, 30, "every call active")
        for phone in seconds:
            phone.answers = True  # from now on device 2 answers (the transfer target)
        returning = set(random.sample(range(calls), calls // 2))
        silenced_at = time.monotonic()
        for phone in firsts:
            phone.silent = True
        result.held_within = await wait_for(
            lambda: call_states(server).get("active", 0) == 0, 30, "every call held"
        )
        await asyncio.sleep(max(0.0, grace / 2 - (time.monotonic() - silenced_at)))
        for position, index in enumerate(sorted(returning)):
            phone = firsts[index]
            if position % 2:
                phone.dialogs.clear()  # rebooted: the old dialog is gone (481)
            phone.silent = False
        await wait_for(
            lambda: call_states(server).get("active") == calls,
            grace + 40,
            "every call bridged again",
        )
        result.recovered_within = time.monotonic() - silenced_at
        metrics = server.metrics()
        for outcome in ("resumed", "transferred", "voicemail", "lost", "abandoned"):
            result.outcomes[outcome] = int(
                metrics.get(f'callkeeper_recoveries_total{{outcome="{outcome}"}}', 0)
            )
        result.caller_byes = caller.byes
    finally:
        server.stop()
    transferring: dict[str, float] = {}
    for line in server.log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            name = event.get("event")
            if name == "endpoint.down":
                result.detection.append(event["detection_seconds"])
            elif name == "call.resumed":
                result.resume.append(event["resume_seconds"])
            elif name == "call.transferring" and event.get("step") == "devices":
                transferring[event["call"]] = event["at"]
            elif name == "call.transferred" and event["call"] in transferring:
                result.transfer.append(event["at"] - transferring[event["call"]])
    return result


def main() -> int:
    # Two sockets per simulated user: well past the default 1,024 descriptors at 500 calls.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="call set-up rate (calls/s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ck-recovery-") as tmp:
        result = asyncio.run(run(args.calls, args.grace, args.rate, Path(tmp)))
    half = args.calls // 2
    print(
        f"recovery bench: {args.calls} calls, every callee device silenced at once, grace {args.grace} s"
    )
    print(
        f"  outcomes: {result.outcomes}   (expected resumed {half}, transferred {args.calls - half}, lost 0)"
    )
    print(f"  BYEs the callers got: {result.caller_byes}")
    print(
        f"  every call held within {result.held_within:.2f} s; all bridged again {result.recovered_within:.2f} s after the failure"
    )
    print(f"  detection (last sign of life -> DOWN): {spread(result.detection)}")
    print(f"  resume (endpoint back -> bridged):      {spread(result.resume)}")
    print(f"  transfer (grace over -> bridged):       {spread(result.transfer)}")
    ok = (
        result.outcomes.get("resumed") == half
        and result.outcomes.get("transferred") == args.calls - half
        and result.outcomes.get("lost") == 0
        and result.caller_byes == 0
    )
    print("  PASS" if ok else "  FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
