"""The Microsoft 365 stand-ins themselves (tests/m365_fixtures.py), driven by msal and smtplib."""

from __future__ import annotations

import base64
import json
import os
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid

import msal
import pytest
import requests

from tests.m365_fixtures import SMTP_SEND_SCOPE, expire_cached_access_tokens

# msal advises form_post; the mock (and the app) use the query response mode.
pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended")

TIMEOUT = 5
SCOPES = [SMTP_SEND_SCOPE]
REDIRECT_URI = "http://127.0.0.1:8000/accounts/microsoft365/callback/"


def _msal_app(provider, cache=None, *, default_http_client: bool = False):
    return msal.ConfidentialClientApplication(
        provider.client_id,
        client_credential=provider.client_secret,
        authority=provider.authority,
        instance_discovery=False,
        token_cache=cache if cache is not None else msal.SerializableTokenCache(),
        http_client=None if default_http_client else provider.http_client(),
    )


def _connect(provider, sub="anna", email="anna@contoso.test", redirect_uri=REDIRECT_URI):
    """The app's connect flow: returns (msal app, result of the code redemption)."""
    provider.add_user(sub, email)
    app = _msal_app(provider)
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=redirect_uri)
    params = provider.sign_in(flow["auth_uri"], sub)
    return app, app.acquire_token_by_auth_code_flow(flow, params)


def _silent(app):
    (account,) = app.get_accounts()
    return app.acquire_token_silent_with_error(SCOPES, account)


def _xoauth2(user: str, token: str) -> str:
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def _message(sender="anna@contoso.test") -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "client@example.com"
    message["Subject"] = "Faktura 1/2025"
    message["Message-ID"] = make_msgid(domain="contoso.test")
    message.set_content("Zażółć gęślą jaźń")
    return message


def _send(server, user, token, *, initial_response=True, host="localhost", message=None):
    message = message or _message(user)
    with smtplib.SMTP(host, server.port, timeout=TIMEOUT) as smtp:
        smtp.starttls(context=ssl.create_default_context())
        smtp.ehlo()
        xoauth2 = _xoauth2(user, token)
        smtp.auth(
            "XOAUTH2",
            lambda challenge=None: xoauth2 if not challenge else "",
            initial_response_ok=initial_response,
        )
        smtp.send_message(message)
    return message


# ------------------------------------------------------------------------------
# oidc_provider with msal
# ------------------------------------------------------------------------------
def test_the_authority_is_https_localhost_with_a_tenant(oidc_provider):
    assert oidc_provider.authority == (
        f"https://localhost:{oidc_provider.port}/{oidc_provider.tenant}"
    )
    config = oidc_provider.http_client().get(
        f"{oidc_provider.authority}/v2.0/.well-known/openid-configuration", timeout=TIMEOUT
    )
    assert config.json()["token_endpoint"].startswith(oidc_provider.authority + "/v2.0/")


def test_msal_connects_an_account_with_the_auth_code_flow(oidc_provider):
    app, result = _connect(oidc_provider)
    assert "access_token" in result, result
    assert result["id_token_claims"]["preferred_username"] == "anna@contoso.test"
    assert result["id_token_claims"]["tid"] == oidc_provider.tenant
    assert SMTP_SEND_SCOPE in result["scope"]
    (account,) = app.get_accounts()
    assert account["username"] == "anna@contoso.test"
    assert account["home_account_id"] == f"anna.{oidc_provider.tenant}"  # from client_info
    claims = oidc_provider.userinfo(result["access_token"])
    assert claims["preferred_username"] == "anna@contoso.test"
    assert oidc_provider.token_requests == ["authorization_code"]


