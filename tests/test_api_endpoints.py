"""`GET /api/v1/endpoints` filters and pages: `?user=`, `?state=`, `?limit=&offset=`."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from support.server import ServerProcess

USERS = "".join(
    f'[[users]]\nname = "{name}"\nstatic_contacts = [{contacts}]\n'
    for name, contacts in (
        ("alice", '"sip:alice@127.0.0.1:9", "sip:alice2@127.0.0.1:9"'),
        ("bob", '"sip:bob@127.0.0.1:9"'),
        ("carol", '"sip:carol@127.0.0.1:9", "sip:carol2@127.0.0.1:9"'),
    )
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("endpoints"), extra_config=USERS) as process:
        yield process


def get(server: ServerProcess, path: str) -> tuple[int, object, str | None]:
    connection = http.client.HTTPConnection("127.0.0.1", server.api_port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read()), response.getheader("X-Total-Count")
    finally:
        connection.close()


def test_without_parameters_everything_is_listed(server: ServerProcess) -> None:
    status, listing, total = get(server, "/api/v1/endpoints")
    assert status == 200 and isinstance(listing, list) and total == "5"
    assert sorted(e["user"] for e in listing) == ["alice", "alice", "bob", "carol", "carol"]


def test_one_users_endpoints(server: ServerProcess) -> None:
    status, listing, total = get(server, "/api/v1/endpoints?user=carol")
    assert status == 200 and isinstance(listing, list) and total == "2"
    assert {e["contact"] for e in listing} == {"sip:carol@127.0.0.1:9", "sip:carol2@127.0.0.1:9"}
    assert get(server, "/api/v1/endpoints?user=nobody")[1:] == ([], "0")


def test_the_states_partition_the_endpoints(server: ServerProcess) -> None:
    # every endpoint is in exactly one state's list, and a list holds only its state (the
    # silent contacts need options_interval x misses = 90 s to go down: nothing moves meanwhile)
    listed: list[str] = []
    for state in ("alive", "suspect", "down"):
        status, listing, _ = get(server, f"/api/v1/endpoints?state={state}")
        assert status == 200 and isinstance(listing, list)
        assert all(e["state"] == state for e in listing), listing
        listed += [e["id"] for e in listing]
    assert len(listed) == len(set(listed)) == 5
    status, error, _ = get(server, "/api/v1/endpoints?state=asleep")
    assert status == 400 and isinstance(error, dict) and "state" in error["error"]


def test_pages_cover_every_endpoint_once_in_id_order(server: ServerProcess) -> None:
    _, everything, _ = get(server, "/api/v1/endpoints")
    assert isinstance(everything, list)
    pages = []
    for offset in (0, 2, 4, 6):
        status, page, total = get(server, f"/api/v1/endpoints?limit=2&offset={offset}")
        assert status == 200 and isinstance(page, list) and total == "5"
        pages.append([e["id"] for e in page])
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    ids = [i for page in pages for i in page]
    assert ids == sorted(e["id"] for e in everything)
    for bad in ("limit=-1", "limit=two", "offset=1.5"):
        status, error, _ = get(server, f"/api/v1/endpoints?{bad}")
        assert status == 400 and isinstance(error, dict), bad
