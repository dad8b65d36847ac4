"""Attacks on the OAuth sign-ins (issue 15), from an attacker's review of the Google change:

each test drives an attack towards its goal and asserts that the goal fails (each failed before
its fix: plain-http discovery, a provider's words on the card by a crafted link, a 500 on a
non-ASCII state or a provider that is down, one provider's outage stopping the other's daily
refresh, the Google client secret in error reports). Stand-ins: tests/m365_fixtures.py
(google_settings, m365_settings).
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.cache import cache
from django.test import Client, RequestFactory
from django.views.debug import technical_500_response

from smtp_settings.models import OAuthConnection, SenderMode
from tests import factories

G_CONNECT, G_CALLBACK = "/accounts/google/connect/", "/accounts/google/callback/"
M_CONNECT, M_CALLBACK = "/accounts/microsoft365/connect/", "/accounts/microsoft365/callback/"
UNREACHABLE = "https://localhost:1"  # nothing listens: the provider is "down"


def _client(user) -> Client:
    client = Client(raise_request_exception=False)  # see the 500 a browser would get
    client.force_login(user)
    return client


# -- goal 6: 500s on callback input / provider down ------------------------------------------
@pytest.mark.usefixtures("english")
def test_google_callback_with_a_non_ascii_state_is_no_server_error(db, google_settings):
    """providers/google/oauth.py:142 hmac.compare_digest(str, str) raises TypeError for a
    non-ASCII str: /accounts/google/callback/?state=%C3%A9&code=x after any connect -> 500."""
    user = factories.user("ANNA", email="anna@acme-gmail.test")
    client = _client(user)
    client.get(G_CONNECT)  # a GET: an attacker's page can make the victim's browser do it too

    response = client.get(G_CALLBACK, {"code": "x", "state": "é"})

    assert response.status_code != 500


@pytest.mark.usefixtures("english")
@pytest.mark.parametrize("step", ["connect", "callback"])
def test_microsoft365_down_is_explained_not_a_server_error(db, m365_settings, step):
    """Google's connect answers 503 when Google is down; Microsoft's raises: msal's
    ConfidentialClientApplication() fetches the authority's metadata and its
    requests.ConnectionError is neither OAuthError (card_views.py:284) nor ValueError
    (providers/microsoft365/oauth.py:96)."""
    user = factories.user("ANNA", email="anna@contoso.test")
    client = _client(user)
    if step == "connect":
        m365_settings.settings.M365_AUTHORITY = UNREACHABLE + "/tenant"
        response = client.get(M_CONNECT)
    else:
        m365_settings.provider.add_user("anna", "anna@contoso.test")
        params = m365_settings.provider.sign_in(client.get(M_CONNECT)["Location"], "anna")
        m365_settings.settings.M365_AUTHORITY = UNREACHABLE + "/tenant"
        response = client.get(M_CALLBACK, params)

    assert response.status_code != 500


# -- goal 7: Microsoft 365 broken by the refactor --------------------------------------------
@pytest.mark.usefixtures("english")
def test_a_google_outage_does_not_stop_the_daily_microsoft365_refresh(
    db, google_settings, m365_settings
):
    """smtp_settings/tasks.py:74 refreshes provider after provider in one comprehension; Google
    comes first (providers/__init__.py:18) and its TransientSendError (google/oauth.py:246)
    is not caught by oauth.refresh_all (only PermanentSendError): the task dies and no
    Microsoft 365 connection is refreshed (nor any Google one after the first)."""
    from smtp_settings.tasks import oauth_refresh

    user = factories.user("ANNA", email="anna@contoso.test")
    client = _client(user)
    m365_settings.provider.add_user("anna", "anna@contoso.test")
    client.get(
        M_CALLBACK, m365_settings.provider.sign_in(client.get(M_CONNECT)["Location"], "anna")
    )
    google_settings.provider.add_user("anna-g", "anna@acme-gmail.test")
    client.get(
        G_CALLBACK, google_settings.provider.sign_in(client.get(G_CONNECT)["Location"], "anna-g")
    )
    assert set(OAuthConnection.objects.values_list("provider", flat=True)) == {
        "google",
        "microsoft365",
    }
    OAuthConnection.objects.update(refreshed_at=None)
    google_settings.settings.GOOGLE_ISSUER = UNREACHABLE  # Google does not answer today
    cache.clear()

    try:
        oauth_refresh()
    except Exception as error:
        died = repr(error)
    else:
        died = ""

    m365 = OAuthConnection.objects.get(provider="microsoft365")
    assert m365.refreshed_at is not None, f"Microsoft 365 not refreshed; the task died: {died}"


# -- goal 4: attacker text on the victim's card ----------------------------------------------
@pytest.mark.usefixtures("english")
def test_nobody_can_put_their_text_on_a_users_card_with_a_link(db, google_settings):
    """google/oauth.py:132 (and microsoft365/oauth.py:83) turn `error`/`error_description`
    into the user's message before checking that a flow exists or that `state` matches: a
    link makes the app itself tell a logged-in user whatever the attacker wrote (escaped, so
    no script; phishing text). The same GET also throws away a sign-in in progress."""
    victim = factories.user("ANNA", email="anna@acme-gmail.test")
    client = _client(victim)
    lure = "Your mailbox is suspended. Call +48 22 000 00 00 to restore it"

    page = client.get(
        G_CALLBACK, {"error": "server_error", "error_description": lure}, follow=True
    ).content.decode()

    assert lure not in page


# -- goal 2 / 5: discovery over plain http --------------------------------------------------
class _Server:
    """A tiny HTTP(S) server on 127.0.0.1 answering from `routes` and recording requests."""

    def __init__(self, routes, ssl_context=None) -> None:
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                owner.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, headers, payload = routes(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _json(data) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(data).encode()


@pytest.mark.usefixtures("english")
@pytest.mark.parametrize("route", ["http-issuer", "https-issuer-redirects-to-http"])
def test_discovery_over_plain_http_hands_nothing_to_a_mitm(db, google_settings, test_ca, route):
    """google/oauth.py:61-80 (`_metadata`) says "only its own, over https" but checks only the
    endpoints' scheme: GOOGLE_ISSUER may be http://, and requests follows a redirect from an
    https issuer to http://. Whoever answers that plaintext hop names the endpoints (the
    `issuer` field is just echoed): the callback then POSTs the code, the PKCE verifier and
    GOOGLE_CLIENT_SECRET to the attacker's token endpoint, and the result is cached an hour."""
    attacker = _Server(
        lambda path: _json({"error": "invalid_grant"}), test_ca.server_context("valid")
    )
    evil = f"https://localhost:{attacker.port}"
    issuer_box: dict[str, str] = {}

    def plain(path):  # the plaintext leg a network attacker rewrites
        return _json(
            {
                "issuer": issuer_box["issuer"],
                "authorization_endpoint": f"{evil}/authorize",
                "token_endpoint": f"{evil}/token",
                "userinfo_endpoint": f"{evil}/userinfo",
            }
        )

    mitm = _Server(plain)
    servers = [attacker, mitm]
    if route == "http-issuer":
        issuer_box["issuer"] = f"http://127.0.0.1:{mitm.port}"
    else:
        target = f"http://127.0.0.1:{mitm.port}/.well-known/openid-configuration"
        https_issuer = _Server(lambda p: (302, {"Location": target}, b""), test_ca.server_context())
        servers.append(https_issuer)
        issuer_box["issuer"] = f"https://localhost:{https_issuer.port}"
    google_settings.settings.GOOGLE_ISSUER = issuer_box["issuer"]
    cache.clear()
    try:
        client = _client(factories.user("ANNA", email="anna@acme-gmail.test"))
        started = client.get(G_CONNECT)
        state = parse_qs(urlsplit(started.get("Location", "")).query).get("state", [""])[0]
        client.get(G_CALLBACK, {"code": "victims-code", "state": state})
    finally:
        for server in servers:
            server.close()

    stolen = [r for r in attacker.requests if r["path"] == "/token"]
    leaked = ""
    if stolen:
        basic = stolen[0]["headers"].get("Authorization", "").removeprefix("Basic ")
        leaked = f"{base64.b64decode(basic).decode()} + {stolen[0]['body']}"
    assert started.status_code == 503 and not stolen, (
        f"consent at {started.get('Location')}; "
        f"token endpoint got client_id:secret + body: {leaked}"
    )


