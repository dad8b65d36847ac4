"""Google OAUTH (issue 15): "Sign in with Google" in the card's popup with Authlib's OAuth 2.0
client (authorization code, state, PKCE S256, offline access for a refresh token), the token
kept encrypted, and a fresh access token for SMTP XOAUTH2 to GOOGLE_SMTP_SERVER over SSL.

The endpoints come from GOOGLE_ISSUER's /.well-known/openid-configuration (cached an hour), so
the tests point it at a local OpenID provider. Google Cloud setup: README, "Google OAuth".
https://developers.google.com/identity/protocols/oauth2/web-server
https://developers.google.com/workspace/gmail/imap/xoauth2-protocol
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from urllib.parse import urlsplit

import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError as AuthlibError
from authlib.integrations.requests_client import OAuth2Session
from django.conf import settings
from django.core.cache import cache
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
from smtp_settings.transports import XOAuth2Transport

from . import PROVIDER
from . import configured as configured

logger = logging.getLogger(__name__)

# The Gmail scope SMTP needs (there is no narrower one for SMTP), and who signed in.
SCOPES = "openid email https://mail.google.com/"
TIMEOUT = 10  # seconds for each request to Google
# An access token this close to its expiry is refreshed before use (a big message takes a while).
REFRESH_MARGIN = 300
_METADATA_SECONDS = 3600
_METADATA_BYTES = 64 * 1024


class _Unavailable(Exception):
    """Google did not answer (or not as the issuer's OpenID configuration says)."""


def _metadata() -> dict:
    """The issuer's OpenID configuration: only its own, over https, cached an hour."""
    issuer = settings.GOOGLE_ISSUER.rstrip("/")
    if urlsplit(issuer).scheme != "https":  # the client secret and codes follow this document
        raise _Unavailable(f"GOOGLE_ISSUER {issuer} is not https")
    key = f"google-oidc:{issuer}"
    metadata = cache.get(key)
    if metadata is not None:
        return metadata
    try:
        # No redirects (one to http would hand the document to anyone on the path), and no
        # more than _METADATA_BYTES of it.
        with requests.get(
            f"{issuer}/.well-known/openid-configuration",
            timeout=TIMEOUT,
            allow_redirects=False,
            stream=True,
        ) as response:
            response.raise_for_status()
            if response.status_code != 200:
                raise _Unavailable(f"{issuer}: HTTP {response.status_code}")
            body = response.raw.read(_METADATA_BYTES + 1, decode_content=True)
        if len(body) > _METADATA_BYTES:
            raise _Unavailable(f"{issuer}: its OpenID configuration is too large")
        metadata = json.loads(body)
    except (requests.RequestException, ValueError) as error:
        raise _Unavailable(str(error)) from None
    endpoints = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint")
    if (
        not isinstance(metadata, dict)
        or str(metadata.get("issuer", "")).rstrip("/") != issuer
        or any(urlsplit(str(metadata.get(name, ""))).scheme != "https" for name in endpoints)
    ):
        raise _Unavailable(f"{issuer} does not describe itself as the issuer")
    metadata = {name: metadata[name] for name in endpoints}
    cache.set(key, metadata, _METADATA_SECONDS)
    return metadata


def _client(**kwargs) -> OAuth2Session:
    return OAuth2Session(
        settings.GOOGLE_CLIENT_ID,
        settings.GOOGLE_CLIENT_SECRET,
        scope=SCOPES,
        code_challenge_method="S256",
        default_timeout=TIMEOUT,
        **kwargs,
    )


def _unavailable() -> OAuthError:
    return OAuthError(
        "unavailable",
        _("Google did not answer. Try again in a few minutes."),
    )


def connect_start(*, session, user, redirect_uri: str, popup: bool) -> str:
    """Begin the authorization-code flow; state and the PKCE verifier wait in the session."""
    try:
        metadata = _metadata()
    except _Unavailable as error:
        logger.warning("Google OpenID configuration: %s", error)
        raise _unavailable() from None
    connected = OAuthConnection.objects.filter(user=user, provider=PROVIDER.key).first()
    hint = (connected.address if connected else "") or user.email
    verifier = generate_token(64)
    extra = {"login_hint": hint} if hint else {}
    # access_type=offline and prompt=consent: Google gives a refresh token only then.
    uri, state = _client(redirect_uri=redirect_uri).create_authorization_url(
        metadata["authorization_endpoint"],
        code_verifier=verifier,
        access_type="offline",
        prompt="consent",
        **extra,
    )
    flow = {"state": state, "verifier": verifier, "redirect_uri": redirect_uri}
    flow_keep(session, provider=PROVIDER, user=user, popup=popup, flow=flow)
    return uri


@sensitive_variables("flow", "token", "client")
def connect_finish(*, session, user, params: dict[str, str]) -> OAuthConnection:
    """Complete the flow from the callback's query: stores nothing unless the flow was started
    in this session by this user, the state matches, and Google exchanges the code."""
    flow = flow_take(session, provider=PROVIDER, user=user)  # one use only
    if flow is None:
        raise OAuthError(
            "no_flow",
            _(
                "This sign-in was not started from your user card, or it has expired. Click "
                "“Sign in with Google” again."
            ),
        )
    state_matches = hmac.compare_digest(
        str(params.get("state", "")).encode(), str(flow["state"]).encode()
    )
    # The provider's error text is shown only for this very sign-in: a crafted link cannot
    # put its words on the user's card.
    if state_matches and "error" in params:
        raise _provider_error(params.get("error", ""), params.get("error_description", ""))
    if not state_matches or not params.get("code"):
        raise OAuthError(
            "bad_state",
            _(
                "The answer from Google does not belong to this sign-in. Click “Sign in with "
                "Google” again."
            ),
        )
    try:
        metadata = _metadata()
        client = _client(redirect_uri=flow["redirect_uri"], state=flow["state"])
        token = client.fetch_token(
            metadata["token_endpoint"], code=params["code"], code_verifier=flow["verifier"]
        )
        # Who signed in, asked with the token just issued (not through the session, which
        # refuses a token it thinks is about to expire).
        answer = requests.get(
            metadata["userinfo_endpoint"],
            headers={"Authorization": f"Bearer {token['access_token']}"},
            timeout=TIMEOUT,
        )
        answer.raise_for_status()
        claims = answer.json()
    except AuthlibError as error:
        raise _provider_error(error.error or "", error.description or "") from None
    except (_Unavailable, requests.RequestException, ValueError) as error:
        logger.warning("Google sign-in: %s", error)
        raise _unavailable() from None
    granted = set(str(token.get("scope", SCOPES)).split())
    if "https://mail.google.com/" not in granted:
        raise OAuthError(
            "scope_missing",
            _(
                "Google was not allowed to send mail for this account: the permission to read, "
                "compose and send e-mail was unticked. Click “Sign in with Google” again and "
                "allow it."
            ),
        )
    address = str(claims.get("email") or "") if isinstance(claims, dict) else ""
    if not address or claims.get("email_verified") is False or not token.get("refresh_token"):
        raise OAuthError("no_account", _("Google did not say which account signed in. Try again."))
    return connection_save(
        provider=PROVIDER,
        user=user,
        address=address,
        account_id=str(claims.get("sub") or ""),
        token=json.dumps(dict(token)),
        # The refresh token (and the client secret with it) goes to this issuer's token
        # endpoint only, even if GOOGLE_ISSUER changes later.
        api_endpoint=settings.GOOGLE_ISSUER.rstrip("/"),
    )


def _provider_error(error: str, description: str) -> OAuthError:
    detail = f"{error}: {description}".strip(": ")
    if error == "access_denied":
        message = _(
            "The permissions were not confirmed, so nothing was connected. Click “Sign in with "
            "Google” again and allow sending e-mail."
        )
        return OAuthError("consent_refused", message, detail)
    if error in ("admin_policy_enforced", "org_internal", "disallowed_useragent"):
        message = _(
            "Your Google Workspace administrator does not allow this application. Ask them to "
            "trust it in the Admin console (Security → API controls), then try again."
        )
        return OAuthError("admin_blocked", message, detail)
    message = _("Google refused the sign-in (%(detail)s). Try again.") % {"detail": detail}
    return OAuthError("provider_error", message, detail)


@sensitive_variables()
def access_token(
    *, user_id: int, server: tuple[str, int] | None = None, force_refresh: bool = False
) -> tuple[str, str]:
    """(address, access token) for SMTP XOAUTH2, refreshed with the refresh token when it is
    about to expire (or `force_refresh`).

    `server`: where the token is about to go; unless the account was connected for exactly that
    server, the token is not even decrypted (issue 11, item 5). The row stays locked during the
    refresh, so two workers never race with one refresh token. Google refusing the refresh
    (invalid_grant: access removed, password changed, token unused for six months) marks the
    connection for connecting again and raises a permanent error; Google not answering is
    transient.
    """
    with transaction.atomic():
        connection = connection_locked(provider=PROVIDER, user_id=user_id, server=server)
        issuer = settings.GOOGLE_ISSUER.rstrip("/")
        if connection.api_endpoint != issuer:
            raise PermanentSendError(
                "", explanation="password_bound_elsewhere", params={"host": issuer}
            )
        token = json.loads(crypto.decrypt(connection.token_encrypted))
        fresh = float(token.get("expires_at") or 0) - REFRESH_MARGIN > time.time()
        if fresh and not force_refresh:
            refreshed(connection, token=None)
            return connection.address, token["access_token"]
        try:
            metadata = _metadata()
            client = _client(token=token)
            token = dict(
                client.refresh_token(
                    metadata["token_endpoint"], refresh_token=token["refresh_token"]
                )
            )
        except AuthlibError as error:
            detail = f"{error.error or ''}: {error.description or ''}".strip(": ")
            refusal = refused(PROVIDER, connection, detail or "refused")
        except (_Unavailable, requests.RequestException, ValueError) as error:
            logger.warning("Google token refresh: user_id=%s: %s", user_id, error)
            raise TransientSendError("", explanation="temporary_failure") from None
        else:
            refreshed(connection, token=json.dumps(token))
            return connection.address, token["access_token"]
    raise refusal


def transport(sender) -> XOAuth2Transport:
    """SMTP over SSL (smtp.gmail.com:465), then AUTH XOAUTH2 with the connected address."""
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
