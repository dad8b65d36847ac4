"""Microsoft 365 OAUTH (S5): connect an account with msal's auth-code flow, keep its token
cache encrypted, and hand the worker a fresh access token for SMTP XOAUTH2.

Entra ID app registration (README): a web app with redirect URI
`https://<host>/accounts/microsoft365/callback/`, delegated permission
`https://outlook.office.com/SMTP.Send`, and admin consent where the tenant requires it.
https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
"""

from __future__ import annotations

import hmac
import logging
import warnings
from urllib.parse import urlsplit

import msal
import requests
from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from smtp_settings import crypto
from smtp_settings.errors import PermanentSendError, TransientSendError
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
from smtp_settings.transports import Transport, XOAuth2Transport

from . import PROVIDER
from .graph import GraphTransport

logger = logging.getLogger(__name__)

# msal adds offline_access (a refresh token) itself and refuses it as reserved.
SCOPES = ["https://outlook.office.com/SMTP.Send"]
# Microsoft Graph's, consented together with SMTP.Send (a token is for one resource: the code
# is redeemed for SMTP, and the refresh token gives a Graph token when Graph sends).
GRAPH_SCOPES = ["https://graph.microsoft.com/Mail.Send"]


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
    try:
        app = _app()
    except requests.RequestException:  # msal reads the authority's configuration first
        raise _unavailable() from None
    with warnings.catch_warnings():
        # msal recommends response_mode=form_post (RFC 9700 §4.3.1). A cross-site POST would
        # come without our SameSite=Lax session cookie, and the flow waits in the session; the
        # code in the query is bound to this session by state and PKCE, used once, and kept
        # out of other sites' Referer by SECURE_REFERRER_POLICY = "same-origin".
        warnings.filterwarnings("ignore", message="response_mode='form_post'")
        consent = SCOPES if settings.M365_TRANSPORT == "smtp" else [*SCOPES, *GRAPH_SCOPES]
        flow = app.initiate_auth_code_flow(
            consent,
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
    if flow is not None and "error" in params:
        # The provider's error text is shown only for this very sign-in (its state): a crafted
        # link cannot put its words on the user's card.
        if hmac.compare_digest(
            str(params.get("state", "")).encode(), str(flow.get("state", "")).encode()
        ):
            raise _provider_error(params.get("error", ""), params.get("error_description", ""))
        flow = None
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
        app = _app(cache)
        result = app.acquire_token_by_auth_code_flow(flow, params, scopes=SCOPES)
    except requests.RequestException:  # Microsoft's sign-in service did not answer
        raise _unavailable() from None
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
    accounts = app.get_accounts()
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
        api_endpoint=settings.M365_GRAPH_ENDPOINT,
    )


def _unavailable() -> OAuthError:
    return OAuthError("unavailable", _("Microsoft 365 did not answer. Try again in a few minutes."))


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
    *,
    user_id: int,
    server: tuple[str, int] | None = None,
    force_refresh: bool = False,
    graph: bool = False,
) -> tuple[str, str]:
    """(address, access token) for SMTP XOAUTH2, refreshed by msal when needed.

    `server` is the SMTP server the token is about to be sent to: unless the account was
    connected for exactly that one, the cache is not even decrypted (issue 11, item 5).
    Without it (the periodic refresh) the token only goes to the Microsoft authority. With
    `graph`, a token for Microsoft Graph's Mail.Send, only for the Graph endpoint the account was
    connected for.

    The row stays locked while msal may use and rotate the refresh token, so two workers never
    lose one; the rotated cache is saved re-encrypted. A refusal (invalid_grant, revoked
    consent, AADSTS errors) marks the connection for reconnecting and raises a permanent error.
    """
    with transaction.atomic():
        connection = connection_locked(provider=PROVIDER, user_id=user_id, server=server)
        if graph and connection.api_endpoint != settings.M365_GRAPH_ENDPOINT:
            raise PermanentSendError(
                "",
                explanation="password_bound_elsewhere",
                params={"host": settings.M365_GRAPH_ENDPOINT},
            )
        cache = msal.SerializableTokenCache()
        cache.deserialize(crypto.decrypt(connection.token_encrypted))
        try:
            app = _app(cache)
            account = next(
                (a for a in app.get_accounts() if a["home_account_id"] == connection.account_id),
                None,
            )
            result = (
                app.acquire_token_silent_with_error(
                    GRAPH_SCOPES if graph else SCOPES, account, force_refresh=force_refresh
                )
                if account
                else None
            )
        except requests.RequestException as error:  # Microsoft did not answer: try later
            logger.warning("Microsoft 365 token refresh: user_id=%s: %s", user_id, error)
            raise TransientSendError("", explanation="temporary_failure") from None
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


def uses_graph(connection: OAuthConnection | None) -> bool:
    """Whether this account's mail goes through Microsoft Graph: the platform says so
    (M365_TRANSPORT=graph), or, on "auto", the user chose it on the card."""
    if settings.M365_TRANSPORT == "graph":
        return True
    return (
        settings.M365_TRANSPORT == "auto"
        and connection is not None
        and connection.transport == "graph"
    )


def graph_choose(*, user, graph: bool) -> None:
    """The card's switch (M365_TRANSPORT=auto): Graph, or back to SMTP. Switching to Graph takes
    a Graph token first, so a consent without Mail.Send is found now, not at the next mail."""
    if graph:
        access_token(user_id=user.pk, graph=True)
    OAuthConnection.objects.filter(user=user, provider=PROVIDER.key).update(
        transport="graph" if graph else ""
    )


class _SmtpTransport(XOAuth2Transport):
    """XOAUTH2 over SMTP; a tenant refusing SMTP sign-in (5.7.139) is noted on the connection,
    so the card offers Microsoft Graph."""

    def __init__(self, *, user_id: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.user_id = user_id

    def open(self) -> None:
        try:
            super().open()
        except PermanentSendError as error:
            if error.explanation == "m365_smtp_auth_disabled":
                OAuthConnection.objects.filter(user_id=self.user_id, provider=PROVIDER.key).update(
                    smtp_refused=error.reply[:500] or "5.7.139"
                )
            raise


def transport(sender) -> Transport:
    """Microsoft Graph sendMail when chosen (`uses_graph`), else SMTP with StartTLS and AUTH
    XOAUTH2 (S5.3).
    https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth#smtp-protocol-exchange
    """
    user_id = sender.secret.id
    connection = OAuthConnection.objects.filter(user_id=user_id, provider=PROVIDER.key).first()
    if uses_graph(connection):
        return GraphTransport(
            endpoint=settings.M365_GRAPH_ENDPOINT,
            token=lambda force: access_token(user_id=user_id, graph=True, force_refresh=force),
        )
    return _SmtpTransport(
        user_id=user_id,
        host=sender.host,
        port=sender.port,
        security=sender.security,
        login=sender.login,
        token=lambda server: access_token(user_id=user_id, server=server),
    )


def refresh_all() -> dict[str, int]:
    from smtp_settings.oauth import refresh_all as refresh

    return refresh(PROVIDER)
