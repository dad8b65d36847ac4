"""Kept font subsets (issue 13, item 6): an invoice PDF is byte for byte what reportlab makes
without them, whichever subsets were kept before it, and the kept ones are reused."""

from __future__ import annotations

import pytest
from reportlab import rl_config
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFontFace

from invoices.demo import seed_invoices
from invoices.models import Customer, Invoice
from invoices.pdf import _fonts, _KeptSubsetFace, render_invoice_pdf

pytestmark = pytest.mark.django_db

NAMES = ["Zakład Usług Różnych", "Łódzka Spółdzielnia", "Õismäe Kübarad OÜ", "ACME", "Żółw"]


def _render_all(invoices) -> list[bytes]:
    return [render_invoice_pdf(invoice, seller="Firma Sp. z o.o.") for invoice in invoices]


def test_kept_subsets_change_no_byte(monkeypatch):
    monkeypatch.setattr(rl_config, "invariant", 1)  # no timestamps or random ids
    seed_invoices(customers=5, invoices=15)
    for customer, name in zip(Customer.objects.order_by("pk"), NAMES, strict=True):
        customer.name = name
        customer.save(update_fields=["name"])
    invoices = list(Invoice.objects.select_related("customer").order_by("pk"))
    faces = [pdfmetrics.getFont(name).face for name in _fonts()]
    assert all(isinstance(face, _KeptSubsetFace) for face in faces)
    _KeptSubsetFace._subset.cache_clear()

    kept = _render_all(invoices) + _render_all(reversed(invoices))  # misses, then hits
    hits = _KeptSubsetFace._subset.cache_info().hits
    try:
        for face in faces:
            face.__class__ = TTFontFace  # reportlab's own, nothing kept
        plain = _render_all(invoices) + _render_all(reversed(invoices))
    finally:
        for face in faces:
            face.__class__ = _KeptSubsetFace

    assert hits >= len(invoices)  # the second round reused what the first kept
    assert kept == plain
    assert len(set(plain)) == len(invoices)  # and the invoices did differ
