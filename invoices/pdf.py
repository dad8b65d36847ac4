"""A one-page invoice PDF with reportlab's canvas (~2 ms a page; WeasyPrint costs ~100 ms).

DejaVu Sans ships with the app (invoices/fonts, free license): the PDF base fonts have no
Polish or Estonian letters.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Container
from pathlib import Path

from django.core.files.base import ContentFile
from django.utils import translation
from django.utils.translation import gettext as _
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfdoc, pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont, TTFontFace
from reportlab.pdfgen import canvas

from .models import Invoice

FONTS = Path(__file__).resolve().parent / "fonts"


class _KeptFlate(pdfdoc.PDFStreamFilterZCompress):
    """reportlab's FlateDecode filter, remembering its last results: the same font subset
    compressed again gives the same bytes, so they are kept (LRU, bounded)."""

    @functools.lru_cache(maxsize=64)  # noqa: B019 (one module-level instance, lives forever)
    def encode(self, text: bytes) -> bytes:
        return super().encode(text)


_KEPT_FLATE = _KeptFlate()


class _KeptSubsetFace(TTFontFace):
    """A font face that builds each glyph subset once (issue 13, item 6).

    reportlab cuts a TrueType subset of the glyphs each PDF uses and compresses it, per
    document: over a third of a one-page invoice's CPU. Invoices use much the same characters
    (the ASCII ones keep fixed codes; the few others, Polish or Estonian letters, come in the
    order of first use), so the same subset recurs, and with it the same bytes: both the
    subset and its compressed form are kept (LRU, bounded). The PDF is byte for byte what
    reportlab makes without it (tests/invoices/test_pdf_speed.py).
    """

    @functools.lru_cache(maxsize=64)  # noqa: B019 (one instance per font, lives forever)
    def _subset(self, subset: tuple[int, ...]) -> bytes:
        return TTFontFace.makeSubset(self, list(subset))

    def makeSubset(self, subset):
        return self._subset(tuple(subset))

    def addSubsetObjects(self, doc, fontname, subset):
        reference = super().addSubsetObjects(doc, fontname, subset)
        stream = doc.idToObject[f"fontFile:{self.filename}({fontname})"]
        if stream.filters:
            stream.filters = [_KEPT_FLATE]
        return reference


def _font(name: str, path: Path) -> str:
    font = TTFont(name, path)
    font.face.__class__ = _KeptSubsetFace  # the face reportlab read, with kept subsets
    pdfmetrics.registerFont(font)
    return name


@functools.cache
def _fonts() -> tuple[str, str]:
    return (
        _font("DejaVuSans", FONTS / "DejaVuSans.ttf"),
        _font("DejaVuSans-Bold", FONTS / "DejaVuSans-Bold.ttf"),
    )


def render_invoice_pdf(invoice: Invoice, *, seller: str) -> bytes:
    regular, bold = _fonts()
    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=A4, pageCompression=1)
    page.setTitle(invoice.number)
    _width, height = A4
    with translation.override(invoice.customer.language):
        page.setFont(bold, 18)
        page.drawString(
            20 * mm, height - 25 * mm, _("Invoice %(number)s") % {"number": invoice.number}
        )
        page.setFont(regular, 10)
        page.drawString(20 * mm, height - 35 * mm, seller)
        page.drawString(
            20 * mm, height - 45 * mm, _("Customer: %(name)s") % {"name": invoice.customer.name}
        )
        page.drawString(
            20 * mm,
            height - 51 * mm,
            _("Issued %(issued)s, due %(due)s")
            % {"issued": invoice.issue_date.isoformat(), "due": invoice.due_date.isoformat()},
        )
        y = height - 65 * mm
        page.setFont(bold, 10)
        for x, title in (
            (20, _("Description")),
            (120, _("Quantity")),
            (145, _("Net")),
            (170, _("VAT")),
        ):
            page.drawString(x * mm, y, title)
        page.setFont(regular, 10)
        for line in invoice.lines.all():
            y -= 6 * mm
            page.drawString(20 * mm, y, line.description[:60])
            page.drawRightString(135 * mm, y, f"{line.quantity}")
            page.drawRightString(162 * mm, y, f"{line.net}")
            page.drawRightString(185 * mm, y, f"{line.vat}")
        y -= 12 * mm
        page.setFont(bold, 11)
        page.drawRightString(
            185 * mm,
            y,
            _("Total: %(amount)s %(currency)s")
            % {"amount": invoice.total_gross, "currency": invoice.currency},
        )
    page.showPage()
    page.save()
    return buffer.getvalue()


def invoice_pdf(invoice: Invoice, *, seller: str, kept: Container[str] | None = None) -> str:
    """The storage name of the invoice's PDF: rendered the first time, then kept and reused
    (a message attaches that very file, never a copy). A kept name whose file this storage
    does not have (kept on another machine's disk, or before FILE_STORAGE changed) is
    rendered and kept again. `kept` are the names the caller knows the storage has (a chunk's,
    looked up in one query: filestore.storage.stored_sizes); else the storage is asked."""
    if invoice.pdf and (
        invoice.pdf.name in kept
        if kept is not None
        else invoice.pdf.storage.exists(invoice.pdf.name)
    ):
        return invoice.pdf.name
    previous = invoice.pdf.name or ""
    content = render_invoice_pdf(invoice, seller=seller)
    invoice.pdf.save(f"{invoice.number.replace('/', '-')}.pdf", ContentFile(content), save=False)
    if Invoice.objects.filter(pk=invoice.pk, pdf=previous).update(pdf=invoice.pdf.name):
        return invoice.pdf.name
    # Another process kept one meanwhile (the issue's render task and a job's builder at the
    # same invoice): that one is the invoice's, and ours is not kept (no second file, no orphan).
    # If that file is not in this storage (kept on another machine's disk), ours is kept.
    theirs = Invoice.objects.filter(pk=invoice.pk).values_list("pdf", flat=True).first()
    if theirs and invoice.pdf.storage.exists(theirs):
        invoice.pdf.storage.delete(invoice.pdf.name)
        invoice.pdf.name = theirs
        return theirs
    Invoice.objects.filter(pk=invoice.pk).update(pdf=invoice.pdf.name)
    return invoice.pdf.name
