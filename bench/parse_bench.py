"""Parse + serialize of typical INVITEs: callkeeper's parser vs sippy 2.5.0's, side by side.

The messages: 5,000 INVITEs with SDP (~850 bytes, 12 headers), each a new call — its own
Call-ID, From tag, Via branch and CSeq — between callers and callees drawn from 200 users, each
on its own phone (Contact, Via host). Both parsers get the same messages in the same order.

What each side does per message, the work a proxy or B2BUA does:
- callkeeper: `parse_message(bytes)` (which checks Via, From, To, Call-ID, CSeq, Contact,
  Max-Forwards, Content-Length and Content-Type against the grammar), then reads the views a
  proxy uses (every Via, From, To, CSeq, Call-ID, Contact: served from the parse), then
  `to_bytes()`.
- sippy: `SipRequest(buf=str)` on the decoded datagram (sippy parses `str`, and its UDP server
  decodes first, so the decode counts), then `getHFBodys()` on Via, From, To, Call-ID, CSeq,
  Contact and Max-Forwards — sippy parses header bodies lazily, on first access, so without
  these calls it would skip the work ours does — then `localStr()` encoded back to bytes,
  which is what sippy sends.

The two take turns in batches (ABAB...; this machine is shared and noisy), each timed in CPU
time of this process; the ratio printed is the median of the rounds' ratios (each round's two
batches ran back to back). `--no-memo` turns off callkeeper's memo of parsed addresses, sent-by
values and Request-URIs (see callkeeper.sip.address.MEMO_SIZE), to show raw parsing speed.

    python bench/parse_bench.py [--rounds 31] [--batch 1000] [--no-memo] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from callkeeper.sip import address
from callkeeper.sip.message import Message
from callkeeper.sip.parser import parse_message

SDP = (
    "v=0\r\n"
    "o={user} 2890844526 2890844526 IN IP4 192.0.2.101\r\n"
    "s=-\r\n"
    "c=IN IP4 192.0.2.101\r\n"
    "t=0 0\r\n"
    "m=audio 49172 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=sendrecv\r\n"
)
INVITE_TEMPLATE = (
    "INVITE sip:{callee}@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.{host}:5060;branch=z9hG4bK{branch};rport\r\n"
    "Max-Forwards: 70\r\n"
    "To: {Callee} <sip:{callee}@biloxi.example.com>\r\n"
    'From: "{Caller}" <sip:{caller}@atlanta.example.com>;tag={tag}\r\n'
    "Call-ID: {call_id}@192.0.2.{host}\r\n"
    "CSeq: {cseq} INVITE\r\n"
    "Contact: <sip:{caller}@192.0.2.{host}:5060;transport=udp>"
    ';+sip.instance="<urn:uuid:00000000-0000-1000-8000-0000000000{host:02x}>"\r\n'
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE\r\n"
    "Supported: replaces, timer\r\n"
    "User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n"
    "\r\n"
)
USERS = 200  # callers and callees drawn from this many users


def invite(number: int) -> bytes:
    """The number-th INVITE of the stream: a new call (Call-ID, tag, branch, CSeq) from one of
    USERS callers to one of USERS callees, each on its own phone (Contact, Via host)."""
    caller, callee = f"user{number % USERS}", f"user{(number * 7 + 3) % USERS}"
    sdp = SDP.format(user=caller)
    head = INVITE_TEMPLATE.format(
        caller=caller, Caller=caller.title(), callee=callee, Callee=callee.title(),
        host=number % USERS + 1, branch=f"{number:08x}a7", tag=f"{number * 7919:x}",
        call_id=f"{number:012x}e667", cseq=number % 50000 + 1, length=len(sdp),
    )  # fmt: skip
    return (head + sdp).encode()


INVITES = [invite(number) for number in range(5000)]
PROXY_HEADERS = ("via", "from", "to", "call-id", "cseq", "contact", "max-forwards")


def callkeeper_once(data: bytes) -> bytes:
    message: Message = parse_message(data)
    message.vias  # noqa: B018 - the views a proxy reads
    message.from_addr  # noqa: B018
    message.to_addr  # noqa: B018
    message.cseq  # noqa: B018
    message.call_id  # noqa: B018
    message.contacts  # noqa: B018
    return message.to_bytes()


def sippy_once_factory() -> Callable[[bytes], bytes]:
    from sippy.SipRequest import SipRequest

    def once(data: bytes) -> bytes:
        request = SipRequest(buf=data.decode("utf-8"))
        for name in PROXY_HEADERS:
            request.getHFBodys(name)
        return request.localStr().encode("utf-8")

    return once


def rate(once: Callable[[bytes], bytes], batch: int, offset: int = 0) -> float:
    """Messages per second of CPU time (process time: other load on the machine does not count)."""
    messages = [INVITES[(offset + i) % len(INVITES)] for i in range(batch)]
    start = time.process_time()
    for data in messages:
        once(data)
    return batch / (time.process_time() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="cProfile callkeeper's side")
    parser.add_argument(
        "--no-memo", action="store_true", help="turn off the memo of parsed values (raw parsing)"
    )
    args = parser.parse_args()
    if args.no_memo:
        address.MEMO_SIZE = 0

    for data in INVITES[:50]:
        assert callkeeper_once(data) == data, "callkeeper does not round-trip the INVITE"
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(rate, callkeeper_once, args.batch * 5)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        return 0

    try:
        sippy_once = sippy_once_factory()
    except ImportError:
        print("sippy is not installed: pip install sippy==2.5.0 (make bench-deps)")
        return 1
    sippy_once(INVITES[0])  # warm up (and fail early if sippy cannot parse it)
    ours: list[float] = []
    theirs: list[float] = []
    rate(callkeeper_once, args.batch // 4)
    for round_number in range(args.rounds):
        offset = round_number * args.batch
        ours.append(rate(callkeeper_once, args.batch, offset))
        theirs.append(rate(sippy_once, args.batch, offset))
    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    # Each round's pair ran back to back, so its ratio is the least disturbed by other load.
    ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
    ratio = statistics.median(ratios)
    size = sum(map(len, INVITES)) // len(INVITES)
    print(
        f"parse+serialize of ~{size}-byte INVITEs with SDP ({len(INVITES)} distinct calls among"
        f" {USERS} users), {args.rounds} rounds of {args.batch}, ABAB, CPU time:"
    )
    print(f"  callkeeper  {ours_median:9,.0f} msg/s  (min {min(ours):,.0f}, max {max(ours):,.0f})")
    print(
        f"  sippy 2.5.0 {theirs_median:9,.0f} msg/s  (min {min(theirs):,.0f}, max {max(theirs):,.0f})"
    )
    print(
        f"  ratio       {ratio:9.2f}x  (median of the rounds' ratios, {ratios[0]:.2f}..{ratios[-1]:.2f};"
        " target >= 3x)"
    )
    if args.no_memo:
        print("  (memo of parsed values off: every value parsed from scratch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
