"""Attacks on the defaults (issue 11, items 8, 9 and 12), each a figure in the "attacks" area.

What an attacker tries, and the goal that must fail:
- Unicode digits (`²`, `٣`, `१`, `Ⅻ`, `３`) and 25-digit numbers in every query parameter, form
  number and path number of the access matrix (tests/reliability/test_access.py), as an
  ordinary user and as staff: the goal is a 500 (and, with DEBUG on, a page of settings).
- Guessing a password: many wrong ones then the right one from one address; a spray over many
  addresses at one user; one address spraying many users. The goal is a session.
- Starting the app without its own keys (or with a published one, or an open ESP webhook):
  the goal is an installation whose stored passwords and VERP signatures anyone can compute.
- A DEBUG error page (the dev server copies the environment into request.META): the goal is
  the relay's password, the ESP's keys, the database password, SECRET_KEY or the Fernet keys.

Each figure's detector is shown to see the bad outcome on a control (the old code, another
address, Django's own error reporter, a good configuration).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
import requests
from axes.models import AccessAttempt
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.test import Client

from tests import factories
from tests.reliability.test_access import (
    CSRF_EXEMPT,
    Route,
    World,
    _build_world,
    all_routes,
    expectation,
    url_of,
)
from tests.smtp_fixtures import free_port

pytestmark = [pytest.mark.usefixtures("english")]
ROOT = Path(__file__).resolve().parents[2]

# Digits of several scripts that str.isdigit() (or int()) accepts in part: superscript,
# Arabic-Indic, Devanagari, a Roman numeral, full-width; and a number past any 64-bit id.
DIGITS = ("²", "٣", "१", "Ⅻ", "３", "9" * 25)
# Every number a view reads from the query string or a form, the admin's own included.
NUMBER_PARAMETERS = (
    "page", "p", "customer", "invoice", "user", "pk", "id", "o", "e", "all", "id__exact",
    "user__id__exact", "state", "number", "popup", "_popup", "job", "letter",
)  # fmt: skip


# -- 5xx on Unicode digits ---------------------------------------------------------------------
@pytest.fixture
def world(db, smtp_servers, m365_settings, google_settings) -> World:
    return _build_world(smtp_servers)


def _with_digits(text: str, digit: str) -> str:
    """`text` with every ASCII number in it replaced by `digit`."""
    return re.sub(r"[0-9]+", digit, text)


def _requests(route: Route, world: World, digit: str) -> list[tuple[str, str, dict | None]]:
    expect = expectation(route, world)
    url = url_of(route, expect, world)
    urls = dict.fromkeys([url, quote(_with_digits(url, digit), safe="/")])
    query = urlencode({name: digit for name in NUMBER_PARAMETERS})
    body = {name: digit for name in NUMBER_PARAMETERS}
    calls: list[tuple[str, str, dict | None]] = []
    for target in urls:
        calls.append(("GET", f"{target}?{query}", None))
        calls.append(("POST", target, body))
        for original in expect.bodies(world):  # the route's own forms, numbers replaced
            replaced = {
                key: [_with_digits(str(v), digit) for v in value]
                if isinstance(value, list)
                else _with_digits(str(value), digit)
                for key, value in original.items()
            }
            if replaced != original:
                calls.append(("POST", target, replaced))
    return calls


def _server_errors(world: World, actors=("A", "staff"), routes=None) -> tuple[int, list[str]]:
    """Requests sent and the ones answered 5xx, for every route, digit and actor."""
    sent, errors = 0, []
    for actor in actors:
        client = Client(raise_request_exception=False)
        client.force_login(world.users[actor])
        for route in routes or all_routes():
            if CSRF_EXEMPT.match(route.name):
                continue  # ESP webhooks are not mounted without an ESP relay
            for digit in DIGITS:
                for method, url, body in _requests(route, world, digit):
                    response = client.get(url) if method == "GET" else client.post(url, body)
                    sent += 1
                    if response.status_code >= 500:
                        errors.append(
                            f"{actor} {method} {url} {body or ''}: {response.status_code}"
                        )
                    if "log" in route.name:  # logged out, or into another session
                        client = Client(raise_request_exception=False)
                        client.force_login(world.users[actor])
    return sent, errors


def test_unicode_digits_in_urls_and_forms_give_no_server_error(world, figures, caplog):
    caplog.set_level(logging.CRITICAL, logger="django.request")
    sent, errors = _server_errors(world)
    figures.add(
        "attacks", "requests with Unicode digits (access matrix × 6 digits × 2 actors)", sent
    )
    figures.add("attacks", "5xx on Unicode digits", len(errors), "= 0")
    assert sent > 1000
    assert not errors, "\n".join(errors[:40])


def test_the_digit_detector_sees_the_old_parsing_fail(world, monkeypatch, caplog):
    """Control: the invoice selection as it was parsed before (`pk.isdigit()`, then `int(pk)`)
    answers `invoice=²` with a 500, and the same detector counts it."""
    from django import forms

    import invoices.views

    class OldSelection(forms.Form):
        def __init__(self, data):
            super().__init__(data)
            self.ids = [int(pk) for pk in data.getlist("invoice") if pk.isdigit()]

        def is_valid(self) -> bool:
            self.cleaned_data = {"invoice": self.ids}
            return True

    caplog.set_level(logging.CRITICAL, logger="django.request")
    monkeypatch.setattr(invoices.views, "InvoiceSelectionForm", OldSelection)
    send = [r for r in all_routes() if r.name == "invoices:send"]
    _sent, errors = _server_errors(world, actors=("A",), routes=send)
    assert errors and all(" 500" in error for error in errors)


# -- logins accepted past the lockout ----------------------------------------------------------
def _log_in(code: str, password: str, address: str, path: str = "/accounts/login/"):
    client = Client(REMOTE_ADDR=address, raise_request_exception=False)
    response = client.post(path, {"username": code, "password": password})
    return response, "_auth_user_id" in client.session


@pytest.mark.django_db
def test_logins_past_the_lockout_are_refused(settings, figures, caplog):
    caplog.set_level(logging.CRITICAL, logger="axes")
    caplog.set_level(logging.CRITICAL, logger="django.request")
    right = factories.LOGIN_PASSWORD
    accepted: list[str] = []
    per_pair = settings.LOGIN_FAILURES_PER_USER_AND_ADDRESS
    per_user = settings.LOGIN_FAILURES_PER_USER
    per_address = settings.LOGIN_FAILURES_PER_ADDRESS

    # 1. One address, one user: 100 wrong passwords (the attempt), then the right one,
    # on the app's login page and on the admin's.
    factories.user("ANNA", is_staff=True)
    for _ in range(100):
        _log_in("ANNA", "wrong-" + secrets.token_hex(4), "203.0.113.1")
    for path in ("/accounts/login/", "/admin/login/"):
        response, logged_in = _log_in("ANNA", right, "203.0.113.1", path)
        if logged_in:
            accepted.append(f"one address, 100 failures, {path}")
        assert response.status_code == 429, path
    page = response.content.decode()
    assert "Too many failed logins" in page and "15 minutes" in page
    assert "Ask your administrator" in page

    # 2. A spray at one user from many addresses, each below its own address limits.
    factories.user("BOB")
    for index in range(per_user):
        _log_in("BOB", "wrong-" + secrets.token_hex(4), f"198.51.100.{index + 1}")
    if _log_in("BOB", right, "198.51.100.250")[1]:
        accepted.append("spray at one user from many addresses")

    # 3. One address spraying users (one try each), then a user's right password from there.
    victims = [factories.user(f"V{index}") for index in range(per_address + 1)]
    for victim in victims[:-1]:
        _log_in(victim.code, "wrong-" + secrets.token_hex(4), "192.0.2.77")
    if _log_in(victims[-1].code, right, "192.0.2.77")[1]:
        accepted.append("one address spraying users")

    figures.add("attacks", "logins accepted past the lockout", len(accepted), "= 0")
    figures.add(
        "attacks",
        "login lockout: failures per user+address / address / user",
        f"{per_pair} / {per_address} / {per_user}",
    )
    assert not accepted, accepted
    assert AccessAttempt.objects.exists()  # counted in the database, which every process shares

    # Control: the detector sees an accepted login, and the lockout is narrow. ANNA was locked
    # by (user, address) and is below her own user limit: from her own address she gets in.
    assert per_pair < per_user
    carl = factories.user("CARL")
    for _ in range(per_pair):
        _log_in("CARL", "wrong", "203.0.113.9")
    assert not _log_in("CARL", right, "203.0.113.9")[1]
    assert _log_in("CARL", right, "203.0.113.10")[1], "another address is not locked out"
    # Staff unlock: axes's command (the admin lists the same attempts, deletable).
    call_command("axes_reset_username", "BOB")
    assert _log_in("BOB", right, "198.51.100.250")[1], "unlocked by staff"
    # The lockout ends by itself after LOGIN_LOCKOUT_MINUTES.
    AccessAttempt.objects.filter(username=carl.code).update(
        attempt_time=AccessAttempt.objects.get(username=carl.code).attempt_time
        - settings.AXES_COOLOFF_TIME
    )
    assert _log_in("CARL", right, "203.0.113.9")[1], "the lockout ends"


# -- the app refuses to start without its own keys ---------------------------------------------
def _manage(*args: str, **variables: str) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "FIELD_", "EMAIL_", "ANYMAIL", "PYTEST", "DATABASE_"))
    }
    env.update(DJANGO_SETTINGS_MODULE="directo_mail.settings", **variables)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _keys() -> dict[str, str]:
    return {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }


def test_the_app_does_not_start_without_its_own_keys(figures):
    started: list[str] = []
    cases: dict[str, dict[str, str]] = {}
    for debug in ("false", "true"):
        for name in ("DJANGO_SECRET_KEY", "FIELD_ENCRYPTION_KEYS"):
            # Empty, not unset: a developer's .env must not fill it in (settings never overwrite).
            cases[f"DEBUG={debug}, {name} missing"] = {**_keys(), name: "", "DJANGO_DEBUG": debug}
        cases[f"DEBUG={debug}, both missing"] = {
            "DJANGO_SECRET_KEY": "",
            "FIELD_ENCRYPTION_KEYS": "",
            "DJANGO_DEBUG": debug,
        }
    published = "django-insecure-directo-mail-development-key-not-for-production"
    cases["the old public default key"] = {**_keys(), "DJANGO_SECRET_KEY": published}
    cases["a Fernet key that is not one"] = {**_keys(), "FIELD_ENCRYPTION_KEYS": "not-a-key"}
    for case, variables in cases.items():
        result = _manage("check", **variables)
        if result.returncode == 0:
            started.append(case)
            continue
        assert "ImproperlyConfigured" in result.stderr, case
        named = [n for n in ("DJANGO_SECRET_KEY", "FIELD_ENCRYPTION_KEYS") if n in result.stderr]
        assert named, f"{case}: the message names the variable"
    # An ESP relay whose bounce webhook nobody authenticates does not pass the checks either.
    esp = {**_keys(), "EMAIL_BACKEND": "anymail.backends.postmark.EmailBackend"}
    open_webhook = _manage("check", **esp, ANYMAIL=json.dumps({"POSTMARK_SERVER_TOKEN": "t"}))
    if open_webhook.returncode == 0:
        started.append("ESP relay without WEBHOOK_SECRET")
    assert "directo_mail.E002" in open_webhook.stderr

    figures.add("attacks", "app starts with DEBUG off and no own keys", len(started), "= 0")
    assert not started, started

    # Control: with its own keys (and the webhook's secret) the same command starts.
    assert _manage("check", **_keys()).returncode == 0
    secured = {"POSTMARK_SERVER_TOKEN": "t", "WEBHOOK_SECRET": "bounces:" + secrets.token_hex(8)}
    assert _manage("check", **esp, ANYMAIL=json.dumps(secured)).returncode == 0


# -- secrets on the DEBUG error page -----------------------------------------------------------
def _serve(variables: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "FIELD_", "EMAIL_", "ANYMAIL", "PYTEST", "CELERY_"))
    }
    env.update(variables)
    server = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "runserver",
            "--noreload",
            "--skip-checks",
            f"127.0.0.1:{port}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=2)
            return server, port
        except requests.ConnectionError:
            time.sleep(0.2)
    server.kill()
    raise AssertionError("runserver did not come up")


def _error_page(variables: dict[str, str]) -> str:
    server, port = _serve(variables)
    try:
        response = requests.post(
            f"http://127.0.0.1:{port}/test-crash/",
            data={"password": variables["TYPED_PASSWORD"]},
            timeout=30,
        )
        assert response.status_code == 500
        return response.text
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_debug_error_page_shows_no_secret(figures, tmp_path):
    """A real dev server (it copies the environment into request.META) with DEBUG on, an SMTP
    relay URL and an ESP's settings holding known secrets; a view opens the relay (refused) and
    fails. The page is searched for every secret, plain or escaped."""
    relay_password = "relay-" + secrets.token_urlsafe(16)
    known = {
        "EMAIL_URL password": relay_password,
        "ANYMAIL API key": "key-" + secrets.token_hex(16),
        "ANYMAIL WEBHOOK_SECRET": "hook:" + secrets.token_hex(12),
        "CELERY_BROKER_URL password": "broker-" + secrets.token_hex(12),
        "typed password (sensitive_post_parameters)": "typed-" + secrets.token_hex(10),
    }
    keys = _keys()
    known["DJANGO_SECRET_KEY"] = keys["DJANGO_SECRET_KEY"]
    known["FIELD_ENCRYPTION_KEYS"] = keys["FIELD_ENCRYPTION_KEYS"]
    variables = {
        **keys,
        "DJANGO_DEBUG": "true",
        "DJANGO_SETTINGS_MODULE": "tests.reliability.crash_settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CELERY_BROKER_URL": (
            f"redis://:{known['CELERY_BROKER_URL password']}@127.0.0.1:{free_port()}/0"
        ),
        "EMAIL_URL": f"smtp+tls://relay-user:{quote(relay_password)}@127.0.0.1:{free_port()}",
        "ANYMAIL": json.dumps(
            {
                "POSTMARK_SERVER_TOKEN": known["ANYMAIL API key"],
                "WEBHOOK_SECRET": known["ANYMAIL WEBHOOK_SECRET"],
            }
        ),
        "TYPED_PASSWORD": known["typed password (sensitive_post_parameters)"],
    }
    page = _error_page(variables)
    assert "ConnectionRefusedError" in page and "Request information" in page  # the DEBUG page

    def found(text: str) -> list[str]:
        return [name for name, value in known.items() if value in text or quote(value) in text]

    leaks = found(page)
    figures.add("attacks", "secrets on the DEBUG error page", len(leaks), "= 0")
    assert not leaks, leaks

    # Control: Django's own filter and reporter on the same page show them.
    control = _error_page({**variables, "CRASH_DJANGO_REPORTING": "1"})
    assert "ConnectionRefusedError" in control
    assert {"EMAIL_URL password", "ANYMAIL API key"} <= set(found(control))
