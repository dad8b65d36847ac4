"""Migration smtp_settings 0006 moves every Microsoft 365 connection out of `accounts` as it was:
still encrypted with the same ciphertext, still bound to its server, so nobody needs to sign in
again after the upgrade; and back again when rolled back."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("accounts", "0005_user_time_zone"), ("smtp_settings", "0005_profile_tested")]
AFTER = [
    ("accounts", "0006_microsoft365_connection_moved"),
    ("smtp_settings", "0006_oauth_connection"),
]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_microsoft_365_connections_move_unchanged_and_back():
    old_apps = _migrate(BEFORE)
    User = old_apps.get_model("accounts", "User")
    Old = old_apps.get_model("accounts", "Microsoft365Connection")
    user = User.objects.create(code="MIGR")
    refreshed = timezone.now()
    Old.objects.create(
        user=user,
        address="migr@contoso.test",
        home_account_id="uid.tenant",
        token_cache_encrypted="gAAAAA-the-same-ciphertext",
        smtp_host="smtp.office365.com",
        smtp_port=587,
        refreshed_at=refreshed,
        last_error="",
    )

    new_apps = _migrate(AFTER)
    [moved] = new_apps.get_model("smtp_settings", "OAuthConnection").objects.all()
    assert (moved.user_id, moved.provider, moved.address) == (
        user.pk,
        "microsoft365",
        "migr@contoso.test",
    )
    assert moved.account_id == "uid.tenant"
    assert moved.token_encrypted == "gAAAAA-the-same-ciphertext"
    assert (moved.smtp_host, moved.smtp_port) == ("smtp.office365.com", 587)
    assert moved.refreshed_at == refreshed

    back_apps = _migrate(BEFORE)
    [back] = back_apps.get_model("accounts", "Microsoft365Connection").objects.all()
    assert back.token_cache_encrypted == "gAAAAA-the-same-ciphertext"
    assert back.home_account_id == "uid.tenant"
    _migrate(_latest())


def _latest():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()
