"""Access (issue 7, point 4): every URL × anonymous, user A, user B, staff, admin × GET, POST.

The URLs come from the resolver itself, so a URL added later without a row in `EXPECT` fails
`test_every_url_has_expectations`. Path parameters are filled with user A's objects, each actor
gets its own logged-in client, and for every request the status (and, for a login redirect, the
target) is compared with the table. Beyond the status:

- cross-user reads: any 200 that B (or anonymous) gets is searched for A's marker, a random
  string only A's private data holds (card phone and signature, SMTP login, message subjects
  and recipients, an event's reply, a letter job's subject). Staff see others' cards, events,
  messages and jobs by design (README: "Staff can open any user's card"; selectors
  `events_visible_to`, `message_visible_to`, `job_visible_to`) and are not counted.
- cross-user writes: every column of A's rows (user, sender profile, Microsoft 365 connection,
  messages, events, jobs, the invoices A's jobs claimed) before and after each anonymous and B
  request; B's POSTs carry data that would change A's rows were a check missing (a valid card
  form on A's card, cancel / resume of A's jobs, a connection test of A's card).
- CSRF: a client enforcing CSRF, logged in as the superuser, POSTs without a token to every
  URL: 403 each, except `CSRF_EXEMPT` (anymail's ESP webhooks: no browser session, verified by
  the ESP's signature or basic auth, owned by the bounce intake).
- OAuth state: Microsoft 365 callbacks completed in another session, by another user, with a
  flow moved between sessions, or with a forged state, must store nothing.

Shared by design (single-company ERP, README "Mass mailing"): invoices and customers are the
company's, listed and edited by every user; they hold no marker and are not "A's rows". Letters
are the company's to list and read, but only their author and staff may edit or send one
(issue 11): A's letter and its deliveries are A's rows, and B's POSTs carry a valid letter form.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from accounts.models import Company, User
from bounces.models import InboundMail, IntakeState
from invoices.models import Invoice, Letter, LetterDelivery
from mail_templates.models import MailTemplate
from outbox.models import BulkJob, Event, EventKind, JobState, MessageState, OutgoingMessage
from smtp_settings import crypto
from smtp_settings import oauth as oauth_flows
from smtp_settings.models import OAuthConnection, SenderMode, SenderProfile, SystemSettings
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("english")]

ACTORS = ("anonymous", "A", "B", "staff", "admin")
# A and B are ordinary users; "staff" has is_staff only; "admin" is a superuser.
LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"


# -- the world ---------------------------------------------------------------------------------
@dataclass
class World:
    users: dict[str, User]
    marker: str
    password: str
    message: OutgoingMessage
    running_job: BulkJob
    cancelled_job: BulkJob
    letter: Letter
    invoice: Invoice
    server: object
    inbound: object = None
    objects: dict[str, object] = field(default_factory=dict)  # admin model label → A's object

    @property
    def a(self) -> User:
        return self.users["A"]


def _build_world(smtp_servers) -> World:
    marker = f"amark{secrets.token_hex(6)}"
    password = factories.secret()
    server = smtp_servers.implicit_tls
    a_login = f"{marker}@a.example"
    server.users[a_login] = password
    a = factories.user(
        "AUSER", name="Anna A", email="anna@a.example", phone=marker, signature=f"Sig {marker}"
    )
    b = factories.user("BUSER", name="Bob B", email="bob@b.example")
    staff = factories.user("STAFF", is_staff=True)
    admin = factories.user("ROOT", is_staff=True, is_superuser=True)
    profile = factories.profile(
        a, host=server.host, port=server.port, security="ssl", login=a_login, password=password
    )
    factories.profile(b, mode=SenderMode.DEFAULT, security="")
    connection = OAuthConnection.objects.create(
        user=a,
        provider="microsoft365",
        address=f"{marker}@contoso.test",
        account_id=f"{marker}.tenant",
        token_encrypted=crypto.encrypt(f'{{"RefreshToken": "{factories.secret()}"}}'),
    )
    factories.company()
    SystemSettings.objects.get_or_create(pk=1)

    customer = invoice_factories.customer("Shared Customer Ltd")
    invoices = invoice_factories.invoices(3, customer=customer)
    invoice_type = ContentType.objects.get_for_model(Invoice)

    def message(subject: str, state: str, job: BulkJob | None = None, invoice=None):
        return OutgoingMessage.objects.create(
            user=a,
            sender={"from_email": "anna@a.example", "login": a_login},
            to=[f"{marker}.to@customer.example"],
            subject=f"{subject} {marker}",
            body_text=f"Body {marker}",
            message_id=f"<{secrets.token_hex(8)}@a.example>",
            envelope_from="anna@a.example",
            state=state,
            last_reply=f"250 ok {marker}",
            job=job,
            related_type=invoice_type if invoice else None,
            related_id=str(invoice.pk) if invoice else "",
        )

    sent = message("Private", MessageState.SENT)
    event = Event.objects.create(
        user=a,
        message=sent,
        kind=EventKind.SEND_FAILED,
        explanation="auth_failed",
        params={"login": a_login},
        reply=f"535 refused {marker}",
    )
    running = BulkJob.objects.create(
        user=a, kind="invoices", description=f"Run {marker}", total=2, state=JobState.RUNNING
    )
    cancelled = BulkJob.objects.create(
        user=a, kind="invoices", description=f"Stop {marker}", total=1, state=JobState.CANCELLED
    )
    # The job list shows each job's title in the viewer's language (BulkJob.title): an
    # invoice job's is its count, a letter job's carries the letter's subject, A's private text.
    BulkJob.objects.create(
        user=a,
        kind="letters",
        description=f"Letter {marker}",
        options={"subject": f"Letter {marker}"},
        total=1,  # the list shows jobs that had something to send
        state=JobState.FINISHED,
    )
    for invoice, job, state in (
        (invoices[0], running, MessageState.SENT),
        (invoices[1], running, MessageState.QUEUED),
        (invoices[2], cancelled, MessageState.CANCELLED),
    ):
        message("Invoice", state, job, invoice)
        Invoice.objects.filter(pk=invoice.pk).update(
            job=job, send_state="sent" if state == MessageState.SENT else "queued"
        )
    letter = Letter.objects.create(
        subject="Shared letter", body="Hello {{ customer.name }}", created_by=a
    )
    world = World(
        users={"A": a, "B": b, "staff": staff, "admin": admin},
        marker=marker,
        password=password,
        message=sent,
        running_job=running,
        cancelled_job=cancelled,
        letter=letter,
        invoice=invoices[0],
        server=server,
    )
    inbound = InboundMail.objects.create(
        source="smtp",
        envelope_sender="",
        raw=f"Subject: bounce {marker}\r\n\r\n<script>alert(1)</script> {marker}\r\n".encode(),
        subject=f"bounce {marker}",
        state=IntakeState.BOUNCED,
        message=sent,
    )
    world.inbound = inbound
    template = MailTemplate.objects.create(
        company=Company.objects.order_by("pk").first() or factories.company(),
        kind="invoice",
        language="en",
        subject=f"Invoice {{{{ invoice.number }}}} {marker}",
        body=f"Staff's wording {marker}",
    )
    world.objects = {
        "accounts_user": a,
        "outbox_outgoingmessage": sent,
        "outbox_event": event,
        "bounces_inboundmail": inbound,
        "accounts_company": factories.company("Other Co", "other"),
        "smtp_settings_senderprofile": profile,
        "smtp_settings_systemsettings": SystemSettings.objects.get(pk=1),
        "invoices_customer": customer,
        "invoices_invoice": invoices[0],
        "invoices_letter": letter,
        "mail_templates_mailtemplate": template,
        "auth_group": _group(),
        "smtp_settings_oauthconnection": connection,
        **_login_records(a),
    }
    return world


def _login_records(user: User) -> dict[str, object]:
    """django-axes's rows (login throttling) about A, for its admin pages."""
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog

    common = {"username": user.code, "ip_address": "192.0.2.1", "user_agent": "test"}
    return {
        "axes_accessattempt": AccessAttempt.objects.create(
            **common, failures_since_start=2, get_data="", post_data=""
        ),
        "axes_accesslog": AccessLog.objects.create(**common),
        "axes_accessfailurelog": AccessFailureLog.objects.create(**common),
    }


