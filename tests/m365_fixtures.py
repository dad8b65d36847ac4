"""Local stand-ins for Microsoft 365: an OpenID provider msal accepts, and an XOAUTH2 SMTP server.

A pytest plugin (registered in tests/conftest.py) next to tests/smtp_fixtures.py, whose CA,
SMTP machinery and Celery worker it builds on. Nothing here talks to Microsoft; everything
listens on 127.0.0.1 and is started once per session (~0.1 s); per-test state (users, tokens,
scripts, messages, token lifetime) is reset before each test. tests/test_m365_fixtures.py shows
each fixture in use.

- `oidc_provider`: oidc-provider-mock over HTTPS, mounted at /<tenant>/v2.0 so that msal takes
  `authority="https://localhost:PORT/<tenant>"` with `instance_discovery=False`, adjusted to act
  like Entra ID (see TESTING-NOTES.md): client_secret_post on refresh, the SMTP.Send scope,
  `client_info` in token responses, `preferred_username` in the claims.
- `xoauth2_server`: aiosmtpd requiring STARTTLS and offering only AUTH XOAUTH2; a bearer token
  is good when the provider's /userinfo vouches for the XOAUTH2 `user=`.
- `m365_settings`: Django settings pointing in-process app code at both.
- `m365_worker_env`: the same for the Celery worker (tests/smtp_fixtures.py adds it to the
  worker's environment, so the worker always starts with the stand-ins).

Completing a sign-in without a browser:

    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri="http://testserver/accounts/...")
    oidc_provider.add_user("anna", "anna@contoso.test")
    params = oidc_provider.sign_in(flow["auth_uri"], "anna")  # {"code": ..., "state": ...}
    result = app.acquire_token_by_auth_code_flow(flow, params)
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import dataclasses
import datetime
import email
import email.policy
import json
import os
import re
import secrets
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import flask
import pytest
import requests
import werkzeug.exceptions
import werkzeug.serving
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from tests.smtp_fixtures import (
    HOST,
    AuthAttempt,
    ReceivedMessage,
    SMTPTestServer,
    TestCA,
    _Controller,
    _Handler,
    _is_encrypted,
    _started_servers,
    free_port,
)

with warnings.catch_warnings():  # authlib deprecations the mock triggers on import
    import authlib.deprecate  # noqa: F401  (its "always" filter is dropped with this block)

    warnings.simplefilter("ignore", DeprecationWarning)
    import oidc_provider_mock
    import oidc_provider_mock._app as mock_app
    from oidc_provider_mock._storage import Client, Storage

SMTP_SEND_SCOPE = "https://outlook.office.com/SMTP.Send"
MAIL_SEND_SCOPE = "https://graph.microsoft.com/Mail.Send"
GMAIL_SCOPE = "https://mail.google.com/"
# The app's callbacks (smtp_settings/card_urls.py) on any loopback port, and on Django's test
# client host.
REDIRECT_PATH = "/accounts/microsoft365/callback/"
GOOGLE_REDIRECT_PATH = "/accounts/google/callback/"


def _redirect_patterns(path: str) -> list[str]:
    return [
        rf"http://(127\.0\.0\.1|localhost):\d+{re.escape(path)}",
        rf"http://testserver{re.escape(path)}",
    ]


REDIRECT_URI_PATTERNS = _redirect_patterns(REDIRECT_PATH)
DEFAULT_DOMAIN = "contoso.test"
# The host the stand-ins are reached by; the test CA's "valid" leaf covers it and 127.0.0.1.
PUBLIC_HOST = "localhost"


def pytest_configure(config: pytest.Config) -> None:
    # oidc-provider-mock 0.3.x uses authlib APIs authlib itself deprecates: not our concern.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:authlib.*")
    config.addinivalue_line("filterwarnings", "ignore:authlib.jose module is deprecated")
    config.addinivalue_line("filterwarnings", "ignore:The httpx module is deprecated")


# ------------------------------------------------------------------------------
# The OpenID provider
# ------------------------------------------------------------------------------
@dataclass(kw_only=True, frozen=True)
class _EntraClient(Client):
    """A registered client as Entra has one: redirect URIs by pattern, secret in body or header."""

    @staticmethod
    def _matches(patterns: Any, redirect_uri: str) -> bool:
        return any(re.fullmatch(pattern, redirect_uri) for pattern in patterns)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return self._matches(self.redirect_uris, redirect_uri)

    def get_default_redirect_uri(self) -> str | None:
        return None  # a pattern is no URI: the request must name one

    def check_endpoint_auth_method(self, method: str, endpoint: object) -> bool:
        return method in ("client_secret_post", "client_secret_basic")


class _QuietRequestHandler(werkzeug.serving.WSGIRequestHandler):
    # TCP_NODELAY: headers and body go out in separate small writes; Nagle and delayed ACKs
    # added ~10 ms to each request.
    disable_nagle_algorithm = True

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def _base64url(data: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


class OIDCProvider:
    """oidc-provider-mock behaving like Entra ID for msal (flavor "entra"), or like Google's
    accounts.google.com for Authlib (flavor "google": issuer `issuer`, the Gmail scope, no
    client_info), served over HTTPS on 127.0.0.1.

    authority: for settings.M365_AUTHORITY / msal's `authority=` (with instance_discovery=False).
    client_id, client_secret: the one registered client (unknown clients are refused).
    access_token_lifetime: seconds for tokens issued from now on (None: one hour). Below 300,
      msal treats a cached token as already expiring, so every acquire_token_silent refreshes.
    token_requests: grant types of the token requests answered, in order (a refresh shows as
      "refresh_token").
    """

    def __init__(self, ca: TestCA, flavor: str = "entra") -> None:
        self.ca = ca
        self.flavor = flavor
        self.tenant = str(uuid.uuid4())
        self.client_id = str(uuid.uuid4())
        self.client_secret = secrets.token_urlsafe(24)
        self.access_token_lifetime: int | None = None
        self.token_requests: list[str] = []
        self._lock = threading.Lock()

        self.flask_app = oidc_provider_mock.app(require_client_registration=True)
        self.flask_app.after_request(self._entra_token_response)
        with self.flask_app.test_request_context():
            self.flask_app.preprocess_request()  # the mock's before_request sets flask.g
            self.storage: Storage = flask.g.oidc_provider_mock_storage
        self.storage.store_client(
            _EntraClient(
                id=self.client_id,
                secret=self.client_secret,
                redirect_uris=_redirect_patterns(
                    GOOGLE_REDIRECT_PATH if flavor == "google" else REDIRECT_PATH
                ),
                # Entra adjustment (2): without SMTP.Send here the mock silently drops it.
                # offline_access: msal sends it again with the refresh, which must stay a subset.
                # Google: the Gmail scope SMTP needs.
                allowed_scopes=(
                    *Client.SCOPES_SUPPORTED,
                    "offline_access",
                    *((GMAIL_SCOPE,) if flavor == "google" else (SMTP_SEND_SCOPE, MAIL_SEND_SCOPE)),
                ),
                token_endpoint_auth_method="client_secret_post",
            )
        )
        # Entra: where msal looks for {authority}/v2.0/.well-known. Google: at the root, as the
        # mock names its issuer by the host alone (https://localhost:PORT, like
        # https://accounts.google.com).
        self.path = "" if flavor == "google" else f"/{self.tenant}/v2.0"
        wsgi = (
            self.flask_app
            if flavor == "google"
            else DispatcherMiddleware(werkzeug.exceptions.NotFound(), {self.path: self.flask_app})
        )
        self._server = werkzeug.serving.make_server(
            HOST,
            0,
            wsgi,
            threaded=True,
            request_handler=_QuietRequestHandler,
            ssl_context=ca.server_context("valid"),
        )
        self.port: int = self._server.server_port
        self.authority = f"https://{PUBLIC_HOST}:{self.port}/{self.tenant}"
        self.base_url = f"https://{PUBLIC_HOST}:{self.port}{self.path}"
        self.issuer = self.base_url  # GOOGLE_ISSUER: {issuer}/.well-known/openid-configuration
        self._http = self.http_client()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"<OIDCProvider {self.authority}>"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._http.close()

    # --- for tests --------------------------------------------------------------------------
    def http_client(self) -> requests.Session:
        """A requests.Session trusting only the test CA whatever the environment says (msal's
        `http_client=`): with trust_env REQUESTS_CA_BUNDLE would override `verify`.

        Only the CA, not the whole bundle: werkzeug closes every connection, and urllib3 loads
        the verify file for each new one (~20 ms for the system bundle, ~1 ms for one CA).
        """
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.ca.ca_file)
        return session

    def add_user(self, sub: str, email: str, **claims: Any) -> dict[str, Any]:
        """A user who can sign in as `sub`; their claims (Entra adjustment (4): with
        preferred_username, which msal and the app take as the address)."""
        claims = {
            "email": email,
            "preferred_username": email,
            "name": email.split("@")[0].title(),
            "tid": self.tenant,
            "oid": sub,
            **claims,
        }
        self.storage.store_user(oidc_provider_mock.User(sub=sub, claims=claims))
        return claims

    def sign_in(self, auth_uri: str, sub: str, *, deny: bool = False) -> dict[str, str]:
        """What the user's browser would do with `auth_uri`: open the sign-in page, submit it for
        `sub` (added with {sub}@contoso.test, or sub itself if it has an @, when unknown), and
        return the query of the redirect to the app's callback: {"code", "state"}, or with
        deny=True {"error": "access_denied", "state", ...}."""
        if not auth_uri.startswith(self.base_url + "/"):
            raise ValueError(f"not this provider's URL: {auth_uri}")
        if self.storage.get_user(sub) is None:
            self.add_user(sub, sub if "@" in sub else f"{sub}@{DEFAULT_DOMAIN}")
        page = self._http.get(auth_uri, allow_redirects=False, timeout=5)
        if page.status_code != 200 or 'name="sub"' not in page.text:
            raise AssertionError(f"no sign-in form at {auth_uri}: {page.status_code} {page.text}")
        form = {"action": "deny"} if deny else {"sub": sub}
        answer = self._http.post(auth_uri, data=form, allow_redirects=False, timeout=5)
        if answer.status_code != 302:
            raise AssertionError(f"sign-in refused: {answer.status_code} {answer.text}")
        return dict(parse_qsl(urlsplit(answer.headers["Location"]).query))

    def userinfo(self, access_token: str) -> dict[str, Any] | None:
        """The provider's /userinfo for a bearer token; None when it refuses the token."""
        response = self._http.get(
            f"{self.base_url}/userinfo",
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=5,
        )
        return response.json() if response.status_code == 200 else None

    def revoke(self, sub: str) -> None:
        """Revoke the user's access and refresh tokens (the mock's own endpoint).

        The provider then refuses the access tokens (/userinfo, so the XOAUTH2 server: 535) and
        the refresh token (msal: invalid_grant). msal only asks once its cached access token
        has expired: force that with `access_token_lifetime` < 300 before the sign-in, with
        expire_cached_access_tokens() on the cache, or with force_refresh=True.
        """
        response = self._http.post(f"{self.base_url}/users/{sub}/revoke-tokens", timeout=5)
        response.raise_for_status()

    def expire_access_tokens(self, sub: str | None = None) -> int:
        """Expire issued access tokens at the provider (all, or the user's); how many.

        The provider refuses them from now on, but msal still trusts its cached copy until its
        own `expires_on`: to make msal refresh, see `access_token_lifetime` and
        expire_cached_access_tokens().
        """
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
        expired = 0
        for token in self.storage.access_tokens():
            if sub is None or token.user_id == sub:
                self.storage.store_access_token(dataclasses.replace(token, expires_at=past))
                expired += 1
        return expired

    def reset(self) -> None:
        """Forget users, codes and tokens; the registered client stays (the worker has it)."""
        storage = self.storage
        storage._users.clear()
        storage._authorization_codes.clear()
        storage._access_tokens.clear()
        storage._refresh_tokens.clear()
        storage._recent_subjects.clear()
        self.access_token_lifetime = None
        with self._lock:
            self.token_requests.clear()

    # --- in the server's threads ------------------------------------------------------------
    def _entra_token_response(self, response: flask.Response) -> flask.Response:
        """Token responses as Entra gives them: with client_info (Entra adjustment (3)).

        Without it msal files refreshed tokens under an empty account and keeps returning the
        old one. Also applies `access_token_lifetime` to the token just issued.
        """
        if flask.request.endpoint == "oidc-provider-mock.authorize":
            return self._state_in_error_redirect(response)
        if flask.request.endpoint != "oidc-provider-mock.issue_token":
            return response
        with self._lock:
            self.token_requests.append(flask.request.form.get("grant_type", ""))
        if response.status_code != 200:
            return response
        body = response.get_json()
        token = self.storage.get_access_token(body["access_token"])
        if token is None:
            return response
        if self.flavor == "entra":
            body["client_info"] = _base64url({"uid": token.user_id, "utid": self.tenant})
        if (lifetime := self.access_token_lifetime) is not None:
            body["expires_in"] = body["ext_expires_in"] = lifetime
            expires_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=lifetime)
            self.storage.store_access_token(dataclasses.replace(token, expires_at=expires_at))
        response.set_data(json.dumps(body))
        return response

    @staticmethod
    def _state_in_error_redirect(response: flask.Response) -> flask.Response:
        """Entra returns `state` with an error too (the mock forgets it when the user denies)."""
        location = response.headers.get("Location")
        state = flask.request.args.get("state")
        if response.status_code != 302 or not location or not state:
            return response
        parts = urlsplit(location)
        query = parse_qsl(parts.query)
        if any(name == "error" for name, _ in query) and all(name != "state" for name, _ in query):
            query.append(("state", state))
            response.headers["Location"] = parts._replace(query=urlencode(query)).geturl()
        return response


