"""Settings, read once from the environment (and an optional .env) through django-environ.

Every variable is listed with a one-line comment in `.env.example`. The defaults are the
embedded ones `make run` uses: SQLite, Celery's filesystem broker under `var/`, and the
platform relay pointed at the local mail catcher.
"""

import datetime
from pathlib import Path

import environ
from cryptography.fernet import Fernet
from csp.constants import NONE, SELF
from django.core.checks.security.base import (
    SECRET_KEY_MIN_LENGTH,
    SECRET_KEY_MIN_UNIQUE_CHARACTERS,
)
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
# The test session turns .env off (tests/session_keys.py): a developer's `make run` .env (DEBUG,
# the catcher's port 1025) must not change what the tests see.
if env.bool("DJANGO_READ_DOT_ENV", default=True):
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# ------------------------------------------------------------------------------
# Core
# https://docs.djangoproject.com/en/5.2/ref/settings/
# ------------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)


def _own_secret(value: str, name: str, how: str) -> str:
    """A secret this installation must choose itself: no default, never derived from another.
    Refused in DEBUG too: a per-run random key would leave the web process and the workers
    (and each restart) unable to read each other's sessions, secrets and VERP signatures."""
    value = value.strip()
    if not value:
        raise ImproperlyConfigured(
            f"{name} is not set: directo_mail needs its own. Make one with {how} and set it in "
            "the environment or in .env (`make .env` writes a development .env with fresh keys)."
        )
    return value


# Signs sessions, CSRF tokens and the VERP bounce addresses (outbox.message).
SECRET_KEY = _own_secret(
    env.str("DJANGO_SECRET_KEY", default=""),
    "DJANGO_SECRET_KEY",
    "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`",
)
if SECRET_KEY.startswith("django-insecure-"):
    # Django's mark of a published key, like the default every earlier checkout ran on.
    raise ImproperlyConfigured("DJANGO_SECRET_KEY is a published (django-insecure-) key: make one.")
