"""Google OAUTH (issue 15) end to end against the local stand-ins for Google.

A local OpenID provider over TLS plays accounts.google.com (discovery from GOOGLE_ISSUER,
authorization code with PKCE) and an implicit-TLS SMTP server plays smtp.gmail.com:465,
accepting XOAUTH2 only with a token that provider vouches for (tests/m365_fixtures.py). The
browser popup is in tests/test_browser_google.py; here the sign-in form is submitted without a
browser.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.cache import cache
from django.test import Client

from outbox.models import Event, EventKind, MessageState
from outbox.services import outbox_enqueue
from smtp_settings import crypto
from smtp_settings.models import OAuthConnection, SenderMode, SenderProfile
from smtp_settings.providers.google import oauth as google
from tests import factories
from tests.outbox.waiting import settled

CONNECT = "/accounts/google/connect/"
CALLBACK = "/accounts/google/callback/"
ADDRESS = "anna@acme-gmail.test"


@pytest.fixture
def anna(db):
    user = factories.user("ANNA", email=ADDRESS, name="Anna Kowalska")
    factories.profile(user, mode=SenderMode.GOOGLE, login=ADDRESS)
    return user


def _signed_in_params(client: Client, provider, sub: str = "anna") -> dict[str, str]:
    started = client.get(CONNECT)
    assert started.status_code == 302, started.content
    return provider.sign_in(started["Location"], sub)


def _connect(client: Client, provider, sub: str = "anna", address: str = ADDRESS):
    provider.add_user(sub, address)
    return client.get(CALLBACK, _signed_in_params(client, provider, sub))


def _nothing_stored() -> bool:
    return not OAuthConnection.objects.exists()


@pytest.mark.usefixtures("english")
def test_the_consent_page_asks_for_gmail_offline_with_pkce(client, anna, google_settings):
    client.force_login(anna)
    started = client.get(CONNECT)
    url = urlsplit(started["Location"])
    query = parse_qs(url.query)
    assert started["Location"].startswith(google_settings.provider.base_url + "/")
    assert set(query["scope"][0].split()) == {"openid", "email", "https://mail.google.com/"}
    assert query["access_type"] == ["offline"] and query["prompt"] == ["consent"]
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["login_hint"] == [ADDRESS]
    assert query["redirect_uri"] == ["http://testserver/accounts/google/callback/"]
    # The verifier stays in the server-side session, never in the URL.
    session_flow = client.session["oauth_flow"]["flow"]
    assert session_flow["verifier"] not in started["Location"]


@pytest.mark.usefixtures("english")
def test_connecting_stores_the_token_encrypted_and_sets_mode_and_login(
    client, anna, google_settings
):
    SenderProfile.objects.filter(user=anna).update(mode=SenderMode.DEFAULT, login="")
    client.force_login(anna)

    response = _connect(client, google_settings.provider)

    assert response.status_code == 302 and response["Location"] == "/accounts/card/"
    connection = OAuthConnection.objects.get(user=anna)
    assert (connection.provider, connection.address) == ("google", ADDRESS)
    assert connection.token_encrypted.startswith("gAAAAA")
    token = json.loads(crypto.decrypt(connection.token_encrypted))
    assert token["refresh_token"] and token["access_token"]
    assert token["refresh_token"] not in connection.token_encrypted
    assert (connection.smtp_host, connection.smtp_port) == (
        "localhost",
        google_settings.smtp.port,
    )
    profile = SenderProfile.objects.get(user=anna)
    assert (profile.mode, profile.login) == (SenderMode.GOOGLE, ADDRESS)
    card = client.get("/accounts/card/").content.decode()
    assert "Google has been connected." in card and ADDRESS in card
    assert "Sign in with Google again" in card


def test_the_polish_card_says_google_zostal_polaczony(client, anna, google_settings):
    anna.language = "pl"
    anna.save()
    client.force_login(anna)
    _connect(client, google_settings.provider)
    card = client.get("/accounts/card/").content.decode()
    assert "Google został połączony" in card
    assert "Zaloguj się przez Google ponownie" in card


@pytest.mark.usefixtures("english")
def test_a_card_e_mail_other_than_the_account_is_explained_before_the_first_mail(
    client, anna, google_settings
):
    anna.email = "office@acme.example"
    anna.save()
    client.force_login(anna)
    _connect(client, google_settings.provider)
    card = client.get("/accounts/card/").content.decode()
    assert "Gmail sends it from anna@acme-gmail.test instead" in card
    assert "“Send mail as” address" in card


# -- callbacks that must store nothing ------------------------------------------------------------
@pytest.mark.usefixtures("english")
def test_a_forged_state_stores_nothing(client, anna, google_settings):
    client.force_login(anna)
    google_settings.provider.add_user("anna", ADDRESS)
    params = _signed_in_params(client, google_settings.provider)
    before = len(google_settings.provider.token_requests)

    response = client.get(CALLBACK, {**params, "state": "forged"}, follow=True)

    assert "does not belong to this sign-in" in response.content.decode()
    assert _nothing_stored()
    assert len(google_settings.provider.token_requests) == before  # the code was not even used


@pytest.mark.usefixtures("english")
def test_a_replayed_code_stores_nothing(client, anna, google_settings):
    client.force_login(anna)
    google_settings.provider.add_user("anna", ADDRESS)
    params = _signed_in_params(client, google_settings.provider)
    client.get(CALLBACK, params)
    OAuthConnection.objects.all().delete()

    replay = client.get(CALLBACK, params, follow=True)

    assert "was not started from your user card, or it has expired" in replay.content.decode()
    assert _nothing_stored()


@pytest.mark.usefixtures("english")
def test_a_microsoft_flow_cannot_complete_as_google(client, anna, google_settings, m365_settings):
    """A flow started for Microsoft 365 is no flow for Google's callback (and is used up)."""
    client.force_login(anna)
    m365_settings.provider.add_user("anna", "anna@contoso.test")
    started = client.get("/accounts/microsoft365/connect/")
    params = m365_settings.provider.sign_in(started["Location"], "anna")

    response = client.get(CALLBACK, params, follow=True)

    assert "was not started from your user card" in response.content.decode()
    assert _nothing_stored()