def expire_cached_access_tokens(cache: Any) -> Any:
    """Make msal think the access tokens in its cache have expired, so the next
    acquire_token_silent refreshes them. Takes a SerializableTokenCache (changed in place and
    returned) or its serialized JSON (the changed JSON is returned)."""
    state = json.loads(cache if isinstance(cache, str) else cache.serialize())
    for entry in state.get("AccessToken", {}).values():
        entry["expires_on"] = entry["extended_expires_on"] = str(int(time.time()) - 60)
        entry.pop("refresh_on", None)
    if isinstance(cache, str):
        return json.dumps(state)
    cache.deserialize(json.dumps(state))
    return cache


_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def _loopback_env(ca: TestCA) -> dict[str, str]:
    """REQUESTS_CA_BUNDLE trusting the test CA (system roots kept), and no proxy for loopback."""
    env = {"REQUESTS_CA_BUNDLE": str(ca.bundle_file)}
    if any(os.environ.get(name) for name in _PROXY_VARS):
        for name in ("NO_PROXY", "no_proxy"):
            current = [part for part in os.environ.get(name, "").split(",") if part]
            env[name] = ",".join(dict.fromkeys([*current, "localhost", "127.0.0.1"]))
    return env


_started_providers: list[OIDCProvider] = []


@pytest.fixture(scope="session")
def oidc_provider(test_ca: TestCA) -> Iterator[OIDCProvider]:
    """An Entra-like OpenID provider at https://localhost:PORT/<tenant> (see OIDCProvider).

    While the session runs REQUESTS_CA_BUNDLE names the test CA bundle (system roots included),
    so requests and msal with their default http client trust it, in this process and the
    worker alike.
    """
    # Entra adjustment (1): msal sends the client secret in the body when refreshing too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            mock_app.RefreshTokenGrant,
            "TOKEN_ENDPOINT_AUTH_METHODS",
            ["client_secret_basic", "client_secret_post"],
        )
        for name, value in _loopback_env(test_ca).items():
            patch.setenv(name, value)
        provider = OIDCProvider(test_ca)
        _started_providers.append(provider)
        try:
            yield provider
        finally:
            _started_providers.remove(provider)
            provider.close()