def _group():
    from django.contrib.auth.models import Group

    return Group.objects.create(name="Accounting")


def a_rows(world: World) -> dict[str, list[dict]]:
    """Every column of every row that is A's (last_login moves when A logs in: left out)."""
    a = world.a
    job_ids = list(BulkJob.objects.filter(user=a).values_list("pk", flat=True))
    return {
        "user": [
            {k: v for k, v in row.items() if k != "last_login"}
            for row in User.objects.filter(pk=a.pk).values()
        ],
        "profile": list(SenderProfile.objects.filter(user=a).values()),
        "m365": list(OAuthConnection.objects.filter(user=a).values()),
        "messages": list(OutgoingMessage.objects.filter(user=a).order_by("pk").values()),
        "events": list(Event.objects.filter(user=a).order_by("pk").values()),
        "jobs": list(BulkJob.objects.filter(user=a).order_by("pk").values()),
        "invoices of A's jobs": list(
            Invoice.objects.filter(job_id__in=job_ids).order_by("pk").values()
        ),
        "letters": list(Letter.objects.filter(created_by=a).order_by("pk").values()),
        # Not A's but staff's only: a non-staff request must not change them either.
        "mail templates": list(MailTemplate.objects.order_by("pk").values()),
        "letter deliveries": list(
            LetterDelivery.objects.filter(letter__created_by=a).order_by("pk").values()
        ),
    }


