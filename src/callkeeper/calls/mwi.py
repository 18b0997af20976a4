"""Message waiting indication (RFC 3842): how many voicemail messages wait for each user, and
the unsolicited NOTIFYs (`message-summary`) that tell their phones.

One job: MWI. The io relay reports a stored message (`CallManager.voicemail_recorded`) and the
store restores the counts after a restart; the user's phones are told at once and again when
one registers. The `application/simple-message-summary` body is built here too. Phones that
subscribed (mwi_subscriptions.py) are told in their subscription dialog instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from callkeeper.calls.b2bua import Contact
from callkeeper.calls.dialing import build_notify
from callkeeper.calls.locals import LocalAddresses
from callkeeper.calls.mwi_subscriptions import CONTENT_TYPE, EVENT, MwiSubscriptions
from callkeeper.directory import Binding
from callkeeper.sip.endpoint import SipEndpoint
from callkeeper.sip.transaction_messages import IdSource
from callkeeper.sip.transport import Flow
from callkeeper.sip.uri import URI

__all__ = ["CONTENT_TYPE", "MessageWaiting", "message_summary"]


def message_summary(account: str, new: int, old: int = 0) -> bytes:
    """`Messages-Waiting: yes|no`, the account, and the voice-message counts (§5.2)."""
    waiting = "yes" if new > 0 else "no"
    return (
        f"Messages-Waiting: {waiting}\r\nMessage-Account: {account}\r\n"
        f"Voice-Message: {new}/{old} (0/0)\r\n"
    ).encode()


class MessageWaiting:
    """Voicemail messages waiting per user, told to their phones."""

    def __init__(
        self, endpoint: SipEndpoint, local: LocalAddresses, ids: IdSource, user_agent: str
    ) -> None:
        self._endpoint = endpoint
        self._local = local
        self._ids = ids
        self._waiting: dict[str, int] = {}
        self.subscriptions = MwiSubscriptions(endpoint, local, ids, self.summary, user_agent)

    @property
    def user_agent(self) -> str:
        return self.subscriptions.user_agent

    @user_agent.setter
    def user_agent(self, value: str) -> None:
        """It follows the configuration on reload, for both kinds of NOTIFY."""
        self.subscriptions.user_agent = value

    def summary(self, user: str) -> bytes:
        """The body telling `user`'s counts now."""
        return message_summary(f"sip:{user}@{self._local.domain}", self._waiting.get(user, 0))

    def restore(self, waiting: dict[str, int]) -> None:
        self._waiting.update(waiting)

    def recorded(self, user: str, waiting: int, contacts: Iterable[Contact], now: float) -> None:
        """A message was stored for `user` (`waiting` in the mailbox now): tell `contacts`,
        the user's phones, each once: in its subscription if it has one, else unsolicited."""
        self._waiting[user] = waiting
        subscriptions = self.subscriptions
        for contact in contacts:
            if not subscriptions.covers(user, contact.uri, contact.flow):
                self._notify(user, contact.uri, contact.flow, now)
        subscriptions.changed(user, now)

    def registered(self, binding: Binding, now: float) -> None:
        """A phone registered: tell it when messages wait for its user (unless it holds a
        subscription, which told it already)."""
        if self._waiting.get(binding.user):
            flow = self._local.complete(binding.next_hop())
            if not self.subscriptions.covers(binding.user, binding.request_uri, flow):
                self._notify(binding.user, binding.request_uri, flow, now)

    def _notify(self, user: str, uri: URI, flow: Flow, now: float) -> None:
        local = self._local
        notify = build_notify(
            local,
            self._ids,
            uri=uri,
            flow=flow,
            user_agent=self.user_agent,
            event=EVENT,
            body=self.summary(user),
            content_type=CONTENT_TYPE,
            to_uri=URI("sip", user=user, host=local.domain),
        )
        self._endpoint.send_request(notify, flow, now)