# ------------------------------------------------------------------------------
# The XOAUTH2 SMTP server
# ------------------------------------------------------------------------------
@dataclass(frozen=True)
class XOAuth2Message(ReceivedMessage):
    """A message the XOAUTH2 server accepted; `token` is the bearer token that authorised it."""

    token: str | None = None


@dataclass(frozen=True)
class XOAuth2Attempt(AuthAttempt):
    token: str = ""
    initial_response: bool = True  # False: the client waited for the empty challenge
    reason: str = ""  # why it failed


_connection_token: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "xoauth2_token", default=None
)

AUTH_FAILED = "535 5.7.3 Authentication unsuccessful"
# What smtp.gmail.com answers a refused XOAUTH2 token (after a 334 with its JSON error).
GOOGLE_AUTH_FAILED = "535 5.7.8 Username and Password not accepted"


@dataclass(eq=False)
class XOAuth2Server(SMTPTestServer):
    """smtp.office365.com in miniature: STARTTLS required, then AUTH XOAUTH2 only.

    messages are XOAuth2Message (with .token); auth_attempts are XOAuth2Attempt. script(),
    drop_connection_at(), stall_at(), wait_for() and the per-test reset as in SMTPTestServer.
    """

    provider: OIDCProvider | None = None
    failure: str = AUTH_FAILED  # the reply to a token the provider does not vouch for

    def _record(self, message: ReceivedMessage) -> None:
        fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
        super()._record(XOAuth2Message(**fields, token=_connection_token.get()))

    def _attempt(self, attempt: XOAuth2Attempt) -> None:
        with self._lock:
            self.auth_attempts.append(attempt)

    def check(self, user: str, token: str) -> str:
        """Why the provider does not vouch for `token` as `user`; "" when it does."""
        assert self.provider is not None
        claims = self.provider.userinfo(token)
        if claims is None:
            return "the provider refused the token"
        names = {str(claims.get(key, "")).lower() for key in ("preferred_username", "email")}
        if user.lower() not in names:
            return f"the token belongs to {claims.get('preferred_username')}, not {user}"
        return ""


