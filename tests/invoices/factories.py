"""Factories for customers and invoices (tests/factories.py has users and sender profiles)."""

from __future__ import annotations

import datetime
import itertools
from decimal import Decimal

from accounts.models import User
from invoices.models import Customer, Invoice, InvoiceLine
from tests import factories

_seq = itertools.count(1)


def customer(name: str | None = None, *, emails: list[str] | None = None, **fields) -> Customer:
    return _new_customer(name, emails=emails, **fields)


def _new_customer(name: str | None, *, emails: list[str] | None, **fields) -> Customer:
    n = next(_seq)
    name = name or f"Customer {n}"
    fields.setdefault("language", "pl")
    return Customer.objects.create(
        name=name, emails=[f"billing{n}@customer.example"] if emails is None else emails, **fields
    )


def invoice(number: str | None = None, *, customer: Customer | None = None, **fields) -> Invoice:
    """An invoice with one line (1 × 100.00 at 23 % VAT) and its totals computed."""
    customer = customer or _new_customer(None, emails=None)
    fields.setdefault("issue_date", datetime.date(2026, 11, 2))
    fields.setdefault("due_date", datetime.date(2026, 11, 16))
    made = Invoice.objects.create(
        number=number or f"FV/{next(_seq)}/2026", customer=customer, **fields
    )
    InvoiceLine.objects.create(
        invoice=made, description="Usługa księgowa / Accounting", unit_price=Decimal("100.00")
    )
    made.recalculate()
    made.save(update_fields=["total_net", "total_vat", "total_gross"])
    return made


def invoices(count: int, **fields) -> list[Invoice]:
    return [invoice(**fields) for _ in range(count)]


def smtp_sender(code: str, server, **card) -> User:
    """A user whose card sends through `server` (a tests.smtp_fixtures server, no TLS, no AUTH):
    mass mailing allowed."""
    card.setdefault("email", f"{code.lower()}@acme.example")
    user = factories.user(code, **card)
    factories.profile(user, host=server.host, port=server.port, security="none")
    return user


def smtp_user_without_server(code: str) -> User:
    """A user with an SMTP sender the worker never reaches (plain `db` tests)."""
    user = factories.user(code)
    factories.profile(user, host="smtp.acme.example", port=587, security="starttls")
    return user
