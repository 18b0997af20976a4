"""The header multimap: case- and compact-form-insensitive look-ups, order kept, lists split."""

from __future__ import annotations

import pytest

from callkeeper.sip.headers import Headers, canonical, split_list


def test_canonical_names() -> None:
    assert canonical("Via") == canonical("v") == canonical("VIA") == "via"
    assert canonical("i") == "call-id" and canonical("l") == "content-length"
    assert canonical("X-Custom") == "x-custom"
    assert canonical("X-Custom") == "x-custom"  # cached the second time


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("", []),
        ("  ", []),
        ("a", ["a"]),
        ("a, b,c ,", ["a", "b", "c"]),
        ('"x, y" <sip:a@b>, <sip:c@d;x=1,2>', ['"x, y" <sip:a@b>', "<sip:c@d;x=1,2>"]),
        ('"a \\" , b", c', ['"a \\" , b"', "c"]),
        (">, a", [">", "a"]),
        (",,a,,", ["a"]),
    ],
)
def test_split_list(value: str, parts: list[str]) -> None:
    assert split_list(value) == parts


def test_lookups() -> None:
    headers = Headers([("Via", "v1, v2"), ("v", "v3"), ("Subject", "hi"), ("Contact", "<a>")])
    assert headers.get("VIA") == "v1, v2" and headers.get("x", "default") == "default"
    assert headers.get_lines("via") == ["v1, v2", "v3"]
    assert headers.get_list("Via") == ["v1", "v2", "v3"]
    assert headers.count("via") == 2 and headers.count("nothing") == 0
    assert "s" in headers and "Route" not in headers and 42 not in headers
    assert len(headers) == 4
    assert list(headers)[1] == ("v", "v3")
    assert repr(headers).startswith("Headers([('Via'")


def test_equality_ignores_name_spelling() -> None:
    assert Headers([("Via", "x")]) == Headers([("v", "x")])
    assert Headers([("Via", "x")]) != Headers([("Via", "y")])
    assert Headers() != "headers"


def test_changes_and_versions() -> None:
    headers = Headers([("Via", "a"), ("Route", "r1"), ("Via", "b, c")])
    seen = {headers.revision}

    def changed() -> None:
        assert headers.revision not in seen
        seen.add(headers.revision)

    headers.add("Route", "r2")
    changed()
    assert headers.get_lines("route") == ["r1", "r2"]
    headers.prepend("Via", "top")
    changed()
    assert headers.get_lines("via") == ["top", "a", "b, c"]
    headers.prepend("Record-Route", "rr")
    changed()
    assert next(iter(headers)) == ("Record-Route", "rr")
    headers.set("via", "only")
    changed()
    assert headers.get_lines("via") == ["only"] and list(headers)[1] == ("Via", "only")
    headers.set("Subject", "new")
    changed()
    assert list(headers)[-1] == ("Subject", "new")
    assert headers.remove("route") == 2
    changed()
    assert headers.remove("route") == 0
    copy = headers.copy()
    assert copy == headers and copy.revision != headers.revision
    copy.add("X", "1")
    assert "x" not in headers


def test_pop_first() -> None:
    headers = Headers([("Subject", "s"), ("Via", "a, b"), ("Via", "c")])
    assert headers.pop_first("via") == "a"
    assert headers.get_lines("via") == ["b", "c"]
    assert headers.pop_first("via") == "b"
    assert headers.pop_first("via") == "c"
    assert headers.pop_first("via") is None
    headers.add("Via", "  ")
    assert headers.pop_first("via") is None and "via" not in headers


def test_encode_into() -> None:
    out: list[str] = []
    Headers([("Via", "a"), ("X", "")]).encode_into(out)
    assert out == ["Via: a\r\n", "X: \r\n"]