# -- the URLs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    name: str  # "namespace:name", or "<namespace>:?<route>" for an unnamed pattern
    route: str
    pattern: URLPattern
    prefix_names: tuple[str, ...]


def _walk(patterns, prefix: str = "", namespace: str = "") -> Iterator[Route]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            ns = ":".join(x for x in (namespace, pattern.namespace or "") if x)
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern), ns)
        else:
            route = prefix + str(pattern.pattern)
            name = pattern.name or f"?{route}"
            yield Route(f"{namespace}:{name}" if namespace else name, route, pattern, ())


def all_routes() -> list[Route]:
    return list(_walk(get_resolver().url_patterns))


# Expected status per actor. "login": a redirect to the login page; "admin-login": to the admin's.
def _same(*, anonymous, A, B, staff, admin) -> dict[str, str]:
    return {"anonymous": anonymous, "A": A, "B": B, "staff": staff, "admin": admin}


def _users(status: str, anonymous: str = "login") -> dict[str, str]:
    return _same(anonymous=anonymous, A=status, B=status, staff=status, admin=status)


ALL_405 = _same(anonymous="405", A="405", B="405", staff="405", admin="405")
OWN_OR_STAFF_200 = _same(anonymous="login", A="200", B="404", staff="200", admin="200")
# Letters: every user reads them; only the author (A) and staff change or send one.
AUTHOR_OR_STAFF = _same(anonymous="login", A="200", B="403", staff="200", admin="200")
STAFF_ONLY_200 = _same(anonymous="login", A="403", B="403", staff="200", admin="200")


@dataclass
class Expect:
    get: dict[str, str]
    post: dict[str, str]
    kwargs: Callable[[World], dict] = lambda w: {}
    # POST bodies to try (each is one request per actor); B's ones are built to write if allowed.
    bodies: Callable[[World], list[dict]] = lambda w: [{}]


def _card_form(world: World) -> dict:
    return {
        "name": "Overwritten by someone else",
        "email": "intruder@b.example",
        "phone": "000",
        "mode": "default",
        "security": "",
        "server": "",
        "login": "",
        "password": "",
        "clear_password": "on",
    }