@pytest.mark.usefixtures("english")
def test_another_users_callback_stores_nothing(anna, google_settings):
    annas, bobs = Client(), Client()
    annas.force_login(anna)
    bobs.force_login(factories.user("BOB"))
    google_settings.provider.add_user("anna", ADDRESS)
    params = _signed_in_params(annas, google_settings.provider)

    response = bobs.get(CALLBACK, params, follow=True)

    assert "was not started from your user card" in response.content.decode()
    assert _nothing_stored()
    annas.get(CALLBACK, params)
    assert OAuthConnection.objects.get().user == anna


@pytest.mark.usefixtures("english")
@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"error": "access_denied"}, "The permissions were not confirmed"),
        ({"error": "admin_policy_enforced"}, "Workspace administrator does not allow"),
    ],
    ids=["consent-refused", "workspace-admin-blocks"],
)
def test_refusals_are_explained_and_store_nothing(client, anna, google_settings, params, text):
    client.force_login(anna)
    started = client.get(CONNECT)
    state = parse_qs(urlsplit(started["Location"]).query)["state"][0]  # this very sign-in's
    response = client.get(CALLBACK, {**params, "state": state}, follow=True)
    assert text in response.content.decode()
    assert _nothing_stored()


@pytest.mark.usefixtures("english")
def test_an_issuer_that_is_not_itself_is_refused(client, anna, google_settings, settings):
    """GOOGLE_ISSUER's configuration must name GOOGLE_ISSUER as its issuer (a page that points
    the token endpoint elsewhere is not Google's)."""
    settings.GOOGLE_ISSUER = google_settings.provider.issuer + "/../other"
    cache.clear()
    client.force_login(anna)
    response = client.get(CONNECT, follow=True)
    assert "Google did not answer" in response.content.decode()
    assert _nothing_stored()


@pytest.mark.usefixtures("english")
def test_without_an_oauth_client_the_page_says_what_the_admin_must_do(client, anna, settings):
    settings.GOOGLE_CLIENT_ID = ""
    client.force_login(anna)
    response = client.get(CONNECT)
    assert response.status_code == 503
    assert "GOOGLE_CLIENT_ID" in response.content.decode()
    card = client.get("/accounts/card/").content.decode()
    assert "Google sign-in is not configured on this platform yet" in card


@pytest.mark.usefixtures("english")
def test_disconnect_deletes_the_tokens(client, anna, google_settings):
    client.force_login(anna)
    _connect(client, google_settings.provider)
    response = client.post("/accounts/google/disconnect/", follow=True)
    assert _nothing_stored()
    assert "Google has been disconnected" in response.content.decode()
    assert client.get("/accounts/google/disconnect/").status_code == 405


def test_an_unknown_provider_is_404(client, anna):
    client.force_login(anna)
    assert client.get("/accounts/yahoo/connect/").status_code == 404


# -- sending -------------------------------------------------------------------------------------
@pytest.mark.usefixtures("english")
def test_the_connection_test_signs_in_over_ssl_with_xoauth2(client, anna, google_settings):
    client.force_login(anna)
    _connect(client, google_settings.provider)

    page = client.post("/accounts/card/", {"action": "test_connection"}).content.decode()

    assert "Connection test passed" in page
    [attempt] = google_settings.smtp.auth_attempts
    assert (attempt.login, attempt.success, attempt.tls) == (ADDRESS, True, True)


