"""Microsoft 365 OAUTH (S5) end to end against the local stand-ins for Microsoft.

A local OpenID provider over TLS plays Entra ID and an SMTP server accepts XOAUTH2 only with a
token that provider vouches for (tests/m365_fixtures.py). The browser popup is in
tests/test_browser_microsoft365.py; here the sign-in form is submitted without a browser.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from outbox.models import Event, EventKind, MessageState
from outbox.services import outbox_enqueue
from smtp_settings import crypto
from smtp_settings.models import OAuthConnection, SenderMode, SenderProfile
from tests import factories
from tests.outbox.waiting import settled

CONNECT = "/accounts/microsoft365/connect/"
CALLBACK = "/accounts/microsoft365/callback/"
ADDRESS = "anna@contoso.test"


@pytest.fixture
def anna(db):
    user = factories.user("ANNA", email=ADDRESS, name="Anna Kowalska")
    factories.profile(user, mode=SenderMode.MICROSOFT365, login=ADDRESS)
    return user


def _signed_in_params(client: Client, provider, sub: str = "anna") -> dict[str, str]:
    """Start the flow on the card's link and complete the provider's sign-in form."""
    started = client.get(CONNECT)
    assert started.status_code == 302
    return provider.sign_in(started["Location"], sub)


def _connect(client: Client, provider, sub: str = "anna"):
    provider.add_user(sub, ADDRESS)
    return client.get(CALLBACK, _signed_in_params(client, provider, sub))


def _nothing_stored() -> bool:
    return not OAuthConnection.objects.exists()


@pytest.mark.usefixtures("english")
def test_connecting_stores_the_token_encrypted_and_sets_the_login(client, anna, m365_settings):
    client.force_login(anna)

    response = _connect(client, m365_settings.provider)

    assert response.status_code == 302 and response["Location"] == "/accounts/card/"
    connection = OAuthConnection.objects.get(user=anna)
    assert connection.address == ADDRESS
    assert connection.token_encrypted.startswith("gAAAAA")
    assert "access_token" not in connection.token_encrypted
    assert '"RefreshToken"' in crypto.decrypt(connection.token_encrypted)
    profile = SenderProfile.objects.get(user=anna)
    assert (profile.mode, profile.login) == (SenderMode.MICROSOFT365, ADDRESS)
    card = client.get("/accounts/card/").content.decode()
    assert "Microsoft 365 has been authenticated." in card
    assert ADDRESS in card


def test_the_polish_card_says_microsoft_365_zostal_uwierzytelniony(client, anna, m365_settings):
    anna.language = "pl"
    anna.save()
    client.force_login(anna)
    _connect(client, m365_settings.provider)
    assert "Microsoft 365 został uwierzytelniony" in client.get("/accounts/card/").content.decode()


@pytest.mark.usefixtures("english")
def test_the_popup_callback_tells_its_opener(client, anna, m365_settings):
    client.force_login(anna)
    m365_settings.provider.add_user("anna", ADDRESS)
    started = client.get(CONNECT, {"popup": "1"})
    params = m365_settings.provider.sign_in(started["Location"], "anna")

    page = client.get(CALLBACK, params)

    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-popup-result="ok"' in html and "js/oauth" in html
    assert page["Cross-Origin-Opener-Policy"] == "unsafe-none"


@pytest.mark.usefixtures("english")
def test_a_card_e_mail_other_than_the_account_needs_send_as(client, anna, m365_settings):
    anna.email = "office@acme.example"
    anna.save()
    client.force_login(anna)
    _connect(client, m365_settings.provider)
    card = client.get("/accounts/card/").content.decode()
    assert "“Send As” rights for office@acme.example" in card


# -- callbacks that must store nothing ------------------------------------------------------------
@pytest.mark.usefixtures("english")
def test_a_forged_state_stores_nothing(client, anna, m365_settings):
    client.force_login(anna)
    m365_settings.provider.add_user("anna", ADDRESS)
    params = _signed_in_params(client, m365_settings.provider)

    response = client.get(CALLBACK, {**params, "state": "forged"}, follow=True)

    assert "does not belong to this sign-in" in response.content.decode()
    assert _nothing_stored()


@pytest.mark.usefixtures("english")
def test_a_replayed_code_stores_nothing(client, anna, m365_settings):
    client.force_login(anna)
    m365_settings.provider.add_user("anna", ADDRESS)
    params = _signed_in_params(client, m365_settings.provider)
    client.get(CALLBACK, params)
    OAuthConnection.objects.all().delete()

    replay = client.get(CALLBACK, params, follow=True)

    assert "was not started from your user card, or it has expired" in replay.content.decode()
    assert _nothing_stored()


@pytest.mark.usefixtures("english")
def test_another_users_flow_stores_nothing(anna, m365_settings):
    """Bob gets hold of Anna's callback URL: his session has no flow, Anna's is untouched."""
    annas, bobs = Client(), Client()
    annas.force_login(anna)
    bobs.force_login(factories.user("BOB"))
    m365_settings.provider.add_user("anna", ADDRESS)
    params = _signed_in_params(annas, m365_settings.provider)

    response = bobs.get(CALLBACK, params, follow=True)

    assert "was not started from your user card" in response.content.decode()
    assert _nothing_stored()
    # Anna's own flow still completes.
    annas.get(CALLBACK, params)
    assert OAuthConnection.objects.get().user == anna


@pytest.mark.usefixtures("english")
@pytest.mark.parametrize(
    ("params", "text"),
    [
        (
            {"error": "access_denied", "error_description": "The user denied consent."},
            "The permissions were not confirmed, so nothing was connected.",
        ),
        (
            {
                "error": "invalid_client",
                "error_description": "AADSTS65001: The user or administrator has not consented.",
            },
            "requires an administrator to approve this application first",
        ),
    ],
    ids=["consent-refused", "admin-consent-required"],
)
def test_refusals_are_explained_and_store_nothing(client, anna, m365_settings, params, text):
    client.force_login(anna)
    started = client.get(CONNECT)
    state = parse_qs(urlsplit(started["Location"]).query)["state"][0]  # this very sign-in's

    response = client.get(CALLBACK, {**params, "state": state}, follow=True)

    assert text in response.content.decode()
    assert _nothing_stored()


@pytest.mark.usefixtures("english")
def test_without_a_registered_application_the_page_says_what_the_admin_must_do(
    client, anna, settings
):
    settings.M365_CLIENT_ID = ""
    client.force_login(anna)
    response = client.get(CONNECT)
    assert response.status_code == 503
    assert "M365_CLIENT_ID" in response.content.decode()


@pytest.mark.usefixtures("english")
def test_disconnect_deletes_the_token_cache(client, anna, m365_settings):
    client.force_login(anna)
    _connect(client, m365_settings.provider)

    response = client.post("/accounts/microsoft365/disconnect/", follow=True)

    assert _nothing_stored()
    assert "Microsoft 365 has been disconnected" in response.content.decode()
    assert client.get("/accounts/microsoft365/disconnect/").status_code == 405


# -- sending through the worker --------------------------------------------------------------------
@pytest.mark.usefixtures("english", "celery_worker")
def test_send_refresh_and_revoke_through_the_worker(transactional_db, m365_settings):
    """Connect, send with XOAUTH2, send again after msal refreshed the token (the rotated cache
    saved), then revoke consent at the provider: the message fails with an Event and the card
    asks to authenticate again."""
    provider, server = m365_settings.provider, m365_settings.smtp
    user = factories.user("ANNA", email=ADDRESS, name="Anna Kowalska")
    factories.profile(user, mode=SenderMode.MICROSOFT365, login=ADDRESS)
    provider.access_token_lifetime = 60  # below msal's 5-minute margin: every use refreshes
    client = Client()
    client.force_login(user)
    _connect(client, provider)
    cache_after_connect = OAuthConnection.objects.get().token_encrypted

    first = settled(outbox_enqueue(user=user, to=["c@example.com"], subject="1", body_text="x"))
    second = settled(outbox_enqueue(user=user, to=["c@example.com"], subject="2", body_text="x"))

    assert (first.state, second.state) == (MessageState.SENT, MessageState.SENT), (
        first.last_reply,
        second.last_reply,
    )
    received = server.wait_for(2)
    assert all(m.tls and m.auth_login == ADDRESS for m in received)
    assert received[0].token != received[1].token  # a refreshed access token
    assert provider.token_requests.count("refresh_token") >= 2
    connection = OAuthConnection.objects.get()
    assert connection.token_encrypted != cache_after_connect  # saved re-encrypted
    assert connection.refreshed_at is not None

    provider.revoke("anna")
    third = settled(outbox_enqueue(user=user, to=["c@example.com"], subject="3", body_text="x"))

    assert third.state == MessageState.FAILED
    assert third.explanation == "m365_reconnect"
    event = Event.objects.get(message=third)
    assert event.kind == EventKind.SEND_FAILED and "invalid_grant" in event.reply
    assert OAuthConnection.objects.get().needs_reconnect
    card = client.get("/accounts/card/").content.decode()
    assert "authenticate again" in card
    assert "Authenticate with Microsoft 365 again" in card
    events = client.get("/events/").content.decode()
    assert "click “Authenticate with Microsoft 365” again" in events
    assert len(server.wait_for(2)) == 2  # nothing more went out


@pytest.mark.usefixtures("english")
def test_the_daily_refresh_warns_a_user_whose_consent_was_withdrawn(client, anna, m365_settings):
    from smtp_settings.providers.microsoft365.oauth import refresh_all

    provider = m365_settings.provider
    client.force_login(anna)
    _connect(client, provider)
    assert refresh_all() == {"refreshed": 1, "refused": 0, "unanswered": 0}

    provider.revoke("anna")
    assert refresh_all() == {"refreshed": 0, "refused": 1, "unanswered": 0}

    event = Event.objects.get(user=anna)
    assert event.kind == EventKind.MICROSOFT365_RECONNECT
    assert refresh_all() == {"refreshed": 0, "refused": 0, "unanswered": 0}  # warned once


@pytest.mark.usefixtures("english")
def test_the_connection_test_signs_in_with_xoauth2(client, anna, m365_settings):
    client.force_login(anna)
    _connect(client, m365_settings.provider)

    page = client.post("/accounts/card/", {"action": "test_connection"}).content.decode()

    assert "Connection test passed" in page
    [attempt] = m365_settings.smtp.auth_attempts
    assert (attempt.login, attempt.success, attempt.tls) == (ADDRESS, True, True)
    assert m365_settings.smtp.messages == []  # nothing sent