EXPECT: dict[str, Expect] = {
    "home": Expect(get=_users("302", "302"), post=_users("302", "302")),
    "login": Expect(get=_users("200", "200"), post=_users("200", "200")),
    "logout": Expect(get=ALL_405, post=_users("302", "302")),
    "card:card": Expect(
        get=_users("200"),
        post=_users("200"),
        bodies=lambda w: [{}, {"action": "test_connection"}],
    ),
    "card:card_of": Expect(
        get=STAFF_ONLY_200 | {"A": "200"},
        post=STAFF_ONLY_200 | {"A": "200|302", "staff": "200|302", "admin": "200|302"},
        kwargs=lambda w: {"code": w.a.code},
        bodies=lambda w: [{"action": "test_connection"}, _card_form(w)],
    ),
    "card:microsoft365_connect": Expect(get=_users("302"), post=_users("302")),
    "card:microsoft365_callback": Expect(get=_users("302"), post=_users("302")),
    "card:microsoft365_disconnect": Expect(get=ALL_405, post=_users("302")),
    # Google's sign-in: 503 "not configured" unless the test configured its client.
    "card:google_connect": Expect(get=_users("302|503"), post=_users("302|503")),
    "card:google_callback": Expect(get=_users("302"), post=_users("302")),
    "card:google_disconnect": Expect(get=ALL_405, post=_users("302")),
    "card:email_verification_send": Expect(get=ALL_405, post=_users("302")),
    # The verification link needs no login (the token is the proof, smtp_settings.verification):
    # a token that is not one is refused, explained, to everyone alike.
    "card:email_verify": Expect(
        get=_users("400", "400"), post=_users("400", "400"), kwargs=lambda w: {"token": "x.y:z"}
    ),
    "smtp_settings:system": Expect(get=STAFF_ONLY_200, post=STAFF_ONLY_200),
    "outbox:events": Expect(get=_users("200"), post=_users("200")),
    "outbox:message": Expect(
        get=OWN_OR_STAFF_200, post=OWN_OR_STAFF_200, kwargs=lambda w: {"pk": w.message.pk}
    ),
    "outbox:message_status": Expect(
        get=OWN_OR_STAFF_200, post=ALL_405, kwargs=lambda w: {"pk": w.message.pk}
    ),
    "outbox:test_email": Expect(get=ALL_405, post=_users("302")),
    # The sender's own cancel (issue 12, item 6): anyone else, staff too, gets 404 here (staff
    # cancel from the staff outbox). A's message is sent: the refusal is explained, back to it.
    "outbox:message_cancel": Expect(
        get=ALL_405,
        post=_same(anonymous="login", A="302", B="404", staff="404", admin="404"),
        kwargs=lambda w: {"pk": w.message.pk},
    ),
    # Staff only (issue 11: it shows everyone's mail), and then only with DEBUG on.
    "outbox:catcher": Expect(
        get=STAFF_ONLY_200 | {"staff": "404", "admin": "404"},
        post=STAFF_ONLY_200 | {"staff": "404", "admin": "404"},
    ),
    # Staff's outbox (issue 12): every user's messages, their raw .eml and the actions.
    "outbox:staff_outbox": Expect(get=STAFF_ONLY_200, post=ALL_405),
    "outbox:staff_message": Expect(
        get=STAFF_ONLY_200, post=ALL_405, kwargs=lambda w: {"pk": w.message.pk}
    ),
    # The world's message has a partial sender snapshot: it cannot be rebuilt, and staff are
    # sent back to its page with the reason (tests/outbox/test_staff_outbox.py downloads one).
    "outbox:staff_message_eml": Expect(
        get=STAFF_ONLY_200 | {"staff": "200|302", "admin": "200|302"},
        post=ALL_405,
        kwargs=lambda w: {"pk": w.message.pk},
    ),
    # A's message is sent: staff's cancel is refused (explained, back to the page).
    "outbox:staff_message_action": Expect(
        get=ALL_405,
        post=_same(anonymous="login", A="403", B="403", staff="302", admin="302"),
        kwargs=lambda w: {"pk": w.message.pk, "action": "cancel"},
    ),
    # Staff's inbound mail (issue 12): the raw bounces hold others' addresses and messages.
    "bounces:inbound_list": Expect(get=STAFF_ONLY_200, post=ALL_405),
    "bounces:inbound": Expect(
        get=STAFF_ONLY_200, post=ALL_405, kwargs=lambda w: {"pk": w.inbound.pk}
    ),
    "bounces:inbound_raw": Expect(
        get=STAFF_ONLY_200, post=ALL_405, kwargs=lambda w: {"pk": w.inbound.pk}
    ),
    # Staff's mail templates (issue 12, item 2): the company's wording, staff only. B's POSTs
    # would save and reset the world's template were a check missing; staff's do (302).
    "mail_templates:list": Expect(get=STAFF_ONLY_200, post=ALL_405),
    "mail_templates:edit": Expect(
        get=STAFF_ONLY_200,
        post=STAFF_ONLY_200 | {"staff": "200|302", "admin": "200|302"},
        kwargs=lambda w: {"kind": "invoice", "lang": "en"},
        bodies=lambda w: [
            {"action": "preview", "subject": "x", "body": "y", "record": w.invoice.number},
            {"action": "save", "subject": "Overwritten by someone else", "body": "<b>x</b>"},
            {"action": "reset"},
        ],
    ),
    "outbox:catcher_status": Expect(
        get=STAFF_ONLY_200 | {"staff": "404", "admin": "404"}, post=ALL_405
    ),
    "invoices:list": Expect(get=_users("200"), post=ALL_405),
    "invoices:send": Expect(
        get=ALL_405, post=_users("302"), bodies=lambda w: [{"invoice": [w.invoice.pk]}]
    ),
    # One invoice: every user sees it (shared by design) and may send it by e-mail; B's send
    # to an intruder's address goes through B's own sender, as B's message (test below).
    "invoices:invoice": Expect(
        get=_users("200"), post=ALL_405, kwargs=lambda w: {"pk": w.invoice.pk}
    ),
    "invoices:invoice_pdf": Expect(
        get=_users("200"), post=ALL_405, kwargs=lambda w: {"pk": w.invoice.pk}
    ),
    "invoices:invoice_compose": Expect(
        get=_users("200"),
        post=_users("200"),
        kwargs=lambda w: {"pk": w.invoice.pk},
        bodies=lambda w: [{}, {"to": "not an address", "subject": "x", "body": "x"}],
    ),
    # Customers (issue 12): the company's, every user's to read and write to. B's letter to the
    # shared customer goes through B's own sender, as B's message; A's messages in its history
    # show B only their time, state and sender (no marker). The customer composer's prefill
    # from A's message (?again=) is A's and staff's only (tests/invoices/test_customers.py).
    "invoices:customers": Expect(get=_users("200"), post=ALL_405),
    "invoices:customer": Expect(
        get=_users("200"), post=ALL_405, kwargs=lambda w: {"pk": w.invoice.customer_id}
    ),
    "invoices:customer_write": Expect(
        get=_users("200"),
        post=_users("200"),
        kwargs=lambda w: {"pk": w.invoice.customer_id},
        bodies=lambda w: [{}, {"to": "not an address", "subject": "x", "body": "x"}],
    ),
    "invoices:letters": Expect(get=_users("200"), post=ALL_405),
    "invoices:letter_new": Expect(get=_users("200"), post=_users("200")),
    "invoices:letter": Expect(
        get=_users("200"), post=ALL_405, kwargs=lambda w: {"pk": w.letter.pk}
    ),
    "invoices:letter_edit": Expect(
        get=AUTHOR_OR_STAFF,
        post=AUTHOR_OR_STAFF | {"A": "200|302", "staff": "200|302", "admin": "200|302"},
        kwargs=lambda w: {"pk": w.letter.pk},
        bodies=lambda w: [{}, {"subject": "Overwritten by someone else", "body": "<b>x</b>"}],
    ),
    "invoices:letter_send": Expect(
        get=ALL_405,
        post=_same(anonymous="login", A="302", B="403", staff="302", admin="302"),
        kwargs=lambda w: {"pk": w.letter.pk},
        bodies=lambda w: [{"customer": [w.invoice.customer_id]}],
    ),
    # A letter's unsubscribe link (RFC 8058): public, the signed token is the proof. A token
    # that is not one is a 404 page to everyone alike and opts nobody out; a valid one is
    # tried in tests/invoices/test_unsubscribe.py (it writes a customer, not A's rows).
    "invoices:unsubscribe": Expect(
        get=_users("404", "404"),
        post=_users("404", "404"),
        kwargs=lambda w: {"token": f"{w.invoice.customer_id}-{w.letter.pk}:forged"},
        bodies=lambda w: [{"List-Unsubscribe": "One-Click"}],
    ),
    "invoices:jobs": Expect(get=_users("200"), post=ALL_405),
    "invoices:job": Expect(
        get=OWN_OR_STAFF_200, post=ALL_405, kwargs=lambda w: {"pk": w.running_job.pk}
    ),
    "invoices:job_progress": Expect(
        get=OWN_OR_STAFF_200, post=ALL_405, kwargs=lambda w: {"pk": w.running_job.pk}
    ),
    "invoices:job_cancel": Expect(
        get=ALL_405,
        post=_same(anonymous="login", A="302", B="404", staff="302", admin="302"),
        kwargs=lambda w: {"pk": w.running_job.pk},
    ),
    "invoices:job_resume": Expect(
        get=ALL_405,
        post=_same(anonymous="login", A="302", B="404", staff="302", admin="302"),
        kwargs=lambda w: {"pk": w.cancelled_job.pk},
    ),
    "set_language": Expect(
        get=ALL_405, post=_users("302", "302"), bodies=lambda w: [{"language": "en"}]
    ),
}

