"""MWI subscriptions against a running `callkeeper serve`, with SIPp as the phone.

alice has two messages in the voicemail store before the server starts (the store restores
the counts). SIPp (scenarios/mwi_subscriber.xml) SUBSCRIBEs to `message-summary` with alice's
digest credentials, checks the 200 and the NOTIFY (active, `Voice-Message: 2/0`), then
unsubscribes and checks the NOTIFY that ends it. A SUBSCRIBE to another package gets 489.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from callkeeper.io.voicemail import VoicemailStore
from support.server import ServerProcess
from support.sipp import SCENARIOS, Sipp
from support.ua import UdpAgent
from test_relay_baresip import free_rtp_range

pytestmark = pytest.mark.peers

PASSWORD = "alice-pw-3"
WAITING = 2  # scenarios/mwi_subscriber.xml expects `Voice-Message: 2/0`


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    voicemail_dir = tmp_path / "voicemail"
    store = VoicemailStore(voicemail_dir)
    for n in range(WAITING):
        store.save("alice", "bob", f"earlier-{n}@test", np.zeros(800, dtype=np.int16))
    low, high = free_rtp_range()
    process = ServerProcess(
        tmp_path / "ck",
        extra_config=(
            f'[media]\nmode = "relay"\nrtp_ports = "{low}-{high}"\n'
            f'voicemail_dir = "{voicemail_dir}"\n'
            f'[[users]]\nname = "alice"\npassword = "{PASSWORD}"\nvoicemail = true\n'
        ),
        transports=("udp",),
    )
    with process:
        yield process


def test_sipp_subscribes_gets_the_counts_and_unsubscribes(
    tmp_path: Path, server: ServerProcess
) -> None:
    phone = Sipp(
        tmp_path / "phone",
        [
            "-sf",
            str(SCENARIOS / "mwi_subscriber.xml"),
            "-s",
            "alice",
            "-au",
            "alice",
            "-ap",
            PASSWORD,
            # SIPp's digest `uri` is remote_ip:remote_port by default; ours checks the Request-URI
            "-auth_uri",
            f"alice@127.0.0.1:{server.sip_port}",
            "-m",
            "1",
            "-recv_timeout",
            "10000",
            "-trace_msg",
            "-message_file",
            str(tmp_path / "phone-messages.log"),
        ],
        target=f"127.0.0.1:{server.sip_port}",
        name="phone",
    ).start()
    try:
        assert phone.wait(timeout=30) == 0, phone.errors()
    finally:
        phone.stop()
    stats = phone.stats()
    assert stats.successful == 1 and stats.failed == 0, stats.raw
    latency = stats.raw["ResponseTime1(C)"]  # hh:mm:ss:ms
    print(f"authenticated SUBSCRIBE sent → its NOTIFY received: {latency} (SIPp)")
    assert server.metrics()["callkeeper_mwi_subscriptions"] == 0  # unsubscribed
    assert server.metric("callkeeper_core_errors_total") == 0


def test_another_event_package_is_489_with_allow_events(server: ServerProcess) -> None:
    agent = UdpAgent(server.sip_port, user="alice")
    try:
        uri = f"sip:alice@127.0.0.1:{server.sip_port}"
        data, *_ = agent.request(
            "SUBSCRIBE",
            uri,
            to=f"<{uri}>",
            call_id="presence@test",
            from_tag="p1",
            extra="Event: presence\r\nExpires: 600\r\n",
        )
        agent.send(data)
        response = agent.final_response("presence@test", "SUBSCRIBE")
        assert response is not None and response.status == 489, response
        assert response.header("Allow-Events") == "message-summary"
    finally:
        agent.close()