def _parse_xoauth2(blob: bytes) -> tuple[str, str] | None:
    """(user, token) from `user=<addr>\\x01auth=Bearer <token>\\x01\\x01`, None if malformed."""
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.endswith("\x01\x01"):
        return None
    fields = dict(part.split("=", 1) for part in text[:-2].split("\x01") if "=" in part)
    auth = fields.get("auth", "")
    if not fields.get("user") or not auth.startswith("Bearer "):
        return None
    return fields["user"], auth.removeprefix("Bearer ").strip()


class _XOAuth2Handler(_Handler):
    server: XOAuth2Server

    async def auth_XOAUTH2(self, smtp: SMTP, args: list[str]) -> AuthResult:
        initial = len(args) == 2
        if initial:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return AuthResult(success=False, handled=False, message="501 5.5.2 Bad base64")
        else:  # the client waits for an (empty) challenge before sending the token
            blob = await smtp.challenge_auth("", encode_to_b64=False)
            if blob is MISSING:  # challenge_auth has already answered (501)
                return AuthResult(success=False, handled=True)
        parsed = _parse_xoauth2(blob)
        user, token = parsed or ("", "")
        if parsed is None:
            reason = "malformed XOAUTH2 string"
        else:
            reason = await smtp.loop.run_in_executor(None, self.server.check, user, token)
        self.server._attempt(
            XOAuth2Attempt(
                mechanism="XOAUTH2",
                login=user,
                success=not reason,
                tls=_is_encrypted(smtp),
                token=token,
                initial_response=initial,
                reason=reason,
            )
        )
        if reason:
            # handled=False, or aiosmtpd sends nothing and the client waits forever.
            return AuthResult(success=False, handled=False, message=self.server.failure)
        return AuthResult(success=True, auth_data=SimpleNamespace(login=user, token=token))

    async def handle_DATA(self, smtp: Any, session: Session, envelope: Envelope) -> str:
        _connection_token.set(getattr(session.auth_data, "token", None))
        return await super().handle_DATA(smtp, session, envelope)


