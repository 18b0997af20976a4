"""The in-memory harness: two TransactionLayers completing calls over a bad network."""

from __future__ import annotations

import pytest

from callkeeper.sip.transaction_events import (
    RequestReceived,
    TransactionTerminated,
    TransactionTimedOut,
)
from callkeeper.sip.transaction_messages import build_cancel
from callkeeper.sip.transport import Flow
from harness import PERFECT, FakeClock, LinkConditions, Simulation, SimulationStuck, SipNode
from harness.messages import build_request
from harness.user_agents import Uac, Uas

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


def test_the_lossy_runs_really_lost_duplicated_and_retransmitted() -> None:
    lost = duplicated = retransmitted = 0
    for seed in range(12):
        sim, alice, bob, uac, _ = _pair(seed)
        uac.send(alice, build_request("INVITE", branch=alice.layer.new_branch()), BOB)
        sim.run()
        lost += sim.network.count("lost")
        duplicated += sim.network.count("duplicated")
        retransmitted += alice.layer.stats.retransmissions + bob.layer.stats.retransmissions
    assert lost >= 10 and duplicated >= 10 and retransmitted >= 5


def test_reliable_transport_never_retransmits() -> None:
    sim, alice, bob, uac, _ = _pair(3, conditions=PERFECT, transport="tcp")
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
    sim, alice, _, uac, _ = _pair(1, conditions=PERFECT)
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


class _Recorder:
    def __init__(self) -> None:
        self.received: list[tuple[float, bytes, Flow]] = []

    def datagram_received(self, data: bytes, flow: Flow, now: float) -> None:
        self.received.append((now, data, flow))


def _numbered(sim: Simulation, transport: str, count: int = 200) -> _Recorder:
    recorder = _Recorder()
    sim.network.attach(BOB, recorder)
    flow = Flow(transport, remote=BOB, local=ALICE)
    for n in range(count):
        sim.network.send(b"%d" % n, flow, sim.now)
        sim.clock.advance(0.001)
    sim.run()
    return recorder


def test_datagrams_are_reordered_and_duplicated_but_not_lost_without_loss() -> None:
    sim = Simulation(seed=11, conditions=LinkConditions(duplicate=0.3, reorder=0.3))
    recorder = _numbered(sim, "udp")
    numbers = [int(data) for _, data, _ in recorder.received]
    assert set(numbers) == set(range(200))
    assert len(numbers) == 200 + sim.network.count("duplicated") > 200
    assert numbers != sorted(numbers)
    _, _, flow = recorder.received[0]
    assert flow == Flow("udp", remote=ALICE, local=BOB)  # the receiver's view


def test_streams_keep_order_and_never_lose() -> None:
    sim = Simulation(seed=11, conditions=LinkConditions(loss=0.9, duplicate=0.9, reorder=0.9))
    recorder = _numbered(sim, "tcp")
    assert [int(data) for _, data, _ in recorder.received] == list(range(200))


def test_links_are_per_direction() -> None:
    sim = Simulation(seed=4)
    sim.network.set_link(ALICE, BOB, LinkConditions(loss=1.0))
    assert sim.network.conditions(BOB, ALICE) == PERFECT
    recorder = _numbered(sim, "udp", count=20)
    assert recorder.received == [] and sim.network.count("lost") == 20
    sim.network.set_path(ALICE, BOB, LinkConditions(delay=0.25))
    assert sim.network.conditions(BOB, ALICE).delay == 0.25
    start = sim.now
    sim.network.send(b"late", Flow("udp", remote=BOB, local=ALICE), start)
    sim.run()
    assert recorder.received[-1][0] == pytest.approx(start + 0.25)


def test_unplugged_receiver_loses_datagrams_in_flight() -> None:
    sim = Simulation()
    recorder = _Recorder()
    sim.network.attach(BOB, recorder)
    sim.network.send(b"x", Flow("udp", remote=BOB, local=ALICE), 0.0)
    assert sim.network.in_flight == 1
    sim.network.detach(BOB)
    sim.run()
    assert recorder.received == [] and [e.fate for e in sim.network.trace] == ["lost"]


def test_docstring_example_runs() -> None:
    sim = Simulation(seed=7, conditions=LinkConditions(loss=0.3, duplicate=0.3))
    uac, uas = Uac(), sim.add(Uas())
    alice = SipNode(sim, ("10.0.0.1", 5060), tu=uac)
    bob = SipNode(sim, ("10.0.0.2", 5060), tu=uas)
    uac.send(alice, build_request("INVITE", branch=alice.layer.new_branch()), bob.address)
    sim.run()
    assert len(alice.layer) == len(bob.layer) == 0
    assert [r.status for r in uac.finals.values()] == [200]


def _invite_then_cut_alice_to_bob(final: int) -> tuple[Simulation, SipNode, SipNode, Uac, Uas]:
    sim, alice, bob, uac, uas = _pair(0, conditions=PERFECT, final=final)
    uac.send(alice, build_request("INVITE", branch=alice.layer.new_branch()), BOB)
    sim.run(stop=lambda: bool(uas.requests))  # the INVITE got through; now the path breaks
    sim.network.set_link(ALICE, BOB, LinkConditions(loss=1.0))
    sim.run()
    return sim, alice, bob, uac, uas


def test_uas_gives_up_retransmitting_its_2xx_after_64_t1_without_ack() -> None:
    _, alice, bob, uac, uas = _invite_then_cut_alice_to_bob(200)
    resent = [s.data for s in bob.sent if s.retransmission]
    assert len(resent) == 10 and uas.acks == [] and uas.retransmitting == 0
    assert uac.acks_sent == 11  # alice ACKed the 2xx and each retransmission (all lost)
    assert len(alice.layer) == 0 and len(bob.layer) == 0


def test_server_reports_timer_h_when_the_ack_never_arrives() -> None:
    _, alice, bob, _, uas = _invite_then_cut_alice_to_bob(486)
    assert len(uas.timeouts) == 1
    assert bob.received(TransactionTimedOut)[0].timer == "H"
    assert len(alice.layer) == 0 and len(bob.layer) == 0


def test_cancel_crosses_the_network_as_its_own_transaction() -> None:
    sim, alice, bob, uac, uas = _pair(0, conditions=PERFECT)
    invite = build_request("INVITE", branch=alice.layer.new_branch())
    invite_id = uac.send(alice, invite, BOB)
    cancel_id = uac.send(alice, build_cancel(invite), BOB)
    sim.run()
    assert len(uas.cancels) == 1 and uas.cancels[0].cancelled_transaction_id is not None
    assert uac.finals[cancel_id].status == 200
    assert uac.finals[invite_id].status == 200  # the UAS had already answered
    assert len(alice.layer) == 0 and len(bob.layer) == 0
