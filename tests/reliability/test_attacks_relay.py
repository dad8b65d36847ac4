"""Attacks on the platform relay (issue 11, items 3 and 4), across two web processes and two
workers (tests/processes.py), counted where the mail arrives: the relay's aiosmtpd server.

What an abuser tries, and the goal that must fail:
- spoofing: a Default user types someone else's address (security@paypal.com) as the card
  e-mail, a stranger as BCC and a phishing signature, and presses "Send test e-mail" 30 times
  at once on both web processes. Goal: mail From that address. Also: verify an own address,
  then change the card e-mail; replay the old link; forge or reuse an expired link; have the
  verification link itself delivered to the BCC.
- spam: hammer the relay, test e-mails, verification mails and connection tests on both web
  processes at once (so that a per-process counter would let twice as much through). Goal:
  more mail than the limits allow.
- many recipients in one message. Goal: a message with more than the cap.

Figures (area "attacks"), each "= 0": mails that left the relay From an unverified address,
relay mails past the limits, recipients past the cap, verification mails past their limit.
Each scenario also shows its detector on a control input, so a broken detector cannot pass.
"""

from __future__ import annotations

import email.utils
import re
import time
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import pytest
from django.core import signing

from accounts.models import User
from outbox.models import MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from smtp_settings import verification
from smtp_settings.models import Security
from tests import factories
from tests.processes import AppProcesses, LoggedInSession

AREA = "attacks"
HAMMER = 30

# The four processes' limits (the test process keeps its own: see the `settings` fixture).
RELAY_USER_HOUR = 6
TEST_EMAILS_HOUR = 4
VERIFICATION_HOUR = 2
MAX_RECIPIENTS = 3
CONNECTION_TESTS_MINUTE = 3
PROCESS_ENV = {
    "RELAY_LIMIT_USER_HOUR": RELAY_USER_HOUR,
    "RELAY_LIMIT_COMPANY_HOUR": 1000,
    "TEST_EMAILS_PER_HOUR": TEST_EMAILS_HOUR,
    "EMAIL_VERIFICATION_MAILS_PER_HOUR": VERIFICATION_HOUR,
    "MAX_RECIPIENTS_PER_MESSAGE": MAX_RECIPIENTS,
    "CONNECTION_TESTS_PER_MINUTE": CONNECTION_TESTS_MINUTE,
}
LINK = re.compile(r"https?://[^/\s]+(/accounts/email/verify/[^\s]+/)")
VERIFICATION_SUBJECT = "Confirm your e-mail address for sending"

pytestmark = [pytest.mark.usefixtures("transactional_db", "english")]


# -- detectors -----------------------------------------------------------------------------------
def from_address(received) -> str:
    return email.utils.parseaddr(str(received.message["From"]))[1].lower()


def from_unverified(messages, unverified: set[str]) -> int:
    """How many received mails carry one of the unverified addresses in From."""
    return sum(from_address(m) in unverified for m in messages)


def past_limit(count: int, limit: int, windows: int) -> int:
    """How many went through beyond `limit` a window, over the windows the burst spanned."""
    return max(0, count - limit * windows)