def test_msal_with_its_default_http_client_trusts_the_provider(oidc_provider, test_ca):
    assert os.environ["REQUESTS_CA_BUNDLE"] == str(test_ca.bundle_file)
    oidc_provider.add_user("anna", "anna@contoso.test")
    app = _msal_app(oidc_provider, default_http_client=True)
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT_URI)
    result = app.acquire_token_by_auth_code_flow(
        flow, oidc_provider.sign_in(flow["auth_uri"], "anna")
    )
    assert "access_token" in result, result
    assert requests.get(oidc_provider.authority + "/v2.0/jwks", timeout=TIMEOUT).ok


def test_the_silent_call_returns_the_cached_token(oidc_provider):
    app, result = _connect(oidc_provider)
    silent = _silent(app)
    assert silent["access_token"] == result["access_token"]
    assert silent["token_source"] == "cache"
    assert oidc_provider.token_requests == ["authorization_code"]


def test_a_serialized_cache_survives_a_new_msal_app(oidc_provider):
    """As the app stores it: serialize, (encrypt,) later deserialize in the worker."""
    app, result = _connect(oidc_provider)
    cache = msal.SerializableTokenCache()
    cache.deserialize(app.token_cache.serialize())
    assert _silent(_msal_app(oidc_provider, cache))["access_token"] == result["access_token"]


def test_an_expired_cached_token_is_refreshed(oidc_provider):
    app, result = _connect(oidc_provider)
    expire_cached_access_tokens(app.token_cache)
    silent = _silent(app)
    assert silent["token_source"] == "identity_provider"
    assert silent["access_token"] != result["access_token"]
    assert oidc_provider.token_requests == ["authorization_code", "refresh_token"]
    assert oidc_provider.userinfo(silent["access_token"])["preferred_username"] == (
        "anna@contoso.test"
    )
    # The new token is cached under the same account (client_info), and returned next time.
    assert len(app.get_accounts()) == 1
    assert _silent(app)["access_token"] == silent["access_token"]


def test_expiring_a_serialized_cache(oidc_provider):
    app, result = _connect(oidc_provider)
    cache = msal.SerializableTokenCache()
    cache.deserialize(expire_cached_access_tokens(app.token_cache.serialize()))
    assert _silent(_msal_app(oidc_provider, cache))["access_token"] != result["access_token"]


def test_short_lived_tokens_make_every_silent_call_refresh(oidc_provider):
    oidc_provider.access_token_lifetime = 60  # msal refreshes tokens with < 5 min left
    app, result = _connect(oidc_provider)
    assert result["expires_in"] == 60
    first, second = _silent(app), _silent(app)
    assert len({result["access_token"], first["access_token"], second["access_token"]}) == 3
    assert oidc_provider.token_requests == ["authorization_code", "refresh_token", "refresh_token"]


def test_the_provider_can_expire_access_tokens_without_msal_noticing(oidc_provider):
    app, result = _connect(oidc_provider)
    assert oidc_provider.expire_access_tokens("anna") == 1
    assert oidc_provider.userinfo(result["access_token"]) is None
    assert _silent(app)["access_token"] == result["access_token"]  # msal's cache still has it


def test_after_revocation_the_refresh_is_invalid_grant(oidc_provider):
    app, result = _connect(oidc_provider)
    oidc_provider.revoke("anna")
    assert oidc_provider.userinfo(result["access_token"]) is None
    expire_cached_access_tokens(app.token_cache)
    silent = _silent(app)
    assert silent["error"] == "invalid_grant", silent
    assert "access_token" not in silent


def test_after_revocation_short_lived_tokens_reach_invalid_grant_untouched(oidc_provider):
    """The way for app tests that cannot reach into the (encrypted) cache."""
    oidc_provider.access_token_lifetime = 60
    app, _result = _connect(oidc_provider)
    oidc_provider.revoke("anna")
    assert _silent(app)["error"] == "invalid_grant"


def test_client_info_is_entra_shaped(oidc_provider):
    _app, result = _connect(oidc_provider)
    padded = result["client_info"] + "=" * (-len(result["client_info"]) % 4)
    assert json.loads(base64.urlsafe_b64decode(padded)) == {
        "uid": "anna",
        "utid": oidc_provider.tenant,
    }


