"""What every OAuth provider's flow shares (smtp_settings/providers/*/oauth.py): the flow kept in
the session, the encrypted connection, the lock around a refresh, a refusal turned into "connect
again", and the daily refresh.

A provider's oauth module offers:
- `configured() -> bool`: the platform has its client registration;
- `connect_start(*, session, user, redirect_uri, popup) -> str`: the URL of the consent page
  (state and PKCE kept with `flow_keep`);
- `connect_finish(*, session, user, params) -> OAuthConnection`: the callback's query checked
  (`flow_take`), the tokens stored (`connection_save`); raises `OAuthError`;
- `access_token(*, user_id, server=None, force_refresh=False) -> (address, token)`, refreshed
  under the connection's row lock (`connection_locked`), `refused` when the provider says no;
- `transport(sender) -> Transport` for the worker.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from . import crypto
from .errors import PermanentSendError, TransientSendError
from .models import OAuthConnection
from .providers.base import Provider
from .services import profile_update
from .transports import secret_server_check

logger = logging.getLogger(__name__)

SESSION_KEY = "oauth_flow"


class OAuthError(Exception):
    """The sign-in did not complete; `message` says why in the user's language."""

    def __init__(self, code: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail


def flow_keep(session, *, provider: Provider, user, popup: bool, flow: dict) -> None:
    """Keep a started flow (state, PKCE verifier, nonce) until its callback; a new one replaces
    any other, so only the latest sign-in of this browser can complete."""
    session[SESSION_KEY] = {"provider": provider.key, "user": user.pk, "popup": popup, "flow": flow}


def flow_is_popup(session) -> bool:
    return bool((session.get(SESSION_KEY) or {}).get("popup"))


def flow_take(session, *, provider: Provider, user) -> dict | None:
    """The flow this user started with this provider in this session, used once: a replayed
    callback finds nothing. None when there is none."""
    started = session.pop(SESSION_KEY, None)
    if not started or started.get("user") != user.pk or started.get("provider") != provider.key:
        return None
    return started["flow"]


@sensitive_variables("token")
def connection_save(
    *, provider: Provider, user, address: str, account_id: str, token: str, api_endpoint: str = ""
) -> OAuthConnection:
    """Store the connected account (its tokens encrypted, bound to the provider's SMTP server as
    it is now) and make it the user's mail sender, with the connected address as login."""
    host, port, _security = provider.server()
    with transaction.atomic():
        connection, _created = OAuthConnection.objects.update_or_create(
            user=user,
            provider=provider.key,
            defaults={
                "address": address,
                "account_id": account_id,
                "token_encrypted": crypto.encrypt(token),
                "smtp_host": host,
                "smtp_port": port,
                "api_endpoint": api_endpoint,
                "connected_at": timezone.now(),
                "refreshed_at": timezone.now(),
                "last_error": "",
            },
        )
        profile_update(user=user, mode=provider.mode, login=address)
    logger.info("%s connected: user=%s address=%s", provider.key, user.code, address)
    return connection


def disconnect(*, provider: Provider, user) -> None:
    """Forget the account: its tokens are deleted, nothing can be sent with them."""
    OAuthConnection.objects.filter(user=user, provider=provider.key).delete()
    logger.info("%s disconnected: user=%s", provider.key, user.code)


def connection_locked(
    *, provider: Provider, user_id: int, server: tuple[str, int] | None
) -> OAuthConnection:
    """The connection, its row locked until the caller's transaction ends (so two workers never
    refresh with the same refresh token). With `server`, refuses unless the tokens were
    connected for exactly that server: they are not even decrypted (issue 11, item 5)."""
    connection = (
        OAuthConnection.objects.select_for_update()
        .filter(user_id=user_id, provider=provider.key)
        .first()
    )
    if connection is None:
        raise PermanentSendError(
            "",
            explanation=provider.reconnect_explanation,
            params={"login": "", "error": "not connected"},
        )
    if server is not None:
        host, port = server
        secret_server_check(
            bound=provider.bound_server(connection),
            host=host,
            port=port,
            security=provider.security,
        )
    return connection


@sensitive_variables("token")
def refreshed(connection: OAuthConnection, *, token: str | None) -> None:
    """A token was handed out: note when, and store the rotated tokens (`token`) if any."""
    updates = ["refreshed_at", "last_error"]
    connection.refreshed_at, connection.last_error = timezone.now(), ""
    if token is not None:
        connection.token_encrypted = crypto.encrypt(token)
        updates.append("token_encrypted")
    connection.save(update_fields=updates)


def refused(provider: Provider, connection: OAuthConnection, error: str) -> PermanentSendError:
    """The provider refused a refresh: the connection needs connecting again. Saves the reason
    (in the caller's transaction) and returns the error to raise."""
    first = error.splitlines()[0] if error else "refused"
    connection.last_error = error[:2000] or "refused"
    connection.save(update_fields=["last_error"])
    logger.warning(
        "%s token refused: user_id=%s: %s", provider.key, connection.user_id, first[:300]
    )
    return PermanentSendError(
        first[:500],
        explanation=provider.reconnect_explanation,
        params={"login": connection.address, "error": first[:300]},
    )


def refresh_all(provider: Provider) -> dict[str, int]:
    """Refresh each healthy connection now, so its refresh token does not lapse unused; tell
    the user (an Event) when the provider refuses, before a mail fails for it."""
    from outbox.models import Event

    counts = {"refreshed": 0, "refused": 0, "unanswered": 0}
    user_ids = OAuthConnection.objects.filter(provider=provider.key, last_error="").values_list(
        "user_id", flat=True
    )
    for user_id in user_ids:
        try:
            provider.oauth.access_token(user_id=user_id, force_refresh=True)
        except TransientSendError:  # the provider did not answer: the next run tries again
            counts["unanswered"] += 1
            continue
        except PermanentSendError as error:
            Event.objects.create(
                user_id=user_id,
                kind=provider.reconnect_event,
                explanation=error.explanation,
                params=error.params,
                reply=error.reply,
            )
            counts["refused"] += 1
        else:
            counts["refreshed"] += 1
    return counts