# anymail's ESP webhooks (mounted for the bounce intake): no session, no CSRF token; the ESP's
# signature or basic auth is their check. Without credentials nothing may succeed: any 2xx/3xx
# is a failure. (An ESP that is not configured answers 500: its settings are missing.)
CSRF_EXEMPT = re.compile(r"^anymail:")
# A letter's one-click unsubscribe: the mailbox provider POSTs without cookie or token (RFC 8058
# §3.2), and all a POST can do is opt out the one customer its signed token names.
CSRF_EXEMPT_UNSUBSCRIBE = "invoices:unsubscribe"
REFUSED = "refused"  # 4xx or 5xx


def _admin_expect(route: Route, world: World) -> Expect | None:
    """The admin site: for staff only. Non-staff get the admin login page; a staff user without
    model permissions gets 403 (or the empty index); the superuser gets the pages."""
    if not route.name.startswith("admin:"):
        return None
    name = route.name.removeprefix("admin:")
    non_staff = "admin-login"
    # The superuser too meets 403 (adding a singleton, autocomplete without its parameters) and
    # 405 (a GET-only page): what matters is that no one but staff gets past the login.
    staff = admin = "200|302|403|404|405"
    kwargs: dict = {}
    if name == "login":
        return Expect(get=_users("200|302", "200"), post=_users("200|302", "200"))
    if name == "logout":  # non-staff are sent to the admin index (then to its login page)
        non_staff = "302"
    if name in ("password_change", "password_change_done", "index", "logout", "jsi18n"):
        staff = admin = "200|302|405"
    if name == "app_list":
        kwargs = {"app_label": "accounts"}
    if name == "view_on_site":
        kwargs = {
            "content_type_id": ContentType.objects.get_for_model(User).pk,
            "object_id": world.a.pk,
        }
    if name.startswith("?"):  # the unnamed object-id redirect of a model, or the catch-all
        return Expect(
            get=_same(anonymous=non_staff, A=non_staff, B=non_staff, staff=staff, admin=admin),
            post=_same(anonymous=non_staff, A=non_staff, B=non_staff, staff=staff, admin=admin),
            kwargs=lambda w: {"__path__": _unnamed_admin_path(route, w)},
        )
    match = re.fullmatch(r"(\w+?_\w+?)_(changelist|add|history|delete|change)", name)
    if name == "auth_user_password_change":
        kwargs = {"id": world.a.pk}
    elif match and match.group(2) in ("history", "delete", "change"):
        kwargs = {"object_id": world.objects[match.group(1)].pk}
    final = dict(kwargs)
    expect = _same(anonymous=non_staff, A=non_staff, B=non_staff, staff=staff, admin=admin)
    return Expect(get=expect, post=expect, kwargs=lambda w: final)


