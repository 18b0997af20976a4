"""In-memory test harness: a fake clock, a lossy network and sans-IO SIP agents on them.

    sim = Simulation(seed=7, conditions=LinkConditions(loss=0.3, duplicate=0.3))
    alice = SipNode(sim, ("10.0.0.1", 5060), tu=Uac())
    bob = SipNode(sim, ("10.0.0.2", 5060), tu=Uas())
    alice.send_request(invite, bob.address)
    sim.run()

Everything is deterministic for a given seed. See `simulation.py` for plugging in other
sans-IO objects (anything with `next_event`/`get_timer`/`handle_timer`).
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
