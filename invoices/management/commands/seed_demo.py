"""`manage.py seed_demo`: a demo company, an admin and one user in each sender mode.

Idempotent: running it again resets the demo users' cards and senders, nothing else. Demo
invoices are added on the first run only (`make run` runs it at every start), unless
`--invoices N` asks for N more.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from invoices.demo import seed_invoices
from invoices.models import Invoice
from smtp_settings.models import Security, SenderMode
from smtp_settings.services import company_update, profile_update

DEMO_USERS = [
    # code, name, group, e-mail, staff, mode
    ("ADMIN", "Admin Directo", "SUPER_PL", "admin@demo.example", True, SenderMode.DEFAULT),
    ("ANNA", "Anna Kowalska", "KSIEGOWOSC", "anna@demo.example", False, SenderMode.DEFAULT),
    ("SMTP", "Piotr Nowak", "KSIEGOWOSC", "piotr@demo.example", False, SenderMode.SMTP),
    ("M365", "Toomas Tamm", "SPRZEDAZ", "toomas@demo.example", False, SenderMode.MICROSOFT365),
    ("REPLY", "Ewa Wiśniewska", "SPRZEDAZ", "ewa@demo.example", False, SenderMode.REPLY_TO),
]


class Command(BaseCommand):
    help = "Create a demo company, an admin and one user in each sender mode."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--password", default="demo", help="login password of demo users")
        parser.add_argument("--customers", type=int, default=5, help="demo customers to have")
        parser.add_argument(
            "--invoices",
            type=int,
            default=None,
            help="unsent invoices to add (default: 10 on the first run, none after)",
        )
        parser.add_argument(
            "--pdfs-at-send",
            action="store_true",
            help="leave the PDFs to be rendered when the invoices are sent (by default the "
            "worker renders them now, as when an ERP issues invoices)",
        )

    @transaction.atomic
    def handle(
        self,
        *args,
        password: str,
        customers: int,
        invoices: int | None,
        pdfs_at_send: bool,
        **options,
    ) -> None:
        company_update(name="Demo Sp. z o.o.", slug="demo")
        catcher_host = settings.EMAIL_HOST or "127.0.0.1"
        for code, name, group, email, staff, mode in DEMO_USERS:
            user, created = User.objects.update_or_create(
                code=code,
                defaults={
                    "name": name,
                    "group": group,
                    "email": email,
                    # The demo addresses count as verified (issue 11): `make run` sends from
                    # them at once, as before; a real user verifies theirs by a mailed link.
                    "email_verified_address": email,
                    "email_verified_at": timezone.now(),
                    "is_staff": staff,
                    "is_superuser": staff,
                },
            )
            if created:
                user.set_password(password)
                user.save(update_fields=["password"])
            fields: dict = {"mode": mode}
            if mode == SenderMode.SMTP:
                # The demo's own server is the local mail catcher (no login, no encryption).
                fields.update(
                    host=catcher_host, port=settings.EMAIL_PORT, security=Security.NONE, login=""
                )
            elif mode == SenderMode.MICROSOFT365:
                fields.update(login=email)
            profile = profile_update(user=user, **fields)
            if mode == SenderMode.SMTP:
                # As the demo addresses count as verified: the demo's own server is the local
                # mail catcher `make run` starts next, and counts as tested, so the demo can
                # mass-mail at once (a real user's server unlocks after a passed test, issue 14).
                profile.mark_tested(timezone.now())
                profile.save(update_fields=profile.TESTED_FIELDS)
            self.stdout.write(f"{code:6} {mode:13} {email}")
        if invoices is None:
            invoices = 0 if Invoice.objects.exists() else 10
        made = seed_invoices(customers=customers, invoices=invoices, issue=not pdfs_at_send)
        self.stdout.write(f"{made} invoices added for {customers} customers")
        self.stdout.write(self.style.SUCCESS(f"Demo users ready; their password is “{password}”."))