def _unnamed_admin_path(route: Route, world: World) -> str:
    if "(?P<url>" in route.route:
        return "/admin/no-such-page/"
    model = route.route.removeprefix("admin/").split("/<")[0].replace("/", "_")
    return f"/admin/{route.route.split('/<')[0].removeprefix('admin/')}/{world.objects[model].pk}/"


def expectation(route: Route, world: World) -> Expect | None:
    if CSRF_EXEMPT.match(route.name):
        refused = _users(REFUSED, REFUSED)
        return Expect(get=refused, post=refused)
    return EXPECT.get(route.name) or _admin_expect(route, world)


def url_of(route: Route, expect: Expect, world: World) -> str:
    kwargs = expect.kwargs(world)
    if "__path__" in kwargs:
        return kwargs["__path__"]
    if route.name.startswith("anymail:") and "(" in route.route:
        return "/anymail/mailgun/inbound/"
    return reverse(route.name, kwargs=kwargs or None)


# -- running the matrix ------------------------------------------------------------------------
def _matches(expected: str, response, path: str) -> bool:
    status = response.status_code
    if expected == REFUSED:
        return status >= 400
    if expected in ("login", "admin-login"):
        target = f"{LOGIN}?next=" if expected == "login" else ADMIN_LOGIN
        return status == 302 and response["Location"].startswith(target)
    return str(status) in expected.split("|")


