"""The in-memory harness: two TransactionLayers completing calls over a bad network."""

from __future__ import annotations

import pytest
from harness import PERFECT, FakeClock, LinkConditions, Simulation, SimulationStuck, SipNode
from harness.messages import build_request
from harness.user_agents import Uac, Uas

from callkeeper.sip.transaction_events import RequestReceived, TransactionTerminated

ALICE = ("10.0.0.1", 5060)
BOB = ("10.0.0.2", 5060)
LOSSY = LinkConditions(loss=0.3, duplicate=0.3, reorder=0.2, delay=0.02, jitter=0.03)


def _pair(
    seed: int, conditions: LinkConditions = LOSSY, final: int = 200, transport: str = "udp"
) -> tuple[Simulation, SipNode, SipNode, Uac, Uas]:
    sim = Simulation(seed=seed, conditions=conditions)
    uac, uas = Uac(), Uas(final=final)
    alice = SipNode(sim, ALICE, name="alice", tu=uac, transport=transport)
    bob = SipNode(sim, BOB, name="bob", tu=uas, transport=transport)
    sim.add(uas)
    return sim, alice, bob, uac, uas


def _invite(alice: SipNode, call: int = 1, transport: str = "UDP") -> object:
    return build_request(
        "INVITE",
        branch=alice.layer.new_branch(),
        via_host=ALICE[0],
        transport=transport,
        call_id=f"call-{call}@alice",
        from_tag=f"a{call}",
    )


@pytest.mark.parametrize("seed", range(12))
def test_invite_200_ack_completes_over_30_percent_loss_and_duplication(seed: int) -> None:
    sim, alice, bob, uac, uas = _pair(seed)
    invite = build_request(
        "INVITE", branch=alice.layer.new_branch(), via_host=ALICE[0], call_id=f"c{seed}@a"
    )
    tid = uac.send(alice, invite, BOB)

    sim.run()

    assert uac.finals[tid].status == 200
    assert len(uas.requests) == 1, "the INVITE reached the TU exactly once despite duplicates"
    assert uas.acks, "the 2xx was acknowledged end to end"
    assert uas.retransmitting == 0
    assert len(alice.layer) == 0 and len(bob.layer) == 0, "no leaked transaction state"
    assert sim.network.count("lost") > 0 or seed != 0  # the network really was lossy
    assert alice.received(TransactionTerminated) == [TransactionTerminated(tid)]


@pytest.mark.parametrize("seed", range(12))
def test_non_invite_completes_over_30_percent_loss_and_duplication(seed: int) -> None:
    sim, alice, bob, uac, uas = _pair(seed)
    options = build_request("OPTIONS", branch=alice.layer.new_branch(), via_host=ALICE[0])
    tid = uac.send(alice, options, BOB)

    sim.run()

    assert uac.finals[tid].status == 200
    assert [r.method for r in uas.requests] == ["OPTIONS"]
    assert len(alice.layer) == 0 and len(bob.layer) == 0


@pytest.mark.parametrize("seed", range(6))
def test_many_concurrent_calls_and_rejections_finish_cleanly(seed: int) -> None:
    sim, alice, bob, uac, uas = _pair(seed, final=486)
    ids = []
    for call in range(20):
        method = "INVITE" if call % 2 else "MESSAGE"
        request = build_request(
            method,
            branch=alice.layer.new_branch(),
            via_host=ALICE[0],
            call_id=f"call-{call}@alice",
            from_tag=f"a{call}",
        )
        ids.append(uac.send(alice, request, BOB))

    sim.run()

    statuses = sorted(uac.finals[tid].status for tid in ids)
    assert statuses == [200] * 10 + [486] * 10
    assert len(uas.requests) == 20
    # Each 486 was ACKed by alice's transaction layer and the ACK absorbed by bob's.
    assert not [e for e in bob.received(RequestReceived) if e.request.method == "ACK"]
    assert len(alice.layer) == 0 and len(bob.layer) == 0


def test_reliable_transport_never_retransmits() -> None:
    sim, alice, bob, uac, uas = _pair(3, conditions=PERFECT, transport="tcp")
    invite = build_request("INVITE", branch=alice.layer.new_branch(), transport="TCP")
    tid = uac.send(alice, invite, BOB)
    sim.run()
    assert uac.finals[tid].status == 200
    assert not [s for s in alice.sent + bob.sent if s.retransmission]
    assert len(alice.layer) == 0 and len(bob.layer) == 0


def test_same_seed_same_trace_different_seed_different_trace() -> None:
    def trace(seed: int) -> list[tuple[float, str]]:
        sim, alice, _, uac, _ = _pair(seed)
        uac.send(alice, build_request("INVITE", branch=alice.layer.new_branch()), BOB)
        sim.run()
        return [(entry.sent, entry.fate) for entry in sim.network.trace]

    assert trace(5) == trace(5)
    assert trace(5) != trace(6)


def test_timeout_when_the_peer_is_gone() -> None:
    sim, alice, bob, uac, _ = _pair(1, conditions=PERFECT)
    sim.network.detach(BOB)
    tid = uac.send(alice, build_request("OPTIONS", branch=alice.layer.new_branch()), BOB)
    end = sim.run()
    assert uac.timeouts == [tid]
    assert end == pytest.approx(32.0)  # Timer F = 64*T1
    assert sim.network.count("unroutable") == 11  # the request and its 10 retransmissions
    assert len(alice.layer) == 0


def test_run_until_stops_the_clock_at_the_limit() -> None:
    sim, alice, _, uac, _ = _pair(2, conditions=PERFECT)
    uac.send(alice, build_request("OPTIONS", branch=alice.layer.new_branch()), ("10.9.9.9", 1))
    assert sim.run(until=1.0) == 1.0
    assert sim.run(stop=lambda: sim.now >= 3.0) >= 3.0
    assert sim.run_for(0.25) == sim.now


def test_stuck_participant_is_reported() -> None:
    class Stuck:
        def get_timer(self) -> float:
            return 0.0

        def handle_timer(self, now: float) -> None:
            pass

    sim = Simulation()
    sim.add(Stuck())
    with pytest.raises(SimulationStuck):
        sim.run(max_steps=50)


def test_fake_clock() -> None:
    clock = FakeClock(1.0)
    assert clock.advance(0.5) == 1.5
    assert clock.advance_to(1.0) == 1.5  # never backwards
    assert clock() == 1.5
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_network_attach_twice_and_unparsable_datagrams() -> None:
    sim = Simulation()
    node = SipNode(sim, ALICE)
    with pytest.raises(ValueError):
        sim.network.attach(ALICE, node)
    sim.network.send(b"garbage\r\n\r\n", node.flow_to(ALICE), 0.0)
    sim.run()
    assert node.unparsable == 1