@pytest.fixture(scope="session")
def xoauth2_server(test_ca: TestCA, oidc_provider: OIDCProvider) -> Iterator[XOAuth2Server]:
    """An XOAUTH2 SMTP server on 127.0.0.1 (reach it as localhost or 127.0.0.1).

    EHLO offers STARTTLS; AUTH and MAIL before it get 530. After STARTTLS it offers only
    AUTH XOAUTH2 (PLAIN/LOGIN: 504 5.5.4, as if basic auth were off). A token is accepted when
    oidc_provider's /userinfo knows it and names the XOAUTH2 user (preferred_username or
    email); otherwise 535 5.7.3 Authentication unsuccessful.
    """
    server = XOAuth2Server(name="xoauth2", port=free_port(), starttls=True, provider=oidc_provider)
    server.controller = _Controller(
        _XOAuth2Handler(server),
        hostname=HOST,
        port=server.port,
        server_hostname="localhost",
        tls_context=test_ca.server_context("valid"),
        require_starttls=True,
        auth_require_tls=True,
        auth_exclude_mechanism=["PLAIN", "LOGIN"],
    )
    server.controller.start()
    _started_servers.append(server)  # smtp_fixtures resets it before each test
    yield server
    server.controller.stop()
    _started_servers.remove(server)


