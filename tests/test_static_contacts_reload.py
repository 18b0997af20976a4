"""Static contacts and SIGHUP: a contact added by a reload is watched from then on, a removed
one is let go, and the ones that stayed keep their liveness state (a phone that is DOWN must not
look alive because the configuration was read again). Driven through the pure call manager."""

from __future__ import annotations

import signal
from pathlib import Path

from callkeeper.config import Config
from callkeeper.directory.users import StaticContact
from callkeeper.liveness.states import State
from callkeeper.sip.uri import parse_uri
from support.core_driver import CoreDriver
from support.server import ServerProcess, wait_until
from support.sipp import SCENARIOS, Sipp

BOB = "sip:bob@127.0.0.1:7002"
CAROL = "sip:carol@127.0.0.1:7004"
INTERVAL = 10.0


def config(*statics: tuple[str, str]) -> Config:
    return Config(
        sip={"listen": ["udp:127.0.0.1:5060"]},
        keepalive={"options_interval": INTERVAL, "misses": 2},
        users=[{"name": name, "static_contacts": [uri]} for name, uri in statics],
    )


def endpoint(name: str, uri: str) -> str:
    return StaticContact(name, parse_uri(uri)).endpoint_id


def state(driver: CoreDriver, endpoint_id: str) -> State | None:
    return driver.core.watch.monitor.state(endpoint_id)


def test_a_reload_watches_added_contacts_lets_removed_ones_go_and_keeps_the_rest() -> None:
    driver = CoreDriver(config(("bob", BOB)))
    driver.core.start(driver.now)
    bob = endpoint("bob", BOB)
    driver.advance(5 * INTERVAL)  # bob never answers his probes
    assert state(driver, bob) is State.DOWN

    driver.core.reload(config(("bob", BOB), ("carol", CAROL)))
    driver.core.watch_static_contacts(driver.now)
    carol = endpoint("carol", CAROL)
    assert state(driver, bob) is State.DOWN  # not revived by being read again
    assert state(driver, carol) is not None
    driver.take()
    driver.advance(INTERVAL)
    assert driver.requests(("127.0.0.1", 7004), "OPTIONS")  # carol is probed

    driver.core.reload(config(("carol", CAROL)))
    driver.core.watch_static_contacts(driver.now)
    assert state(driver, bob) is None
    assert state(driver, carol) is not None


def test_a_static_contact_added_by_sighup_is_probed_by_the_running_server(tmp_path: Path) -> None:
    with Sipp(tmp_path / "desk", ["-sf", str(SCENARIOS / "uas_options.xml")], name="desk") as desk:
        server = ServerProcess(
            tmp_path / "ck", extra_config="[keepalive]\noptions_interval = 0.5\n"
        )
        with server:
            assert server.get_json("/api/v1/endpoints") == []
            server.extra_config += (
                f'[[users]]\nname = "desk"\nstatic_contacts = ["sip:desk@127.0.0.1:{desk.port}"]\n'
            )
            server.write_config()
            assert server.process is not None
            server.process.send_signal(signal.SIGHUP)

            def answered() -> bool:
                listed = server.get_json("/api/v1/endpoints")
                return bool(listed) and listed[0]["last_seen"] is not None

            wait_until(answered, 5, what="the added desk phone to answer a probe")
            (desk_phone,) = server.get_json("/api/v1/endpoints")
            assert desk_phone["user"] == "desk" and desk_phone["state"] == "alive"
