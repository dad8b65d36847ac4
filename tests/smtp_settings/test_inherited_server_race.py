"""A password typed for the inherited server the card showed never goes to the one it became
meanwhile (review of issue 11, item 5).

What an abuser tries: they are the mail sending user (S6.1; any user an administrator named),
and know a login-only colleague (S6.2) is about to enter their password (after a notice, or a
password change). Between the colleague opening the card (server shown: the company's) and
pressing Save, the abuser points their own profile at a listener of theirs. Goal: the
colleague's password bound to, and sent to, the listener.

The control: once the card shows the new server, entering the password there binds it there.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client

from outbox.services import outbox_enqueue, outbox_send
from smtp_settings.models import Security, SenderMode, SenderProfile
from smtp_settings.services import profile_update
from tests import factories

pytestmark = pytest.mark.usefixtures("english")

CARD_URL = "/accounts/card/"
LOGIN = "lota@acme.example"
HIDDEN = re.compile(r'name="inherited_server" value="([^"]*)"')


def _post(shown: str, password: str) -> dict:
    return {
        "name": "Lota",
        "email": LOGIN,
        "mode": SenderMode.SMTP,
        "server": "",
        "security": Security.SSL,
        "login": LOGIN,
        "password": password,
        "inherited_server": shown,
    }


def _shown(response) -> str:
    """The inherited server the card page carries (none before the review's fix)."""
    found = HIDDEN.findall(response.content.decode())
    return found[0] if found else ""


def _send(user) -> None:
    message = outbox_enqueue(user=user, to=["x@example.com"], subject="x", body_text="x")
    outbox_send(message_id=message.pk)


def _stolen(server, password: str) -> int:
    return sum(1 for a in server.auth_attempts if server.users.get(a.login) == password)


def test_a_password_typed_for_the_shown_server_does_not_follow_a_switch(db, smtp_servers):
    legit, listener = smtp_servers.implicit_tls, smtp_servers.starttls_optional
    mallory = factories.user("MALLORY")
    factories.profile(mallory, host=legit.host, port=legit.port, login="m", password="x")
    factories.mail_sending_user(mallory)
    lota = factories.user("LOTA", email=LOGIN)
    factories.profile(lota, login=LOGIN)
    client = Client()
    client.force_login(lota)
    shown = _shown(client.get(CARD_URL))

    # Mallory switches the server everyone inherits to a listener of theirs.
    profile_update(
        user=mallory,
        mode=SenderMode.SMTP,
        host=listener.host,
        port=listener.port,
        security=Security.STARTTLS,
        login="m",
        password="y",
    )
    password = factories.secret()
    listener.users[LOGIN] = password
    response = client.post(CARD_URL, _post(shown, password))
    if SenderProfile.objects.get(user=lota).has_password:  # saved after all: where does it go?
        _send(lota)

    assert _stolen(listener, password) == 0
    assert response.status_code == 200  # not saved
    assert "The server you inherit changed while this page was open" in response.content.decode()

    # Control: the card now shows the listener; entered for it, the password goes there.
    assert client.post(CARD_URL, _post(_shown(response), password)).status_code == 302
    _send(lota)
    assert _stolen(listener, password) == 1