@pytest.mark.usefixtures("english", "celery_worker")
def test_send_refresh_and_revoke_through_the_worker(transactional_db, google_settings):
    """Connect, send with XOAUTH2 over SSL, send again after the token was refreshed (the new
    token saved re-encrypted, the refresh token kept), then revoke at the provider: the message
    fails with an Event and the card asks to sign in again."""
    provider, server = google_settings.provider, google_settings.smtp
    user = factories.user("ANNA", email=ADDRESS, name="Anna Kowalska")
    factories.profile(user, mode=SenderMode.GOOGLE, login=ADDRESS)
    provider.access_token_lifetime = 60  # inside the 5-minute margin: every use refreshes
    client = Client()
    client.force_login(user)
    _connect(client, provider)
    stored_after_connect = OAuthConnection.objects.get().token_encrypted
    refresh_token = json.loads(crypto.decrypt(stored_after_connect))["refresh_token"]

    first = settled(outbox_enqueue(user=user, to=["c@example.com"], subject="1", body_text="x"))
    second = settled(outbox_enqueue(user=user, to=["c@example.com"], subject="2", body_text="x"))

    assert (first.state, second.state) == (MessageState.SENT, MessageState.SENT), (
        first.last_reply,
        second.last_reply,
    )
    received = server.wait_for(2)
    assert all(m.tls and m.auth_login == ADDRESS for m in received)
    assert received[0].token != received[1].token
    assert provider.token_requests.count("refresh_token") >= 2
    connection = OAuthConnection.objects.get()
    assert connection.token_encrypted != stored_after_connect
    assert json.loads(crypto.decrypt(connection.token_encrypted))["refresh_token"] == refresh_token

    provider.revoke("anna")
    third = settled(outbox_enqueue(user=user, to=["c@example.com"], subject="3", body_text="x"))

    assert third.state == MessageState.FAILED
    assert third.explanation == "google_reconnect"
    event = Event.objects.get(message=third)
    assert event.kind == EventKind.SEND_FAILED and "invalid_grant" in event.reply
    assert OAuthConnection.objects.get().needs_reconnect
    card = client.get("/accounts/card/").content.decode()
    assert "Google no longer accepts the platform's sign-in for this account" in card
    assert "Sign in with Google again" in card
    events = client.get("/events/").content.decode()
    assert "click “Sign in with Google” again" in events
    assert len(server.wait_for(2)) == 2  # nothing more went out

    # Reconnect: the same button, a new consent, and mail flows again.
    _connect(client, provider)
    assert not OAuthConnection.objects.get().needs_reconnect
    fourth = settled(outbox_enqueue(user=user, to=["c@example.com"], subject="4", body_text="x"))
    assert fourth.state == MessageState.SENT, fourth.last_reply


@pytest.mark.usefixtures("english")
def test_the_daily_refresh_warns_a_user_whose_access_was_removed(client, anna, google_settings):
    provider = google_settings.provider
    client.force_login(anna)
    _connect(client, provider)
    assert google.refresh_all() == {"refreshed": 1, "refused": 0, "unanswered": 0}

    provider.revoke("anna")
    assert google.refresh_all() == {"refreshed": 0, "refused": 1, "unanswered": 0}

    event = Event.objects.get(user=anna)
    assert event.kind == EventKind.GOOGLE_RECONNECT
    assert google.refresh_all() == {"refreshed": 0, "refused": 0, "unanswered": 0}  # warned once


@pytest.mark.usefixtures("english")
def test_the_token_goes_only_to_the_server_it_was_connected_for(client, anna, google_settings):
    """GOOGLE_SMTP_SERVER changed after connecting (an admin, or an attacker with settings
    access): the token is not handed to the new server; the card asks to sign in again."""
    client.force_login(anna)
    _connect(client, google_settings.provider)
    google_settings.settings.GOOGLE_SMTP_SERVER = "localhost:2525"
    card = client.get("/accounts/card/").content.decode()
    assert "The Google sign-in was made for another server" in card
    with pytest.raises(Exception) as refused:
        google.access_token(user_id=anna.pk, server=("localhost", 2525))
    assert getattr(refused.value, "explanation", "") == "password_bound_elsewhere"


@pytest.mark.usefixtures("english")
def test_the_refresh_token_goes_only_to_the_issuer_it_was_connected_with(
    client, anna, google_settings
):
    """GOOGLE_ISSUER changed after connecting: the refresh token and the client secret are not
    sent to the new issuer's token endpoint; the provider is asked nothing."""
    client.force_login(anna)
    _connect(client, google_settings.provider)
    before = len(google_settings.provider.token_requests)
    google_settings.settings.GOOGLE_ISSUER = "https://localhost:1/elsewhere"
    with pytest.raises(Exception) as refused:
        google.access_token(user_id=anna.pk, force_refresh=True)
    assert getattr(refused.value, "explanation", "") == "password_bound_elsewhere"
    assert len(google_settings.provider.token_requests) == before
    assert OAuthConnection.objects.get().api_endpoint == google_settings.provider.issuer
