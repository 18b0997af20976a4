"""In-memory test harness: a fake clock, a lossy network and sans-IO SIP agents on them.

    sim = Simulation(seed=7, conditions=LinkConditions(loss=0.3, duplicate=0.3))
    uac, uas = Uac(), sim.add(Uas())                     # harness.user_agents: tiny UA cores
    alice = SipNode(sim, ("10.0.0.1", 5060), tu=uac)
    bob = SipNode(sim, ("10.0.0.2", 5060), tu=uas)
    uac.send(alice, build_request("INVITE", branch=alice.layer.new_branch()), bob.address)
    sim.run()                                            # until every timer has run out
    assert len(alice.layer) == len(bob.layer) == 0

`LayerDriver` (harness.layer_driver) drives a single TransactionLayer by hand instead, for unit
tests that assert exact timer instants.

Everything is deterministic for a given seed. To plug in another sans-IO object (anything with
`next_event`/`get_timer`/`handle_timer`), subclass `SansIOAdapter` (harness.adapter) and `add`
it to the simulation; `SipNode` is the worked example.
"""

from harness.adapter import SansIOAdapter, SansIOCore
from harness.clock import FakeClock
from harness.network import PERFECT, Address, LinkConditions, Network, TraceEntry
from harness.simulation import Participant, Simulation, SimulationStuck
from harness.sip_node import SipNode

__all__ = [
    "PERFECT",
    "Address",
    "FakeClock",
    "LinkConditions",
    "Network",
    "Participant",
    "SansIOAdapter",
    "SansIOCore",
    "Simulation",
    "SimulationStuck",
    "SipNode",
    "TraceEntry",
]
