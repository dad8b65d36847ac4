"""Demo and load data: customers and unsent invoices (`seed_demo --customers N --invoices N`)."""

from __future__ import annotations

import datetime
import random
from decimal import Decimal

from django.db import transaction

from .models import Customer, Invoice, InvoiceLine
from .services import invoices_issued

_SERVICES = ["Usługa księgowa", "Raport kwartalny", "Konsultacja", "Licencja ERP", "Szkolenie"]


@transaction.atomic
def seed_invoices(*, customers: int, invoices: int, issue: bool = False) -> int:
    """Make sure `customers` demo customers exist and add `invoices` unsent invoices to them.
    With `issue` they are issued as an ERP issues them: their PDFs are rendered by the worker
    (invoices_issued) once this commits."""
    have = Customer.objects.filter(name__startswith="Demo customer").count()
    Customer.objects.bulk_create(
        Customer(
            name=f"Demo customer {n}",
            emails=[f"customer{n}@example.com"],
            language=("pl", "en", "et")[n % 3],
        )
        for n in range(have + 1, customers + 1)
    )
    pool = list(Customer.objects.filter(name__startswith="Demo customer")[:customers])
    if not pool or invoices <= 0:
        return 0
    rng = random.Random(invoices)  # noqa: S311  (demo amounts, not a secret)
    start = Invoice.objects.count() + 1
    today = datetime.date.today()
    new = Invoice.objects.bulk_create(
        Invoice(
            number=f"FV/{start + n}/{today.year}",
            customer=pool[n % len(pool)],
            issue_date=today,
            due_date=today + datetime.timedelta(days=14),
        )
        for n in range(invoices)
    )
    lines = [
        InvoiceLine(
            invoice=invoice,
            description=rng.choice(_SERVICES),
            quantity=Decimal(rng.randint(1, 5)),
            unit_price=Decimal(rng.randint(50, 900)),
        )
        for invoice in new
    ]
    InvoiceLine.objects.bulk_create(lines)
    for invoice, line in zip(new, lines, strict=True):
        invoice.total_net, invoice.total_vat = line.net, line.vat
        invoice.total_gross = line.net + line.vat
    Invoice.objects.bulk_update(new, ["total_net", "total_vat", "total_gross"])
    if issue:
        invoices_issued(invoice_ids=[invoice.pk for invoice in new])
    return len(new)