if (
    len(SECRET_KEY) < SECRET_KEY_MIN_LENGTH
    or len(set(SECRET_KEY)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS
):
    # Django's own measure of a guessable key (`check --deploy`, security.W009), refused at
    # every start: "changeme" would let anyone sign a VERP address or a verification link.
    raise ImproperlyConfigured(
        f"DJANGO_SECRET_KEY is too easy to guess: it needs at least {SECRET_KEY_MIN_LENGTH} "
        f"characters, {SECRET_KEY_MIN_UNIQUE_CHARACTERS} of them different. Make one with "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`."
    )
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# Where the public reaches the site (scheme and host, no path): links in mail, such as a
# letter's unsubscribe link, are built on it, never on a request's Host header.
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
if not PUBLIC_BASE_URL.startswith(("http://", "https://")) or not PUBLIC_BASE_URL.isascii():
    raise ImproperlyConfigured(
        "PUBLIC_BASE_URL must be the site's address with its scheme, in ASCII (punycode for an "
        "international domain), e.g. https://mail.example.com"
    )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "anymail",
    "csp",
    "accounts",
    "smtp_settings",
    "outbox",
    "invoices",
    "bounces",
    "mail_templates",
    "filestore",
    "axes",  # login throttling (accounts.throttle)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "directo_mail.uploads.RequestSizeMiddleware",  # before CSRF: that one reads the body
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.UserLanguageMiddleware",
    "accounts.middleware.UserTimeZoneMiddleware",
    "accounts.middleware.NullCharacterMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # turns a lockout into the login page's explanation
]

ROOT_URLCONF = "directo_mail.urls"
WSGI_APPLICATION = "directo_mail.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "directo_mail.context_processors.site",
            ],
        },
    },
]

# ------------------------------------------------------------------------------
# Database: SQLite under var/ by default; DATABASE_URL switches to PostgreSQL.
# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-db-url
# ------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    VAR_DIR.mkdir(exist_ok=True)  # SQLite cannot create the folder of its file
    # The web server and the worker share the file: WAL lets readers and the writer go on
    # together, IMMEDIATE takes the write lock up front instead of failing to upgrade to it.
    # https://docs.djangoproject.com/en/5.2/ref/databases/#sqlite-transaction-behavior
    # directo_mail.sqlite: Django's backend, handing the write lock over sooner (its docstring).
    DATABASES["default"]["ENGINE"] = "directo_mail.sqlite"
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
DATABASES["default"]["ATOMIC_REQUESTS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Cache: per process by default; Redis in production. No limit relies on it: limits are
# counted in the database (outbox.limits), which every process shares.
# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-cache-url
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

# ------------------------------------------------------------------------------
# Users and languages
# ------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "card:card"
LOGOUT_REDIRECT_URL = "login"
# Axes first: it refuses a locked-out login before a password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = env("LANGUAGE_CODE", default="en")
LANGUAGES = [("en", _("English")), ("pl", _("Polish")), ("et", _("Estonian"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
# Date and time formats Django's own locales lack (Estonian date-times): directo_mail/formats.
FORMAT_MODULE_PATH = ["directo_mail.formats"]
TIME_ZONE = env("TIME_ZONE", default="Europe/Warsaw")
USE_I18N = True
USE_TZ = True

# ------------------------------------------------------------------------------
# Static files, served by whitenoise
# https://whitenoise.readthedocs.io/en/stable/django.html
# ------------------------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
# Where PDFs and attachments are kept (issue 13): "local" (MEDIA_ROOT on this machine's disk:
# the embedded default) or "database" (filestore.storage: every worker on every machine reads
# them; the default whenever DATABASE_URL is not SQLite).
FILE_STORAGE = env(
    "FILE_STORAGE",
    default="local" if DATABASES["default"]["ENGINE"] == "directo_mail.sqlite" else "database",
)
_FILE_STORAGES = {
    "local": "django.core.files.storage.FileSystemStorage",
    "database": "filestore.storage.DatabaseStorage",
}
if FILE_STORAGE not in _FILE_STORAGES:
    raise ImproperlyConfigured(f"FILE_STORAGE must be one of: {', '.join(_FILE_STORAGES)}")
STORAGES = {
    "default": {"BACKEND": _FILE_STORAGES[FILE_STORAGE]},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
MEDIA_ROOT = env.path("MEDIA_ROOT", default=VAR_DIR / "media")

# ------------------------------------------------------------------------------
# Security: DJANGO_HTTPS=true behind TLS turns on secure cookies, HSTS and redirects.
# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
# ------------------------------------------------------------------------------
HTTPS = env.bool("DJANGO_HTTPS", default=False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = 31536000 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# The Microsoft 365 popup talks to its opener: keep the opener reachable.
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin-allow-popups"
# Error reports (and the DEBUG page) hide EMAIL_URL, ANYMAIL and every configured secret.
DEFAULT_EXCEPTION_REPORTER_FILTER = "directo_mail.reporting.SecretsHiddenFilter"
DEFAULT_EXCEPTION_REPORTER = "directo_mail.reporting.SecretsHiddenReporter"

# Login throttling (django-axes, counted in the database): failures within the lockout window
# per user from one address, per address and per user; see accounts/throttle.py for why three.
# https://django-axes.readthedocs.io/en/latest/4_configuration.html
LOGIN_FAILURES_PER_USER_AND_ADDRESS = env.int("LOGIN_FAILURES_PER_USER_AND_ADDRESS", default=5)
LOGIN_FAILURES_PER_ADDRESS = env.int("LOGIN_FAILURES_PER_ADDRESS", default=20)
LOGIN_FAILURES_PER_USER = env.int("LOGIN_FAILURES_PER_USER", default=20)
LOGIN_LOCKOUT_MINUTES = env.int("LOGIN_LOCKOUT_MINUTES", default=15)
# Reverse proxies in front of the app that append to X-Forwarded-For (0: none, the connection's
# address counts); behind one, every user would otherwise share the proxy's address.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
AXES_CLIENT_IP_CALLABLE = "accounts.throttle.client_address"
AXES_HANDLER = "accounts.throttle.LoginThrottleHandler"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address", "username"]
AXES_FAILURE_LIMIT = LOGIN_FAILURES_PER_USER_AND_ADDRESS
AXES_COOLOFF_TIME = datetime.timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_CALLABLE = "accounts.throttle.lockout_response"
# The login form's field (and authenticate()'s keyword), not USERNAME_FIELD ("code"): with the
# default, failures were filed under no user at all.
AXES_USERNAME_FORM_FIELD = "username"
# A success does not wipe the counters: it would reset a guess at this user from elsewhere.
AXES_RESET_ON_SUCCESS = False
# A try refused by a lockout is not counted again: counted, a stranger locked out at one user
# from one address went on adding to that user's own counter until the user was locked out too.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_VERBOSE = False  # no banner on every manage.py command; failures and lockouts still log

# ------------------------------------------------------------------------------
# Content-Security-Policy (django-csp): only this site's own files run and load; no site frames it.
# No inline script, event handler attribute or javascript: URL runs, so text a user wrote
# can never become a script even if a page forgot to escape it. No inline style either: none
# of our pages has one, and Django's admin only adds one to a change list without actions
# (every list here has them); CSS set from a script file (element.style) is not affected.
# Django's CSRF failure page has one, so templates/403_csrf.html replaces it.
# The browser tests fail on any violation (tests/chromium.py).
# https://django-csp.readthedocs.io/en/latest/configuration.html
# https://www.w3.org/TR/CSP3/
# ------------------------------------------------------------------------------
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        # Forms post only here; the Microsoft 365 sign-in is a link, not a form.
        "form-action": [SELF],
        # Like X_FRAME_OPTIONS = "DENY", for browsers that read only CSP.
        "frame-ancestors": [NONE],
    },
}

# ------------------------------------------------------------------------------
# Secrets at rest: MultiFernet, first key encrypts, all keys decrypt. Required, and never
# derived from SECRET_KEY: a leaked SECRET_KEY must not open the stored passwords.
# https://cryptography.io/en/latest/fernet/#cryptography.fernet.MultiFernet
# ------------------------------------------------------------------------------
FIELD_ENCRYPTION_KEYS = [
    key.strip()
    for key in _own_secret(
        env.str("FIELD_ENCRYPTION_KEYS", default=""),
        "FIELD_ENCRYPTION_KEYS",
        "`python -c 'from cryptography.fernet import Fernet; "
        "print(Fernet.generate_key().decode())'`",
    ).split(",")
    if key.strip()
]
for _index, _key in enumerate(FIELD_ENCRYPTION_KEYS, start=1):
    try:
        Fernet(_key.encode())
    except ValueError:
        raise ImproperlyConfigured(
            f"FIELD_ENCRYPTION_KEYS entry {_index} is not a Fernet key (32 url-safe base64 bytes)."
        ) from None

