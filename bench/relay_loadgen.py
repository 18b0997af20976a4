"""The RTP load generator of relay_bench: many phones, each one UDP socket, G.711 at 20 ms ptime.

    python bench/relay_loadgen.py STREAMS

binds 2 x STREAMS phone sockets (ephemeral ports on 127.0.0.1), prints {"ports": [...]} on stdout,
reads {"targets": [...], "seconds": S, "warmup": W} (where each phone sends) from stdin, runs,
and prints one JSON line of results. Phones 2i and 2i+1 are the two ends of bidirectional stream i: what 2i sends must arrive on 2i+1's socket and
the other way round (through a relay, or directly for the loopback baseline). Every phone sends
172-octet RTP packets (12-octet header + 160 octets of PCMU) 50 times a second; the phones'
send times are spread evenly over the 20 ms period.

One thread, no asyncio: a loop that sends whatever is due (`time.perf_counter`), then polls
(epoll) the sockets for what arrived. At high rates it spins; `generator_busy` is the share of
the time it was sending or receiving (its headroom), `generator_cpu` what it used in all. Each packet carries its stream counter and send time in its
payload (both relays pass the payload untouched), so the receiver measures loss per direction
(packets sent vs received), one-way delay (arrival - send: one process, one clock) and the
RFC 3550 interarrival jitter on that transit time. The generator's own lag (how late a due send
went out) and CPU are reported, so a generator that falls behind is visible. Delay and jitter
skip the first `warmup` seconds (latching, caches); loss counts every packet.
"""

from __future__ import annotations

import json
import resource
import select
import socket
import struct
import sys
import time
from array import array

import numpy as np

HOST = "127.0.0.1"
PERIOD = 0.020
PACKET_SIZE = 172
HEADER = struct.Struct("!BBHIIId")  # RTP fixed header, then our counter and send time
STAMP = struct.Struct("!Id")
DRAIN = 0.5


def bind_phones(streams: int) -> list[socket.socket]:
    socks = []
    for _ in range(2 * streams):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        socks.append(sock)
    return socks


def run(socks: list[socket.socket], seconds: float, warmup: float) -> dict[str, object]:
    count = len(socks)
    poller = select.epoll(sizehint=count)
    by_fd: list[int] = [-1] * (max(s.fileno() for s in socks) + 1)
    for index, sock in enumerate(socks):
        by_fd[sock.fileno()] = index
        poller.register(sock.fileno(), select.EPOLLIN)
    sends = [sock.send for sock in socks]
    recvs = [sock.recv_into for sock in socks]
    buffers = [bytearray(PACKET_SIZE) for _ in socks]
    ssrcs = [0x10000000 + index for index in range(count)]
    pack_into, unpack_from = HEADER.pack_into, STAMP.unpack_from
    received = [0] * count  # on phone i's socket, i.e. sent by its partner i ^ 1
    last_counter = [-1] * count
    last_transit = [0.0] * count
    jitter = [0.0] * count
    delays = array("d")
    lags = array("d")
    reordered = send_errors = recv_errors = 0
    sent = [0] * count
    rounds = max(1, round(seconds / PERIOD))
    warm_rounds = round(warmup / PERIOD)
    slot = PERIOD / count
    receive_buffer = bytearray(2048)
    perf = time.perf_counter
    poll = poller.poll
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    start = perf() + 0.05
    j = k = 0
    due = start
    drain_until = start + rounds * PERIOD + DRAIN
    idle = 0.0  # in iterations that neither sent nor received
    while True:
        now = perf()
        sent_now = False
        if k < rounds and due <= now:
            sent_now = True
            lags.append(now - due)
            while due <= now:
                buf = buffers[j]
                pack_into(buf, 0, 0x80, 0, k & 0xFFFF, (k * 160) & 0xFFFFFFFF, ssrcs[j], k, perf())
                try:
                    sends[j](buf)
                    sent[j] += 1
                except OSError:  # ENOBUFS, or ECONNREFUSED from an earlier ICMP
                    send_errors += 1
                j += 1
                if j == count:
                    j = 0
                    k += 1
                    if k == rounds:
                        break
                due = start + k * PERIOD + j * slot
        if k >= rounds:
            if now > drain_until:
                break
            timeout = 0.01
        else:
            # epoll's timeout is in whole milliseconds (rounded up): when the next send is due
            # sooner than that the loop spins (poll(0)); spinning is counted as idle time
            wait = due - now
            timeout = 0.0 if wait < 0.0012 else wait - 0.001
        events = poll(timeout)
        if not events:
            if not sent_now:
                idle += perf() - now
            continue
        for fd, _ in events:
            index = by_fd[fd]
            try:
                recvs[index](receive_buffer)
            except OSError:
                recv_errors += 1
                continue
            arrived = perf()
            counter, stamp = unpack_from(receive_buffer, 12)
            transit = arrived - stamp
            received[index] += 1
            if counter <= last_counter[index]:
                reordered += 1
            last_counter[index] = counter
            if counter >= warm_rounds:
                delays.append(transit)
                previous = last_transit[index]
                if previous:
                    jitter[index] += (abs(transit - previous) - jitter[index]) / 16
            last_transit[index] = transit
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage.ru_utime + usage.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
    for sock in socks:
        sock.close()
    poller.close()
    total_sent = sum(sent)
    total_received = sum(received)
    direction_loss = [
        (sent[i] - received[i ^ 1]) / sent[i] if sent[i] else 1.0 for i in range(count)
    ]
    delay_ms = np.frombuffer(delays, dtype=np.float64) * 1000 if delays else np.zeros(1)
    lag_ms = np.frombuffer(lags, dtype=np.float64) * 1000 if lags else np.zeros(1)
    jitter_ms = np.array(jitter) * 1000
    return {
        "streams": count // 2,
        "sent": total_sent,
        "received": total_received,
        "loss": (total_sent - total_received) / total_sent if total_sent else 1.0,
        "worst_direction_loss": max(direction_loss),
        "directions_with_loss": sum(1 for loss in direction_loss if loss > 0),
        "reordered": reordered,
        "send_errors": send_errors,
        "recv_errors": recv_errors,
        "delay_p50_ms": float(np.percentile(delay_ms, 50)),
        "delay_p99_ms": float(np.percentile(delay_ms, 99)),
        "delay_p999_ms": float(np.percentile(delay_ms, 99.9)),
        "delay_max_ms": float(delay_ms.max()),
        "jitter_mean_ms": float(jitter_ms.mean()),
        "jitter_p99_ms": float(np.percentile(jitter_ms, 99)),
        "lag_p99_ms": float(np.percentile(lag_ms, 99)),
        "lag_max_ms": float(lag_ms.max()),
        "seconds": rounds * PERIOD,
        "generator_cpu": 100.0 * cpu / (rounds * PERIOD + DRAIN),
        "generator_busy": 100.0 * (1 - idle / (rounds * PERIOD + DRAIN)),
    }


def main() -> int:
    socks = bind_phones(int(sys.argv[1]))
    sys.stdout.write(json.dumps({"ports": [sock.getsockname()[1] for sock in socks]}) + "\n")
    sys.stdout.flush()
    spec = json.loads(sys.stdin.readline())
    for sock, target in zip(socks, spec["targets"], strict=True):
        sock.connect((HOST, int(target)))  # only what comes back from there is read
    result = run(socks, float(spec["seconds"]), float(spec.get("warmup", 1.0)))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
