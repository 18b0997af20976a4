"""Message waiting indication (RFC 3842): the `application/simple-message-summary` body that
tells a user's phones how many voicemail messages wait for them."""

from __future__ import annotations


def message_summary(account: str, new: int, old: int = 0) -> bytes:
    """`Messages-Waiting: yes|no`, the account, and the voice-message counts (§5.2)."""
    waiting = "yes" if new > 0 else "no"
    return (
        f"Messages-Waiting: {waiting}\r\nMessage-Account: {account}\r\n"
        f"Voice-Message: {new}/{old} (0/0)\r\n"
    ).encode()


CONTENT_TYPE = "application/simple-message-summary"