def windows_spanned(started: float, ended: float, seconds: int) -> int:
    """Fixed windows (outbox.limits) touched between two time.time() readings."""
    return int(ended // seconds) - int(started // seconds) + 1


def test_the_detectors_see_the_bad_outcome_on_control_input():
    """What the 2 s PayPal burst did before the fix: 30 mails From the unverified address."""

    class Mail:
        def __init__(self, sender: str) -> None:
            self.message = {"From": sender}

    before_the_fix = [Mail("PayPal Security <security@paypal.com>")] * 30
    assert from_unverified(before_the_fix, {"security@paypal.com"}) == 30
    assert past_limit(30, RELAY_USER_HOUR // 2, windows=1) == 27
    assert windows_spanned(3599.5, 3600.5, 3600) == 2


# -- helpers -------------------------------------------------------------------------------------
@pytest.fixture
def company():
    return factories.company()


def _hammer(app: AppProcesses, user: User, path: str, data: dict | None = None) -> list[tuple]:
    """HAMMER POSTs at once, alternating the two web processes; each follows its redirect and
    returns (status of the POST, status and text of the page it led to)."""

    def one(i: int) -> tuple:
        session = app.web[i % 2].client(user)
        response = session.post(path, data=data or {}, allow_redirects=False)
        page = session.get(response.headers["Location"]) if response.is_redirect else response
        return response.status_code, page.status_code, page.text

    with ThreadPoolExecutor(max_workers=12) as pool:
        return list(pool.map(one, range(HAMMER)))


def _settle(user: User, timeout: float = 60.0) -> list[OutgoingMessage]:
    """Wait until every message of `user` is final (the workers sent or failed it)."""
    deadline = time.monotonic() + timeout
    while True:
        messages = list(OutgoingMessage.objects.filter(user=user))
        if all(m.state in (MessageState.SENT, MessageState.FAILED) for m in messages):
            return messages
        if time.monotonic() > deadline:
            raise AssertionError([(m.pk, m.state) for m in messages])
        time.sleep(0.2)


def _received_by(relay, user: User) -> list:
    ids = OutgoingMessage.objects.filter(user=user).values_list("message_id", flat=True)
    ids = {message_id.strip("<>") for message_id in ids}
    return [m for m in relay.messages if m.message_id in ids]


def _link_from(received) -> str:
    return LINK.search(received.message.get_body(("plain",)).get_content())[1]


def _verify_through(app: AppProcesses, link: str, web: int = 1) -> int:
    """Open the link in a fresh browser session on one web process: GET, then confirm."""
    session: LoggedInSession = app.web[web].client()
    session.get(link)
    return session.post(link).status_code


# -- 1. spoofing through the relay (item 3) ------------------------------------------------------
def test_paypal_burst_no_mail_leaves_from_the_unverified_address(
    app_processes, company, smtp_servers, figures
):
    relay = smtp_servers.plain
    mallory = factories.user(
        "MALLORY",
        name="PayPal Security",
        email="security@paypal.com",
        bcc="stranger@victim.test",
        signature="Your account is locked: https://paypa1.example/login",
        verified=False,
    )
    started = time.time()
    results = _hammer(app_processes, mallory, "/outbox/test-email/")
    ended = time.time()
    _settle(mallory)
    received = _received_by(relay, mallory)

    spoofed = from_unverified(received, {"security@paypal.com"})
    figures.add(AREA, "PayPal burst: mails From the unverified address", spoofed, "= 0")
    # Each test mail has two recipients (the card's BCC too): the relay limit binds first.
    allowed = min(TEST_EMAILS_HOUR, RELAY_USER_HOUR // 2)
    excess = past_limit(len(received), allowed, windows_spanned(started, ended, 3600))
    figures.add(
        AREA, "PayPal burst: relay mails past the limits (30 presses, 2 web)", excess, "= 0"
    )

    assert spoofed == 0
    assert excess == 0
    assert len(received) >= allowed  # the burst was real: as many as allowed did go out
    assert {from_address(m) for m in received} == {"acme@event.directo-mail.localhost"}
    assert all(m.message["Reply-To"] == "security@paypal.com" for m in received)
    assert [r for r in results if r[0] != 302 or r[1] != 200] == []  # never a 500
    refused = [text for _post, _page, text in results if "Nothing was sent" in text]
    assert len(refused) == HAMMER - len(received)  # every refusal explained on the page


def test_change_of_email_after_verification_and_old_links(
    app_processes, company, smtp_servers, figures
):
    """Verify an own address (link mailed through a worker, opened on the other web process),
    then switch the card to PayPal's: the relay goes back to the platform From, and the old
    link, a forged one and an expired one verify nothing."""
    relay = smtp_servers.plain
    trudy = factories.user("TRUDY", name="Trudy", email="trudy@acme.test", verified=False)
    web1 = app_processes.web[0].client(trudy)
    assert web1.post("/accounts/email/verify/", allow_redirects=False).status_code == 302
    _settle(trudy)
    [mail] = [m for m in _received_by(relay, trudy) if m.message["Subject"] == VERIFICATION_SUBJECT]
    assert mail.rcpt_tos == ["trudy@acme.test"]
    link = _link_from(mail)
    assert _verify_through(app_processes, link) == 200
    trudy.refresh_from_db()
    assert trudy.email_verified
    old_token = verification.verification_token(User(pk=trudy.pk, email="trudy@acme.test"))

    # Control: the verified address does appear in From (the detector reads From correctly).
    web1.post("/outbox/test-email/", allow_redirects=False)
    _settle(trudy)
    assert from_unverified(_received_by(relay, trudy), {"trudy@acme.test"}) == 1

    saved = web1.post(
        "/accounts/card/",
        data={"name": "PayPal Security", "email": "security@paypal.com", "mode": "default"},
    )
    assert saved.status_code == 200 and "The settings have been saved." in saved.text

    forged = "x" + verification.verification_token(User.objects.get(pk=trudy.pk))[1:]
    with mock.patch("django.core.signing.time.time", return_value=time.time() - 3 * 86400):
        expired = verification.verification_token(User.objects.get(pk=trudy.pk))
    unsalted = signing.dumps({"u": trudy.pk, "e": "security@paypal.com", "s": ""})
    attempts = {"old link": link, "old token": f"/accounts/email/verify/{old_token}/"}
    for name, token in [("forged", forged), ("expired", expired), ("unsalted", unsalted)]:
        attempts[name] = f"/accounts/email/verify/{token}/"
    statuses = {name: _verify_through(app_processes, path, web=i % 2) for i, (name, path) in
                enumerate(attempts.items())}  # fmt: skip
    assert set(statuses.values()) == {400}, statuses

    for web in app_processes.web:
        web.client(trudy).post("/outbox/test-email/", allow_redirects=False)
    _settle(trudy)
    spoofed = from_unverified(_received_by(relay, trudy), {"security@paypal.com"})
    figures.add(
        AREA, "changed e-mail, old/forged/expired links: mails From the unverified address",
        spoofed, "= 0",
    )  # fmt: skip
    assert spoofed == 0
    assert not User.objects.get(pk=trudy.pk).email_verified


def test_the_verification_link_never_reaches_anyone_but_the_card_address(
    app_processes, company, smtp_servers, figures
):
    """The BCC on the card is the attacker's own mailbox: the link must not land there, or
    the attacker could verify security@paypal.com with it. Hammered: at most the limit."""
    relay = smtp_servers.plain
    eve = factories.user(
        "EVE", email="security@paypal.com", bcc="eve@evil.test", reply_to="eve@evil.test",
        verified=False,
    )  # fmt: skip
    started = time.time()
    results = _hammer(app_processes, eve, "/accounts/email/verify/")
    ended = time.time()
    _settle(eve)
    links = [m for m in _received_by(relay, eve) if m.message["Subject"] == VERIFICATION_SUBJECT]

    leaked = sum(set(m.rcpt_tos) != {"security@paypal.com"} for m in links)
    excess = past_limit(len(links), VERIFICATION_HOUR, windows_spanned(started, ended, 3600))
    figures.add(AREA, "verification links delivered to another address", leaked, "= 0")
    figures.add(AREA, "verification mails past their limit (30 presses, 2 web)", excess, "= 0")
    assert leaked == 0
    assert excess == 0
    assert len(links) >= VERIFICATION_HOUR
    assert all("eve@evil.test" not in str(m.message) for m in links)
    assert [r for r in results if r[0] != 302 or r[1] != 200] == []
    assert sum("verification links an hour are the most allowed" in r[2] for r in results) == (
        HAMMER - len(links)
    )
    assert not User.objects.get(pk=eve.pk).email_verified
    # Control: a test e-mail of Eve does go to her BCC too, and the detector sees it.
    eve_web = app_processes.web[0].client(eve)
    eve_web.post("/outbox/test-email/", allow_redirects=False)
    _settle(eve)
    tests = [m for m in _received_by(relay, eve) if m.message["Subject"] != VERIFICATION_SUBJECT]
    assert sum(set(m.rcpt_tos) != {"security@paypal.com"} for m in tests) == len(tests) == 1


# -- 2. limits across processes (item 4) ---------------------------------------------------------
def test_test_emails_through_an_own_server_are_limited_across_processes(
    app_processes, company, smtp_servers, figures
):
    """Own server: no relay limit, so the test-email limit must hold on its own."""
    server = smtp_servers.implicit_tls
    oscar = factories.user("OSCAR", email="oscar@acme.test")
    factories.profile(oscar, host=server.host, port=server.port, security=Security.SSL)
    started = time.time()
    results = _hammer(app_processes, oscar, "/outbox/test-email/")
    ended = time.time()
    _settle(oscar)
    received = [m for m in server.messages if m.rcpt_tos == ["oscar@acme.test"]]
    excess = past_limit(len(received), TEST_EMAILS_HOUR, windows_spanned(started, ended, 3600))
    figures.add(AREA, "test e-mails past the limit (own server, 30 presses, 2 web)", excess, "= 0")
    assert excess == 0
    assert len(received) >= TEST_EMAILS_HOUR
    assert sum("test e-mails this hour" in r[2] for r in results) == HAMMER - len(received)


def test_the_relay_limit_holds_for_two_users_hammering_at_once(
    app_processes, company, smtp_servers, figures
):
    relay = smtp_servers.plain
    users = [factories.user(code, bcc="") for code in ("ANNA", "BOB")]
    started = time.time()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda u: _hammer(app_processes, u, "/outbox/test-email/"), users))
    ended = time.time()
    windows = windows_spanned(started, ended, 3600)
    excess = 0
    for user in users:
        _settle(user)
        count = len(_received_by(relay, user))
        assert count >= min(TEST_EMAILS_HOUR, RELAY_USER_HOUR)
        excess += past_limit(count, min(TEST_EMAILS_HOUR, RELAY_USER_HOUR), windows)
    figures.add(AREA, "relay mails past the limits (2 users × 30 presses, 2 web)", excess, "= 0")
    assert excess == 0


def test_connection_tests_are_limited_across_processes(app_processes, company, figures):
    carol = factories.user("CAROL")
    started = time.time()
    results = _hammer(app_processes, carol, "/accounts/card/", {"action": "test_connection"})
    ended = time.time()
    refused = sum("tested the connection several times in a row" in r[2] for r in results)
    allowed = HAMMER - refused
    excess = past_limit(allowed, CONNECTION_TESTS_MINUTE, windows_spanned(started, ended, 60))
    figures.add(AREA, "connection tests past the limit (30 presses, 2 web)", excess, "= 0")
    assert excess == 0
    assert allowed >= CONNECTION_TESTS_MINUTE
    assert all(r[0] == 200 for r in results)


# -- 3. the recipient cap, on every path (item 4) ------------------------------------------------
def test_no_message_leaves_with_more_recipients_than_the_cap(
    app_processes, company, smtp_servers, settings, figures
):
    """Lists of 1 to 10 recipients enqueued (in this process, as any path does); the workers
    deliver what was accepted. Counted at the relay: no message past the cap."""
    settings.MAX_RECIPIENTS_PER_MESSAGE = MAX_RECIPIENTS
    relay = smtp_servers.plain
    zed = factories.user("ZED", bcc="")
    accepted = 0
    for size in range(1, 11):
        to = [f"r{size}-{n}@example.com" for n in range(size)]
        try:
            outbox_enqueue(user=zed, to=to[:1], cc=to[1:2], bcc=to[2:], subject="x", body_text="x")
            accepted += 1
        except Exception as error:
            assert getattr(error, "code", "") == "too_many_recipients", error
    _settle(zed)
    received = _received_by(relay, zed)
    past_cap = sum(max(0, len(m.rcpt_tos) - MAX_RECIPIENTS) for m in received)
    figures.add(AREA, "recipients past the cap (lists of 1-10)", past_cap, "= 0")
    assert past_cap == 0
    assert len(received) == accepted == MAX_RECIPIENTS  # control: small lists did go out
    assert max(len(m.rcpt_tos) for m in received) == MAX_RECIPIENTS


def test_the_processes_really_took_part(app_processes):
    """Both web processes served and both workers sent during this module."""
    assert all(web.log.count('"POST ') for web in app_processes.web)
    assert all(app_processes.worker_tasks_done())
