"""The domain check on the card, and Default mode going by it (issue 14, item 1).

Against the local DNS server (tests/dns_fixtures.py) and, for the mail itself, the real relay
test server and Celery worker. An abuser's goals tried here: run script in a staff member's
browser through DNS text they publish, make the platform look up DNS without end by pressing
"Check again", and flip a domain's verdict with a DNS outage.
"""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from outbox.models import MessageState
from outbox.services import outbox_enqueue
from smtp_settings.models import DomainCheck, SenderMode
from smtp_settings.selectors import sender_config_for
from tests import factories
from tests.dns_fixtures import PLATFORM_INCLUDE, free_udp_port
from tests.outbox.waiting import settled

pytestmark = [pytest.mark.usefixtures("english", "platform_dns")]
CARD_URL = "/accounts/card/"


def _card(client, user, **post) -> str:
    client.force_login(user)
    response = client.post(CARD_URL, post) if post else client.get(CARD_URL)
    assert response.status_code == 200
    return response.content.decode()


def _default_user(email: str, code: str = "EWA", **fields):
    factories.company(slug="acme")
    user = factories.user(code, name="Ewa", email=email, **fields)
    factories.profile(user, mode=SenderMode.DEFAULT)
    return user


@pytest.mark.django_db
def test_a_domain_that_rejects_the_platform_sends_reply_to_style_and_the_card_says_why(
    client, settings
):
    user = _default_user("ewa@rejects.test")
    html = _card(client, user)
    assert "Your domain rejects.test" in html
    assert "fails SPF/DMARC (SPF softfail, DMARC policy reject)" in html
    assert f"v=spf1 include:_spf.google.com include:{PLATFORM_INCLUDE} ~all" in html
    assert "does not let the platform's server send as you" in html
    config = sender_config_for(user=user)
    assert config.from_email == f"acme@{settings.EVENT_MAIL_DOMAIN}"
    assert config.reply_to == "ewa@rejects.test"
    assert config.verp
    assert DomainCheck.objects.get(domain="rejects.test").verdict["recommendation"] == "reply_to"


@pytest.mark.django_db
def test_a_domain_that_includes_the_platform_sends_from_the_card_email(client):
    user = _default_user("ewa@includes.test")
    html = _card(client, user)
    assert "The platform may send as you: includes.test allows it." in html
    assert "publishes this TXT record" not in html
    config = sender_config_for(user=user)
    assert config.from_email == "ewa@includes.test"
    assert not config.verp


@pytest.mark.django_db
def test_no_records_keeps_default_and_suggests_the_record(client):
    user = _default_user("ewa@bare.test")
    html = _card(client, user)
    assert "delivered but not authenticated" in html
    assert f"v=spf1 include:{PLATFORM_INCLUDE} ~all" in html
    assert sender_config_for(user=user).from_email == "ewa@bare.test"


@pytest.mark.django_db
def test_dns_text_is_shown_as_text_on_a_staff_members_screen(client):
    user = _default_user("ewa@xss.test")
    staff = factories.user("ADMIN", email="admin@includes.test", is_staff=True)
    client.force_login(staff)
    html = client.get(f"/accounts/card/{user.code}/").content.decode()
    assert "Your domain xss.test" in html
    assert "<img/src=x" not in html and "<script>alert(2)" not in html
    assert "&lt;img/src=x/onerror=alert(1)&gt;" in html


@pytest.mark.django_db
def test_check_again_looks_up_at_most_once_a_minute(client, platform_dns):
    user = _default_user("ewa@rejects.test")
    _card(client, user)
    before = platform_dns.count("rejects.test")
    for _ in range(5):
        _card(client, user, action="check_domain")
    assert platform_dns.count("rejects.test") == before  # the stored verdict answered
    DomainCheck.objects.update(checked_at=timezone.now() - datetime.timedelta(minutes=2))
    _card(client, user, action="check_domain")
    assert platform_dns.count("rejects.test") > before


@pytest.mark.django_db
def test_a_dns_outage_does_not_change_a_stored_verdict(client, settings):
    user = _default_user("ewa@rejects.test")
    _card(client, user)
    settings.DNS_NAMESERVERS = [f"127.0.0.1:{free_udp_port()}"]  # nobody answers there
    settings.DNS_TIMEOUT = 0.3
    DomainCheck.objects.update(checked_at=timezone.now() - datetime.timedelta(days=2))
    html = _card(client, user, action="check_domain")
    assert "fails SPF/DMARC" in html  # the last known verdict
    assert sender_config_for(user=user).verp


@pytest.mark.django_db
def test_without_platform_ips_there_is_no_check_and_nothing_changes(client, settings):
    settings.PLATFORM_SENDING_IPS = []
    user = _default_user("ewa@rejects.test")
    html = _card(client, user)
    assert "Your domain" not in html
    assert sender_config_for(user=user).from_email == "ewa@rejects.test"


@pytest.mark.usefixtures("celery_worker", "transactional_db")
def test_the_relay_gets_the_mail_reply_to_style(client, smtp_servers, settings):
    """Done when: Default mode sends the DMARC-reject domain's mail Reply-To style."""
    relay = smtp_servers.plain
    user = _default_user("ewa@rejects.test")
    _card(client, user)  # the card's check stores the verdict
    message = settled(
        outbox_enqueue(user=user, to=["client@example.com"], subject="Faktura", body_text="x")
    )
    assert message.state == MessageState.SENT, message.last_reply
    [received] = relay.wait_for(1)
    domain = settings.EVENT_MAIL_DOMAIN
    assert received.message["From"] == f"Ewa <acme@{domain}>"
    assert received.message["Reply-To"] == "ewa@rejects.test"
    assert received.mail_from.endswith(f"@{domain}")