# ------------------------------------------------------------------------------
# Settings for the app, in-process and in the worker
# ------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _reset_m365_provider() -> None:
    """Each test starts with no users or tokens and the default token lifetime."""
    for provider in _started_providers:
        provider.reset()


@dataclass
class M365:
    provider: OIDCProvider
    smtp: XOAuth2Server
    settings: Any  # pytest-django's settings fixture
    graph: GraphServer | None = None


def _m365_values(provider: OIDCProvider, server: XOAuth2Server) -> dict[str, str]:
    return {
        "M365_CLIENT_ID": provider.client_id,
        "M365_CLIENT_SECRET": provider.client_secret,
        "M365_AUTHORITY": provider.authority,
        "M365_SMTP_SERVER": f"{PUBLIC_HOST}:{server.port}",
    }


@pytest.fixture
def m365_settings(
    settings: Any,
    oidc_provider: OIDCProvider,
    xoauth2_server: XOAuth2Server,
    graph_server: GraphServer,
) -> M365:
    """Django settings pointing in-process app code at the stand-ins (restored after the test):
    M365_*, and M365_GRAPH_ENDPOINT at the local Graph."""
    for name, value in _m365_values(oidc_provider, xoauth2_server).items():
        setattr(settings, name, value)
    settings.M365_GRAPH_ENDPOINT = graph_server.endpoint
    settings.SMTP_ALLOW_PRIVATE_HOSTS = True
    settings.SMTP_ALLOWED_PORTS = [
        *dict.fromkeys([*settings.SMTP_ALLOWED_PORTS, xoauth2_server.port])
    ]
    return M365(provider=oidc_provider, smtp=xoauth2_server, settings=settings, graph=graph_server)


@pytest.fixture(scope="session")
def m365_worker_env(
    test_ca: TestCA,
    oidc_provider: OIDCProvider,
    xoauth2_server: XOAuth2Server,
    graph_server: GraphServer,
    google_provider: OIDCProvider,
    google_xoauth2_server: XOAuth2Server,
    test_server_ports: list[int],
) -> dict[str, str]:
    """What celery_worker adds to its environment: M365_* and GOOGLE_*, REQUESTS_CA_BUNDLE (and
    NO_PROXY when a proxy is configured), SMTP_ALLOWED_PORTS with the XOAUTH2 servers' ports."""
    ports = [25, 465, 587, *test_server_ports, xoauth2_server.port, google_xoauth2_server.port]
    return {
        **_m365_values(oidc_provider, xoauth2_server),
        "M365_GRAPH_ENDPOINT": graph_server.endpoint,
        **_google_values(google_provider, google_xoauth2_server),
        **_loopback_env(test_ca),
        "SMTP_ALLOWED_PORTS": ",".join(map(str, dict.fromkeys(ports))),
    }


