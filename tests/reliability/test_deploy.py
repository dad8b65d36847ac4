"""`manage.py check --deploy` under production variables, and the headers and cookie flags a
production response carries (issue 7, point 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def _production_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "EMAIL_", "FIELD_"))
    }
    env.update(
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="x" * 20 + Fernet.generate_key().decode(),
        DJANGO_HTTPS="true",
        DJANGO_ALLOWED_HOSTS="mail.example.com",
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        EVENT_MAIL_DOMAIN="event.example.com",
    )
    return env


def test_check_deploy_is_clean_under_production_variables(figures):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=_production_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    warnings = (
        result.stdout.count("?: (") + result.stderr.count("?: (") + result.stderr.count("WARNINGS:")
    )
    figures.add("deploy", "`check --deploy` warnings and errors", warnings, "= 0")
    assert result.returncode == 0, result.stdout + result.stderr


# -- headers and cookie flags of a production response ----------------------------------------
# Run in a subprocess: settings are read at import. Django's test Client over the test database
# pytest-django does not provide there, so the script makes its own SQLite file and migrates it.
_HEADERS_SCRIPT = r"""
import json, os, django
django.setup()
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.test.utils import setup_test_environment

setup_test_environment()
call_command("migrate", verbosity=0)
from accounts.models import User

password = "x-" + os.urandom(8).hex()
User.objects.create_user("PRODUSER", password)
# Behind the TLS proxy, as SECURE_PROXY_SSL_HEADER expects: X-Forwarded-Proto: https.
https = {"secure": True, "HTTP_HOST": "mail.example.com", "HTTP_X_FORWARDED_PROTO": "https"}
out = {"settings": {"hsts": settings.SECURE_HSTS_SECONDS,
                    "proxy": settings.SECURE_PROXY_SSL_HEADER}}
client = Client(**https)
plain = Client(HTTP_HOST="mail.example.com")
out["plain http"] = {"status": plain.get("/accounts/login/").status_code,
                     "location": plain.get("/accounts/login/").get("Location", "")}
forwarded = Client(HTTP_HOST="mail.example.com", HTTP_X_FORWARDED_PROTO="https")
out["forwarded https"] = forwarded.get("/accounts/login/").status_code

def record(name, response):
    out[name] = {
        "status": response.status_code,
        "headers": dict(response.headers),
        "cookies": {k: {"secure": bool(m["secure"]), "httponly": bool(m["httponly"]),
                        "samesite": m["samesite"]} for k, m in response.cookies.items()},
    }

record("login page", client.get("/accounts/login/"))
token = client.cookies["csrftoken"].value
record("login POST", client.post("/accounts/login/", {"username": "PRODUSER", "password": password,
                                                      "csrfmiddlewaretoken": token}))
token = client.cookies["csrftoken"].value  # rotated at login
record("card (logged in)", client.get("/accounts/card/"))
record("set language", client.post("/i18n/setlang/", {"language": "en",
                                                      "csrfmiddlewaretoken": token}))
print("RESULT" + json.dumps(out))
"""


def test_production_responses_carry_security_headers_and_cookie_flags(figures, tmp_path):
    env = _production_env() | {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "directo_mail.settings",
    }
    result = subprocess.run(
        [sys.executable, "-c", _HEADERS_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "RESULT" in result.stdout, result.stdout + result.stderr
    seen = json.loads(result.stdout.split("RESULT", 1)[1])
    hsts = seen["settings"]["hsts"]
    assert hsts >= 31536000
    assert seen["settings"]["proxy"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    missing: list[str] = []

    def expect(condition: bool, what: str) -> None:
        if not condition:
            missing.append(what)

    # Plain HTTP is redirected to HTTPS; HTTPS behind the proxy header is served.
    expect(seen["plain http"]["status"] == 301, "plain HTTP: no redirect")
    expect(seen["plain http"]["location"].startswith("https://"), "redirect is not to https")
    expect(seen["forwarded https"] == 200, "X-Forwarded-Proto: https not trusted")
    expect(seen["card (logged in)"]["status"] == 200, "the logged-in page was not served")
    for name in ("login page", "login POST", "card (logged in)", "set language"):
        headers = {k.lower(): v for k, v in seen[name]["headers"].items()}
        expect(seen[name]["status"] in (200, 302), f"{name}: status {seen[name]['status']}")
        expect(
            headers.get("strict-transport-security")
            == f"max-age={hsts}; includeSubDomains; preload",
            f"{name}: HSTS {headers.get('strict-transport-security')}",
        )
        expect(headers.get("x-content-type-options") == "nosniff", f"{name}: nosniff")
        expect(headers.get("referrer-policy") == "same-origin", f"{name}: Referrer-Policy")
        expect(headers.get("x-frame-options") == "DENY", f"{name}: X-Frame-Options")
        expect(
            headers.get("cross-origin-opener-policy") == "same-origin-allow-popups",
            f"{name}: Cross-Origin-Opener-Policy",
        )
        for cookie, flags in seen[name]["cookies"].items():
            expect(flags["secure"], f"{name}: cookie {cookie} not Secure")
            expect(flags["samesite"] == "Lax", f"{name}: cookie {cookie} SameSite")
            if cookie == "sessionid":
                expect(flags["httponly"], f"{name}: session cookie not HttpOnly")
    cookies = {
        c for name in seen if isinstance(seen[name], dict) for c in seen[name].get("cookies", {})
    }
    expect({"sessionid", "csrftoken", "django_language"} <= cookies, f"cookies seen: {cookies}")
    figures.add("deploy", "missing security headers or cookie flags", len(missing), "= 0")
    assert not missing, missing
