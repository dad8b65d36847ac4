"""Customers and their invoices (S1.2: what the mass e-mail module sends)."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models.functions import Length
from django.utils.translation import gettext_lazy as _


class Customer(models.Model):
    name = models.CharField(_("name"), max_length=200)
    # One or more addresses; invoices go to all of them.
    emails = models.JSONField(_("e-mail addresses"), default=list)
    language = models.CharField(
        _("language"), max_length=10, choices=settings.LANGUAGES, default="pl"
    )
    address = models.TextField(_("address"), blank=True)
    # Addresses that hard-bounced (bounces.services): {address: ISO date}. Bulk jobs skip them
    # unless the sender says otherwise; correcting the address clears it.
    bounced_emails = models.JSONField(_("addresses that bounced"), default=dict, blank=True)
    # Letters only (issue 12, item 7): set by the unsubscribe link of a letter (RFC 8058), so
    # later letter jobs skip the customer; invoices are transactional and still go. Staff can
    # clear it in the admin ("re-subscribe").
    letters_opted_out_at = models.DateTimeField(_("opted out of letters"), null=True, blank=True)
    letters_opted_out_letter = models.ForeignKey(
        "Letter",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("opted out through the letter"),
    )

    class Meta:
        verbose_name = _("customer")
        verbose_name_plural = _("customers")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        # A corrected address is a new address: only the ones still on the record stay flagged.
        current = {address.lower() for address in self.emails}
        self.bounced_emails = {a: d for a, d in self.bounced_emails.items() if a in current}
        super().save(*args, **kwargs)


class SendState(models.TextChoices):
    UNSENT = "unsent", _("not sent")
    QUEUED = "queued", _("sending")
    SENT = "sent", _("sent")
    FAILED = "failed", _("failed")
    BOUNCED = "bounced", _("bounced")


class Invoice(models.Model):
    number = models.CharField(_("number"), max_length=40, unique=True)
    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="invoices", verbose_name=_("customer")
    )
    issue_date = models.DateField(_("issue date"))
    due_date = models.DateField(_("due date"))
    currency = models.CharField(_("currency"), max_length=3, default="PLN")
    total_net = models.DecimalField(_("net"), max_digits=12, decimal_places=2, default=0)
    total_vat = models.DecimalField(_("VAT"), max_digits=12, decimal_places=2, default=0)
    total_gross = models.DecimalField(_("gross"), max_digits=12, decimal_places=2, default=0)
    send_state = models.CharField(
        _("sending"), max_length=10, choices=SendState.choices, default=SendState.UNSENT
    )
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)
    # The bulk job that claimed it last; its task builds the invoice's message.
    job = models.ForeignKey(
        "outbox.BulkJob",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("bulk job"),
    )
    # Rendered once and kept (a one-page PDF costs a few milliseconds; keep it anyway).
    pdf = models.FileField(upload_to="invoices/%Y/", blank=True)

    class Meta:
        verbose_name = _("invoice")
        verbose_name_plural = _("invoices")
        # Numbers in natural order (FV/10 after FV/9, not between FV/1 and FV/2): the longer
        # number first, then the number itself, within a day.
        ordering = ["-issue_date", Length("number").desc(), "-number"]
        indexes = [models.Index(fields=["send_state"])]

    def __str__(self) -> str:
        return self.number

    def recalculate(self) -> None:
        lines = list(self.lines.all())
        self.total_net = sum((line.net for line in lines), Decimal("0.00"))
        self.total_vat = sum((line.vat for line in lines), Decimal("0.00"))
        self.total_gross = self.total_net + self.total_vat


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    description = models.CharField(_("description"), max_length=200)
    quantity = models.DecimalField(_("quantity"), max_digits=10, decimal_places=2, default=1)
    unit_price = models.DecimalField(_("unit price"), max_digits=12, decimal_places=2)
    vat_rate = models.DecimalField(_("VAT %"), max_digits=4, decimal_places=1, default=23)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.description

    @property
    def net(self) -> Decimal:
        return (self.quantity * self.unit_price).quantize(Decimal("0.01"))

    @property
    def vat(self) -> Decimal:
        return (self.net * self.vat_rate / 100).quantize(Decimal("0.01"))


class Letter(models.Model):
    """A letter to customers: subject and plain-text body with placeholders such as
    {{ customer.name }} (invoices.letters renders them in a restricted context)."""

    subject = models.CharField(_("subject"), max_length=200)
    body = models.TextField(_("body"))
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="letters",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("letter")
        verbose_name_plural = _("letters")
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.subject


class LetterDelivery(models.Model):
    """A letter taken for a customer: claimed in the transaction that queues its message, so
    a letter never goes twice to the same customer. A cancelled or failed message gives the
    claim up to the next job (which then points `message` at its own); one that may have
    arrived (possibly sent twice) never does."""

    letter = models.ForeignKey(Letter, on_delete=models.CASCADE, related_name="deliveries")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    message = models.ForeignKey(
        "outbox.OutgoingMessage", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("letter delivery")
        verbose_name_plural = _("letter deliveries")
        constraints = [
            models.UniqueConstraint(fields=["letter", "customer"], name="letter_once_per_customer")
        ]

    def __str__(self) -> str:
        return f"{self.letter_id} → {self.customer_id}"