# ------------------------------------------------------------------------------
# Sending
# ------------------------------------------------------------------------------
# The platform relay (S1.1): an SMTP URL, by default the local mail catcher of `make run`.
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="smtp://127.0.0.1:1025")
vars().update(EMAIL_CONFIG)
# Or an ESP as the relay: its anymail backend and settings, e.g.
# EMAIL_BACKEND=anymail.backends.mailgun.EmailBackend and ANYMAIL={"MAILGUN_API_KEY": "…",
# "WEBHOOK_SECRET": "user:password"}; its tracking webhook (/anymail/<esp>/tracking/) then
# feeds bounces to the intake. https://anymail.dev/en/stable/esps/
EMAIL_BACKEND = env("EMAIL_BACKEND", default=EMAIL_CONFIG["EMAIL_BACKEND"])
ANYMAIL = env.json("ANYMAIL", default={})
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="noreply@directo-mail.localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Ports a user may give for their own server (S3.1); tests widen it to reach local servers.
SMTP_ALLOWED_PORTS = [int(p) for p in env.list("SMTP_ALLOWED_PORTS", default=["25", "465", "587"])]
# Hosts resolving to loopback/private addresses are refused unless this is on.
SMTP_ALLOW_PRIVATE_HOSTS = env.bool("SMTP_ALLOW_PRIVATE_HOSTS", default=DEBUG)
# The platform's outgoing IP addresses, shown on the card for whitelisting (S3.6).
PLATFORM_SENDING_IPS = env.list("PLATFORM_SENDING_IPS", default=[])
# What a domain publishes in SPF to let the platform send as it (issue 14): an include the
# platform maintains (e.g. _spf.directo.example); empty: the card suggests PLATFORM_SENDING_IPS.
PLATFORM_SPF_INCLUDE = env("PLATFORM_SPF_INCLUDE", default="")
# The domain check's DNS (smtp_settings.domaincheck): name servers as host[:port], comma-
# separated ([v6]:port); empty: the system's resolver. DNS_TIMEOUT: seconds one whole check
# may take. Verdicts are cached this many seconds; a user may cause this many fresh checks
# an hour.
DNS_NAMESERVERS = env.list("DNS_NAMESERVERS", default=[])
DNS_TIMEOUT = env.float("DNS_TIMEOUT", default=5.0)
# A name any working DNS answers for: when a mail server's name cannot be looked up, asking for
# it tells "the platform is offline" from "the name has a typo" (smtp_settings.transports).
DNS_CANARY_HOST = env("DNS_CANARY_HOST", default="smtp.gmail.com")
DOMAIN_CHECK_CACHE_SECONDS = env.int("DOMAIN_CHECK_CACHE_SECONDS", default=3600)
DOMAIN_CHECKS_PER_HOUR = env.int("DOMAIN_CHECKS_PER_HOUR", default=20)
# Gmail / Google Workspace's SMTP server: the card's Google preset fills it in (issue 14), and
# Google OAUTH sends there over SSL with XOAUTH2 (issue 15).
GOOGLE_SMTP_SERVER = env("GOOGLE_SMTP_SERVER", default="smtp.gmail.com:465")
# Domain of the platform's event mailbox: Reply-To mode From and bounce addresses (S7).
EVENT_MAIL_DOMAIN = env("EVENT_MAIL_DOMAIN", default="event.directo-mail.localhost")
# The bounce intake (bounces.services): a larger mail is kept cut at this size; a bounce for a
# message sent longer ago than this is refused as a replay.
BOUNCE_MAX_BYTES = env.int("BOUNCE_MAX_BYTES", default=10 * 1024 * 1024)
BOUNCE_MAX_AGE_DAYS = env.int("BOUNCE_MAX_AGE_DAYS", default=30)
# Intake limits (issue 11): the failed or delayed recipients read from one report (more are
# ignored, and the kept mail says how many); delay Events kept per message and recipient (more
# delay reports are kept, with no Event); bounce_server's open connections from one peer (an
# IPv6 peer counts by its /64) and in all, beyond which it answers 421 and closes.
BOUNCE_MAX_RECIPIENTS = env.int("BOUNCE_MAX_RECIPIENTS", default=100)
BOUNCE_MAX_DELAY_EVENTS = env.int("BOUNCE_MAX_DELAY_EVENTS", default=3)
BOUNCE_MAX_CONNECTIONS_PER_PEER = env.int("BOUNCE_MAX_CONNECTIONS_PER_PEER", default=4)
BOUNCE_MAX_CONNECTIONS = env.int("BOUNCE_MAX_CONNECTIONS", default=20)
# Where the local mail catcher of `make run` keeps what the relay sent.
MAIL_CATCHER_DIR = env.path("MAIL_CATCHER_DIR", default=VAR_DIR / "mail")
# Seconds an SMTP connection may wait for the server at any step.
SMTP_TIMEOUT = env.float("SMTP_TIMEOUT", default=30.0)
# Transient failures are retried with exponential backoff: base * 2**attempt seconds.
SEND_MAX_ATTEMPTS = env.int("SEND_MAX_ATTEMPTS", default=6)
SEND_RETRY_BASE_SECONDS = env.float("SEND_RETRY_BASE_SECONDS", default=30.0)
# A claim older than this (seconds) is a worker that died mid-send: the sweeper returns it.
# Only for claims without a worker lease (a process that is no worker: the web, a command);
# a worker's claims are judged by its lease (outbox.leases).
SEND_CLAIM_TIMEOUT = env.int("SEND_CLAIM_TIMEOUT", default=600)
# Worker leases (issue 13): each worker process renews its lease every WORKER_BEAT_SECONDS; a
# lease without a beat for WORKER_LEASE_SECONDS is a dead process, and the sweep takes back
# what it held at once. A restarted worker also forgets the dead processes of its own host.
WORKER_BEAT_SECONDS = env.float("WORKER_BEAT_SECONDS", default=10.0)
WORKER_LEASE_SECONDS = env.float("WORKER_LEASE_SECONDS", default=45.0)
# "Send at" (issue 12, item 6): how far ahead a message may be held, in days; holds up to
# SEND_LATER_ETA_MAX_SECONDS go to the worker with an eta at once (keep it well below Redis'
# visibility timeout, 1 h by default), longer ones are dispatched by the sweeper when due.
SEND_LATER_MAX_DAYS = env.int("SEND_LATER_MAX_DAYS", default=90)
SEND_LATER_ETA_MAX_SECONDS = env.int("SEND_LATER_ETA_MAX_SECONDS", default=900)
# Seconds between two runs of the sweeper (outbox_sweep, Celery beat): abandoned claims, lost
# tasks, and held messages whose time has come (they go at most this long after their time).
OUTBOX_SWEEP_SECONDS = env.float("OUTBOX_SWEEP_SECONDS", default=60.0)
# Mails per window and sender, by provider: "microsoft365", a server's host name, or "smtp"
# for every other server (absent: no limit). The platform relay is not limited here.
SEND_RATE_LIMITS = {
    key: int(value)
    for key, value in env.dict(
        "SEND_RATE_LIMITS", default={"microsoft365": "30", "smtp.gmail.com": "60"}
    ).items()
}
SEND_RATE_WINDOW_SECONDS = env.float("SEND_RATE_WINDOW_SECONDS", default=60.0)
# Messages per worker task in a mass mailing: one SMTP connection serves a whole batch.
BULK_BATCH_SIZE = env.int("BULK_BATCH_SIZE", default=100)
# How many connection tests a user may run in a minute and in an hour (each opens a connection
# from the platform's IPs to a host the user chose: without the hourly cap, 5 a minute would be
# 7,200 connections a day).
CONNECTION_TESTS_PER_MINUTE = env.int("CONNECTION_TESTS_PER_MINUTE", default=5)
CONNECTION_TESTS_PER_HOUR = env.int("CONNECTION_TESTS_PER_HOUR", default=30)
# Templates users write (letters; directo_mail.placeholders): the longest template accepted and
# the longest text one may render to, in characters, so no template can exhaust a process.
TEMPLATE_MAX_CHARS = env.int("TEMPLATE_MAX_CHARS", default=50_000)
TEMPLATE_MAX_OUTPUT_CHARS = env.int("TEMPLATE_MAX_OUTPUT_CHARS", default=200_000)
# Limits on the platform relay (outbox.limits), counted in the database so every web process
# and worker sees them: recipients (To + CC + BCC + the card's BCC) of relay mail per user and
# per company, in fixed clock hours and days. Own servers and Microsoft 365 are not counted.
RELAY_LIMIT_USER_HOUR = env.int("RELAY_LIMIT_USER_HOUR", default=100)
RELAY_LIMIT_USER_DAY = env.int("RELAY_LIMIT_USER_DAY", default=500)
RELAY_LIMIT_COMPANY_HOUR = env.int("RELAY_LIMIT_COMPANY_HOUR", default=1000)
RELAY_LIMIT_COMPANY_DAY = env.int("RELAY_LIMIT_COMPANY_DAY", default=5000)
# Test e-mails ("Send test e-mail") a user may send in an hour, whatever the mail sender.
TEST_EMAILS_PER_HOUR = env.int("TEST_EMAILS_PER_HOUR", default=10)
# Recipients (To + CC + BCC + the card's BCC) of one message, on every path and transport.
MAX_RECIPIENTS_PER_MESSAGE = env.int("MAX_RECIPIENTS_PER_MESSAGE", default=50)
# Files attached in the composer (outbox.attachments): the largest message each server kind
# takes in MB, counted as sent (base64: files grow by a third): "relay" (the platform relay),
# "microsoft365", a server's host name, or "smtp" for every other server. At most so many files
# in one message. A request body over UPLOAD_MAX_MB is refused before it is read
# (directo_mail.uploads); its default is the largest limit and 1 MB for the form.
ATTACHMENT_LIMITS_MB = {
    "relay": 10,
    "smtp": 20,
    "smtp.gmail.com": 25,
    "microsoft365": 25,
    **{key: int(value) for key, value in env.dict("ATTACHMENT_LIMITS_MB", default={}).items()},
}
ATTACHMENTS_MAX_FILES = env.int("ATTACHMENTS_MAX_FILES", default=10)
UPLOAD_MAX_MB = env.int("UPLOAD_MAX_MB", default=max(ATTACHMENT_LIMITS_MB.values()) + 1)
# The link that verifies a card e-mail (smtp_settings.verification): valid this many seconds, and
# at most so many links a user may have mailed an hour and a day.
EMAIL_VERIFICATION_MAX_AGE = env.int("EMAIL_VERIFICATION_MAX_AGE", default=2 * 24 * 3600)
EMAIL_VERIFICATION_MAILS_PER_HOUR = env.int("EMAIL_VERIFICATION_MAILS_PER_HOUR", default=3)
EMAIL_VERIFICATION_MAILS_PER_DAY = env.int("EMAIL_VERIFICATION_MAILS_PER_DAY", default=10)

