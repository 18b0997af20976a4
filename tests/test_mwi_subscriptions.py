"""MWI subscriptions (RFC 6665 + RFC 3842) in the pure core, with the fake clock: alice's phones
SUBSCRIBE to `message-summary` with digest credentials and get their counts in the dialog."""

from __future__ import annotations

import itertools

from callkeeper.calls import mwi_subscriptions
from callkeeper.calls.mwi_subscriptions import MAX_EXPIRES, MAX_PER_USER, MIN_EXPIRES
from callkeeper.config import Config
from callkeeper.sip.message import Request, Response
from support.core_calls import reply
from support.core_driver import CoreDriver
from support.ua import digest_answer

PHONE = ("127.0.0.1", 7010)  # alice's phone that subscribes
OTHER = ("127.0.0.1", 7011)  # alice's second phone: registered, never subscribes
TRUSTED = ("10.0.0.9", 5060)
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}
_branches = itertools.count(1)  # every request its own transaction


def driver() -> CoreDriver:
    users = [{"name": name, "password": pw} for name, pw in PASSWORDS.items()]
    config = Config(
        sip={"listen": ["udp:127.0.0.1:5060"], "trusted_sources": [TRUSTED[0]]}, users=users
    )
    return CoreDriver(config)


def subscribe_text(
    *,
    source: tuple[str, int] = PHONE,
    account: str = "alice",
    user: str = "alice",
    call_id: str = "sub-1@phone",
    cseq: int = 1,
    to_tag: str = "",
    event: str | None = "message-summary",
    expires: str | None = None,
    extra: str = "",
) -> str:
    host, port = source
    lines = [
        f"SUBSCRIBE sip:{account}@127.0.0.1:5060 SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-s{next(_branches)}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@127.0.0.1>;tag=ph{port}",
        f"To: <sip:{account}@127.0.0.1>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} SUBSCRIBE",
        f"Contact: <sip:{user}@{host}:{port}>",
    ]
    if event is not None:
        lines.append(f"Event: {event}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += [line for line in extra.splitlines() if line]
    return "\n".join([*lines, "Content-Length: 0", "", ""])


def subscribe(
    d: CoreDriver, *, answer: bool = True, **fields: str
) -> tuple[Response, list[Request]]:
    """A SUBSCRIBE from alice's phone, answered 407 and sent again with alice's credentials:
    (its final answer, the requests sent to the phone since, which the phone answers 200
    unless `answer` is False)."""
    d.advance(0.001)  # a nonce of its own (they are issued per millisecond; the rest is fixed)
    d.receive(subscribe_text(**fields), PHONE)
    (challenge,) = d.responses(PHONE)
    assert challenge.status == 407, challenge
    text = subscribe_text(cseq=2, **fields)
    challenge_text = challenge.headers.get("proxy-authenticate") or ""
    auth = digest_answer(challenge_text, "SUBSCRIBE", text.split()[1], "alice", "alice-pw")
    d.receive(
        text.replace("Content-Length: 0", f"Proxy-Authorization: {auth}\nContent-Length: 0"), PHONE
    )
    final, requests = split(d, PHONE)
    if answer:
        answer_all(d, requests)
    return final, requests


def answer_all(d: CoreDriver, requests: list[Request]) -> None:
    """The phone answers 200 to what callkeeper sent it (no retransmissions follow)."""
    for request in requests:
        d.receive(reply(request, 200), PHONE)


def split(d: CoreDriver, source: tuple[str, int]) -> tuple[Response, list[Request]]:
    messages = d.take(source)
    finals = [m for m in messages if isinstance(m, Response) and m.status >= 200]
    assert len(finals) == 1, messages
    return finals[0], [m for m in messages if isinstance(m, Request)]


def in_dialog(ok: Response, cseq: int, expires: str | None) -> str:
    return subscribe_text(
        call_id=ok.call_id, cseq=cseq, to_tag=ok.to_addr.tag or "", expires=expires
    )


def summary(notify: Request) -> dict[str, str]:
    fields = {}
    for line in notify.body.decode().splitlines():
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields


def register(d: CoreDriver, source: tuple[str, int], user: str = "alice") -> None:
    host, port = source
    text = (
        "REGISTER sip:127.0.0.1:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-r{next(_branches)}\n"
        f"Max-Forwards: 70\nFrom: <sip:{user}@127.0.0.1>;tag=r{port}\n"
        f"To: <sip:{user}@127.0.0.1>\nCall-ID: reg-{port}@phone\nCSeq: 1 REGISTER\n"
        f"Contact: <sip:{user}@{host}:{port}>\nExpires: 3600\nContent-Length: 0\n\n"
    )
    d.advance(0.001)  # a nonce of its own
    d.receive(text, source)
    (challenge,) = d.responses(source)
    auth = digest_answer(
        challenge.headers.get("www-authenticate") or "",
        "REGISTER",
        "sip:127.0.0.1:5060",
        user,
        PASSWORDS[user],
    )
    retry = (
        text.replace("CSeq: 1 REGISTER", "CSeq: 2 REGISTER")
        .replace("branch=z9hG4bK-r", "branch=z9hG4bK-rr")
        .replace("Content-Length: 0", f"Authorization: {auth}\nContent-Length: 0")
    )
    d.receive(retry, source)
    assert [r.status for r in d.responses(source)] == [200]


def gauge(d: CoreDriver) -> int:
    return len(d.core.message_waiting.subscriptions)


# --- subscribe, refresh, expiry, unsubscribe -------------------------------------------------------
def test_subscribe_is_answered_200_then_a_notify_with_the_counts() -> None:
    d = driver()
    d.voicemail_recorded("alice", 2)  # nobody to tell yet
    ok, requests = subscribe(d)
    assert ok.status == 200 and ok.to_addr.tag
    assert ok.headers.get("expires") == str(mwi_subscriptions.DEFAULT_EXPIRES)
    assert ok.headers.get("contact") and ok.headers.get("allow-events") == "message-summary"
    (notify,) = requests
    assert notify.method == "NOTIFY" and str(notify.uri) == "sip:alice@127.0.0.1:7010"
    headers = notify.headers
    assert headers.get("subscription-state") == f"active;expires={MAX_EXPIRES}"
    assert headers.get("event") == "message-summary"
    assert headers.get("content-type") == "application/simple-message-summary"
    # the subscription's dialog: the 200's tags and Call-ID
    assert notify.call_id == ok.call_id
    assert notify.from_addr.tag == ok.to_addr.tag and notify.to_addr.tag == ok.from_addr.tag
    body = summary(notify)
    assert body["messages-waiting"] == "yes" and body["voice-message"] == "2/0 (0/0)"
    assert body["message-account"] == "sip:alice@127.0.0.1"
    assert gauge(d) == 1


def test_expires_is_clamped_and_too_brief_is_423() -> None:
    d = driver()
    ok, _ = subscribe(d, expires="86400")
    assert ok.headers.get("expires") == str(MAX_EXPIRES)
    brief, requests = subscribe(d, call_id="sub-2@phone", expires=str(MIN_EXPIRES - 1))
    assert brief.status == 423 and brief.headers.get("min-expires") == str(MIN_EXPIRES)
    assert requests == [] and gauge(d) == 1


def test_refresh_gets_200_and_a_notify_and_moves_the_expiry() -> None:
    d = driver()
    ok, _ = subscribe(d, expires="600")
    d.advance(500)
    assert d.take(PHONE) == []
    d.receive(in_dialog(ok, 3, "600"), PHONE)
    refreshed, (notify,) = split(d, PHONE)
    assert refreshed.status == 200 and refreshed.headers.get("expires") == "600"
    assert notify.headers.get("subscription-state") == "active;expires=600"
    assert notify.headers.get("cseq") == "2 NOTIFY"
    answer_all(d, [notify])
    d.advance(500)  # 1000 s after the SUBSCRIBE: past the first expiry, not the refreshed one
    assert d.take(PHONE) == [] and gauge(d) == 1


def test_no_refresh_ends_it_with_a_terminated_notify() -> None:
    d = driver()
    subscribe(d, expires="600")
    d.advance(599)
    assert d.take(PHONE) == []
    d.advance(1)
    (notify,) = d.requests(PHONE, "NOTIFY")
    assert notify.headers.get("subscription-state") == "terminated;reason=timeout"
    assert gauge(d) == 0
    d.receive(reply(notify, 200), PHONE)
    d.advance(3600)
    assert d.take(PHONE) == []  # nothing more in that dialog


def test_unsubscribe_gets_200_and_a_terminated_notify() -> None:
    d = driver()
    ok, _ = subscribe(d)
    d.receive(in_dialog(ok, 3, "0"), PHONE)
    answer, (notify,) = split(d, PHONE)
    assert answer.status == 200 and answer.headers.get("expires") == "0"
    assert notify.headers.get("subscription-state") == "terminated;reason=timeout"
    assert gauge(d) == 0
    d.receive(in_dialog(ok, 4, "600"), PHONE)  # the dialog is gone with it
    assert [r.status for r in d.responses(PHONE)] == [481]


def test_in_dialog_subscribe_for_an_unknown_subscription_is_481() -> None:
    d = driver()
    d.receive(subscribe_text(to_tag="never-issued", cseq=7), PHONE)
    assert [r.status for r in d.responses(PHONE)] == [481]


# --- what is refused ------------------------------------------------------------------------------
def test_other_events_and_a_missing_event_are_489_with_allow_events() -> None:
    d = driver()
    for event in ("presence", None):  # none: RFC 6665 reads it as PINT's
        d.receive(subscribe_text(event=event, call_id=f"{event}@phone"), PHONE)
        (response,) = d.responses(PHONE)
        assert response.status == 489, event
        assert response.headers.get("allow-events") == "message-summary"
    d.receive(subscribe_text(expires="soon"), PHONE)
    assert [r.status for r in d.responses(PHONE)] == [400]


def test_another_users_mailbox_is_403() -> None:
    d = driver()
    ok, requests = subscribe(d, account="bob")  # alice's credentials, bob's account
    assert ok.status == 403 and requests == [] and gauge(d) == 0


def test_a_trusted_source_subscribes_without_credentials() -> None:
    d = driver()
    d.receive(subscribe_text(source=TRUSTED, user="pbx", account="bob", call_id="b"), TRUSTED)
    ok, (notify,) = split(d, TRUSTED)
    assert ok.status == 200 and summary(notify)["messages-waiting"] == "no"
    d.receive(subscribe_text(source=TRUSTED, user="pbx", account="carol", call_id="c"), TRUSTED)
    assert [r.status for r in d.responses(TRUSTED)] == [404]


def test_beyond_the_cap_per_user_is_503_with_retry_after() -> None:
    d = driver()
    for n in range(MAX_PER_USER):
        ok, _ = subscribe(d, call_id=f"sub-{n}@phone")
        assert ok.status == 200
    refused, requests = subscribe(d, call_id="one-too-many@phone")
    assert refused.status == 503 and refused.headers.get("retry-after")
    assert requests == [] and gauge(d) == MAX_PER_USER


# --- counts change --------------------------------------------------------------------------------
def test_a_new_message_is_notified_in_the_dialog_only() -> None:
    """The subscribed phone gets the NOTIFY in its dialog and no unsolicited one; alice's other
    phone, which never subscribed, still gets the unsolicited one."""
    d = driver()
    register(d, PHONE)
    register(d, OTHER)
    ok, _ = subscribe(d, expires="600")
    d.advance(100)
    d.voicemail_recorded("alice", 1)
    (notify,) = d.requests(PHONE, "NOTIFY")
    answer_all(d, [notify])
    assert notify.call_id == ok.call_id and notify.to_addr.tag == ok.from_addr.tag
    assert notify.headers.get("subscription-state") == "active;expires=500"
    assert summary(notify)["voice-message"] == "1/0 (0/0)"
    (unsolicited,) = d.requests(OTHER, "NOTIFY")
    assert unsolicited.headers.get("subscription-state") == "terminated;reason=noresource"
    assert summary(unsolicited)["voice-message"] == "1/0 (0/0)"


def test_a_notify_answered_481_ends_the_subscription() -> None:
    d = driver()
    register(d, PHONE)
    ok, _ = subscribe(d)
    d.voicemail_recorded("alice", 1)
    (notify,) = d.requests(PHONE, "NOTIFY")
    d.receive(reply(notify, 481), PHONE)
    assert gauge(d) == 0
    d.voicemail_recorded("alice", 2)  # the phone is back to unsolicited NOTIFYs
    (unsolicited,) = d.requests(PHONE, "NOTIFY")
    assert unsolicited.call_id != ok.call_id
    assert summary(unsolicited)["voice-message"] == "2/0 (0/0)"


def test_a_notify_nobody_answers_ends_the_subscription() -> None:
    d = driver()
    subscribe(d, answer=False)
    d.advance(40)  # Timer F (64·T1) for the first NOTIFY, its retransmissions unanswered
    assert gauge(d) == 0


def test_notifies_follow_the_flow_of_the_latest_refresh() -> None:
    """A phone whose NAT binding moved (or that reconnected over TCP) refreshes from a new
    address: the counts go there from then on."""
    d = driver()
    ok, _ = subscribe(d)
    moved = ("127.0.0.1", 7012)
    d.receive(
        subscribe_text(
            source=moved, call_id=ok.call_id, cseq=3, to_tag=ok.to_addr.tag or ""
        ).replace(f"tag=ph{moved[1]}", f"tag=ph{PHONE[1]}"),
        moved,
    )
    refreshed, (notify,) = split(d, moved)
    assert refreshed.status == 200
    d.receive(reply(notify, 200), moved)
    d.voicemail_recorded("alice", 1)
    assert d.take(PHONE) == []
    (counts,) = d.requests(moved, "NOTIFY")
    assert counts.call_id == ok.call_id and summary(counts)["voice-message"] == "1/0 (0/0)"
