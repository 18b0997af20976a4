"""Liveness at scale: N outbound endpoints sending STUN keep-alives to one callkeeper process.

The issue 5 acceptance load: 10,000 endpoints register over UDP with RFC 5626 outbound (so the
registrar answers `Require: outbound` and `Flow-Timer`), then each sends a STUN Binding request
(RFC 5389) every `flow_timer` seconds, phases spread, for `--seconds`; 1 % of them, chosen with
a seeded RNG, go silent at random times. Pass when:

- every silent endpoint is reported DOWN (SSE `endpoint.down`, subscribed before the run) within
  `flow_timer × misses + 1 s` of its last keep-alive, measured here: the SSE event's arrival in
  this process minus the moment this process sent that last keep-alive (so the server's
  timer lateness and the event's delivery are both inside the number);
- no other endpoint goes DOWN (a DOWN for a live endpoint is a false alarm);
- the server answers the keep-alives (STUN success responses with the right transaction id and
  XOR-MAPPED-ADDRESS = the endpoint's own address).

Reported: detection p50/p99/max (client-observed and the server's own `detection_seconds`),
server CPU % of one core during the keep-alive window (utime+stime from /proc/PID/stat), CPU µs
per keep-alive, STUN round-trip p50/p99/max (a server that falls behind shows it here first),
false SUSPECTs, and the load generator's own lateness and CPU, so a slow generator is not
mistaken for a slow server. This bench has no external baseline: the reference is the bound
(`detection / bound`), and CPU per keep-alive is the figure to compare between runs.

One process generates the load (asyncio, uvloop when installed). Every endpoint is its own flow
(source IP:port), as real phones behind NATs are: endpoint k of each group of `--per-socket`
sends from 127.0.0.(2+k), and each group shares one wildcard-bound socket (its port) that picks
the source address per datagram with IP_PKTINFO — 100 sockets for 10,000 endpoints instead of
10,000 descriptors. `--pin` pins the server to CPU 0 and the generator to CPU 1 (off by default:
other benches pin to CPU 0 as well). The server's run-queue wait and the CPU other processes
used are printed, because this machine is shared and a starved server is not a slow one.

    python bench/liveness_bench.py [--endpoints 10000] [--flow-timer 5] [--seconds 60]
    python bench/liveness_bench.py --stretch          # 20,000 endpoints, flow_timer 1
    python bench/liveness_bench.py --profile          # also py-spy the server during the window

`--profile` needs py-spy (`pip install py-spy`); it prints where the server's time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import os
import random
import re
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from common import CLOCK_TICKS, Server, cpu_seconds, free_port
from common import start_server as common_start_server

MAGIC_COOKIE = 0x2112A442
COOKIE_BYTES = struct.pack(">I", MAGIC_COOKIE)
BINDING_REQUEST_TYPE = b"\x00\x01"
BINDING_SUCCESS_TYPE = b"\x01\x01"
XOR_MAPPED_ADDRESS = 0x0020
MAPPED_ADDRESS = 0x0001
FLOW_TIMER_RE = re.compile(rb"(?im)^flow-timer[ \t]*:[ \t]*(\d+)")
REQUIRE_RE = re.compile(rb"(?im)^require[ \t]*:[ \t]*(.*?)\r$")
CSEQ_RE = re.compile(rb"(?im)^cseq[ \t]*:[ \t]*\d+[ \t]+(\w+)")
CALL_ID_RE = re.compile(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*lb-(\d+)@")
TICK = 0.005  # the generator's scheduling granularity (s)
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux; the constant is in `socket` from 3.12


# --- the server ------------------------------------------------------------------------------
def start_server(
    workdir: Path, users: int, flow_timer: int, misses: int, cpu: str | None
) -> Server:
    sip_port, api_port = free_port(), free_port()
    lines = [
        "[sip]",
        f'listen = ["udp:127.0.0.1:{sip_port}"]',
        'domain = "127.0.0.1"',
        'trusted_sources = ["127.0.0.0/8"]',
        "[keepalive]",
        f"flow_timer = {flow_timer}",
        f"misses = {misses}",
        "[api]",
        f'listen = "127.0.0.1:{api_port}"',
        "[store]",
        'url = "memory:"',
        "[log]",
        'level = "warning"',
    ]
    lines += [f'[[users]]\nname = "u{i}"' for i in range(users)]
    return common_start_server(workdir, lines, sip_port, api_port, cpu)


# --- wire formats ------------------------------------------------------------------------------
def stun_request(transaction_id: bytes) -> bytes:
    """A bare RFC 5389 Binding request: 20-byte header, no attributes."""
    return BINDING_REQUEST_TYPE + b"\x00\x00" + COOKIE_BYTES + transaction_id


def stun_mapped_address(data: bytes) -> tuple[str, int] | None:
    """XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS) of a Binding success response, IPv4 only."""
    offset, end = 20, min(len(data), 20 + struct.unpack_from(">H", data, 2)[0])
    plain: tuple[str, int] | None = None
    while offset + 4 <= end:
        kind, length = struct.unpack_from(">HH", data, offset)
        value = data[offset + 4 : offset + 4 + length]
        if kind == XOR_MAPPED_ADDRESS and length == 8 and value[1] == 1:
            port = struct.unpack_from(">H", value, 2)[0] ^ (MAGIC_COOKIE >> 16)
            raw = struct.unpack_from(">I", value, 4)[0] ^ MAGIC_COOKIE
            return socket.inet_ntoa(struct.pack(">I", raw)), port
        if kind == MAPPED_ADDRESS and length == 8 and value[1] == 1:
            plain = socket.inet_ntoa(value[4:8]), struct.unpack_from(">H", value, 2)[0]
        offset += 4 + ((length + 3) & ~3)
    return plain


def xor_mapped_attribute(host: str, port: int) -> bytes:
    """The XOR-MAPPED-ADDRESS attribute (type, length, value) for an IPv4 address (§15.2)."""
    address = struct.unpack(">I", socket.inet_aton(host))[0] ^ MAGIC_COOKIE
    value = struct.pack(">BBHI", 0, 1, port ^ (MAGIC_COOKIE >> 16), address)
    return struct.pack(">HH", XOR_MAPPED_ADDRESS, 8) + value


def register_request(
    index: int, attempt: int, local: tuple[str, int], server_port: int, expires: int
) -> bytes:
    host, port = local
    return (
        f"REGISTER sip:127.0.0.1:{server_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-lb{index}x{attempt};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:u{index}@127.0.0.1>;tag=lb{index}\r\n"
        f"To: <sip:u{index}@127.0.0.1>\r\n"
        f"Call-ID: lb-{index}@{host}\r\n"
        f"CSeq: {attempt + 1} REGISTER\r\n"
        "Supported: outbound, path\r\n"
        f'Contact: <sip:u{index}@{host}:{port};transport=udp>;+sip.instance="<urn:uuid:'
        f'00000000-0000-4000-8000-{index:012d}>";reg-id=1\r\n'
        f"Expires: {expires}\r\n"
        "User-Agent: callkeeper-liveness-bench\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


# --- statistics ------------------------------------------------------------------------------
def percentile(values: Iterable[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[rank]


def spread(values: Iterable[float], unit: float = 1.0, digits: int = 2) -> str:
    ordered = sorted(values)
    if not ordered:
        return "n/a"
    p50, p99 = percentile(ordered, 0.50) * unit, percentile(ordered, 0.99) * unit
    return f"p50 {p50:.{digits}f}  p99 {p99:.{digits}f}  max {ordered[-1] * unit:.{digits}f}"


# --- the load generator ------------------------------------------------------------------------
@dataclass
class Down:
    endpoint: str
    received: float  # time.monotonic() in this process
    detection_seconds: float  # the server's own figure (last sign of life -> DOWN)
    reason: str


@dataclass
class Load:
    endpoints: int
    flow_timer: int
    misses: int
    seconds: float
    rate: float
    silent_fraction: float
    seed: int
    per_socket: int
    expires: int = 600
    # results
    registered: int = 0
    register_statuses: Counter[int] = field(default_factory=Counter)
    register_retransmits: int = 0
    register_problems: Counter[str] = field(default_factory=Counter)
    stun_sent: int = 0
    stun_lost: int = 0  # sent in the window and never answered (checked when the next is due)
    stun_answered: int = 0
    stun_bad: int = 0  # wrong mapped address, or on the wrong socket
    stun_late: int = 0  # answered after the next keep-alive went out (or a duplicate)
    send_errors: int = 0
    other_datagrams: int = 0
    rtts: array[float] = field(default_factory=lambda: array("d"))
    rtt_at: array[float] = field(default_factory=lambda: array("d"))
    lateness: array[float] = field(default_factory=lambda: array("d"))
    downs: list[Down] = field(default_factory=list)
    suspects: list[tuple[str, float]] = field(default_factory=list)
    alives: list[tuple[str, float]] = field(default_factory=list)
    sse_events: Counter[str] = field(default_factory=Counter)


class Generator:
    def __init__(self, load: Load, server: Server) -> None:
        self.load = load
        self.server = server
        self.server_address = ("127.0.0.1", server.sip_port)
        n = load.endpoints
        self.rng = random.Random(load.seed)
        self.sockets: list[socket.socket] = []
        self.locals: list[tuple[str, int]] = []
        self.registered_at = [0.0] * n
        self.register_attempts = [0] * n
        self.register_sent = [0.0] * n
        self.last_sent = [0.0] * n
        self.max_gap = [0.0] * n  # longest gap between two keep-alives of one endpoint
        self.pending: list[bytes | None] = [None] * n  # outstanding STUN transaction id
        self.pending_at = [0.0] * n
        self.owner: dict[bytes, int] = {}  # outstanding STUN transaction id -> endpoint
        self.answered = [0] * n
        self.silent_at = [float("inf")] * n
        self.stopped = [False] * n
        self.heap: list[tuple[float, int]] = []
        self.window: tuple[float, float] = (float("inf"), float("inf"))
        self.all_registered = asyncio.Event()
        self.running = True

    # sockets ---------------------------------------------------------------------------------
    def open_sockets(self) -> None:
        """One socket per `per_socket` endpoints; endpoint k of a socket sends from 127.0.0.(2+k).

        The socket is bound to the wildcard address on an ephemeral port and picks each
        datagram's source address with IP_PKTINFO, so (address, port) is unique per endpoint
        while the generator needs N / per_socket descriptors instead of N (the hard
        RLIMIT_NOFILE here is 20,000, below the stretch load's 20,000 endpoints + the rest).
        Replies come back to the same socket; their destination address (IP_PKTINFO again)
        says which endpoint they are for.
        """
        per_socket = self.load.per_socket
        count = -(-self.load.endpoints // per_socket)
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind(("0.0.0.0", 0))
            self.sockets.append(sock)
        for index in range(self.load.endpoints):
            host = ip_for(index % per_socket)
            port = self.sockets[index // per_socket].getsockname()[1]
            self.locals.append((host, port))
        self.source_cmsg = [
            [
                (
                    socket.IPPROTO_IP,
                    IP_PKTINFO,
                    struct.pack("=i4s4s", 0, socket.inet_aton(ip_for(k)), bytes(4)),
                )
            ]
            for k in range(per_socket)
        ]
        self.expected_mapping = [xor_mapped_attribute(host, port) for host, port in self.locals]
        loop = asyncio.get_running_loop()
        for number, sock in enumerate(self.sockets):
            loop.add_reader(sock.fileno(), self.on_readable, number)

    def close_sockets(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            with contextlib.suppress(Exception):
                loop.remove_reader(sock.fileno())
            sock.close()

    def send(self, index: int, data: bytes) -> bool:
        per_socket = self.load.per_socket
        try:
            self.sockets[index // per_socket].sendmsg(
                [data], self.source_cmsg[index % per_socket], 0, self.server_address
            )
        except OSError:
            self.load.send_errors += 1
            return False
        return True

    # receiving ---------------------------------------------------------------------------------
    def on_readable(self, number: int) -> None:
        """Drain one socket. A STUN answer's transaction id says which endpoint it is for (each
        endpoint has at most one outstanding), a SIP answer's Call-ID too: plain recv() does."""
        sock = self.sockets[number]
        recv = sock.recv
        per_socket, endpoints = self.load.per_socket, self.load.endpoints
        owner = self.owner
        for _ in range(256):  # then let the loop run something else
            try:
                data = recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.load.send_errors += 1  # ICMP unreachable reported on the next call
                return
            if data[:2] == BINDING_SUCCESS_TYPE and data[4:8] == COOKIE_BYTES:
                index = owner.pop(data[8:20], -1)
                if index >= 0 and index // per_socket == number:
                    self.on_stun_response(index, data, time.monotonic())
                else:  # after the endpoint's next keep-alive went out, or a duplicate
                    self.load.stun_late += 1
            elif data.startswith(b"SIP/2.0 ") and (match := CALL_ID_RE.search(data)):
                index = int(match.group(1))
                if index < endpoints and index // per_socket == number:
                    self.on_sip_response(index, data, time.monotonic())
                else:
                    self.load.other_datagrams += 1
            else:
                self.load.other_datagrams += 1

    def on_stun_response(self, index: int, data: bytes, now: float) -> None:
        load = self.load
        if data[8:20] != self.pending[index]:
            load.stun_bad += 1
            return
        self.pending[index] = None
        # The server puts XOR-MAPPED-ADDRESS first; for IPv4 its value depends only on the
        # address, so compare bytes, and parse only when the layout is different.
        if data[20:32] != self.expected_mapping[index] and (
            stun_mapped_address(data) != self.locals[index]
        ):
            load.stun_bad += 1
            return
        load.stun_answered += 1
        self.answered[index] += 1
        if self.window[0] <= self.pending_at[index] < self.window[1]:
            load.rtts.append(now - self.pending_at[index])
            load.rtt_at.append(self.pending_at[index] - self.window[0])

    def on_sip_response(self, index: int, data: bytes, now: float) -> None:
        load = self.load
        cseq = CSEQ_RE.search(data)
        if cseq is None or cseq.group(1) != b"REGISTER":
            load.other_datagrams += 1
            return
        status = int(data[8:11])
        if status < 200 or self.registered_at[index]:
            return
        load.register_statuses[status] += 1
        if status != 200:
            reason = data[12 : data.find(b"\r")].decode(errors="replace")
            load.register_problems[f"{status} {reason}"] += 1
            return
        timer = FLOW_TIMER_RE.search(data)
        require = REQUIRE_RE.search(data)
        if timer is None or int(timer.group(1)) != load.flow_timer:
            load.register_problems["200 without the expected Flow-Timer"] += 1
        if require is None or b"outbound" not in require.group(1).lower():
            load.register_problems["200 without Require: outbound"] += 1
        self.registered_at[index] = now
        load.registered += 1
        # Its first keep-alive comes at a random point of its first interval, so the phases of
        # all endpoints are spread over the interval and none waits longer than one interval.
        heapq.heappush(self.heap, (now + self.rng.uniform(0.05, 1.0) * load.flow_timer, index))
        if load.registered == load.endpoints:
            self.all_registered.set()

    # sending -----------------------------------------------------------------------------------
    async def register_all(self) -> None:
        """Paced REGISTERs at `rate`/s; retransmit (new attempt) after 2 s without an answer."""
        load = self.load
        started = time.monotonic()
        for index in range(load.endpoints):
            due = started + index / load.rate
            delay = due - time.monotonic()
            if delay > TICK:
                await asyncio.sleep(delay)
            self.register_once(index)
        deadline = time.monotonic() + 30
        while not self.all_registered.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_registered.wait(), 2.0)
            now = time.monotonic()
            for index in range(load.endpoints):
                if (
                    not self.registered_at[index]
                    and self.register_attempts[index] < 4
                    and now - self.register_sent[index] >= 2.0
                ):
                    load.register_retransmits += 1
                    self.register_once(index)

    def register_once(self, index: int) -> None:
        attempt = self.register_attempts[index]
        self.register_attempts[index] += 1
        self.register_sent[index] = time.monotonic()
        data = register_request(
            index, attempt, self.locals[index], self.server.sip_port, self.load.expires
        )
        self.send(index, data)

    async def keepalives(self) -> None:
        """Send every due keep-alive; reschedule it one `flow_timer` later (fixed grid)."""
        load = self.load
        interval = float(load.flow_timer)
        heap, pending, pending_at = self.heap, self.pending, self.pending_at
        last_sent, max_gap, silent_at, stopped = (
            self.last_sent,
            self.max_gap,
            self.silent_at,
            self.stopped,
        )
        lateness, randbytes = load.lateness, random.Random(load.seed + 3).randbytes
        owner = self.owner
        while self.running:
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                due, index = heapq.heappop(heap)
                if due >= silent_at[index]:
                    stopped[index] = True  # goes silent: its last keep-alive was the one before
                    continue
                previous = pending[index]
                if previous is not None:  # the previous one was never answered
                    if pending_at[index] >= self.window[0]:
                        load.stun_lost += 1
                    owner.pop(previous, None)  # an answer now would count as "too late"
                transaction_id = randbytes(12)
                owner[transaction_id] = index
                if self.send(index, stun_request(transaction_id)):
                    sent = time.monotonic()
                    if last_sent[index]:
                        max_gap[index] = max(max_gap[index], sent - last_sent[index])
                    last_sent[index] = sent
                    pending[index], pending_at[index] = transaction_id, sent
                    load.stun_sent += 1
                    lateness.append(sent - due)
                heapq.heappush(heap, (due + interval, index))
            # Wake at most every TICK and send everything due by then: waking for each
            # keep-alive (every 50 µs at 20,000/s) would cost more than sending it.
            wait = (heap[0][0] - time.monotonic()) if heap else TICK
            await asyncio.sleep(min(max(wait, TICK), 0.5))

    # the SSE stream ------------------------------------------------------------------------------
    async def events(self, ready: asyncio.Event) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(self.server.url("/api/v1/events")) as response,
        ):
            ready.set()
            name = ""
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:") and name:
                    self.on_event(name, json.loads(line[5:]), time.monotonic())
                elif not line:
                    name = ""

    def on_event(self, name: str, fields: dict[str, object], now: float) -> None:
        load = self.load
        load.sse_events[name] += 1
        endpoint = str(fields.get("endpoint", ""))
        if name == "endpoint.down":
            seconds = fields.get("detection_seconds")
            load.downs.append(
                Down(
                    endpoint,
                    now,
                    float(seconds) if isinstance(seconds, int | float) else float("nan"),
                    str(fields.get("reason", "")),
                )
            )
        elif name == "endpoint.suspect":
            load.suspects.append((endpoint, now))
        elif name == "endpoint.alive":
            load.alives.append((endpoint, now))


