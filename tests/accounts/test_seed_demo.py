"""`manage.py seed_demo`, which `make run` runs at every start (issue 14, item 6)."""

import io

import pytest
from django.core.management import call_command

from accounts.models import User
from invoices.models import Invoice

pytestmark = pytest.mark.django_db


def _seed(**options) -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out, **options)
    return out.getvalue()


def test_demo_invoices_are_added_on_the_first_start_only():
    assert "10 invoices added" in _seed()
    first = set(Invoice.objects.values_list("number", flat=True))
    assert len(first) == 10
    assert "0 invoices added" in _seed()  # the next `make run`
    assert set(Invoice.objects.values_list("number", flat=True)) == first


def test_more_invoices_when_asked_for():
    _seed()
    _seed(invoices=5)
    assert Invoice.objects.count() == 15


def test_a_second_start_keeps_a_changed_password():
    _seed()
    user = User.objects.get(code="ANNA")
    user.set_password("changed by the user")
    user.save()
    _seed()
    user.refresh_from_db()
    assert user.check_password("changed by the user")


def test_the_demo_smtp_user_may_mass_mail_at_once():
    from invoices.services import mass_mailing_sender

    _seed()
    assert mass_mailing_sender(user=User.objects.get(code="SMTP")).mass_mailing_allowed
