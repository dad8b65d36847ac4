"""`manage.py sender domain ADDRESS-OR-DOMAIN [--json]` (issue 14, item 1)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from smtp_settings.models import DomainCheck
from tests import factories
from tests.dns_fixtures import PLATFORM_INCLUDE, PLATFORM_IP
from tests.smtp_fixtures import _worker_database_url

pytestmark = [pytest.mark.usefixtures("platform_dns"), pytest.mark.django_db]
BASE_DIR = Path(__file__).resolve().parent.parent.parent


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("sender", "domain", *args, stdout=out)
    return out.getvalue()


def test_json_has_the_promised_keys_and_values():
    data = json.loads(_run("ewa@rejects.test", "--json"))
    assert data["domain"] == "rejects.test"
    assert data["mx_provider"] == "google"
    assert data["spf"] == "softfail"
    assert data["dmarc_policy"] == "reject"
    assert data["platform_may_send"] is False
    assert data["recommendation"] == "reply_to"
    assert data["suggested_spf"].endswith(f"include:{PLATFORM_INCLUDE} ~all")
    assert "Directo-Reply-to" in data["headline"]


def test_text_names_the_facts_and_the_record_to_paste():
    text = _run("rejects.test")
    assert "aspmx.l.google.com" in text
    assert "softfail" in text
    assert "p=reject" in text
    assert f"v=spf1 include:_spf.google.com include:{PLATFORM_INCLUDE} ~all" in text


@pytest.mark.parametrize("value", ["not a domain", "anna@", "localhost"])
def test_bad_input_is_a_message_not_a_traceback(value):
    with pytest.raises(CommandError) as refused:
        _run(value)
    assert "domain" in str(refused.value)


@pytest.mark.django_db(transaction=True)
def test_a_shell_gets_the_same_verdict_through_the_sessions_dns():
    """A subprocess: its settings read DNS_NAMESERVERS from the environment (the session's
    local DNS server), never the system's resolver; the verdict it stores is the card's."""
    env = {
        **os.environ,
        "DATABASE_URL": _worker_database_url(),
        "PLATFORM_SENDING_IPS": PLATFORM_IP,
        "PLATFORM_SPF_INCLUDE": PLATFORM_INCLUDE,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "sender", "domain", "includes.test", "--json"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["spf"] == "pass"
    assert data["platform_may_send"] is True
    assert data["recommendation"] == "default"
    stored = DomainCheck.objects.get(domain="includes.test")
    assert stored.verdict["spf"] == "pass"


def test_sender_show_includes_the_stored_verdict():
    user = factories.user("EWA", email="ewa@rejects.test")
    factories.profile(user, mode="default")
    out = io.StringIO()
    call_command("sender", "show", "EWA", "--json", stdout=out)
    assert json.loads(out.getvalue())["domain_check"] is None  # never checked: no DNS here
    _run("ewa@rejects.test")  # stores it
    out = io.StringIO()
    call_command("sender", "show", "EWA", "--json", stdout=out)
    shown = json.loads(out.getvalue())
    assert shown["domain_check"]["recommendation"] == "reply_to"
    assert shown["reply_to"] == "ewa@rejects.test"  # Reply-To style: the platform From
    out = io.StringIO()
    call_command("sender", "show", "EWA", stdout=out)
    assert "fails SPF/DMARC" in out.getvalue()