@pytest.fixture
def world(db, smtp_servers, m365_settings, google_settings) -> World:
    return _build_world(smtp_servers)


def _client(world: World, actor: str, **options) -> Client:
    client = Client(raise_request_exception=False, **options)
    if actor != "anonymous":
        client.force_login(world.users[actor])
    return client


def test_every_url_has_expectations(world):
    missing = [r.route for r in all_routes() if expectation(r, world) is None]
    assert not missing, f"URLs without a row in the access table: {missing}"


def test_access_matrix(world, figures, caplog):
    caplog.set_level(logging.CRITICAL, logger="django.request")  # 404s, 403s, anymail's 500s
    routes = all_routes()
    before = a_rows(world)
    wrong: list[str] = []
    reads: list[str] = []
    writes: list[str] = []
    requests = 0
    # A's own requests last but one, the superuser's last: their POSTs change A's rows by design.
    for actor in ("anonymous", "B", "staff", "A", "admin"):
        client = _client(world, actor)
        for route in routes:
            if CSRF_EXEMPT.match(route.name) and actor != "anonymous":
                continue  # ESP webhooks take no session: asked once, without credentials
            expect = expectation(route, world)
            url = url_of(route, expect, world)
            calls = [("GET", None)] + [("POST", body) for body in expect.bodies(world)]
            for method, body in calls:
                rows = a_rows(world) if actor in ("anonymous", "B") else None
                if method == "GET":
                    response = client.get(url)
                    expected = expect.get[actor]
                else:
                    response = client.post(url, body)
                    expected = expect.post[actor]
                requests += 1
                where = f"{actor} {method} {url} {sorted(body) if body else ''}"
                if not _matches(expected, response, url):
                    wrong.append(f"{where}: {response.status_code}, expected {expected}")
                if actor in ("anonymous", "B"):
                    text = response.content.decode("utf-8", "replace")
                    if response.status_code == 200 and world.marker in text:
                        reads.append(where)
                    if a_rows(world) != rows:
                        writes.append(where)
                if "log" in route.name and actor != "anonymous":  # log in / out: a new session
                    client = _client(world, actor)
    assert a_rows(world) != before  # A and the superuser did change A's rows: the dump sees it

    figures.add("access", "requests in the matrix (URLs × actors × methods)", requests)
    figures.add("access", "URL patterns covered", len(routes))
    figures.add("access", "responses other than expected", len(wrong), "= 0")
    figures.add("access", "cross-user reads", len(reads), "= 0")
    figures.add("access", "cross-user writes", len(writes), "= 0")
    assert not (reads or writes or wrong), "\n".join(
        [f"cross-user read: {r}" for r in reads]
        + [f"cross-user write: {w}" for w in writes]
        + [f"unexpected: {w}" for w in wrong]
    )


def test_staff_see_what_the_design_gives_them_and_b_sees_his_own(world):
    """The checks above could pass on empty pages: A, staff and admin do see A's data, and B's
    own pages work for B."""
    marker = world.marker
    for actor, url in (
        ("A", "/events/"),
        ("A", f"/outbox/{world.message.pk}/"),
        ("A", f"/jobs/{world.running_job.pk}/"),
        ("A", "/jobs/"),
        ("A", "/accounts/card/"),
        ("staff", f"/accounts/card/{world.a.code}/"),
        ("staff", "/events/"),
        ("staff", f"/jobs/{world.running_job.pk}/"),
        (
            "admin",
            f"/admin/smtp_settings/senderprofile/{world.objects['smtp_settings_senderprofile'].pk}/change/",
        ),
    ):
        response = _client(world, actor).get(url)
        assert response.status_code == 200 and marker in response.content.decode(), (actor, url)
    b = _client(world, "B")
    assert "Bob B" in b.get("/accounts/card/").content.decode()
    assert b.get("/jobs/").status_code == 200