def user_system(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process in seconds, from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def runqueue_wait(pid: int) -> float:
    """Seconds the process's main thread spent runnable but waiting for a CPU (schedstat)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy() -> float:
    """CPU-seconds all CPUs spent not idle since boot (/proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    busy = sum(ticks[:8]) - idle  # user..steal; guest is already inside user
    return busy / CLOCK_TICKS


def stall_seconds(
    rtts: array[float], at: array[float], threshold: float
) -> list[tuple[int, float]]:
    """(second of the window, worst RTT in ms) for every second with an RTT above threshold."""
    worst: dict[int, float] = {}
    for rtt, sent in zip(rtts, at, strict=True):
        if rtt > threshold:
            second = int(sent)
            worst[second] = max(worst.get(second, 0.0), rtt * 1000)
    return sorted(worst.items())


def ip_for(slot: int) -> str:
    number = 2 + slot  # 127.0.0.2, 127.0.0.3, ...: 127.0.0.1 is the server's
    return f"127.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}"


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard < needed:
        try:  # root may raise the hard limit (up to fs.nr_open)
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return
        except (ValueError, OSError) as error:
            raise SystemExit(
                f"liveness_bench: needs {needed} file descriptors, the hard limit is {hard} "
                f"({error}); run as root or raise `ulimit -Hn`, or use fewer --endpoints"
            ) from error
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# --- the run ---------------------------------------------------------------------------------
@dataclass
class Outcome:
    passed: bool
    lines: list[str]


async def run_load(load: Load, server: Server, profile: Path | None) -> Outcome:
    gen = Generator(load, server)
    loop = asyncio.get_running_loop()
    gen.open_sockets()
    ready = asyncio.Event()
    events_task = asyncio.create_task(gen.events(ready))
    await asyncio.wait_for(ready.wait(), 10)
    keepalive_task = asyncio.create_task(gen.keepalives())
    lines: list[str] = []
    spy: subprocess.Popen[bytes] | None = None
    try:
        started = time.monotonic()
        cpu_before_reg = cpu_seconds([server.pid])
        await gen.register_all()
        registration = time.monotonic() - started
        cpu_reg = cpu_seconds([server.pid]) - cpu_before_reg
        print(
            f"registered {load.registered}/{load.endpoints} in {registration:.1f} s "
            f"(server CPU {100 * cpu_reg / registration:.0f} %, "
            f"{load.register_retransmits} retransmissions)",
            flush=True,
        )
        for problem, count in load.register_problems.most_common(5):
            print(f"  register problem x{count}: {problem}")
        if load.registered < load.endpoints:
            # Carry on with the ones that did register: how the server copes is the finding.
            lines.append(
                f"FAIL: only {load.registered} of {load.endpoints} endpoints registered "
                f"({load.register_retransmits} REGISTER retransmissions); the window runs with "
                "those"
            )
        if not load.registered:
            return Outcome(False, lines)

        # The measured window starts now. Silent endpoints stop at random times early enough
        # that their detection (<= bound) falls inside the window.
        bound = load.flow_timer * load.misses + 1.0
        window_start = time.monotonic()
        window_end = window_start + load.seconds
        gen.window = (window_start, window_end)
        del load.lateness[:]
        silent_count = round(load.endpoints * load.silent_fraction)
        registered = [i for i in range(load.endpoints) if gen.registered_at[i]]
        silent_count = min(silent_count, len(registered))
        silent = sorted(random.Random(load.seed + 1).sample(registered, silent_count))
        rng = random.Random(load.seed + 2)
        latest = load.seconds - bound - 2.0
        if latest <= load.flow_timer:
            raise SystemExit(f"--seconds must exceed {bound + 2 + load.flow_timer:.0f} s")
        for index in silent:
            gen.silent_at[index] = window_start + rng.uniform(load.flow_timer, latest)
        if profile is not None:
            spy = start_profiler(server.pid, load.seconds, profile)
        cpu_before = cpu_seconds([server.pid])
        split_before = user_system(server.pid)
        wait_before = runqueue_wait(server.pid)
        machine_before = machine_busy()
        own_before = resource.getrusage(resource.RUSAGE_SELF)
        sent_before = load.stun_sent
        await asyncio.sleep(max(0.0, window_end - time.monotonic()))
        elapsed = time.monotonic() - window_start
        cpu_used = cpu_seconds([server.pid]) - cpu_before
        split = tuple(b - a for a, b in zip(split_before, user_system(server.pid), strict=True))
        waited = runqueue_wait(server.pid) - wait_before
        machine = machine_busy() - machine_before
        own_after = resource.getrusage(resource.RUSAGE_SELF)
        own_cpu = (own_after.ru_utime + own_after.ru_stime) - (
            own_before.ru_utime + own_before.ru_stime
        )
        sent = load.stun_sent - sent_before
        # Keep the keep-alives going while we read the final state, so nothing else goes quiet.
        await asyncio.sleep(0.5)
        metrics = await loop.run_in_executor(None, server.metrics)
        final = json.loads(await loop.run_in_executor(None, server.get, "/api/v1/endpoints"))
        # Still unanswered a second after it was sent: lost too.
        cutoff = time.monotonic() - 1.0
        load.stun_lost += sum(
            1
            for index in range(load.endpoints)
            if gen.pending[index] is not None and window_start <= gen.pending_at[index] < cutoff
        )
    finally:
        gen.running = False
        keepalive_task.cancel()
        events_task.cancel()
        for task in (keepalive_task, events_task):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        gen.close_sockets()
        if spy is not None:
            finish_profiler(spy, profile)

    # --- judge -------------------------------------------------------------------------------
    # endpoint id -> index, from the API (ids are the server's business). Read after the window:
    # building the list blocks the server's loop for a few hundred ms at 10,000 endpoints.
    index_of: dict[str, int] = {}
    for entry in final:
        user = str(entry.get("user", ""))
        if user.startswith("u") and user[1:].isdigit():
            index_of[str(entry["id"])] = int(user[1:])
    silent_set = set(silent)
    detection: dict[int, Down] = {}
    false_downs: list[tuple[int, Down]] = []
    for down in load.downs:
        index = index_of.get(down.endpoint, -1)
        if down.received > window_end:
            continue  # (none expected: the live ones keep sending while we read the results)
        if index in silent_set and gen.stopped[index] and down.received >= gen.last_sent[index]:
            detection.setdefault(index, down)
        else:
            false_downs.append((index, down))
    observed = {i: d.received - gen.last_sent[i] for i, d in detection.items()}
    server_seen = [d.detection_seconds for d in detection.values()]
    missed = [i for i in silent if i not in detection]
    late = {i: t for i, t in observed.items() if t > bound}
    suspected = [
        (index_of.get(endpoint, -1), at)
        for endpoint, at in load.suspects
        if window_start <= at <= window_end
        and (index_of.get(endpoint, -1) not in silent_set or at < gen.last_sent[index_of[endpoint]])
    ]
    false_suspects = len(suspected)
    early_suspects = sum(1 for _, at in load.suspects if at < window_start)
    early_downs = sum(1 for down in load.downs if down.received < window_start)
    # Every silent endpoint goes DOWN exactly once, so the failure counter bounds the false
    # alarms from below even when the SSE stream dropped events (its queue is bounded).
    failures = metrics.get("callkeeper_endpoint_failures_total", 0.0)
    false_by_metric = int(failures) - len(silent)
    sse_lost = int(failures) - len(load.downs)
    final_states = Counter(str(e.get("state")) for e in final)
    final_down = {index_of.get(str(e["id"]), -1) for e in final if e.get("state") == "down"}
    generator_gap = max((g for i, g in enumerate(gen.max_gap) if i not in silent_set), default=0.0)
    unanswered = load.stun_lost
    cpu_pct = 100 * cpu_used / elapsed
    stun_metric = metrics.get('callkeeper_keepalives_total{kind="stun"}', float("nan"))

    lines.append(
        f"endpoints {load.registered} registered of {load.endpoints} (flow_timer "
        f"{load.flow_timer} s, misses {load.misses}, window {elapsed:.0f} s), silent "
        f"{len(silent)}, bound {bound:.1f} s"
    )
    lines.append(
        f"detection, client-observed (last keep-alive sent -> SSE endpoint.down received): "
        f"{spread(observed.values())} s;  worst/bound "
        f"{max(observed.values(), default=0) / bound:.2f}"
    )
    lines.append(f"detection, server detection_seconds: {spread(server_seen)} s")
    lines.append(
        f"detected {len(detection)}/{len(silent)}, late (> bound) {len(late)}, "
        f"missed {len(missed)}, false DOWN {len(false_downs)} ({early_downs} of them while "
        f"registering), false SUSPECT in the window {false_suspects} (and {early_suspects} while "
        "registering)"
    )
    if false_by_metric > len(false_downs) or sse_lost > 0:
        lines.append(
            f"false DOWN by the failure counter: {false_by_metric}; SSE endpoint.down events "
            f"received {len(load.downs)} of {failures:.0f} (the rest were dropped by the server)"
        )
    lines.append(
        f"final states {dict(final_states)}; metrics: failures_total {failures:.0f}, "
        "detection_seconds_count "
        f"{metrics.get('callkeeper_detection_seconds_count', float('nan')):.0f}"
    )
    lines.append(
        f"server CPU {cpu_pct:.1f} % of one core ({cpu_used:.1f} s in {elapsed:.0f} s: user "
        f"{split[0]:.1f} s, kernel {split[1]:.1f} s), {1e6 * cpu_used / max(sent, 1):.0f} µs "
        "per keep-alive (everything the server did, divided by keep-alives)"
    )
    lines.append(
        f"STUN in the window: sent {sent} ({sent / elapsed:.0f}/s), answered {len(load.rtts)}, "
        f"never answered {unanswered} (answered too late {load.stun_late}), bad answers "
        f"{load.stun_bad}; "
        f"the server counted "
        f"{stun_metric:.0f} in the whole run (generator sent {load.stun_sent})"
    )
    lines.append(f"STUN round trip: {spread(load.rtts, 1000, 2)} ms")
    others = machine - cpu_used - own_cpu
    lines.append(
        f"contention: the server waited {1000 * waited:.0f} ms for a CPU (run queue), other "
        f"processes used {100 * others / elapsed:.0f} % of a core during the window"
    )
    lines.append(
        f"generator: lateness {spread(load.lateness, 1000, 1)} ms, longest gap of a live "
        f"endpoint {generator_gap:.2f} s, CPU {100 * own_cpu / elapsed:.0f} %, send errors "
        f"{load.send_errors}"
    )
    stalls = stall_seconds(load.rtts, load.rtt_at, 0.1)
    if stalls:
        lines.append(
            f"slow answers (RTT > 100 ms) in {len(stalls)} s of the window: "
            + ", ".join(f"{t}s:{ms:.0f}ms" for t, ms in stalls[:20])
        )
    not_udp = sum(1 for e in final if e.get("transport") != "udp")
    if not_udp:
        lines.append(f"note: {not_udp} endpoints listed with a transport other than udp")
    for index, down in false_downs[:10]:
        gap = gen.max_gap[index] if index >= 0 else float("nan")
        lines.append(
            f"  false DOWN: {down.endpoint} (u{index}) detection {down.detection_seconds:.2f} s, "
            f"its longest send gap {gap:.2f} s, {down.received - window_start:.1f} s into the "
            "window"
        )
    for index, at in suspected[:5]:
        lines.append(
            f"  false SUSPECT: u{index} {at - window_start:.1f} s into the window (SSE arrival), "
            f"registered {window_start - gen.registered_at[index]:.1f} s before the window, "
            f"its longest send gap {gen.max_gap[index]:.2f} s"
        )
    for index in missed[:10]:
        state = "down in the API" if index in final_down else "not down in the API"
        lines.append(
            f"  missed: u{index} silent since {gen.silent_at[index] - window_start:.1f} s, {state}"
        )
    for index, value in sorted(late.items(), key=lambda kv: -kv[1])[:10]:
        lines.append(f"  late: u{index} detected {value:.2f} s after its last keep-alive")

    # Loopback loses nothing by itself: a keep-alive never answered was dropped by the server
    # (its socket buffer overflowed) or ignored.
    stun_ok = unanswered == 0 and load.stun_bad == 0 and load.stun_late == 0
    passed = (
        load.registered == load.endpoints
        and not missed
        and not late
        and not false_downs
        and false_by_metric <= 0
        and stun_ok
        and generator_gap < bound - 1
    )
    if generator_gap >= bound - 1:
        lines.append("note: the generator itself fell behind; its results are not the server's")
    return Outcome(passed, lines)


def start_profiler(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("profile: py-spy not found (pip install py-spy); running without it")
        return None
    command = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
               "--format", "raw", "--output", str(output), "--nonblocking"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_profiler(spy: subprocess.Popen[bytes], output: Path | None) -> None:
    try:
        _, err = spy.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        spy.terminate()
        _, err = spy.communicate(timeout=10)
    if output is None or not output.exists():
        print(f"profile: py-spy wrote nothing ({err.decode(errors='replace')[-300:]})")
        return
    print(f"\nprofile of the server during the window (py-spy, {output}):")
    for line in summarize_profile(output):
        print(line)


def summarize_profile(path: Path, top: int = 25) -> list[str]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [simplify(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return ["  (no samples)"]
    out = [f"  {total} samples; self time:"]
    out += [f"    {100 * c / total:5.1f} %  {f}" for f, c in own.most_common(top)]
    out.append("  inclusive time:")
    out += [f"    {100 * c / total:5.1f} %  {f}" for f, c in inclusive.most_common(top)]
    return out


def simplify(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)" so lines of one function add up
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    name, path = match.groups()
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if "callkeeper" in parts else parts[-1] if parts else path
    return f"{name} ({short})"


def pin_self(cpu: int | None) -> set[int] | None:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    saved = os.sched_getaffinity(0)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {cpu})
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--flow-timer", type=int, default=5)
    parser.add_argument("--misses", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0, help="keep-alive window")
    parser.add_argument("--rate", type=float, default=1000.0, help="REGISTERs per second")
    parser.add_argument("--silent", type=float, default=0.01, help="fraction going silent")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--per-socket", type=int, default=100, help="endpoints per socket (= source addresses)"
    )
    parser.add_argument("--stretch", action="store_true", help="20,000 endpoints, flow_timer 1")
    parser.add_argument("--profile", action="store_true", help="py-spy the server")
    parser.add_argument(
        "--pin", action="store_true", help="pin the server to CPU 0 and the generator to CPU 1"
    )
    args = parser.parse_args(argv)
    if args.stretch:
        args.endpoints, args.flow_timer = 20_000, 1
    if args.endpoints < 1 or not 1 <= args.per_socket <= 60_000:
        parser.error("bad --endpoints/--per-socket")
    load = Load(
        endpoints=args.endpoints,
        flow_timer=args.flow_timer,
        misses=args.misses,
        seconds=args.seconds,
        rate=args.rate,
        silent_fraction=args.silent,
        seed=args.seed,
        per_socket=args.per_socket,
    )
    # Not pinned by default: on a shared machine other benches pin their servers to CPU 0
    # too, and a pinned server then waits for that CPU while the other one idles.
    two_cpus = (os.cpu_count() or 1) >= 2 and args.pin
    raise_fd_limit(-(-args.endpoints // args.per_socket) + 1024)
    saved_affinity = pin_self(1 if two_cpus else None)
    try:
        with tempfile.TemporaryDirectory(prefix="liveness-bench-") as tmp:
            workdir = Path(tmp)
            server = start_server(
                workdir, args.endpoints, args.flow_timer, args.misses, "0" if two_cpus else None
            )
            try:
                profile = workdir / "profile.txt" if args.profile else None
                outcome = run_with_loop(load, server, profile)
            finally:
                server.stop()
                log = server.log.read_text(errors="replace")
                if "Traceback" in log or "error" in log.lower():
                    print("server log (tail):\n" + log[-1500:])
                kept = Path(tempfile.gettempdir()) / "liveness-bench-callkeeper.log"
                shutil.copyfile(server.log, kept)  # the last run's, for a look afterwards
    finally:
        if saved_affinity is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, saved_affinity)
    print()
    for line in outcome.lines:
        print(line)
    print(f"liveness bench: {'PASS' if outcome.passed else 'FAIL'}")
    return 0 if outcome.passed else 1


def run_with_loop(load: Load, server: Server, profile: Path | None) -> Outcome:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_load(load, server, profile))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run_load(load, server, profile))


if __name__ == "__main__":
    sys.exit(main())
