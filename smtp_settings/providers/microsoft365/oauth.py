"""Microsoft 365 OAUTH (S5): connect an account with msal's auth-code flow, keep its token
cache encrypted, and hand the worker a fresh access token for SMTP XOAUTH2.

Entra ID app registration (README): a web app with redirect URI
`https://<host>/accounts/microsoft365/callback/`, delegated permission
`https://outlook.office.com/SMTP.Send`, and admin consent where the tenant requires it.
https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
"""

from __future__ import annotations

import warnings
from urllib.parse import urlsplit

import msal
from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from smtp_settings import crypto
from smtp_settings.models import OAuthConnection
from smtp_settings.oauth import (
    OAuthError,
    connection_locked,
    connection_save,
    flow_keep,
    flow_take,
    refreshed,
    refused,
)
from smtp_settings.transports import XOAuth2Transport

from . import PROVIDER

# msal adds offline_access (a refresh token) itself and refuses it as reserved.
SCOPES = ["https://outlook.office.com/SMTP.Send"]


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


def connect_start(*, session, user, redirect_uri: str, popup: bool) -> str:
    """Begin the auth-code flow (state + PKCE); the flow waits in the session. Returns the URL."""
    connected = OAuthConnection.objects.filter(user=user, provider=PROVIDER.key).first()
    login_hint = (connected.address if connected else "") or user.email
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
    flow_keep(session, provider=PROVIDER, user=user, popup=popup, flow=flow)
    return flow["auth_uri"]


@sensitive_variables("result", "cache")
def connect_finish(*, session, user, params: dict[str, str]) -> OAuthConnection:
    """Complete the flow from the callback's query. Stores nothing unless all of it checks out:
    the flow was started in this session by this user, the state matches, the code is new."""
    flow = flow_take(session, provider=PROVIDER, user=user)  # one use only
    if "error" in params:
        raise _provider_error(params.get("error", ""), params.get("error_description", ""))
    if flow is None:
        raise OAuthError(
            "no_flow",
            _(
                "This sign-in was not started from your user card, or it has expired. Click "
                "“Authenticate with Microsoft 365” again."
            ),
        )
    cache = msal.SerializableTokenCache()
    try:
        result = _app(cache).acquire_token_by_auth_code_flow(flow, params)
    except ValueError:  # msal: state mismatch or a malformed response
        raise OAuthError(
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
        raise OAuthError(
            "no_account", _("Microsoft 365 did not say which account signed in. Try again.")
        )
    # S5.3: the user name is the Microsoft 365 address.
    return connection_save(
        provider=PROVIDER,
        user=user,
        address=address,
        account_id=accounts[0]["home_account_id"],
        token=cache.serialize(),
    )


def _provider_error(error: str, description: str) -> OAuthError:
    detail = f"{error}: {description}".strip(": ")
    if "AADSTS65001" in description or error == "consent_required":
        message = _(
            "Your organisation requires an administrator to approve this application first. "
            "Ask your Microsoft 365 administrator to grant admin consent to it, then try again."
        )
        return OAuthError("admin_consent_required", message, detail)
    if error == "access_denied":
        message = _(
            "The permissions were not confirmed, so nothing was connected. Click “Authenticate "
            "with Microsoft 365” again and accept the permissions to send mail."
        )
        return OAuthError("consent_refused", message, detail)
    message = _("Microsoft 365 refused the sign-in (%(detail)s). Try again.") % {"detail": detail}
    return OAuthError("provider_error", message, detail)


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
        connection = connection_locked(provider=PROVIDER, user_id=user_id, server=server)
        cache = msal.SerializableTokenCache()
        cache.deserialize(crypto.decrypt(connection.token_encrypted))
        app = _app(cache)
        account = next(
            (a for a in app.get_accounts() if a["home_account_id"] == connection.account_id),
            None,
        )
        result = (
            app.acquire_token_silent_with_error(SCOPES, account, force_refresh=force_refresh)
            if account
            else None
        )
        if result and "access_token" in result:
            refreshed(connection, token=cache.serialize() if cache.has_state_changed else None)
            return connection.address, result["access_token"]
        error = (
            f"{result.get('error', '')}: {result.get('error_description', '')}".strip(": ")
            if result
            else "no cached account"
        )
        refusal = refused(PROVIDER, connection, error)
    raise refusal


def transport(sender) -> XOAuth2Transport:
    """SMTP with StartTLS, then AUTH XOAUTH2 with the user's token (S5.3).
    https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth#smtp-protocol-exchange
    """
    return XOAuth2Transport(
        host=sender.host,
        port=sender.port,
        security=sender.security,
        login=sender.login,
        token=lambda server: access_token(user_id=sender.secret.id, server=server),
    )


def refresh_all() -> dict[str, int]:
    from smtp_settings.oauth import refresh_all as refresh

    return refresh(PROVIDER)
