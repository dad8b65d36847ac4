"""The Django admin shows a profile's password only as "set" / "not set"."""

import secrets

import pytest

from smtp_settings.models import SenderMode
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


@pytest.fixture
def admin_client(client):
    client.force_login(factories.user("ADMIN", is_staff=True, is_superuser=True))
    return client


def test_profile_pages_show_whether_a_password_is_set_never_the_password(admin_client):
    password = secrets.token_urlsafe(12)
    with_password = factories.profile(
        factories.user("ANNA"), host="smtp.acme.example", port=465, login="anna", password=password
    )
    without = factories.profile(factories.user("BOB"), mode=SenderMode.DEFAULT)

    listing = admin_client.get("/admin/smtp_settings/senderprofile/").content.decode()
    change = admin_client.get(
        f"/admin/smtp_settings/senderprofile/{with_password.pk}/change/"
    ).content.decode()
    other = admin_client.get(f"/admin/smtp_settings/senderprofile/{without.pk}/change/")

    for html in (listing, change):
        assert password not in html
        assert with_password.password_encrypted not in html
        assert 'name="password_encrypted"' not in html
    assert ">set<" in change
    assert ">not set<" in other.content.decode()


def test_user_list_links_each_users_card(admin_client):
    factories.user("ANNA")
    html = admin_client.get("/admin/accounts/user/").content.decode()
    assert 'href="/accounts/card/ANNA/"' in html