def test_every_post_endpoint_checks_csrf(world, figures):
    without, exempt = [], []
    for route in all_routes():
        expect = expectation(route, world)
        url = url_of(route, expect, world)
        if CSRF_EXEMPT.match(route.name) or route.name == CSRF_EXEMPT_UNSUBSCRIBE:
            exempt.append(url)
            continue
        for actor in ("admin", "A"):
            response = _client(world, actor, enforce_csrf_checks=True).post(url, {})
            if response.status_code != 403:
                without.append(f"{actor} POST {url}: {response.status_code}")
    figures.add("access", "POST endpoints without CSRF", len(without), "= 0")
    figures.add(
        "access", "CSRF-exempt by design (anymail ESP webhooks, letters' unsubscribe)", len(exempt)
    )
    assert not without, without
    # The same POST with the token from a page goes through (the 403 above is the CSRF check).
    client = _client(world, "A", enforce_csrf_checks=True)
    page = client.get("/accounts/card/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]
    assert (
        client.post("/i18n/setlang/", {"language": "en", "csrfmiddlewaretoken": token}).status_code
        == 302
    )


# -- Microsoft 365: the OAuth state is bound to the session and the user -----------------------
CONNECT = "/accounts/microsoft365/connect/"
CALLBACK = "/accounts/microsoft365/callback/"


def _start(client: Client, provider, sub: str, address: str) -> dict[str, str]:
    provider.add_user(sub, address)
    started = client.get(CONNECT)
    assert started.status_code == 302
    return provider.sign_in(started["Location"], sub)


def _b_state(world: World) -> tuple:
    b = world.users["B"]
    return (
        list(OAuthConnection.objects.filter(user=b).values()),
        list(SenderProfile.objects.filter(user=b).values()),
    )


def test_the_oauth_state_is_bound_to_session_and_user(world, m365_settings, figures):
    provider = m365_settings.provider
    a, b = world.users["A"], world.users["B"]
    OAuthConnection.objects.filter(user=a).delete()
    a_address = "anna@contoso.test"
    accepted: list[str] = []

    def attempt(name: str, client: Client, params: dict, user: User) -> None:
        before_a, before_b = a_rows(world), _b_state(world)
        response = client.get(CALLBACK, params, follow=True)
        stored = OAuthConnection.objects.filter(user=user).exists()
        if stored or a_rows(world) != before_a or _b_state(world) != before_b:
            accepted.append(name)
        assert response.status_code == 200, name

    # 1. A's code and state, delivered to B's session (B has no flow of his own).
    annas, bobs = _client(world, "A"), _client(world, "B")
    params = _start(annas, provider, "anna", a_address)
    attempt("A's callback in B's session", bobs, params, b)
    # 2. B has a flow of his own; A's code and state are completed in it (state mismatch).
    _start(bobs, provider, "bob", "bob@contoso.test")
    attempt("A's callback in B's session with B's flow", bobs, params, b)
    # 3. A's whole flow copied into B's session (a fixated session): the flow names A.
    params = _start(annas, provider, "anna", a_address)
    flow = annas.session[oauth_flows.SESSION_KEY]
    session = bobs.session
    session[oauth_flows.SESSION_KEY] = flow
    session.save()
    attempt("A's flow moved into B's session", bobs, params, b)
    # 4. A forged state in A's own session.
    params = _start(annas, provider, "anna", a_address)
    attempt("a forged state", annas, {**params, "state": "forged"}, a)
    # 5. A replayed callback after a successful one.
    params = _start(annas, provider, "anna", a_address)
    ok = annas.get(CALLBACK, params)
    assert ok.status_code == 302 and OAuthConnection.objects.filter(user=a).exists()
    OAuthConnection.objects.filter(user=a).delete()
    attempt("a replayed callback", annas, params, a)

    figures.add("access", "OAuth state not bound (of 5 foreign callbacks)", len(accepted), "= 0")
    assert not accepted, accepted
