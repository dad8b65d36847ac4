"""pytest plugin (`-p tests.session_keys` in pyproject.toml): the test session's own keys.

The settings refuse to start without DJANGO_SECRET_KEY and FIELD_ENCRYPTION_KEYS. This runs
before pytest-django loads the settings (a conftest.py would be too late), and puts fresh
random keys into os.environ, so every subprocess a test starts (the Celery worker, manage.py
commands) inherits the same ones. Keys already in the environment are kept. A developer's
.env (written by `make run`: DEBUG on, the catcher's port allowed) is not read by the settings
of the test session or its subprocesses: the tests see the same settings on every machine.

DNS too: the domain check (issue 14) asks DNS_NAMESERVERS, and in the test session that is
the local DNS server of tests/dns_fixtures.py on a port chosen here, so no lookup of the
session or its subprocesses ever leaves the machine.
"""

import os
import secrets
import socket

from cryptography.fernet import Fernet

os.environ["DJANGO_READ_DOT_ENV"] = "false"
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("FIELD_ENCRYPTION_KEYS", Fernet.generate_key().decode())


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


os.environ["DNS_NAMESERVERS"] = f"127.0.0.1:{_free_udp_port()}"
