"""Drive the pure call manager directly, with a fake clock and hand-written SIP messages.

For tests of behaviour that needs time to pass (session timers, 2xx retransmission, timeouts)
without sockets or sleeps: feed text in, read the datagrams it wants to send out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callkeeper.calls.manager import CallManager
from callkeeper.config import Config
from callkeeper.sip.message import Message, Request, Response
from callkeeper.sip.parser import parse_message
from callkeeper.sip.transaction_messages import counter_ids
from callkeeper.sip.transport import Flow, Transmit

SERVER = ("127.0.0.1", 5060)


@dataclass
class Sent:
    flow: Flow
    message: Message


@dataclass
class CoreDriver:
    config: Config
    now: float = 1000.0
    sent: list[Sent] = field(default_factory=list)
    commands: list[object] = field(default_factory=list)  # everything but Transmit
    id_prefix: str = "t"  # tags, branches and ids: another one for a "restarted" core

    def __post_init__(self) -> None:
        self.core = CallManager(
            self.config, counter_ids(self.id_prefix), lambda n: b"\x01" * n, b"0123456789abcdef"
        )
        self.core.add_local_address("udp", SERVER)

    def receive(self, text: str, source: tuple[str, int]) -> None:
        data = text.replace("\n", "\r\n").encode()
        self.core.receive_datagram(data, Flow("udp", source, SERVER), self.now)
        self._collect()

    def connection_lost(self, flow: Flow) -> None:
        """A TCP/TLS connection closed, or could not be made (io/stream.py reports both)."""
        self.core.connection_lost(flow, self.now)
        self._collect()

    def voicemail_recorded(self, user: str, waiting: int) -> None:
        """The io relay stored a message for `user` (MWI)."""
        self.core.voicemail_recorded(user, waiting, self.now)
        self._collect()

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every core timer due on the way, in order."""
        end = self.now + seconds
        while (deadline := self.core.get_timer()) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            self.core.handle_timer(self.now)
            self._collect()
        self.now = end

    def collect(self) -> None:
        """Take what the core queued outside `receive` and `advance` (a call made directly)."""
        self._collect()

    def _collect(self) -> None:
        while (command := self.core.next_command()) is not None:
            if isinstance(command, Transmit):
                if command.data.strip():
                    self.sent.append(Sent(command.flow, parse_message(command.data)))
            else:
                self.commands.append(command)

    def take(self, to: tuple[str, int] | None = None) -> list[Message]:
        """Messages sent (to `to`, if given) since the last take, oldest first."""
        taken = [s for s in self.sent if to is None or s.flow.remote == to]
        self.sent = [s for s in self.sent if s not in taken]
        return [s.message for s in taken]

    def requests(self, to: tuple[str, int], method: str) -> list[Request]:
        return [m for m in self.take(to) if isinstance(m, Request) and m.method == method]

    def responses(self, to: tuple[str, int]) -> list[Response]:
        return [m for m in self.take(to) if isinstance(m, Response)]