def test_sign_in_can_be_denied(oidc_provider):
    app = _msal_app(oidc_provider)
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT_URI)
    params = oidc_provider.sign_in(flow["auth_uri"], "anna", deny=True)
    assert params["error"] == "access_denied"
    assert params["state"] == flow["state"]
    assert "error" in app.acquire_token_by_auth_code_flow(flow, params)


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://localhost:54321/accounts/microsoft365/callback/",
        "http://testserver/accounts/microsoft365/callback/",  # Django's test client
    ],
)
def test_loopback_and_testserver_redirect_uris_are_registered(oidc_provider, redirect_uri):
    _app, result = _connect(oidc_provider, redirect_uri=redirect_uri)
    assert "access_token" in result


def test_an_unregistered_redirect_uri_is_refused(oidc_provider):
    app = _msal_app(oidc_provider)
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri="https://evil.test/callback/")
    with pytest.raises(AssertionError, match="sign-in form"):
        oidc_provider.sign_in(flow["auth_uri"], "anna")


def test_a_wrong_client_secret_is_refused(oidc_provider):
    oidc_provider.add_user("anna", "anna@contoso.test")
    app = msal.ConfidentialClientApplication(
        oidc_provider.client_id,
        client_credential="wrong",
        authority=oidc_provider.authority,
        instance_discovery=False,
        http_client=oidc_provider.http_client(),
    )
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT_URI)
    result = app.acquire_token_by_auth_code_flow(
        flow, oidc_provider.sign_in(flow["auth_uri"], "anna")
    )
    assert result["error"] == "invalid_client"


def test_state_left_by_one_test(oidc_provider):
    oidc_provider.add_user("left-behind", "left@contoso.test")
    oidc_provider.access_token_lifetime = 60


def test_is_gone_in_the_next(oidc_provider):
    assert oidc_provider.storage.get_user("left-behind") is None
    assert oidc_provider.access_token_lifetime is None
    assert oidc_provider.token_requests == []


# ------------------------------------------------------------------------------
# xoauth2_server with smtplib
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("initial_response", [True, False])
def test_a_token_from_the_provider_sends_mail(oidc_provider, xoauth2_server, initial_response):
    _app, result = _connect(oidc_provider)
    message = _send(
        xoauth2_server,
        "anna@contoso.test",
        result["access_token"],
        initial_response=initial_response,
    )
    (received,) = xoauth2_server.wait_for(1)
    assert received.message_id == message["Message-ID"].strip("<>")
    assert received.tls
    assert received.auth_login == "anna@contoso.test"
    assert received.token == result["access_token"]
    (attempt,) = xoauth2_server.auth_attempts
    assert attempt.success and attempt.initial_response is initial_response


@pytest.mark.parametrize(
    ("user", "token_of", "reason"),
    [
        ("anna@contoso.test", None, "refused the token"),
        ("bob@contoso.test", "anna", "belongs to anna@contoso.test"),
    ],
)
def test_a_bad_token_gets_535(oidc_provider, xoauth2_server, user, token_of, reason):
    _app, result = _connect(oidc_provider)
    token = result["access_token"] if token_of else "not-a-token"
    with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
        _send(xoauth2_server, user, token)
    assert failure.value.smtp_code == 535
    assert b"5.7.3 Authentication unsuccessful" in failure.value.smtp_error
    (attempt,) = xoauth2_server.auth_attempts
    assert not attempt.success and reason in attempt.reason
    assert xoauth2_server.messages == []


def test_a_revoked_token_gets_535(oidc_provider, xoauth2_server):
    _app, result = _connect(oidc_provider)
    oidc_provider.revoke("anna")
    with pytest.raises(smtplib.SMTPAuthenticationError):
        _send(xoauth2_server, "anna@contoso.test", result["access_token"], initial_response=False)