# Microsoft 365 OAUTH (S5): Entra ID app registration; see README.
M365_CLIENT_ID = env("M365_CLIENT_ID", default="")
M365_CLIENT_SECRET = env("M365_CLIENT_SECRET", default="")
M365_AUTHORITY = env("M365_AUTHORITY", default="https://login.microsoftonline.com/organizations")
M365_SMTP_SERVER = env("M365_SMTP_SERVER", default="smtp.office365.com:587")
# How Microsoft 365 mail goes: "smtp" (XOAUTH2), "graph" (Microsoft Graph sendMail), or "auto":
# SMTP, with the card offering Graph once the tenant refuses SMTP AUTH (5.7.139).
M365_TRANSPORT = env("M365_TRANSPORT", default="auto")
if M365_TRANSPORT not in ("auto", "smtp", "graph"):
    raise ImproperlyConfigured("M365_TRANSPORT must be auto, smtp or graph.")
M365_GRAPH_ENDPOINT = env("M365_GRAPH_ENDPOINT", default="https://graph.microsoft.com/v1.0")

# Google OAUTH (issue 15): a Google Cloud OAuth client (web application); see README. The
# endpoints come from GOOGLE_ISSUER's /.well-known/openid-configuration.
GOOGLE_CLIENT_ID = env("GOOGLE_CLIENT_ID", default="")
GOOGLE_CLIENT_SECRET = env("GOOGLE_CLIENT_SECRET", default="")
GOOGLE_ISSUER = env("GOOGLE_ISSUER", default="https://accounts.google.com")

