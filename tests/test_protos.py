"""The PROTOS c07-sip suite (4,527 INVITEs, 4,526 of them malformed) through the parser.

The cases are rendered once per session with the suite's own render.py into a temporary
directory (they are GPL test material and 24 MB: they stay out of the repository), checked
against the suite's manifest, and parsed one by one. Each must parse or raise ParseError —
nothing else may escape — and the tally of outcomes is printed (run with -s to see it):
parsed, answered (PartialRequestError, by status) or dropped (plain ParseError).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter

import pytest

from callkeeper.sip.errors import ParseError
from callkeeper.sip.message import Request
from callkeeper.sip.parser import PartialRequestError, StreamParser, parse_message
from conftest import SHARED

PROTOS = SHARED / "testdata" / "protos-c07-sip"
CASES = 4527

# Which header or part each range of cases mutates (the suite's README, derived from diffs).
RANGES = {
    "method": range(1, 194),
    "request-uri": range(194, 255),
    "version": range(255, 330),
    "via": range(330, 630),
    "to": range(1243, 1468),
    "sdp": range(2428, 4527),
}


@pytest.fixture(scope="session")
def protos_cases(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    if not (PROTOS / "render.py").exists():
        pytest.fail(f"PROTOS test data not found at {PROTOS} (shared/ must sit beside the repo)")
    outdir = tmp_path_factory.mktemp("protos-c07-sip")
    subprocess.run(
        [sys.executable, str(PROTOS / "render.py"), str(outdir)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    cases = [(outdir / f"{index:04d}.sip").read_bytes() for index in range(CASES)]
    # The rendering must be the suite's reference bytes (README: byte-identical to the jar).
    for row in (PROTOS / "manifest.tsv").read_text().splitlines()[1:]:
        index, size, sha256, *_ = row.split("\t")
        case = cases[int(index)]
        assert len(case) == int(size) and hashlib.sha256(case).hexdigest() == sha256, index
    return cases


def outcome(data: bytes) -> str:
    """'parsed', 'answered NNN' or 'dropped'; any other exception fails the test."""
    try:
        parse_message(data)
    except PartialRequestError as error:
        return f"answered {error.status}"
    except ParseError:
        return "dropped"
    return "parsed"


def test_protos_c07_sip(protos_cases: list[bytes]) -> None:
    outcomes = [outcome(case) for case in protos_cases]
    tally = Counter(outcomes)
    print(f"\nPROTOS c07-sip through parse_message ({CASES} cases):")
    for label, count in sorted(tally.items()):
        print(f"  {label:14} {count:5}")
    for name, cases in RANGES.items():
        print(f"  {name:12} {dict(Counter(outcomes[i] for i in cases))}")

    assert sum(tally.values()) == CASES
    assert outcomes[0] == "parsed"  # the suite's valid case
    valid = parse_message(protos_cases[0])
    assert (
        isinstance(valid, Request) and valid.method == "INVITE" and valid.call_id == "0@127.0.0.1"
    )
    assert set(tally) <= {"parsed", "dropped", "answered 400", "answered 416", "answered 505"}
    # Every range that mangles the start line or a core header has cases the parser refuses;
    # a mangled To is always refused, and another SIP version is answered with 505.
    for name in ("method", "request-uri", "version", "via", "to"):
        assert any(outcomes[i] != "parsed" for i in RANGES[name]), name
    assert all(outcomes[i] != "parsed" for i in RANGES["to"])
    assert any(outcomes[i] == "answered 505" for i in RANGES["version"])
    # ...while a mangled SDP body is not the SIP parser's business: nearly all of those parse.
    sdp = Counter(outcomes[i] for i in RANGES["sdp"])
    assert sdp["parsed"] > 0.95 * len(RANGES["sdp"])


def test_protos_cases_over_a_stream(protos_cases: list[bytes]) -> None:
    """All cases back to back on one stream: items come out until the framing breaks, never
    an exception; and each case alone on a fresh stream gives an item or waits for more."""
    for case in protos_cases:
        parser = StreamParser()
        parser.feed(case)
        items = []
        while (item := parser.next_item()) is not None:
            items.append(item)
        assert items or parser.pending or parser.broken
