"""pytest plugin (`-p tests.session_keys` in pyproject.toml): the test session's own keys.

The settings refuse to start without DJANGO_SECRET_KEY and FIELD_ENCRYPTION_KEYS. This runs
before pytest-django loads the settings (a conftest.py would be too late), and puts fresh
random keys into os.environ, so every subprocess a test starts (the Celery worker, manage.py
commands) inherits the same ones. Keys already in the environment (or .env) are kept.
"""

import os
import secrets

from cryptography.fernet import Fernet

os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("FIELD_ENCRYPTION_KEYS", Fernet.generate_key().decode())
