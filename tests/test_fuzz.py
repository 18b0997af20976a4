"""Mutation fuzzing: real messages, damaged at random, must only ever raise ParseError.

The seeds are the RFC 4475 torture messages plus a few everyday ones; each case applies one to
three mutations (bit flips, interesting bytes, insertions and deletions, truncation, a header
line duplicated or moved, two messages spliced, a field repeated into a long one) and runs the
result through `parse_message` and through a `StreamParser` fed in random chunks. Anything but a
Message or a ParseError — in particular any other exception — fails the test with the input.

`make test` runs a few thousand cases from a fixed seed; `bench/fuzz_long.py` runs this same
engine for as long as one likes.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Message
from callkeeper.sip.parser import PartialRequestError, StreamParser, parse_message

DATA = Path(__file__).parent / "data" / "rfc4475"

EVERYDAY = [
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 31\r\n\r\n"
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n",
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bKnashds8;received=2001:db8::1\r\n"
    b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"To: <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b"From: <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b'Contact: <sip:bob@192.0.2.4>;expires=3600;+sip.instance="<urn:uuid:1>"\r\n'
    b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"REGISTER sip:registrar.example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 192.0.2.7:5060;rport;branch=z9hG4bKnashds7\r\n"
    b"t: sip:alice@example.com\r\nf: sip:alice@example.com;tag=456248\r\n"
    b"i: 843817637684230@998sdasdh09\r\nCSeq: 1826 REGISTER\r\n"
    b"m: <sip:alice@192.0.2.7>;expires=7200, *\r\nExpires: 7200\r\nl: 0\r\n\r\n",
]
SEEDS = [path.read_bytes() for path in sorted(DATA.glob("*.dat"))] + EVERYDAY
INTERESTING = [
    b"\x00", b"\xff", b"\xc3", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b" ", b"\t", b":", b";",
    b",", b"<", b">", b'"', b"\\", b"%", b"@", b"=", b"?", b"[", b"]", b"/", b"0", b"9",
    b"-1", b"4294967296", b"SIP/2.0", b"sip:", b"\r\n ", b"Content-Length: 99999\r\n",
]  # fmt: skip

Mutator = Callable[[bytes, random.Random], bytes]


def flip_bits(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        position = rng.randrange(len(out))
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out)


def interesting_byte(data: bytes, rng: random.Random) -> bytes:
    position = rng.randrange(len(data))
    return data[:position] + rng.choice(INTERESTING) + data[position + 1 :]


def insert(data: bytes, rng: random.Random) -> bytes:
    position = rng.randrange(len(data) + 1)
    if rng.random() < 0.5:
        extra = rng.choice(INTERESTING)
    else:
        extra = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return data[:position] + extra + data[position:]


def delete(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    return data[:start] + data[start + rng.randint(1, 16) :]


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def _lines(data: bytes) -> tuple[list[bytes], bytes]:
    head, separator, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), separator + body


def duplicate_header(data: bytes, rng: random.Random) -> bytes:
    lines, rest = _lines(data)
    if len(lines) < 2:
        return data
    line = lines[rng.randrange(1, len(lines))]
    lines.insert(rng.randrange(1, len(lines) + 1), line)
    return b"\r\n".join(lines) + rest


def move_header(data: bytes, rng: random.Random) -> bytes:
    lines, rest = _lines(data)
    if len(lines) < 3:
        return data
    line = lines.pop(rng.randrange(1, len(lines)))
    lines.insert(rng.randrange(0, len(lines) + 1), line)  # possibly above the start line
    return b"\r\n".join(lines) + rest


def splice(data: bytes, rng: random.Random) -> bytes:
    other = rng.choice(SEEDS)
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other)) :]


def repeat_chunk(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    chunk = data[start : start + rng.randint(1, 8)]
    return data[:start] + chunk * rng.randint(2, 2000) + data[start:]


MUTATORS: list[Mutator] = [
    flip_bits, interesting_byte, insert, delete, truncate, duplicate_header, move_header,
    splice, repeat_chunk,
]  # fmt: skip


def mutate(rng: random.Random) -> tuple[bytes, list[str]]:
    """A damaged message and the names of the mutations applied to it."""
    data = rng.choice(SEEDS)
    applied = []
    for _ in range(rng.randint(1, 3)):
        if not data:
            break
        mutator = rng.choice(MUTATORS)
        data = mutator(data, rng)
        applied.append(mutator.__name__)
    return data, applied


def outcome(data: bytes, rng: random.Random) -> str:
    """What the parsers make of `data`; raises AssertionError on anything unexpected."""
    try:
        message = parse_message(data)
    except PartialRequestError as error:
        assert 400 <= error.status <= 505, error.status
        result = f"answered {error.status}"
    except ParseError:
        result = "dropped"
    else:
        assert isinstance(message, Message)
        message.to_bytes()  # whatever parsed can be serialized again
        result = "parsed"
    parser = StreamParser()
    position = 0
    while position < len(data):
        size = rng.choice((1, 3, 17, 200, 4096))
        parser.feed(data[position : position + size])
        position += size
        while (item := parser.next_item()) is not None:
            assert isinstance(item, Message | ParseError) or type(item).__name__.startswith(
                "KeepAlive"
            )
    return result


def run(iterations: int, seed: int) -> Counter[str]:
    """Fuzz `iterations` cases; returns the tally of outcomes. Raises on the first failure,
    with the seed, the case number and the input in the message."""
    rng = random.Random(seed)
    tally: Counter[str] = Counter()
    for case in range(iterations):
        data, applied = mutate(rng)
        try:
            tally[outcome(data, rng)] += 1
        except Exception as error:
            raise AssertionError(
                f"seed {seed}, case {case}, mutations {applied}: {type(error).__name__}: {error}"
                f"\ninput: {data!r}"
            ) from error
    return tally


def test_mutated_messages_only_raise_parse_errors() -> None:
    tally = run(5000, seed=4475)
    assert sum(tally.values()) == 5000
    # The fuzzer reaches every outcome, so it is not just feeding garbage.
    assert tally["parsed"] > 100 and tally["dropped"] > 100 and tally["answered 400"] > 100


def test_every_mutator_changes_messages() -> None:
    rng = random.Random(1)
    seed = EVERYDAY[0]
    for mutator in MUTATORS:
        assert any(mutator(seed, rng) != seed for _ in range(20)), mutator.__name__
    assert duplicate_header(b"x", rng) == b"x" and move_header(b"a\r\nb", rng) == b"a\r\nb"