def test_starttls_is_required_and_basic_auth_not_offered(xoauth2_server):
    with smtplib.SMTP("127.0.0.1", xoauth2_server.port, timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        code, _reply = smtp.docmd("AUTH", "XOAUTH2")
        assert code == 530
        smtp.starttls(context=ssl.create_default_context())
        smtp.ehlo()
        assert smtp.esmtp_features["auth"].split() == ["XOAUTH2"]
        plain = base64.b64encode(b"\0anna@contoso.test\0password").decode()
        assert smtp.docmd("AUTH", f"PLAIN {plain}")[0] == 504
        assert smtp.docmd("AUTH", "LOGIN")[0] == 504


def test_the_xoauth2_server_can_be_scripted(oidc_provider, xoauth2_server):
    _app, result = _connect(oidc_provider)
    xoauth2_server.script("AUTH", "454 4.7.0 Temporary authentication failure")
    with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
        _send(xoauth2_server, "anna@contoso.test", result["access_token"])
    assert failure.value.smtp_code == 454
    _send(xoauth2_server, "anna@contoso.test", result["access_token"])
    assert len(xoauth2_server.wait_for(1)) == 1


# ------------------------------------------------------------------------------
# Settings: in-process and in the worker
# ------------------------------------------------------------------------------
def test_m365_settings(m365_settings, oidc_provider, xoauth2_server):
    from django.conf import settings

    assert oidc_provider.authority == settings.M365_AUTHORITY
    assert oidc_provider.client_id == settings.M365_CLIENT_ID
    assert oidc_provider.client_secret == settings.M365_CLIENT_SECRET
    assert f"localhost:{xoauth2_server.port}" == settings.M365_SMTP_SERVER
    assert xoauth2_server.port in settings.SMTP_ALLOWED_PORTS
    assert settings.SMTP_ALLOW_PRIVATE_HOSTS
    assert m365_settings.provider is oidc_provider


def test_the_worker_gets_the_m365_environment(
    celery_worker, oidc_provider, xoauth2_server, test_ca
):
    env = celery_worker.env
    assert env["M365_AUTHORITY"] == oidc_provider.authority
    assert env["M365_CLIENT_ID"] == oidc_provider.client_id
    assert env["M365_CLIENT_SECRET"] == oidc_provider.client_secret
    assert env["M365_SMTP_SERVER"] == f"localhost:{xoauth2_server.port}"
    assert env["REQUESTS_CA_BUNDLE"] == str(test_ca.bundle_file)
    assert str(xoauth2_server.port) in env["SMTP_ALLOWED_PORTS"].split(",")
    result = celery_worker.manage(
        "shell",
        "--command=from django.conf import settings; import requests;"
        "print(settings.M365_AUTHORITY, settings.M365_SMTP_SERVER.split(':')[1] in"
        " map(str, settings.SMTP_ALLOWED_PORTS),"
        " requests.get(settings.M365_AUTHORITY + '/v2.0/jwks', timeout=5).status_code)",
    )
    last_line = result.stdout.strip().splitlines()[-1]  # after Django's auto-import notice
    assert last_line.split() == [oidc_provider.authority, "True", "200"], result.stderr


def test_the_worker_gets_the_google_environment(
    celery_worker, google_provider, google_xoauth2_server
):
    env = celery_worker.env
    assert env["GOOGLE_ISSUER"] == google_provider.issuer
    assert env["GOOGLE_CLIENT_ID"] == google_provider.client_id
    assert env["GOOGLE_SMTP_SERVER"] == f"localhost:{google_xoauth2_server.port}"
    result = celery_worker.manage(
        "shell",
        "--command=from django.conf import settings; import requests;"
        "print(settings.GOOGLE_SMTP_SERVER.split(':')[1] in map(str, settings.SMTP_ALLOWED_PORTS),"
        " requests.get(settings.GOOGLE_ISSUER + '/.well-known/openid-configuration',"
        " timeout=5).json()['issuer'] == settings.GOOGLE_ISSUER)",
    )
    assert result.stdout.strip().splitlines()[-1].split() == ["True", "True"], result.stderr