@pytest.mark.django_db
def test_a_verdict_for_other_sending_ips_no_longer_counts(client, settings):
    user = _default_user("ewa@rejects.test")
    _card(client, user)
    assert sender_config_for(user=user).verp
    settings.PLATFORM_SENDING_IPS = ["198.51.100.99"]  # the platform moved
    assert not sender_config_for(user=user).verp  # until checked again: nothing known
    _card(client, user)  # the card checks again, for the new addresses
    assert sender_config_for(user=user).verp
    assert DomainCheck.objects.get().verdict["ips"] == ["198.51.100.99"]


@pytest.mark.django_db
def test_with_the_ips_emptied_a_stored_verdict_neither_counts_nor_contradicts_the_card(
    client, settings
):
    user = _default_user("ewa@rejects.test")
    _card(client, user)
    settings.PLATFORM_SENDING_IPS = []
    html = _card(client, user)
    assert "ewa@rejects.test is verified: the platform" in html
    assert sender_config_for(user=user).from_email == "ewa@rejects.test"


@pytest.mark.django_db
def test_an_unverified_email_is_not_looked_up(client, platform_dns):
    user = _default_user("ewa@rejects.test", verified=False)
    before = platform_dns.count("rejects.test")
    html = _card(client, user)
    assert "Your domain" not in html
    assert platform_dns.count("rejects.test") == before


@pytest.mark.django_db
def test_check_again_while_dns_fails_is_not_repeated_within_a_minute(
    client, settings, platform_dns
):
    user = _default_user("ewa@servfail.test")
    _card(client, user)
    before = platform_dns.count("servfail.test")
    for _ in range(3):
        html = _card(client, user, action="check_domain")
        assert "could not be checked now" in html
    assert platform_dns.count("servfail.test") == before
    assert not DomainCheck.objects.exists()


@pytest.mark.django_db
def test_fresh_lookups_per_user_are_limited_and_the_last_verdict_stays(
    client, settings, platform_dns
):
    settings.DOMAIN_CHECKS_PER_HOUR = 1
    user = _default_user("ewa@rejects.test")
    _card(client, user)  # the one fresh lookup of this hour
    DomainCheck.objects.update(checked_at=timezone.now() - datetime.timedelta(minutes=5))
    from django.core.cache import cache

    cache.clear()
    before = platform_dns.count()
    html = _card(client, user, action="check_domain")
    assert "the most allowed" in html
    assert "fails SPF/DMARC" in html  # the stored verdict is still shown and used
    assert platform_dns.count() == before


@pytest.mark.django_db
def test_several_spf_records_are_named_on_the_card(client):
    user = _default_user("ewa@twospf.test")
    html = _card(client, user)
    assert "2 SPF records: only one is allowed" in html
    assert "publishes this TXT record" not in html


@pytest.mark.django_db
def test_the_periodic_refresh_checks_verified_users_domains(settings):
    from smtp_settings.tasks import domain_checks_refresh

    _default_user("ewa@rejects.test")
    factories.user("ANNA", email="anna@includes.test")
    factories.user("NOPE", email="nope@bare.test", verified=False)
    result = domain_checks_refresh()
    assert result == {"checked": 2, "domains": 2}
    assert set(DomainCheck.objects.values_list("domain", flat=True)) == {
        "rejects.test",
        "includes.test",
    }
    assert domain_checks_refresh()["checked"] == 0  # fresh now
    settings.PLATFORM_SENDING_IPS = ["198.51.100.99"]
    assert domain_checks_refresh()["checked"] == 2  # checked for other IPs: due again


@pytest.mark.django_db
def test_confirming_the_link_checks_the_domain_after_the_commit(
    client, monkeypatch, django_capture_on_commit_callbacks
):
    from smtp_settings import tasks, verification

    user = _default_user("ewa@rejects.test", verified=False)
    token = verification.verification_token(user)
    handed: list[str] = []
    monkeypatch.setattr(tasks.domain_check, "delay", handed.append)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/accounts/email/verify/{token}/")
    assert response.status_code == 200
    assert handed == ["ewa@rejects.test"]
    tasks.domain_check.apply(args=handed)  # what the interactive worker then runs
    assert DomainCheck.objects.get(domain="rejects.test").verdict["recommendation"] == "reply_to"
    user.refresh_from_db()
    assert sender_config_for(user=user).verp


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("email", "shown", "reply_to_style"),
    [
        ("ewa@includes.test", "The platform may send as you", False),
        ("ewa@rejects.test", "fails SPF/DMARC (SPF softfail, DMARC policy reject)", True),
        ("ewa@monitors.test", "fails SPF/DMARC (SPF fail, DMARC policy none)", True),
        ("ewa@bare.test", "delivered but not authenticated (SPF none, no DMARC policy)", False),
        ("ewa@loop.test", "delivered but not authenticated (SPF permerror", False),
    ],
)
def test_the_card_shows_each_zones_verdict(client, email, shown, reply_to_style):
    """The five zones of issue 14's "done when", as the card shows them."""
    user = _default_user(email)
    html = _card(client, user)
    assert shown in html
    assert sender_config_for(user=user).verp is reply_to_style