# ------------------------------------------------------------------------------
# Celery: filesystem broker under var/ by default; CELERY_BROKER_URL switches to Redis.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
# ------------------------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_DIR = env.path("CELERY_BROKER_DIR", default=VAR_DIR / "broker")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport, writing each message atomically (directo_mail/broker.py).
    CELERY_BROKER_TRANSPORT = "directo_mail.broker:Transport"
    _broker_dir = Path(CELERY_BROKER_DIR)
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)  # kombu does not create them
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # How often an idle worker looks for a task: 0.1 s keeps a test e-mail's wait short
        # (issue 13: a 1 s poll cost a quarter of a bulk job's wall time) for 0.3 % of a core.
        "polling_interval": env.float("CELERY_BROKER_POLLING_INTERVAL", default=0.1),
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A Redis that drops packets must not hang a click for minutes: connect within 3 s, and
    # publish with one retry (a dispatch that fails is recorded and handed over by the sweep).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 3, "socket_timeout": 10}
    CELERY_TASK_PUBLISH_RETRY_POLICY = {
        "max_retries": 1,
        "interval_start": 0,
        "interval_step": 0.5,
        "interval_max": 0.5,
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = TIME_ZONE
# Two lanes (issue 13, item 4), so a mail someone is waiting for never queues behind a bulk
# job. "interactive" (the default): one message at a time (outbox.tasks.send_message: a test
# e-mail, the composer, staff's retry and send now) and the sweeper, which is short. "bulk": a
# job's work (building its messages, its batches, a job's message sent on its own as a batch of
# one: outbox.services._send_one) and the daily Microsoft 365 refresh, which nobody waits for.
# `make run` and docker-compose start a worker for each lane; a worker without -Q consumes both.
# Each queue has its own direct exchange, so a task published to one lane never reaches the other.
CELERY_TASK_QUEUES = [
    Queue(lane, Exchange(lane), routing_key=lane) for lane in ("interactive", "bulk")
]
CELERY_TASK_DEFAULT_QUEUE = "interactive"
CELERY_TASK_ROUTES = {
    "outbox.tasks.send_batch": {"queue": "bulk"},
    "invoices.tasks.prepare_job": {"queue": "bulk"},
    "invoices.tasks.render_pdfs": {"queue": "bulk"},
    "smtp_settings.tasks.oauth_refresh": {"queue": "bulk"},
    "smtp_settings.tasks.domain_checks_refresh": {"queue": "bulk"},
}
CELERY_BEAT_SCHEDULE = {
    "outbox-sweep": {"task": "outbox.tasks.sweep", "schedule": OUTBOX_SWEEP_SECONDS},
    # Keeps refresh tokens alive and warns users whose consent was withdrawn (S5).
    "oauth-refresh": {"task": "smtp_settings.tasks.oauth_refresh", "schedule": 86400.0},
    # Keeps the domain check's verdicts current (issue 14): Default mode goes by them.
    "domain-checks-refresh": {
        "task": "smtp_settings.tasks.domain_checks_refresh",
        "schedule": 3600.0,
    },
}

# ------------------------------------------------------------------------------
# Logging: to the console; secrets never reach a log line (see smtp_settings.crypto).
# ------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # django-axes logs every login at INFO; failures and lockouts (WARNING) are what matter.
    "loggers": {"axes": {"level": "WARNING"}},
}