# ------------------------------------------------------------------------------
# Google: a second provider acting as accounts.google.com, and smtp.gmail.com:465 in miniature
# ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def google_provider(test_ca: TestCA, oidc_provider: OIDCProvider) -> Iterator[OIDCProvider]:
    """An OpenID provider acting as Google at https://localhost:PORT (its `issuer`):
    discovery, authorization code with PKCE, client_secret_basic, the Gmail scope, /userinfo
    with `email`. Requires oidc_provider, whose session-wide adjustments (trust, refresh
    authentication) it shares."""
    provider = OIDCProvider(test_ca, flavor="google")
    _started_providers.append(provider)
    try:
        yield provider
    finally:
        _started_providers.remove(provider)
        provider.close()


@pytest.fixture(scope="session")
def google_xoauth2_server(
    test_ca: TestCA, google_provider: OIDCProvider
) -> Iterator[XOAuth2Server]:
    """smtp.gmail.com:465 in miniature: implicit TLS, AUTH XOAUTH2 only, a token good when
    google_provider's /userinfo vouches for the XOAUTH2 `user=`; otherwise 535 5.7.8."""
    server = XOAuth2Server(
        name="google-xoauth2",
        port=free_port(),
        implicit_tls=True,
        provider=google_provider,
        failure=GOOGLE_AUTH_FAILED,
    )
    server.controller = _Controller(
        _XOAuth2Handler(server),
        hostname=HOST,
        port=server.port,
        server_hostname="localhost",
        ssl_context=test_ca.server_context("valid"),
        # The whole connection is TLS; aiosmtpd's auth_require_tls looks only at STARTTLS and
        # would hide AUTH here (the attempts record `tls` from the transport itself).
        auth_require_tls=False,
        auth_exclude_mechanism=["PLAIN", "LOGIN"],
    )
    server.controller.start()
    _started_servers.append(server)
    yield server
    server.controller.stop()
    _started_servers.remove(server)


@dataclass
class Google:
    provider: OIDCProvider
    smtp: XOAuth2Server
    settings: Any


def _google_values(provider: OIDCProvider, server: XOAuth2Server) -> dict[str, str]:
    return {
        "GOOGLE_CLIENT_ID": provider.client_id,
        "GOOGLE_CLIENT_SECRET": provider.client_secret,
        "GOOGLE_ISSUER": provider.issuer,
        "GOOGLE_SMTP_SERVER": f"{PUBLIC_HOST}:{server.port}",
    }


@pytest.fixture
def google_settings(
    settings: Any, google_provider: OIDCProvider, google_xoauth2_server: XOAuth2Server
) -> Google:
    """Django settings pointing in-process app code at the Google stand-ins."""
    for name, value in _google_values(google_provider, google_xoauth2_server).items():
        setattr(settings, name, value)
    settings.SMTP_ALLOW_PRIVATE_HOSTS = True
    settings.SMTP_ALLOWED_PORTS = [
        *dict.fromkeys([*settings.SMTP_ALLOWED_PORTS, google_xoauth2_server.port])
    ]
    return Google(provider=google_provider, smtp=google_xoauth2_server, settings=settings)


# ------------------------------------------------------------------------------
# Microsoft Graph: POST /v1.0/me/sendMail in miniature
# ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphMessage:
    """A message Graph accepted: the MIME as posted (base64-decoded), whose token, for whom."""

    raw: bytes
    token: str
    user: str  # the provider's preferred_username for the token
    recipients: list[str]

    @property
    def headers(self) -> bytes:
        return re.split(rb"\r?\n\r?\n", self.raw, maxsplit=1)[0]