# -- goal 4: the Google client secret in error reports --------------------------------------
def test_error_reports_scrub_the_google_secret_as_the_microsoft_one(settings):
    """directo_mail/reporting.py:72 (`_known_secrets`) lists M365_CLIENT_SECRET, not
    GOOGLE_CLIENT_SECRET: a frame holding it (authlib's client_secret_basic builds
    "id:secret") shows it on the DEBUG page / the admins' error mail."""
    settings.DEBUG = True
    settings.M365_CLIENT_SECRET = "m365-secret-" + "m" * 16
    settings.GOOGLE_CLIENT_SECRET = "GOCSPX-google-" + "g" * 16

    def token_request(secret):
        text = f"client-id:{secret}"  # noqa: F841 - what the frame holds
        raise RuntimeError("token endpoint unreachable")

    pages = {}
    for name in ("M365_CLIENT_SECRET", "GOOGLE_CLIENT_SECRET"):
        try:
            token_request(getattr(settings, name))
        except RuntimeError as error:
            request = RequestFactory().get("/accounts/google/callback/")
            pages[name] = technical_500_response(
                request, type(error), error, error.__traceback__
            ).content.decode()

    assert settings.M365_CLIENT_SECRET not in pages["M365_CLIENT_SECRET"]  # control
    assert settings.GOOGLE_CLIENT_SECRET not in pages["GOOGLE_CLIENT_SECRET"]


@pytest.mark.usefixtures("english")
def test_control_google_mode_with_a_foreign_login_cannot_send_as_someone_else(db, google_settings):
    """Held (goal 3): the card's login goes into XOAUTH2 user=, but only the user's own token
    goes with it; the server refuses a login the token does not belong to."""
    user = factories.user("ANNA", email="anna@acme-gmail.test")
    factories.profile(user, mode=SenderMode.GOOGLE, login="anna@acme-gmail.test")
    client = _client(user)
    google_settings.provider.add_user("anna", "anna@acme-gmail.test")
    client.get(
        G_CALLBACK, google_settings.provider.sign_in(client.get(G_CONNECT)["Location"], "anna")
    )
    from smtp_settings.models import SenderProfile

    SenderProfile.objects.filter(user=user).update(login="ceo@acme-gmail.test")
    page = client.post("/accounts/card/", {"action": "test_connection"}).content.decode()
    assert "Connection test passed" not in page
    [attempt] = google_settings.smtp.auth_attempts
    assert attempt.login == "ceo@acme-gmail.test" and not attempt.success
