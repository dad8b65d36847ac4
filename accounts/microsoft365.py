"""Microsoft 365 OAUTH (S5): connect an account with msal's auth-code flow, keep its token
cache encrypted, and hand the worker a fresh access token for SMTP XOAUTH2.

Entra ID app registration (README): a web app with redirect URI
`https://<host>/accounts/microsoft365/callback/`, delegated permission
`https://outlook.office.com/SMTP.Send`, and admin consent where the tenant requires it.
https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
"""

from __future__ import annotations

import logging
import warnings
from urllib.parse import urlsplit

import msal
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from smtp_settings import crypto
from smtp_settings.errors import PermanentSendError
from smtp_settings.models import Security, SenderMode
from smtp_settings.selectors import microsoft365_server
from smtp_settings.services import profile_update
from smtp_settings.transports import secret_server_check
from smtp_settings.validation import split_server

from .models import Microsoft365Connection, User

logger = logging.getLogger(__name__)

# msal adds offline_access (a refresh token) itself and refuses it as reserved.
SCOPES = ["https://outlook.office.com/SMTP.Send"]
SESSION_KEY = "microsoft365_flow"


class Microsoft365Error(Exception):
    """The sign-in did not complete; `message` says why in the user's language."""

    def __init__(self, code: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail


def configured() -> bool:
    return bool(settings.M365_CLIENT_ID and settings.M365_CLIENT_SECRET)


def _app(cache: msal.SerializableTokenCache | None = None) -> msal.ConfidentialClientApplication:
    authority = settings.M365_AUTHORITY
    # Instance discovery asks login.microsoftonline.com about the authority: only for Microsoft.
    is_microsoft = (urlsplit(authority).hostname or "").endswith("microsoftonline.com")
    return msal.ConfidentialClientApplication(
        settings.M365_CLIENT_ID,
        client_credential=settings.M365_CLIENT_SECRET,
        authority=authority,
        token_cache=cache,
        instance_discovery=is_microsoft,
    )


def connect_start(*, session, user: User, redirect_uri: str, popup: bool) -> str:
    """Begin the auth-code flow (state + PKCE); the flow waits in the session. Returns the URL."""
    login_hint = getattr(getattr(user, "microsoft365", None), "address", "") or user.email
    with warnings.catch_warnings():
        # msal recommends response_mode=form_post (RFC 9700 §4.3.1). A cross-site POST would
        # come without our SameSite=Lax session cookie, and the flow waits in the session; the
        # code in the query is bound to this session by state and PKCE, used once, and kept
        # out of other sites' Referer by SECURE_REFERRER_POLICY = "same-origin".
        warnings.filterwarnings("ignore", message="response_mode='form_post'")
        flow = _app().initiate_auth_code_flow(
            SCOPES,
            redirect_uri=redirect_uri,
            login_hint=login_hint or None,
            prompt="select_account",
            response_mode="query",
        )
    session[SESSION_KEY] = {"flow": flow, "user": user.pk, "popup": popup}
    return flow["auth_uri"]


def flow_is_popup(session) -> bool:
    return bool((session.get(SESSION_KEY) or {}).get("popup"))


@sensitive_variables("result", "cache")
def connect_finish(*, session, user: User, params: dict[str, str]) -> Microsoft365Connection:
    """Complete the flow from the callback's query. Stores nothing unless all of it checks out:
    the flow was started in this session by this user, the state matches, the code is new."""
    started = session.pop(SESSION_KEY, None)  # one use only: a replayed callback finds nothing
    if "error" in params:
        raise _provider_error(params.get("error", ""), params.get("error_description", ""))
    if not started or started.get("user") != user.pk:
        raise Microsoft365Error(
            "no_flow",
            _(
                "This sign-in was not started from your user card, or it has expired. Click "
                "“Authenticate with Microsoft 365” again."
            ),
        )
    cache = msal.SerializableTokenCache()
    try:
        result = _app(cache).acquire_token_by_auth_code_flow(started["flow"], params)
    except ValueError:  # msal: state mismatch or a malformed response
        raise Microsoft365Error(
            "bad_state",
            _(
                "The answer from Microsoft does not belong to this sign-in. Click "
                "“Authenticate with Microsoft 365” again."
            ),
        ) from None
    if "error" in result:
        raise _provider_error(result.get("error", ""), result.get("error_description", ""))
    claims = result.get("id_token_claims") or {}
    address = claims.get("preferred_username") or claims.get("email") or ""
    accounts = _app(cache).get_accounts()
    if not address or not accounts:
        raise Microsoft365Error(
            "no_account", _("Microsoft 365 did not say which account signed in. Try again.")
        )
    # The tokens are bound to the server they are connected for (issue 11, item 5).
    smtp_host, smtp_port = split_server(settings.M365_SMTP_SERVER)
    with transaction.atomic():
        connection, _created = Microsoft365Connection.objects.update_or_create(
            user=user,
            defaults={
                "address": address,
                "home_account_id": accounts[0]["home_account_id"],
                "token_cache_encrypted": crypto.encrypt(cache.serialize()),
                "smtp_host": smtp_host,
                "smtp_port": smtp_port,
                "connected_at": timezone.now(),
                "refreshed_at": timezone.now(),
                "last_error": "",
            },
        )
        # S5.3: the user name is the Microsoft 365 address.
        profile_update(user=user, mode=SenderMode.MICROSOFT365, login=address)
    logger.info("Microsoft 365 connected: user=%s address=%s", user.code, address)
    return connection


def _provider_error(error: str, description: str) -> Microsoft365Error:
    detail = f"{error}: {description}".strip(": ")
    if "AADSTS65001" in description or error == "consent_required":
        message = _(
            "Your organisation requires an administrator to approve this application first. "
            "Ask your Microsoft 365 administrator to grant admin consent to it, then try again."
        )
        return Microsoft365Error("admin_consent_required", message, detail)
    if error == "access_denied":
        message = _(
            "The permissions were not confirmed, so nothing was connected. Click “Authenticate "
            "with Microsoft 365” again and accept the permissions to send mail."
        )
        return Microsoft365Error("consent_refused", message, detail)
    message = _("Microsoft 365 refused the sign-in (%(detail)s). Try again.") % {"detail": detail}
    return Microsoft365Error("provider_error", message, detail)


def disconnect(*, user: User) -> None:
    """Forget the account: the token cache is deleted, nothing can be sent with it."""
    Microsoft365Connection.objects.filter(user=user).delete()
    logger.info("Microsoft 365 disconnected: user=%s", user.code)


@sensitive_variables()
def access_token(
    *, user_id: int, server: tuple[str, int] | None = None, force_refresh: bool = False
) -> tuple[str, str]:
    """(address, access token) for SMTP XOAUTH2, refreshed by msal when needed.

    `server` is the SMTP server the token is about to be sent to: unless the account was
    connected for exactly that one, the cache is not even decrypted (issue 11, item 5).
    Without it (the periodic refresh) the token only goes to the Microsoft authority.

    The row stays locked while msal may use and rotate the refresh token, so two workers never
    lose one; the rotated cache is saved re-encrypted. A refusal (invalid_grant, revoked
    consent, AADSTS errors) marks the connection for reconnecting and raises a permanent error.
    """
    with transaction.atomic():
        connection = (
            Microsoft365Connection.objects.select_for_update().filter(user_id=user_id).first()
        )
        if connection is None:
            raise PermanentSendError(
                "", explanation="m365_reconnect", params={"login": "", "error": "not connected"}
            )
        if server is not None:
            host, port = server
            secret_server_check(
                bound=microsoft365_server(connection),
                host=host,
                port=port,
                security=Security.STARTTLS,
            )
        cache = msal.SerializableTokenCache()
        cache.deserialize(crypto.decrypt(connection.token_cache_encrypted))
        app = _app(cache)
        account = next(
            (a for a in app.get_accounts() if a["home_account_id"] == connection.home_account_id),
            None,
        )
        result = (
            app.acquire_token_silent_with_error(SCOPES, account, force_refresh=force_refresh)
            if account
            else None
        )
        if result and "access_token" in result:
            updates = ["refreshed_at", "last_error"]
            connection.refreshed_at, connection.last_error = timezone.now(), ""
            if cache.has_state_changed:
                connection.token_cache_encrypted = crypto.encrypt(cache.serialize())
                updates.append("token_cache_encrypted")
            connection.save(update_fields=updates)
            return connection.address, result["access_token"]
        error = (
            f"{result.get('error', '')}: {result.get('error_description', '')}".strip(": ")
            if result
            else "no cached account"
        )
        connection.last_error = error[:2000]
        connection.save(update_fields=["last_error"])
    logger.warning("Microsoft 365 token refused: user_id=%s: %s", user_id, error.splitlines()[0])
    raise PermanentSendError(
        error.splitlines()[0][:500],
        explanation="m365_reconnect",
        params={"login": connection.address, "error": error.splitlines()[0][:300]},
    )


def refresh_all() -> dict[str, int]:
    """Refresh each healthy connection now, so its refresh token does not lapse unused; tell
    the user (an Event) when Microsoft refuses, before a mail fails for it."""
    from outbox.models import Event, EventKind

    counts = {"refreshed": 0, "refused": 0}
    for user_id in Microsoft365Connection.objects.filter(last_error="").values_list(
        "user_id", flat=True
    ):
        try:
            access_token(user_id=user_id, force_refresh=True)
        except PermanentSendError as error:
            Event.objects.create(
                user_id=user_id,
                kind=EventKind.MICROSOFT365_RECONNECT,
                explanation=error.explanation,
                params=error.params,
                reply=error.reply,
            )
            counts["refused"] += 1
        else:
            counts["refreshed"] += 1
    return counts