class GraphServer:
    """Graph's documented sendMail with a MIME body, over HTTPS on 127.0.0.1:
    https://learn.microsoft.com/en-us/graph/api/user-sendmail (example 4, MIME).

    A request needs `Authorization: Bearer <token>` that the provider vouches for (/userinfo)
    and that carries Mail.Send (the provider's own record of the token's scope), else 401 with
    Graph's error JSON; `Content-Type: text/plain` and a base64 MIME body, else 400
    ErrorMimeContentInvalidBase64String. Recipients come from To, Cc and Bcc. Accepted: 202.
    `script(status, retry_after=None, code="")` queues answers for the next requests (429 with
    Retry-After, 503, 403 ErrorSendAsDenied, ...). `messages`, `requests` (status per request),
    `wait_for(n)`, `reset()`.
    """

    def __init__(self, ca: TestCA, provider: OIDCProvider) -> None:
        self.provider = provider
        self.messages: list[GraphMessage] = []
        self.requests: list[int] = []
        self._script: list[tuple[int, int | None, str]] = []
        self._lock = threading.Condition()
        self._server = werkzeug.serving.make_server(
            HOST,
            0,
            self._wsgi,
            threaded=True,
            request_handler=_QuietRequestHandler,
            ssl_context=ca.server_context("valid"),
        )
        self.port = self._server.server_port
        self.endpoint = f"https://{PUBLIC_HOST}:{self.port}/v1.0"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        with self._lock:
            self.messages.clear()
            self.requests.clear()
            self._script.clear()

    def script(self, status: int, *, retry_after: int | None = None, code: str = "") -> None:
        with self._lock:
            self._script.append((status, retry_after, code))

    def wait_for(self, count: int, timeout: float = 10.0) -> list[GraphMessage]:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(f"Graph got {len(self.messages)} of {count} messages")
            return list(self.messages)

    # --- in the server's threads ------------------------------------------------------------
    def _answer(self, start_response, status: int, error: str = "", message: str = "", **headers):
        reasons = {202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden"}
        reasons |= {404: "Not Found", 429: "Too Many Requests", 503: "Service Unavailable"}
        body = b""
        if error:
            body = json.dumps({"error": {"code": error, "message": message}}).encode()
            headers["Content-Type"] = "application/json"
        start_response(
            f"{status} {reasons.get(status, 'Status')}",
            [*headers.items(), ("request-id", str(uuid.uuid4()))],
        )
        with self._lock:
            self.requests.append(status)
        return [body]

    def _token_user(self, token: str) -> str | None:
        stored = self.provider.storage.get_access_token(token)
        if stored is None or MAIL_SEND_SCOPE not in str(stored.scope).split():
            return None
        claims = self.provider.userinfo(token)
        return str(claims.get("preferred_username")) if claims else None

    def _wsgi(self, environ, start_response):
        if environ["REQUEST_METHOD"] != "POST" or environ["PATH_INFO"] != "/v1.0/me/sendMail":
            return self._answer(start_response, 404, "ResourceNotFound", "Resource not found.")
        auth = environ.get("HTTP_AUTHORIZATION", "")
        user = (
            self._token_user(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        )
        if user is None:
            return self._answer(
                start_response, 401, "InvalidAuthenticationToken", "Access token is invalid."
            )
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        with self._lock:
            scripted = self._script.pop(0) if self._script else None
        if scripted is not None:
            status, retry_after, code = scripted
            extra = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return self._answer(start_response, status, code or "Throttled", "Scripted.", **extra)
        if not environ.get("CONTENT_TYPE", "").startswith("text/plain"):
            return self._answer(start_response, 415, "ErrorUnsupportedContentType", "text/plain")
        try:
            raw = base64.b64decode(body, validate=True)
        except binascii.Error:
            return self._answer(
                start_response, 400, "ErrorMimeContentInvalidBase64String", "Invalid base64."
            )
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        recipients = [
            address.addr_spec
            for header in ("To", "Cc", "Bcc")
            for value in parsed.get_all(header, [])
            for address in value.addresses
        ]
        if not recipients:
            return self._answer(
                start_response, 400, "ErrorInvalidRecipients", "At least one recipient."
            )
        with self._lock:
            self.messages.append(
                GraphMessage(
                    raw=raw,
                    token=auth.removeprefix("Bearer "),
                    user=user,
                    recipients=recipients,
                )
            )
            self._lock.notify_all()
        return self._answer(start_response, 202)


_started_graphs: list[GraphServer] = []


@pytest.fixture(scope="session")
def graph_server(test_ca: TestCA, oidc_provider: OIDCProvider) -> Iterator[GraphServer]:
    """Microsoft Graph's sendMail on https://localhost:PORT/v1.0 (see GraphServer); reset before
    each test."""
    server = GraphServer(test_ca, oidc_provider)
    _started_graphs.append(server)
    yield server
    _started_graphs.remove(server)
    server.close()


@pytest.fixture(autouse=True)
def _reset_graph() -> None:
    for server in _started_graphs:
        server.reset()
