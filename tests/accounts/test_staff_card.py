"""Staff open a user's card to support them; nobody else can, and secrets stay out of reports."""

import pytest

from smtp_settings.models import SenderMode, SenderProfile
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


@pytest.fixture
def anna():
    return factories.user("ANNA", email="anna@acme.example")


def test_staff_edits_another_users_card(client, anna):
    client.force_login(factories.user("ADMIN", is_staff=True))
    page = client.get("/accounts/card/ANNA/")
    assert page.status_code == 200
    assert "You are editing the card of ANNA as an administrator." in page.content.decode()

    saved = client.post(
        "/accounts/card/ANNA/",
        {
            "name": "Anna K",
            "email": "anna@acme.example",
            "mode": SenderMode.SMTP,
            "server": "smtp.acme.example:587",
            "security": "starttls",
        },
    )
    assert saved.status_code == 302 and saved["Location"] == "/accounts/card/ANNA/"
    profile = SenderProfile.objects.get(user=anna)
    assert (profile.host, profile.port, profile.security) == ("smtp.acme.example", 587, "starttls")
    assert not SenderProfile.objects.filter(user__code="ADMIN").exists()


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_user_cannot_open_another_users_card(client, anna, method):
    client.force_login(factories.user("BOB"))
    response = getattr(client, method)(
        "/accounts/card/ANNA/", {"name": "hacked", "mode": "default"}
    )
    assert response.status_code == 403
    anna.refresh_from_db()
    assert anna.name != "hacked"


def test_unknown_card_is_404_for_staff(client):
    client.force_login(factories.user("ADMIN", is_staff=True))
    assert client.get("/accounts/card/NOBODY/").status_code == 404


def test_own_code_in_the_url_is_the_own_card(client, anna):
    client.force_login(anna)
    assert client.get("/accounts/card/ANNA/").status_code == 200


@pytest.mark.parametrize(
    ("url", "field", "staff"),
    [("/accounts/card/", "password", False), ("/settings/system/", "global-password", True)],
)
def test_password_posts_are_hidden_from_error_reports(client, url, field, staff):
    """Django's error reports (mail to admins, the debug page) mask these POST fields."""
    client.force_login(factories.user(is_staff=staff))
    response = client.post(url, {field: "x"})
    assert list(response.wsgi_request.sensitive_post_parameters) == [field]


@pytest.mark.parametrize(
    "url",
    ["/accounts/card/AN%00NA/", "/invoices/?customer=a%00b", "/events/?user=%00", "/?x%00=1"],
)
def test_a_null_character_in_the_address_is_a_clear_400(client, url):
    """PostgreSQL refuses NUL in a query: it must never get that far (a 500)."""
    client.force_login(factories.user("ADMIN", is_staff=True))

    response = client.get(url)

    assert response.status_code == 400
    assert "null character" in response.content.decode()
